/* cluster.c - ZeroMQ links, membership, channel ownership and node-to-node
 * requests, all serviced from the lws event loop.
 *
 * ZMQ_FD is edge-triggered: every wake-up, and every zmq_* call made outside
 * the fd callback, must be followed by a drain until EAGAIN or messages sit
 * unnoticed. The periodic tick drains too, as a safety net. */
#include "cluster.h"
#include "channel.h"
#include "frame.h"
#include "log.h"
#include "metrics.h"
#include "mirror.h"
#include "presence.h"
#include "publish.h"
#include "replica.h"
#include "runtime.h"
#include "zap.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uthash.h>
#include <zmq.h>

#define TICK_US (100 * LWS_US_PER_MS)
#define DRAIN_BUDGET 20000          /* messages per wake-up before yielding to WebSockets */
#define MAX_PARTS 4096              /* payload frames accepted in one message */

/* One per node ever heard from; never freed while running (membership is small). */
struct member {
    char id[ENVELOPE_ID_MAX + 1];
    int64_t last_seen_ms;
    bool up;
    UT_hash_handle hh;
};

/* A channel some other node follows (from XPUB subscriptions); kept apart
 * from channel objects so following costs no channel state here. */
struct remote_topic {
    char *name;
    UT_hash_handle hh;
};

/* A --peer given by name: the endpoints it currently resolves to. */
struct peer_spec {
    char host[256];
    char port[8];
    char endpoints[16][64];
    int n;
};

static struct {
    bool enabled;
    const struct config *cfg;
    void *ctx;
    void *pub;                      /* XPUB: our messages out, peers' subscriptions in */
    void *sub;                      /* SUB: peers' messages in */
    void *zap;                      /* REP: CURVE client authentication */
    struct lws *pub_wsi, *sub_wsi, *zap_wsi;
    char self[ENVELOPE_ID_MAX + 1];
    char self_topic[ENVELOPE_ID_MAX + 8];
    size_t self_topic_len;
    char curve_public[41], curve_secret[41];
    struct member *members;
    struct remote_topic *remote;
    struct channel *beacons;        /* owned channels published to since their last POS */
    struct peer_spec peers[CONFIG_MAX_PEERS];
    int npeers;
    struct cluster_call *calls;     /* outstanding, oldest first */
    struct cluster_call *calls_tail;
    uint64_t next_call_id;
    int64_t last_heartbeat_ms, last_resolve_ms, last_presence_ms;
    int64_t started_ms;
    lws_sorted_usec_list_t tick, drain_soon;
} cl;

bool cluster_enabled(void) { return cl.enabled; }

bool cluster_ready(void)
{
    return !cl.enabled || runtime_now_ms() - cl.started_ms >= 3 * (int64_t)cl.cfg->heartbeat_ms;
}

/* ------------------------------------------------------------- ownership */

static uint32_t rendezvous_score(const char *node, const char *ch, size_t len)
{
    char key[ENVELOPE_ID_MAX + 1 + 256];
    size_t nl = strlen(node);
    uint32_t h;
    memcpy(key, node, nl);
    key[nl] = '\0';
    memcpy(key + nl + 1, ch, len);
    HASH_JEN(key, nl + 1 + len, h);
    return h;
}

/* The live member with the highest score owns the channel; ties go to the
 * smaller id so every node picks the same one. */
static const char *owner_of(const char *ch, size_t len)
{
    const char *best = cl.self;
    uint32_t best_score = rendezvous_score(cl.self, ch, len);
    for (struct member *m = cl.members; m; m = m->hh.next) {
        if (!m->up)
            continue;
        uint32_t s = rendezvous_score(m->id, ch, len);
        if (s > best_score || (s == best_score && strcmp(m->id, best) < 0)) {
            best = m->id;
            best_score = s;
        }
    }
    return best;
}

bool cluster_is_owner(const char *ch, size_t len)
{
    return !cl.enabled || owner_of(ch, len) == cl.self;
}

const char *cluster_backup_of(const char *ch, size_t len)
{
    if (!cl.enabled)
        return NULL;
    const char *owner = owner_of(ch, len);
    const char *best = NULL;
    uint32_t best_score = 0;
    /* The runner-up among live nodes, self included when self is not the owner. */
    if (owner != cl.self) {
        best = cl.self;
        best_score = rendezvous_score(cl.self, ch, len);
    }
    for (struct member *m = cl.members; m; m = m->hh.next) {
        if (!m->up || m->id == owner)
            continue;
        uint32_t s = rendezvous_score(m->id, ch, len);
        if (!best || s > best_score || (s == best_score && strcmp(m->id, best) < 0)) {
            best = m->id;
            best_score = s;
        }
    }
    return best == cl.self ? NULL : best;
}

/* ----------------------------------------------------------------- send */

static void drain_later(void);
static void render_metrics(struct sbuf *b);

/* Sends topic, header and parts as one multipart message. Returns -1 when
 * the message was not sent (high-water mark); the caller's protocol copes
 * (requests time out, gaps are repaired). */
