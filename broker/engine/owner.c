/* owner.c - the owner's service to other nodes: publishes they forward
 * (PUB_REQ), the position and history they ask for (SYNC_REQ) and the
 * channels of a shard (SHARD_REQ), for what this node owns. */
#include "owner.h"
#include "channel.h"
#include "cluster.h"
#include "codec.h"
#include "frame.h"
#include "log.h"
#include "publish.h"
#include "replica.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

/* A publish another node forwarded here; answered when it is delivered. */
struct remote_pub {
    struct pub_wait w;
    char origin[ENVELOPE_ID_MAX + 1];
    uint64_t req_id;
};

static void remote_pub_done(struct pub_wait *w, enum chorus_err err, const char *msg,
                            const char *epoch, uint64_t seq, bool duplicate)
{
    struct remote_pub *rp = w->ud;
    struct envelope req = {.req_id = rp->req_id};
    snprintf(req.origin, sizeof req.origin, "%s", rp->origin);
    if (err != CHORUS_ERR__COUNT) {
        cluster_reply_status(&req, ENV_PUB_REP, err, msg ? msg : "could not publish");
    } else {
        struct envelope e;
        cluster_env_init(&e, ENV_PUB_REP);
        e.req_id = rp->req_id;
        e.seq = seq;
        if (duplicate)
            e.flags |= ENV_FLAG_DUPLICATE;
        snprintf(e.epoch, sizeof e.epoch, "%s", epoch);
        cluster_send_to(rp->origin, &e, NULL, 0);
    }
    free(rp);
}

/* ------------------------------------------------------------ deferral
 * A request can reach the owner a moment before the owner itself has
 * applied the map that made it owner (the requester applied it first), or
 * while its lease is being renewed. Refusing it would bounce a client for
 * nothing, so it waits here, briefly and boundedly, and is served again when
 * the map changes or at the next tick; only then is it refused. */

#define DEFER_MS 300
#define DEFER_MAX 1024
#define DEFER_PARTS 5

struct deferred {
    struct envelope env;
    int n;
    struct cluster_part parts[DEFER_PARTS];
    int64_t deadline_ms;
    struct deferred *prev, *next;     /* utlist DL, oldest first */
    unsigned char data[];             /* the parts' bytes */
};

static struct deferred *deferred;
static int ndeferred;
/* While a deferred request is served again: its original deadline, and
 * whether this is its last chance. */
static int64_t redispatch_deadline;
static bool redispatching, last_chance;

static void on_pub_req(const struct cluster_part *topic, const struct envelope *req,
                       const struct cluster_part *parts, int n);
static void on_sync_req(const struct cluster_part *topic, const struct envelope *req,
                        const struct cluster_part *parts, int n);
static void on_shard_req(const struct cluster_part *topic, const struct envelope *req,
                         const struct cluster_part *parts, int n);

/* True when the request was kept to be served again shortly. */
static bool defer(const struct envelope *req, const struct cluster_part *parts, int n)
{
    if (last_chance || ndeferred >= DEFER_MAX || n > DEFER_PARTS)
        return false;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += parts[i].len;
    struct deferred *d = malloc(sizeof *d + total + 1);
    if (!d)
        return false;
    d->env = *req;
    d->n = n;
    unsigned char *p = d->data;
    for (int i = 0; i < n; i++) {
        memcpy(p, parts[i].data, parts[i].len);
        d->parts[i] = (struct cluster_part){p, parts[i].len};
        p += parts[i].len;
    }
    d->deadline_ms = redispatching ? redispatch_deadline : runtime_now_ms() + DEFER_MS;
    DL_APPEND(deferred, d);
    ndeferred++;
    return true;
}

/* Serves the deferred requests again; those past their deadline for the
 * last time (refused if still not servable). */
static void redispatch(void)
{
    int64_t now = runtime_now_ms();
    struct deferred *list = deferred, *d, *tmp;
    deferred = NULL;
    ndeferred = 0;
    DL_FOREACH_SAFE(list, d, tmp) {
        DL_DELETE(list, d);
        redispatching = true;
        redispatch_deadline = d->deadline_ms;
        last_chance = now >= d->deadline_ms;
        if (d->env.type == ENV_PUB_REQ)
            on_pub_req(NULL, &d->env, d->parts, d->n);
        else if (d->env.type == ENV_SHARD_REQ)
            on_shard_req(NULL, &d->env, d->parts, d->n);
        else
            on_sync_req(NULL, &d->env, d->parts, d->n);
        redispatching = last_chance = false;
        free(d);
    }
}