static int send_env(const char *topic, size_t tlen, const struct envelope *env,
                    const struct cluster_part *parts, int nparts)
{
    unsigned char hdr[ENVELOPE_HEADER_MAX];
    size_t hl = envelope_encode(env, hdr);
    if (zmq_send(cl.pub, topic, tlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        metrics.cluster_send_drops++;
        drain_later();
        return -1;
    }
    /* Once the first frame is accepted the rest of a multipart message is too. */
    zmq_send(cl.pub, hdr, hl, nparts ? ZMQ_SNDMORE : 0);
    for (int i = 0; i < nparts; i++)
        zmq_send(cl.pub, parts[i].data, parts[i].len, i + 1 < nparts ? ZMQ_SNDMORE : 0);
    metrics.cluster_sent[env->type]++;
    drain_later();
    return 0;
}

void cluster_env_init(struct envelope *e, uint8_t type)
{
    memset(e, 0, sizeof *e);
    e->type = type;
    snprintf(e->origin, sizeof e->origin, "%s", cl.self);
}

int cluster_send_to(const char *node, const struct envelope *env, const struct cluster_part *parts,
                    int nparts)
{
    char topic[ENVELOPE_ID_MAX + 8];
    int n = snprintf(topic, sizeof topic, "!to:%s", node);
    return send_env(topic, (size_t)n + 1, env, parts, nparts);
}

/* Owner published: every node subscribed to "<channel>\0" gets the frame as encoded. */
static void on_sequenced(struct channel *ch, struct frame *f, uint64_t seq, int64_t ts_ms)
{
    struct envelope e;
    cluster_env_init(&e, ENV_MSG);
    snprintf(e.epoch, sizeof e.epoch, "%s", ch->epoch);
    e.seq = seq;
    e.ts_ms = ts_ms;
    if (f->binary)
        e.flags |= ENV_FLAG_BINARY;
    struct cluster_part p = {frame_payload(f), f->len};
    send_env(ch->name, ch->len + 1, &e, &p, 1);
    ch->last_sequenced_ms = ts_ms;
    if (!ch->beacon) {
        ch->beacon = true;
        ch->pins++;
        ch->beacon_next = cl.beacons;
        cl.beacons = ch;
    }
}

#define BEACON_QUIET_MS 200

/* After BEACON_QUIET_MS without a message, announce the channel's position
 * once so mirrors that lost the last messages notice and repair them. */
static void send_beacons(int64_t now)
{
    struct channel **pp = &cl.beacons;
    while (*pp) {
        struct channel *ch = *pp;
        if (now - ch->last_sequenced_ms < BEACON_QUIET_MS) {
            pp = &ch->beacon_next;
            continue;
        }
        *pp = ch->beacon_next;
        ch->beacon = false;
        if (!ch->mirror) {
            struct envelope e;
            cluster_env_init(&e, ENV_POS);
            snprintf(e.epoch, sizeof e.epoch, "%s", ch->epoch);
            e.seq = ch->seq;
            e.ts_ms = now;
            send_env(ch->name, ch->len + 1, &e, NULL, 0);
        }
        ch->pins--;
        channel_release(ch);
    }
}

static void on_created(struct channel *ch)
{
    struct remote_topic *t;
    HASH_FIND(hh, cl.remote, ch->name, ch->len, t);
    ch->remote_interest = t != NULL;
}

/* ------------------------------------------------------------- presence */

#define PRESENCE_REFRESH_MS 5000

static void send_presence(const char *topic, size_t tlen, const char *ch, int op,
                          const struct cluster_part *members, int n)
{
    struct cluster_part *parts = calloc((size_t)n + 1, sizeof *parts);
    if (!parts)
        return;
    parts[0] = (struct cluster_part){(const unsigned char *)ch, strlen(ch)};
    for (int i = 0; i < n; i++)
        parts[1 + i] = members[i];
    struct envelope e;
    cluster_env_init(&e, ENV_PRES);
    e.status = (uint16_t)op;
    send_env(topic, tlen, &e, parts, n + 1);
    free(parts);
}

void cluster_presence_send(const char *ch, bool join, const char *key, const json_t *member)
{
    if (!cl.enabled)
        return;
    char *text = member ? json_dumps(member, JSON_COMPACT) : NULL;
    struct cluster_part kv[2] = {{(const unsigned char *)key, strlen(key)},
                                 {(const unsigned char *)(text ? text : "{}"), text ? strlen(text) : 2}};
    send_presence(ch, strlen(ch) + 1, ch, join ? PRESENCE_JOIN : PRESENCE_LEAVE, kv, 2);
    free(text);
}

/* This node's full member list of a room, to a topic (broadcast or one node). */
static void send_presence_full(const char *topic, size_t tlen, const char *ch)
{
    struct cluster_part *members;
    char **texts;
    int n = presence_local_members(ch, &members, &texts);
    send_presence(topic, tlen, ch, PRESENCE_FULL, members, 2 * n);
    for (int i = 0; i < n; i++)
        free(texts[i]);
    free(texts);
    free(members);
}

static void refresh_one(const char *name, void *ud)
{
    (void)ud;
    send_presence_full(name, strlen(name) + 1, name);
}

static void handle_presence(const struct envelope *env, const struct cluster_part *parts, int n)
{
    if (n < 1 || !codec_channel_valid((const char *)parts[0].data, parts[0].len))
        return;
    const char *name = (const char *)parts[0].data;
    if (env->status == PRESENCE_ASK) {
        char ch[CODEC_CHANNEL_MAX + 1], topic[ENVELOPE_ID_MAX + 8];
        memcpy(ch, name, parts[0].len);
        ch[parts[0].len] = '\0';
        int tl = snprintf(topic, sizeof topic, "!to:%s", env->origin);
        send_presence_full(topic, (size_t)tl + 1, ch);
        return;
    }
    presence_remote(env->origin, name, parts[0].len, env->status, parts + 1, n - 1);
}

/* Local subscribers appeared or left: follow or drop the channel's stream. */
static void on_interest(struct channel *ch, bool on)
{
    /* Without local subscribers this node stops receiving the owner's
     * stream, so a mirror's state is stale from now on. */
    if (!on)
        ch->live = false;
    if (on && ch->ns->presence) {
        /* Learn who is already here on other nodes. */
        send_presence(ch->name, ch->len + 1, ch->name, PRESENCE_ASK, NULL, 0);
    }
    zmq_setsockopt(cl.sub, on ? ZMQ_SUBSCRIBE : ZMQ_UNSUBSCRIBE, ch->name, ch->len + 1);
    drain_later();
}

/* ---------------------------------------------------------------- calls */

static void call_unlink(struct cluster_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        cl.calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        cl.calls_tail = c->prev;
    c->prev = c->next = NULL;
    c->id = 0;
}

void cluster_call_cancel(struct cluster_call *c)
{
    if (c->id)
        call_unlink(c);
}

static void call_start(struct cluster_call *c, const char *target, cluster_call_cb *cb, void *ud)
{
    snprintf(c->target, sizeof c->target, "%s", target);
    c->id = ++cl.next_call_id;
    c->cb = cb;
    c->ud = ud;
    c->deadline_ms = runtime_now_ms() + cl.cfg->cluster_timeout_ms;
    c->next = NULL;
    c->prev = cl.calls_tail;
    if (cl.calls_tail)
        cl.calls_tail->next = c;
    else
        cl.calls = c;
    cl.calls_tail = c;
}

static struct cluster_call *call_find(uint64_t id)
{
    /* Replies come back roughly in order: the match is near the head. */
    for (struct cluster_call *c = cl.calls; c; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

static void calls_expire(int64_t now)
{
    /* Every call has the same timeout, so the list is in deadline order. */
    while (cl.calls && cl.calls->deadline_ms <= now) {
        struct cluster_call *c = cl.calls;
        call_unlink(c);
        metrics.cluster_call_timeouts++;
        c->cb(c, NULL, NULL, 0);
    }
}

/* A peer went down: nobody will answer what was asked of it. */
static void calls_fail_target(const char *node)
{
    struct cluster_call *c = cl.calls, *next;
    for (; c; c = next) {
        next = c->next;
        if (strcmp(c->target, node) != 0)
            continue;
        call_unlink(c);
        c->cb(c, NULL, NULL, 0);
        next = cl.calls; /* the callback may have changed the list */
    }
}

int cluster_forward_publish(const char *ch, size_t len, const char *data, size_t data_len,
                            bool binary, const char *client, const char *key,
                            struct cluster_call *call, cluster_call_cb *cb, void *ud)
{
    const char *owner = owner_of(ch, len);
    if (owner == cl.self)
        return -1;
    struct envelope e;
    cluster_env_init(&e, ENV_PUB_REQ);
    if (binary)
        e.flags |= ENV_FLAG_BINARY;
    call_start(call, owner, cb, ud);
    e.req_id = call->id;
    struct cluster_part parts[4] = {
        {(const unsigned char *)ch, len},
        {(const unsigned char *)data, data_len},
        {(const unsigned char *)(client ? client : ""), client ? strlen(client) : 0},
        {(const unsigned char *)(key ? key : ""), key ? strlen(key) : 0},
    };
    int rc = cluster_send_to(owner, &e, parts, 4);
    if (rc < 0) {
        call_unlink(call);
        return -1;
    }
    metrics.cluster_forwarded_publishes++;
    return 0;
}

int cluster_sync(const char *ch, size_t len, bool has_since, const char *epoch, uint64_t seq,
                 uint32_t limit, bool join, struct cluster_call *call, cluster_call_cb *cb,
                 void *ud)
{
    const char *owner = owner_of(ch, len);
    if (owner == cl.self)
        return -1;
    struct envelope e;
    cluster_env_init(&e, ENV_SYNC_REQ);
    if (join)
        e.flags |= ENV_FLAG_JOIN;
    if (has_since) {
        e.flags |= ENV_FLAG_HAS_SINCE;
        snprintf(e.epoch, sizeof e.epoch, "%s", epoch);
        e.seq = seq;
    }
    e.limit = limit;
    call_start(call, owner, cb, ud);
    e.req_id = call->id;
    struct cluster_part p = {(const unsigned char *)ch, len};
    if (cluster_send_to(owner, &e, &p, 1) < 0) {
        call_unlink(call);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------- owner requests */

static void reply_status(const struct envelope *req, uint8_t type, enum chorus_err code,
                         const char *msg)
{
    struct envelope e;
    cluster_env_init(&e, type);
    e.req_id = req->req_id;
    e.status = (uint16_t)(code + 1);
    struct cluster_part p = {(const unsigned char *)msg, strlen(msg)};
    cluster_send_to(req->origin, &e, &p, 1);
}

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
        reply_status(&req, ENV_PUB_REP, err, msg ? msg : "could not publish");
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

/* PUB_REQ [channel, data JSON, client id, key] -> PUB_REP {epoch, seq} once delivered */
static void handle_pub_req(const struct envelope *req, const struct cluster_part *parts, int n)
{
    if (n != 4 || !codec_channel_valid((const char *)parts[0].data, parts[0].len) ||
        parts[2].len >= 64 || parts[3].len > CODEC_KEY_MAX) {
        reply_status(req, ENV_PUB_REP, CHORUS_ERR_BAD_REQUEST, "malformed publish request");
        return;
    }
    const char *name = (const char *)parts[0].data;
    if (!cluster_is_owner(name, parts[0].len)) {
        reply_status(req, ENV_PUB_REP, CHORUS_ERR_UNAVAILABLE,
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
        reply_status(req, ENV_PUB_REP, CHORUS_ERR_BAD_REQUEST, "malformed publish data");
        return;
    }
    char client[64], key[CODEC_KEY_MAX + 1];
    memcpy(client, parts[2].data, parts[2].len);
    client[parts[2].len] = '\0';
    memcpy(key, parts[3].data, parts[3].len);
    key[parts[3].len] = '\0';
    snprintf(rp->origin, sizeof rp->origin, "%s", req->origin);
    rp->req_id = req->req_id;
    publish_submit(name, parts[0].len, (const char *)parts[1].data, parts[1].len, binary,
                   *client ? client : NULL, *key ? key : NULL, &rp->w, remote_pub_done, rp);
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

/* SYNC_REQ [channel] {since?, limit} -> SYNC_REP {epoch, seq, recovered} [channel, (seq+ts, msg)...] */
static void handle_sync_req(const struct envelope *req, const struct cluster_part *parts, int n)
{
    if (n != 1 || !codec_channel_valid((const char *)parts[0].data, parts[0].len)) {
        reply_status(req, ENV_SYNC_REP, CHORUS_ERR_BAD_REQUEST, "malformed sync request");
        return;
    }
    const char *name = (const char *)parts[0].data;
    size_t len = parts[0].len;
    if (!cluster_is_owner(name, len)) {
        reply_status(req, ENV_SYNC_REP, CHORUS_ERR_UNAVAILABLE, "channel ownership is moving; retry");
        return;
    }
    bool join = req->flags & ENV_FLAG_JOIN;
    struct channel *ch = join ? channel_get(name, len) : channel_find(name, len);
    if (!ch && join) {
        reply_status(req, ENV_SYNC_REP, CHORUS_ERR_UNAVAILABLE, "out of memory");
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
    channel_claim(ch); /* we may have just become the owner */
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
    struct sync_collect s = {calloc(1 + 2 * (size_t)cap, sizeof *s.parts), malloc(ENV_SYNC_ITEM_LEN * (size_t)cap + 1), 0};
    if (!s.parts || !s.buf) {
        free(s.parts);
        free(s.buf);
        reply_status(req, ENV_SYNC_REP, CHORUS_ERR_UNAVAILABLE, "out of memory");
        return;
    }
    s.parts[0] = parts[0];
    if (!has_since)
        channel_history_each(ch, 0, limit, now, collect, &s);
    else if (same_epoch)
        channel_history_each(ch, req->seq, -1, now, collect, &s);
    cluster_send_to(req->origin, &e, s.parts, 1 + 2 * s.n);
    free(s.parts);
    free(s.buf);
}

/* --------------------------------------------------------------- receive */

static void member_seen(const char *id, int64_t now)
{
    struct member *m;
    HASH_FIND_STR(cl.members, id, m);
    if (!m) {
        m = calloc(1, sizeof *m);
        if (!m)
            return;
        snprintf(m->id, sizeof m->id, "%s", id);
        HASH_ADD_STR(cl.members, id, m);
    }
    m->last_seen_ms = now;
    if (!m->up) {
        m->up = true;
        log_info("event=peer_up peer=%s", m->id);
    }
}

static void handle_message(const struct cluster_part *topic, const struct envelope *env,
                           const struct cluster_part *parts, int n)
{
    int64_t now = runtime_now_ms();
    if (!strcmp(env->origin, cl.self))
        return; /* our own traffic, e.g. through a forwarder or a self-listed peer */
    metrics.cluster_received[env->type]++;
    member_seen(env->origin, now);

    switch (env->type) {
    case ENV_HEARTBEAT:
        return;
    case ENV_MSG: {
        if (n != 1 || topic->len < 2 || topic->data[topic->len - 1] != '\0')
            return;
        struct channel *ch = channel_find((const char *)topic->data, topic->len - 1);
        if (!ch || !ch->nsubs) {
            metrics.cluster_unwanted++;
            return;
        }
        mirror_on_msg(ch, env, parts[0].data, parts[0].len);
        return;
    }
    case ENV_POS: {
        if (n != 0 || topic->len < 2 || topic->data[topic->len - 1] != '\0')
            return;
        struct channel *ch = channel_find((const char *)topic->data, topic->len - 1);
        if (ch && ch->nsubs)
            mirror_on_pos(ch, env);
        return;
    }
    case ENV_PRES:
        handle_presence(env, parts, n);
        return;
    case ENV_PUB_REQ:
        handle_pub_req(env, parts, n);
        return;
    case ENV_SYNC_REQ:
        handle_sync_req(env, parts, n);
        return;
    case ENV_REPL:
        replica_on_repl(env, parts, n);
        return;
    case ENV_REPL_ACK:
        replica_on_ack(env, parts, n);
        return;
    case ENV_PUB_REP:
    case ENV_SYNC_REP: {
        struct cluster_call *c = call_find(env->req_id);
        if (!c)
            return; /* timed out or cancelled already */
        call_unlink(c);
        c->cb(c, env, parts, n);
        return;
    }
    }
}

/* Reads one multipart message; returns false when none is waiting. */
static bool recv_one(void *sock, bool *bad)
{
    zmq_msg_t frames[2 + 1];
    static zmq_msg_t *more;
    static int more_cap;
    int n = 0, more_flag = 1;
    *bad = false;

    zmq_msg_init(&frames[0]);
    if (zmq_msg_recv(&frames[0], sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&frames[0]);
        return false;
    }
    n = 1;
    more_flag = zmq_msg_more(&frames[0]);
    if (!more_flag) {
        zmq_msg_close(&frames[0]);
        *bad = true;
        return true;
    }
    zmq_msg_init(&frames[1]);
    zmq_msg_recv(&frames[1], sock, 0);
    n = 2;
    int nparts = 0;
    while (zmq_msg_more(nparts ? &more[nparts - 1] : &frames[1])) {
        if (nparts == more_cap) {
            int ncap = more_cap ? more_cap * 2 : 16;
            zmq_msg_t *nm = realloc(more, sizeof *nm * (size_t)ncap);
            if (!nm)
                break;
            more = nm;
            more_cap = ncap;
        }
        zmq_msg_init(&more[nparts]);
        zmq_msg_recv(&more[nparts], sock, 0);
        nparts++;
        if (nparts > MAX_PARTS)
            *bad = true;
    }

    struct envelope env;
    struct cluster_part topic = {zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0])};
    if (!*bad && envelope_decode(zmq_msg_data(&frames[1]), zmq_msg_size(&frames[1]), &env)) {
        struct cluster_part *parts = nparts ? malloc(sizeof *parts * (size_t)nparts) : NULL;
        if (!nparts || parts) {
            for (int i = 0; i < nparts; i++)
                parts[i] = (struct cluster_part){zmq_msg_data(&more[i]), zmq_msg_size(&more[i])};
            handle_message(&topic, &env, parts, nparts);
        }
        free(parts);
    } else {
        *bad = true;
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
    for (int i = 0; i < nparts; i++)
        zmq_msg_close(&more[i]);
    return true;
}

/* XPUB delivers subscriptions: byte 1 = subscribe, 0 = unsubscribe, then the topic. */
static void handle_subscription(const unsigned char *d, size_t len)
{
    if (len < 3 || d[len - 1] != '\0' || d[1] == '!')
        return;
    const char *name = (const char *)d + 1;
    size_t nl = len - 2;
    if (!codec_channel_valid(name, nl))
        return;
    struct remote_topic *t;
    struct channel *ch = channel_find(name, nl);
    HASH_FIND(hh, cl.remote, name, nl, t);
    if (d[0] == 1 && !t) {
        t = calloc(1, sizeof *t);
        if (!t || !(t->name = strndup(name, nl))) {
            free(t);
            return;
        }
        HASH_ADD_KEYPTR(hh, cl.remote, t->name, nl, t);
        if (ch)
            ch->remote_interest = true;
    } else if (d[0] == 0 && t) {
        HASH_DEL(cl.remote, t);
        free(t->name);
        free(t);
        if (ch) {
            ch->remote_interest = false;
            channel_release(ch);
        }
    }
}

static int events_of(void *sock)
{
    int ev = 0;
    size_t sl = sizeof ev;
    zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &sl);
    return ev;
}

static void zap_serve(void);

static void drain(void)
{
    int budget = DRAIN_BUDGET;
    bool bad;
    while (budget > 0 && (events_of(cl.sub) & ZMQ_POLLIN)) {
        if (!recv_one(cl.sub, &bad))
            break;
        if (bad)
            metrics.cluster_bad_messages++;
        budget--;
    }
    while (budget > 0 && (events_of(cl.pub) & ZMQ_POLLIN)) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, cl.pub, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            break;
        }
        handle_subscription(zmq_msg_data(&m), zmq_msg_size(&m));
        zmq_msg_close(&m);
        budget--;
    }
    if (cl.zap)
        zap_serve();
    if (budget <= 0)
        drain_later(); /* more is waiting; let WebSocket work run first */
}

static void drain_cb(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    drain();
}

static void drain_later(void)
{
    if (rt.ctx)
        lws_sul_schedule(rt.ctx, 0, &cl.drain_soon, drain_cb, 1);
}

/* ------------------------------------------------------------------- ZAP */

/* CURVE lets any client that knows the server key connect; the ZAP handler
 * admits only clients presenting the cluster's own public key. */
static void zap_serve(void)
{
    uint8_t key[32];
    bool ok;
    zmq_z85_decode(key, cl.curve_public);
    while ((events_of(cl.zap) & ZMQ_POLLIN) && zap_serve_one(cl.zap, ZMQ_DONTWAIT, key, &ok) > 0)
        if (!ok) {
            metrics.cluster_auth_failures++;
            log_warn("event=cluster_auth_refused msg=\"a node presented an unknown CURVE key\"");
        }
}

/* ------------------------------------------------------------ membership */

static void heartbeat_and_liveness(int64_t now)
{
    if (now - cl.last_heartbeat_ms >= cl.cfg->heartbeat_ms) {
        struct envelope e;
        cluster_env_init(&e, ENV_HEARTBEAT);
        e.ts_ms = now;
        send_env("!hb", 4, &e, NULL, 0);
        cl.last_heartbeat_ms = now;
    }
    for (struct member *m = cl.members; m; m = m->hh.next)
        if (m->up && now - m->last_seen_ms > cl.cfg->peer_timeout_ms) {
            m->up = false;
            log_warn("event=peer_down peer=%s silent_ms=%lld", m->id,
                     (long long)(now - m->last_seen_ms));
            calls_fail_target(m->id);
            presence_node_down(m->id);
        }
}

/* Splits tcp://HOST:PORT; false when it is not of that form. */
static bool split_endpoint(const char *ep, char *host, size_t hcap, char *port, size_t pcap)
{
    if (strncmp(ep, "tcp://", 6) != 0)
        return false;
    const char *h = ep + 6, *colon = strrchr(h, ':');
    if (!colon || colon == h || (size_t)(colon - h) >= hcap || strlen(colon + 1) >= pcap ||
        !*(colon + 1))
        return false;
    memcpy(host, h, (size_t)(colon - h));
    host[colon - h] = '\0';
    strcpy(port, colon + 1);
    return true;
}

/* Keeps the SUB connected to exactly the addresses each peer name resolves
 * to now, so a Kubernetes headless service's pods come and go by themselves.
 * getaddrinfo blocks the loop briefly; it runs every peer_resolve_interval. */
static void resolve_peers(void)
{
    for (int i = 0; i < cl.npeers; i++) {
        struct peer_spec *p = &cl.peers[i];
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
        char now_eps[16][64];
        int nn = 0;
        if (getaddrinfo(p->host, p->port, &hints, &res) != 0) {
            log_warn("event=peer_resolve_failed host=%s", p->host);
            continue;
        }
        for (struct addrinfo *a = res; a && nn < 16; a = a->ai_next) {
            char ip[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &((struct sockaddr_in *)a->ai_addr)->sin_addr, ip, sizeof ip);
            snprintf(now_eps[nn], sizeof now_eps[nn], "tcp://%s:%s", ip, p->port);
            bool dup = false;
            for (int k = 0; k < nn; k++)
                dup |= !strcmp(now_eps[k], now_eps[nn]);
            if (!dup)
                nn++;
        }
        freeaddrinfo(res);
        for (int k = 0; k < p->n; k++) {
            bool keep = false;
            for (int j = 0; j < nn; j++)
                keep |= !strcmp(p->endpoints[k], now_eps[j]);
            if (!keep) {
                zmq_disconnect(cl.sub, p->endpoints[k]);
                log_info("event=peer_disconnect endpoint=%s", p->endpoints[k]);
            }
        }
        for (int j = 0; j < nn; j++) {
            bool had = false;
            for (int k = 0; k < p->n; k++)
                had |= !strcmp(p->endpoints[k], now_eps[j]);
            if (!had) {
                zmq_connect(cl.sub, now_eps[j]);
                log_info("event=peer_connect endpoint=%s", now_eps[j]);
            }
        }
        memcpy(p->endpoints, now_eps, sizeof now_eps);
        p->n = nn;
    }
    drain_later();
}

static void tick(lws_sorted_usec_list_t *sul)
{
    int64_t now = runtime_now_ms();
    heartbeat_and_liveness(now);
    calls_expire(now);
    replica_tick(now);
    send_beacons(now);
    if (now - cl.last_presence_ms >= PRESENCE_REFRESH_MS) {
        /* Deltas can be lost at the high-water mark; full lists converge. */
        cl.last_presence_ms = now;
        presence_each_local_room(refresh_one, NULL);
    }
    if (cl.npeers && now - cl.last_resolve_ms >= (int64_t)cl.cfg->peer_resolve_interval * 1000) {
        cl.last_resolve_ms = now;
        resolve_peers();
    }
    drain();
    lws_sul_schedule(rt.ctx, 0, sul, tick, TICK_US);
}

/* --------------------------------------------------------- lws adoption */

int cluster_zmq_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        drain();
        return 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (wsi == cl.pub_wsi)
            cl.pub_wsi = NULL;
        if (wsi == cl.sub_wsi)
            cl.sub_wsi = NULL;
        if (wsi == cl.zap_wsi)
            cl.zap_wsi = NULL;
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* lws closes what it adopts, and libzmq must keep its own fd: adopt a dup. */
static struct lws *adopt(struct lws_vhost *vh, void *sock)
{
    int fd;
    size_t sl = sizeof fd;
    lws_sock_file_fd_type u;
    if (zmq_getsockopt(sock, ZMQ_FD, &fd, &sl) != 0)
        return NULL;
    u.filefd = dup(fd);
    if (u.filefd < 0)
        return NULL;
    struct lws *w = lws_adopt_descriptor_vhost(vh, LWS_ADOPT_RAW_FILE_DESC, u, "chorus-zmq", NULL);
    if (!w)
        close(u.filefd);
    return w;
}

static void set_int(void *sock, int opt, int v) { zmq_setsockopt(sock, opt, &v, sizeof v); }

static int curve_setup(void *sock, bool server_role)
{
    if (!cl.cfg->cluster_curve_secret)
        return 0;
    if (server_role) {
        set_int(sock, ZMQ_CURVE_SERVER, 1);
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "chorus", 6);
        return zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, cl.curve_secret, 40);
    }
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, cl.curve_public, 40) ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, cl.curve_public, 40) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, cl.curve_secret, 40))
        return -1;
    return 0;
}