static void owner_map_changed(void) { redispatch(); }

static void owner_tick(int64_t now)
{
    (void)now;
    if (deferred)
        redispatch();
}

/* PUB_REQ [channel, data JSON, client id, key, attr?] -> PUB_REP {epoch, seq} once delivered */
static void on_pub_req(const struct cluster_part *topic, const struct envelope *req,
                       const struct cluster_part *parts, int n)
{
    (void)topic;
    if ((n != 4 && n != 5) || !codec_channel_valid((const char *)parts[0].data, parts[0].len) ||
        parts[2].len >= 64 || parts[3].len > CODEC_KEY_MAX ||
        (n == 5 && !codec_attr_valid((const char *)parts[4].data, parts[4].len))) {
        cluster_reply_status(req, ENV_PUB_REP, CHORUS_ERR_BAD_REQUEST, "malformed publish request");
        return;
    }
    const char *name = (const char *)parts[0].data;
    const char *owner = cluster_owner_of(name, parts[0].len);
    bool proxy = owner && !cluster_is_owner(name, parts[0].len) && strcmp(owner, req->origin) != 0;
    /* The requester owns it by this node's newer map (PUB_REQ's seq is the
     * sender's map version): it applies that map in a moment, so the
     * request goes back to it rather than wait here. A node whose map is
     * older waits for its own to change instead, so nothing ping-pongs. */
    bool bounce = owner && !proxy && !cluster_is_owner(name, parts[0].len) &&
                  cluster_map_version() > req->seq && cluster_can_act();
    if (!proxy && !bounce && (!cluster_is_owner(name, parts[0].len) || !cluster_can_act())) {
        log_debug("event=pub_req_deferred ch=%.*s from=%s their_map=%llu owner=%s can_act=%d",
                  (int)parts[0].len, name, req->origin, (unsigned long long)req->seq,
                  owner ? owner : "-", cluster_can_act());
        if (!defer(req, parts, n))
            cluster_reply_status(req, ENV_PUB_REP, CHORUS_ERR_UNAVAILABLE,
                                 "channel ownership is moving; retry");
        return;
    }
    /* The origin validated it; check again anyway, since JSON text is
     * spliced verbatim into every subscriber's frame. */
    bool binary = req->flags & ENV_FLAG_BINARY;
    json_error_t jerr;
    json_t *data = binary ? NULL : json_loadb((const char *)parts[1].data, parts[1].len,
                                              JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    struct remote_pub *rp = binary || data ? calloc(1, sizeof *rp) : NULL;
    json_decref(data);
    if (!rp) {
        cluster_reply_status(req, ENV_PUB_REP, CHORUS_ERR_BAD_REQUEST, "malformed publish data");
        return;
    }
    char client[64], key[CODEC_KEY_MAX + 1], *attr = NULL;
    if (n == 5 && !(attr = strndup((const char *)parts[4].data, parts[4].len))) {
        free(rp);
        cluster_reply_status(req, ENV_PUB_REP, CHORUS_ERR_UNAVAILABLE, "out of memory");
        return;
    }
    memcpy(client, parts[2].data, parts[2].len);
    client[parts[2].len] = '\0';
    memcpy(key, parts[3].data, parts[3].len);
    key[parts[3].len] = '\0';
    snprintf(rp->origin, sizeof rp->origin, "%s", req->origin);
    rp->req_id = req->req_id;
    (bounce ? publish_bounce : publish_submit_as)(name, parts[0].len, (const char *)parts[1].data,
                                                  parts[1].len, binary, *client ? client : NULL,
                                                  attr, *key ? key : NULL, &rp->w, remote_pub_done, rp);
    free(attr); /* the frame was encoded, or the publish copied it (parked, forwarded) */
}

struct sync_collect {
    struct cluster_part *parts;
    unsigned char *buf;     /* the messages' ENV_SYNC_ITEM_LEN prefixes */
    int n;
};

static void collect(const struct hist_entry *h, void *ud)
{
    struct sync_collect *s = ud;
    unsigned char *p = s->buf + ENV_SYNC_ITEM_LEN * s->n;
    envelope_put_sync_item(p, h->seq, h->ts_ms, h->f->binary ? ENV_FLAG_BINARY : 0);
    s->parts[1 + 2 * s->n] = (struct cluster_part){p, ENV_SYNC_ITEM_LEN};
    s->parts[2 + 2 * s->n] = (struct cluster_part){frame_payload(h->f), h->f->len};
    s->n++;
}

struct key_blob {
    unsigned char *buf;
    size_t len, cap;
};

/* Per key: seq (8 bytes, big-endian), length (1 byte), the key's bytes. */
static void add_key(const char *key, uint64_t seq, void *ud)
{
    struct key_blob *b = ud;
    size_t kl = strlen(key);
    if (kl > 255)
        return;
    if (b->len + 9 + kl > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 1024;
        while (cap < b->len + 9 + kl)
            cap *= 2;
        unsigned char *p = realloc(b->buf, cap);
        if (!p)
            return;
        b->buf = p;
        b->cap = cap;
    }
    for (int i = 0; i < 8; i++)
        b->buf[b->len++] = (unsigned char)(seq >> (56 - 8 * i));
    b->buf[b->len++] = (unsigned char)kl;
    memcpy(b->buf + b->len, key, kl);
    b->len += kl;
}

/* SYNC_REQ [channel] {since?, limit} -> SYNC_REP {epoch, seq, recovered} [channel, (seq+ts, msg)...] */
static void on_sync_req(const struct cluster_part *topic, const struct envelope *req,
                        const struct cluster_part *parts, int n)
{
    (void)topic;
    if (n != 1 || !codec_channel_valid((const char *)parts[0].data, parts[0].len)) {
        cluster_reply_status(req, ENV_SYNC_REP, CHORUS_ERR_BAD_REQUEST, "malformed sync request");
        return;
    }
    const char *name = (const char *)parts[0].data;
    size_t len = parts[0].len;
    if (!cluster_is_owner(name, len) || !cluster_can_act()) {
        if (!defer(req, parts, n))
            cluster_reply_status(req, ENV_SYNC_REP, CHORUS_ERR_UNAVAILABLE,
                                 "channel ownership is moving; retry");
        return;
    }
    bool join = req->flags & ENV_FLAG_JOIN;
    struct channel *ch = join ? channel_get(name, len) : channel_find(name, len);
    if (!ch && join) {
        cluster_reply_status(req, ENV_SYNC_REP, CHORUS_ERR_UNAVAILABLE, "out of memory");
        return;
    }
    if (!ch) {
        /* A history request for a channel that holds nothing (PROTOCOL.md 2.4). */
        struct envelope e;
        cluster_env_init(&e, ENV_SYNC_REP);
        e.req_id = req->req_id;
        cluster_send_to(req->origin, &e, parts, 1);
        return;
    }
    replica_claim(ch); /* we may have just become the owner */
    /* A joining node is about to follow this channel; keep it until its
     * subscription (or its absence) is known from the XPUB side. */
    if (join)
        ch->remote_interest = true;

    int64_t now = runtime_now_ms();
    bool has_since = req->flags & ENV_FLAG_HAS_SINCE;
    bool same_epoch = has_since && !strcmp(req->epoch, ch->epoch);
    bool recovered = same_epoch && channel_can_recover(ch, req->epoch, req->seq, now);
    uint32_t limit = req->limit;
    if (limit > (uint32_t)ch->ns->history_size)
        limit = (uint32_t)ch->ns->history_size;

    struct envelope e;
    cluster_env_init(&e, ENV_SYNC_REP);
    e.req_id = req->req_id;
    e.seq = ch->seq;
    snprintf(e.epoch, sizeof e.epoch, "%s", ch->epoch);
    if (recovered)
        e.flags |= ENV_FLAG_RECOVERED;

    uint32_t cap = ch->hist_count;
    struct sync_collect s = {calloc(2 + 2 * (size_t)cap, sizeof *s.parts), malloc(ENV_SYNC_ITEM_LEN * (size_t)cap + 1), 0};
    if (!s.parts || !s.buf) {
        free(s.parts);
        free(s.buf);
        cluster_reply_status(req, ENV_SYNC_REP, CHORUS_ERR_UNAVAILABLE, "out of memory");
        return;
    }
    s.parts[0] = parts[0];
    if (!has_since)
        channel_history_each(ch, 0, limit, now, collect, &s);
    else if (same_epoch)
        channel_history_each(ch, req->seq, -1, now, collect, &s);
    int nparts = 1 + 2 * s.n;
    struct key_blob kb = {NULL, 0, 0};
    if (req->flags & ENV_FLAG_KEYS) {
        /* A new backup: the keys come too, so a retry that reaches it once
         * it owns the channel is still answered as a duplicate. */
        channel_keys_each(ch, add_key, &kb);
        e.flags |= ENV_FLAG_KEYS;
        s.parts[nparts++] = (struct cluster_part){kb.buf ? kb.buf : (const unsigned char *)"", kb.len};
    }
    cluster_send_to(req->origin, &e, s.parts, nparts);
    free(kb.buf);
    free(s.parts);
    free(s.buf);
}

/* ---------------------------------------------------------- shard list */

#define SHARD_NAMES_MAX 512

struct shard_collect {
    unsigned shard;
    const char *after;
    size_t after_len;
    struct channel **out;
    size_t n, cap;
};

static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c ? c : (alen > blen) - (alen < blen);
}

static void collect_shard(struct channel *ch, void *ud)
{
    struct shard_collect *c = ud;
    /* A channel of the shard that is still a mirror here (promoted, not yet
     * claimed) is listed too: the backup's SYNC_REQ claims it. */
    if (cluster_shard_of(ch->name, ch->len) != c->shard ||
        name_cmp(ch->name, ch->len, c->after, c->after_len) <= 0)
        return;
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        struct channel **p = realloc(c->out, cap * sizeof *p);
        if (!p)
            return;
        c->out = p;
        c->cap = cap;
    }
    c->out[c->n++] = ch;
}

static int by_name(const void *a, const void *b)
{
    const struct channel *x = *(struct channel *const *)a, *y = *(struct channel *const *)b;
    return name_cmp(x->name, x->len, y->name, y->len);
}

/* SHARD_REQ [after] {seq: shard, limit} -> SHARD_REP {seq: shard, MORE?} [name...]:
 * the channels this owner holds in the shard, in name order, after `after`;
 * a new backup fetches each (engine/shardsync.c). Rare (a map change): the
 * scan over every channel is fine here. */
static void on_shard_req(const struct cluster_part *topic, const struct envelope *req,
                         const struct cluster_part *parts, int n)
{
    (void)topic;
    if (n != 1 || req->seq >= CLUSTER_SHARDS || parts[0].len > CODEC_CHANNEL_MAX) {
        cluster_reply_status(req, ENV_SHARD_REP, CHORUS_ERR_BAD_REQUEST, "malformed shard request");
        return;
    }
    uint64_t since;
    const char *owner;
    if (cluster_shard_role((unsigned)req->seq, &since, &owner) != CLUSTER_ROLE_OWNER ||
        !cluster_can_act()) {
        if (!defer(req, parts, n))
            cluster_reply_status(req, ENV_SHARD_REP, CHORUS_ERR_UNAVAILABLE,
                                 "shard ownership is moving; retry");
        return;
    }
    struct shard_collect c = {(unsigned)req->seq, (const char *)parts[0].data, parts[0].len, NULL, 0, 0};
    channel_foreach(collect_shard, &c);
    if (c.n > 1)
        qsort(c.out, c.n, sizeof *c.out, by_name);
    size_t limit = req->limit && req->limit < SHARD_NAMES_MAX ? req->limit : SHARD_NAMES_MAX;
    size_t k = c.n < limit ? c.n : limit;
    struct cluster_part *names = calloc(k + 1, sizeof *names);
    if (!names && k) {
        free(c.out);
        cluster_reply_status(req, ENV_SHARD_REP, CHORUS_ERR_UNAVAILABLE, "out of memory");
        return;
    }
    for (size_t i = 0; i < k; i++)
        names[i] = (struct cluster_part){(const unsigned char *)c.out[i]->name, c.out[i]->len};
    struct envelope e;
    cluster_env_init(&e, ENV_SHARD_REP);
    e.req_id = req->req_id;
    e.seq = req->seq;
    if (c.n > k)
        e.flags |= ENV_FLAG_MORE;
    cluster_send_to(req->origin, &e, names, (int)k);
    free(names);
    free(c.out);
}

void owner_start(void)
{
    cluster_handle(ENV_PUB_REQ, on_pub_req);
    cluster_handle(ENV_SYNC_REQ, on_sync_req);
    cluster_handle(ENV_SHARD_REQ, on_shard_req);
    cluster_on_map(owner_map_changed);
    cluster_on_tick(owner_tick);
}

void owner_stop(void)
{
    struct deferred *d, *tmp;
    DL_FOREACH_SAFE(deferred, d, tmp) {
        DL_DELETE(deferred, d);
        free(d);
    }
    ndeferred = 0;
}