static void common_options(void *sock)
{
    set_int(sock, ZMQ_LINGER, 0);
    set_int(sock, ZMQ_SNDHWM, cl.cfg->cluster_hwm);
    set_int(sock, ZMQ_RCVHWM, cl.cfg->cluster_hwm);
    set_int(sock, ZMQ_RECONNECT_IVL, 100);
    set_int(sock, ZMQ_RECONNECT_IVL_MAX, 2000);
    set_int(sock, ZMQ_HEARTBEAT_IVL, 1000);
    set_int(sock, ZMQ_HEARTBEAT_TIMEOUT, 3000);
    set_int(sock, ZMQ_HEARTBEAT_TTL, 3000);
    set_int(sock, ZMQ_TCP_KEEPALIVE, 1);
}

/* Rewrites tcp://HOST:PORT as tcp://HOST:PORT+delta (the forwarder's second socket). */
static bool endpoint_plus(const char *ep, int delta, char *out, size_t cap)
{
    char host[256], port[8];
    if (!split_endpoint(ep, host, sizeof host, port, sizeof port))
        return false;
    snprintf(out, cap, "tcp://%s:%d", host, atoi(port) + delta);
    return true;
}

int cluster_start(const struct config *cfg, struct lws_vhost *vh)
{
    static const struct channel_hooks hooks = {on_interest, on_sequenced, on_created};
    cl.cfg = cfg;
    if (!cfg->cluster_bind && !cfg->forwarder_connect)
        return 0;

    snprintf(cl.self, sizeof cl.self, "%s", cfg->node_id);
    cl.self_topic_len = (size_t)snprintf(cl.self_topic, sizeof cl.self_topic, "!to:%s", cl.self) + 1;
    if (cfg->cluster_curve_secret) {
        if (!zmq_has("curve") || strlen(cfg->cluster_curve_secret) != 40 ||
            zmq_curve_public(cl.curve_public, cfg->cluster_curve_secret) != 0) {
            log_error("event=cluster_start_failed msg=\"cluster-curve-secret must be a 40-character Z85 CURVE secret key and libzmq must support CURVE\"");
            return -1;
        }
        snprintf(cl.curve_secret, sizeof cl.curve_secret, "%s", cfg->cluster_curve_secret);
    }

    cl.ctx = zmq_ctx_new();
    if (cfg->cluster_curve_secret) {
        cl.zap = zmq_socket(cl.ctx, ZMQ_REP);
        set_int(cl.zap, ZMQ_LINGER, 0);
        if (zmq_bind(cl.zap, ZAP_ENDPOINT) != 0)
            goto fail;
    }
    cl.pub = zmq_socket(cl.ctx, ZMQ_XPUB);
    cl.sub = zmq_socket(cl.ctx, ZMQ_SUB);
    common_options(cl.pub);
    common_options(cl.sub);
    /* Refuse rather than drop silently at the high-water mark (counted). */
    set_int(cl.pub, ZMQ_XPUB_NODROP, 1);

    if (cfg->forwarder_connect) {
        char sub_ep[300];
        if (!endpoint_plus(cfg->forwarder_connect, 1, sub_ep, sizeof sub_ep) ||
            curve_setup(cl.pub, false) || curve_setup(cl.sub, false) ||
            zmq_connect(cl.pub, cfg->forwarder_connect) || zmq_connect(cl.sub, sub_ep))
            goto fail;
    } else {
        if (curve_setup(cl.pub, true) || curve_setup(cl.sub, false) ||
            zmq_bind(cl.pub, cfg->cluster_bind) != 0)
            goto fail;
        for (int i = 0; i < cfg->n_peer; i++) {
            struct peer_spec *p = &cl.peers[cl.npeers];
            if (!strncmp(cfg->peer[i], "ipc://", 6)) {
                /* Local workers (--workers): nothing to resolve. */
                if (zmq_connect(cl.sub, cfg->peer[i]) != 0)
                    goto fail;
                continue;
            }
            if (!split_endpoint(cfg->peer[i], p->host, sizeof p->host, p->port, sizeof p->port)) {
                log_error("event=cluster_start_failed peer=%s msg=\"peers must be tcp://HOST:PORT\"",
                          cfg->peer[i]);
                goto fail_quiet;
            }
            cl.npeers++;
        }
    }
    zmq_setsockopt(cl.sub, ZMQ_SUBSCRIBE, "!hb", 4);
    zmq_setsockopt(cl.sub, ZMQ_SUBSCRIBE, cl.self_topic, cl.self_topic_len);

    cl.pub_wsi = adopt(vh, cl.pub);
    cl.sub_wsi = adopt(vh, cl.sub);
    if (cl.zap)
        cl.zap_wsi = adopt(vh, cl.zap);
    if (!cl.pub_wsi || !cl.sub_wsi || (cl.zap && !cl.zap_wsi))
        goto fail;

    cl.enabled = true;
    cl.started_ms = runtime_now_ms();
    channel_set_hooks(&hooks);
    metrics_set_extra(render_metrics);
    resolve_peers();
    cl.last_resolve_ms = runtime_now_ms();
    lws_sul_schedule(rt.ctx, 0, &cl.tick, tick, TICK_US);
    log_info("event=cluster_started node=%s bind=%s forwarder=%s peers=%d curve=%s", cl.self,
             cfg->cluster_bind ? cfg->cluster_bind : "-",
             cfg->forwarder_connect ? cfg->forwarder_connect : "-", cl.npeers,
             cfg->cluster_curve_secret ? "on" : "off");
    return 0;

fail:
    log_error("event=cluster_start_failed bind=%s error=%s", cfg->cluster_bind ? cfg->cluster_bind : "-",
              zmq_strerror(zmq_errno()));
fail_quiet:
    cluster_stop();
    return -1;
}

void cluster_stop(void)
{
    if (rt.ctx) {
        lws_sul_cancel(&cl.tick);
        lws_sul_cancel(&cl.drain_soon);
    }
    while (cl.beacons) {
        struct channel *ch = cl.beacons;
        cl.beacons = ch->beacon_next;
        ch->beacon = false;
        ch->pins--;
    }
    /* Callers' calls die with their owners; just forget them. */
    while (cl.calls)
        call_unlink(cl.calls);
    if (cl.pub)
        zmq_close(cl.pub);
    if (cl.sub)
        zmq_close(cl.sub);
    if (cl.zap)
        zmq_close(cl.zap);
    if (cl.ctx)
        zmq_ctx_term(cl.ctx);
    struct member *m, *tmp;
    HASH_ITER(hh, cl.members, m, tmp) {
        HASH_DEL(cl.members, m);
        free(m);
    }
    struct remote_topic *t, *ttmp;
    HASH_ITER(hh, cl.remote, t, ttmp) {
        HASH_DEL(cl.remote, t);
        free(t->name);
        free(t);
    }
    const struct config *cfg = cl.cfg;
    memset(&cl, 0, sizeof cl);
    cl.cfg = cfg;
    channel_set_hooks(NULL);
}

static void render_metrics(struct sbuf *b)
{
    if (!cl.enabled)
        return;
    static const char *const types[11] = {"", "msg", "heartbeat", "pub_req", "pub_rep", "sync_req", "sync_rep", "repl", "repl_ack", "pos", "presence"};
    family(b, "chorus_cluster_messages_sent_total", "counter", "Node-to-node messages sent, by type.");
    for (int i = 1; i < 11; i++)
        put(b, "chorus_cluster_messages_sent_total{type=\"%s\"} %llu\n", types[i],
            (unsigned long long)metrics.cluster_sent[i]);
    family(b, "chorus_cluster_messages_received_total", "counter", "Node-to-node messages received, by type.");
    for (int i = 1; i < 11; i++)
        put(b, "chorus_cluster_messages_received_total{type=\"%s\"} %llu\n", types[i],
            (unsigned long long)metrics.cluster_received[i]);
    family(b, "chorus_cluster_replication_total", "counter", "Replication to backup nodes, by event.");
    put(b, "chorus_cluster_replication_total{event=\"sent\"} %llu\n", (unsigned long long)metrics.replicated);
    put(b, "chorus_cluster_replication_total{event=\"resent\"} %llu\n", (unsigned long long)metrics.replication_resends);
    put(b, "chorus_cluster_replication_total{event=\"refused\"} %llu\n", (unsigned long long)metrics.replication_refused);
    put(b, "chorus_cluster_replication_total{event=\"unreplicated\"} %llu\n", (unsigned long long)metrics.unreplicated);
    family(b, "chorus_cluster_send_drops_total", "counter", "Node-to-node messages refused at the high-water mark.");
    put(b, "chorus_cluster_send_drops_total %llu\n", (unsigned long long)metrics.cluster_send_drops);
    family(b, "chorus_cluster_unwanted_total", "counter", "Channel messages received for channels without local subscribers.");
    put(b, "chorus_cluster_unwanted_total %llu\n", (unsigned long long)metrics.cluster_unwanted);
    family(b, "chorus_cluster_bad_messages_total", "counter", "Malformed node-to-node messages dropped.");
    put(b, "chorus_cluster_bad_messages_total %llu\n", (unsigned long long)metrics.cluster_bad_messages);
    family(b, "chorus_cluster_auth_failures_total", "counter", "Node connections refused by CURVE authentication.");
    put(b, "chorus_cluster_auth_failures_total %llu\n", (unsigned long long)metrics.cluster_auth_failures);
    family(b, "chorus_cluster_forwarded_publishes_total", "counter", "Publishes forwarded to another node that owns the channel.");
    put(b, "chorus_cluster_forwarded_publishes_total %llu\n", (unsigned long long)metrics.cluster_forwarded_publishes);
    family(b, "chorus_cluster_call_timeouts_total", "counter", "Requests to channel owners that got no answer in time.");
    put(b, "chorus_cluster_call_timeouts_total %llu\n", (unsigned long long)metrics.cluster_call_timeouts);
    family(b, "chorus_cluster_gaps_total", "counter", "Sequence gaps seen in owners' streams, by outcome.");
    put(b, "chorus_cluster_gaps_total{outcome=\"detected\"} %llu\n", (unsigned long long)metrics.gaps_detected);
    put(b, "chorus_cluster_gaps_total{outcome=\"repaired\"} %llu\n", (unsigned long long)metrics.gaps_repaired);
    put(b, "chorus_cluster_gaps_total{outcome=\"unrepaired\"} %llu\n", (unsigned long long)metrics.gaps_unrepaired);
    struct cluster_peer_info peers[64];
    int np = cluster_peers(peers, 64);
    family(b, "chorus_cluster_peer_up", "gauge", "1 when the peer's heartbeats arrive, else 0.");
    for (int i = 0; i < np; i++)
        put(b, "chorus_cluster_peer_up{peer=\"%s\"} %d\n", peers[i].node, peers[i].up ? 1 : 0);
}

int cluster_peers(struct cluster_peer_info *out, int max)
{
    int n = 0;
    for (struct member *m = cl.members; m && n < max; m = m->hh.next, n++)
        out[n] = (struct cluster_peer_info){m->id, m->up, m->last_seen_ms};
    return n;
}
