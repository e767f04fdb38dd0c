/* shardsync.c - a new backup fetches the state of its shard's channels
 * (shardsync.h). */
#include "shardsync.h"
#include "channel.h"
#include "cluster.h"
#include "frame.h"
#include "log.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

#define NAMES_PER_PAGE 256
#define FETCH_WINDOW 32      /* channel fetches in flight, over every shard */
#define RETRY_MS 200

/* One shard's progress, for this node's current role in it. */
struct shard_state {
    enum cluster_role role;
    uint64_t since;          /* backup: the map version this state is for */
    bool synced;
    bool started;            /* the first page was asked for */
    bool more;               /* pages after `after` remain */
    bool listing;            /* a page request is out */
    int64_t retry_at_ms;
    struct cluster_call call;
    char after[CODEC_CHANNEL_MAX + 1];
    size_t after_len;
    char **names;            /* the current page, fetched from `next` on */
    int nnames, next;
    int inflight;
    unsigned fetched;        /* channels fetched so far, for the log */
    int64_t started_ms;
};

/* One channel fetch; forgets its result when the shard's state moved on. */
struct fetch {
    struct cluster_call call;
    unsigned shard;
    uint64_t since;
    struct fetch *prev, *next;   /* every fetch in flight (utlist DL), freed at stop */
    size_t len;
    char name[];
};

static struct {
    bool on;
    struct shard_state s[CLUSTER_SHARDS];
    int inflight;
    struct fetch *fetches;
} ss;

static void free_names(struct shard_state *st)
{
    for (int i = 0; i < st->nnames; i++)
        free(st->names[i]);
    free(st->names);
    st->names = NULL;
    st->nnames = st->next = 0;
}

static void report(void)
{
    uint64_t mask = 0;
    for (unsigned i = 0; i < CLUSTER_SHARDS; i++)
        if (ss.s[i].synced)
            mask |= UINT64_C(1) << i;
    cluster_set_synced(mask);
}

/* Starts over after a failure (the owner moved or did not answer):
 * fetching a channel twice is harmless, channel_merge keeps each seq once. */
static void restart(struct shard_state *st)
{
    if (st->listing)
        cluster_call_cancel(&st->call);
    st->listing = false;
    free_names(st);
    st->started = st->more = false;
    st->after_len = 0;
    st->retry_at_ms = runtime_now_ms() + RETRY_MS;
}

static void done_if_complete(unsigned shard)
{
    struct shard_state *st = &ss.s[shard];
    if (st->synced || !st->started || st->more || st->listing || st->next < st->nnames ||
        st->inflight)
        return;
    st->synced = true;
    free_names(st);
    log_debug("event=shard_synced shard=%u channels=%u ms=%lld", shard, st->fetched,
             (long long)(runtime_now_ms() - st->started_ms));
    report();
}

struct collected {
    struct hist_entry *in;
    uint32_t n, cap;
};

static void collect_one(struct frame *f, uint64_t seq, int64_t ts, void *ud)
{
    struct collected *c = ud;
    if (c->n < c->cap)
        c->in[c->n++] = (struct hist_entry){frame_ref(f), seq, ts};
}

/* A backup holds this channel now: a promotion continues its epoch. */
static void mark_held(struct channel *ch)
{
    ch->mirror = true;
    ch->replica = true;
    uint64_t gen = cluster_shard_gen(ch->name, ch->len);
    if (gen > ch->repl_gen)
        ch->repl_gen = gen;
}

/* ----------------------------------------------------------- channels */

/* The owner's idempotency keys (owner.c's format), for the epoch they
 * belong to. */
static void take_keys(struct channel *ch, const char *epoch, const struct cluster_part *keys)
{
    if (!keys || strcmp(epoch, ch->epoch) != 0)
        return;
    const unsigned char *p = keys->data, *end = keys->data + keys->len;
    char key[CODEC_KEY_MAX + 1];
    while (end - p >= 9) {
        uint64_t seq = 0;
        for (int i = 0; i < 8; i++)
            seq = seq << 8 | p[i];
        size_t kl = p[8];
        p += 9;
        if (kl > CODEC_KEY_MAX || (size_t)(end - p) < kl)
            return;
        memcpy(key, p, kl);
        key[kl] = '\0';
        p += kl;
        channel_key_record(ch, key, seq, runtime_now_ms());
    }
}

static void on_fetch(struct cluster_call *call, const struct envelope *rep,
                     const struct cluster_part *parts, int n)
{
    struct fetch *f = call->ud;
    struct shard_state *st = &ss.s[f->shard];
    DL_DELETE(ss.fetches, f);
    ss.inflight--;
    bool current = st->role == CLUSTER_ROLE_BACKUP && st->since == f->since && !st->synced;
    if (current)
        st->inflight--;
    if (!current) {
        free(f);
        return;
    }
    if (cluster_reply_code(rep) != CHORUS_ERR__COUNT) {
        restart(st);
        free(f);
        return;
    }
    struct channel *ch = *rep->epoch ? channel_get(f->name, f->len) : NULL;
    const struct cluster_part *keys = NULL;
    if (rep->flags & ENV_FLAG_KEYS && n > 1)
        keys = &parts[--n];
    if (ch && !ch->nsubs && !ch->sync) {
        int cap = n > 1 ? (n - 1) / 2 : 0;
        struct collected c = {cap ? calloc((size_t)cap, sizeof *c.in) : NULL, 0, (uint32_t)cap};
        if (c.in)
            cluster_sync_each(parts, n, collect_one, &c);
        struct hist_entry *in = c.in;
        uint32_t k = c.n;
        channel_merge(ch, rep->epoch, rep->seq, in, k);
        for (uint32_t i = 0; i < k; i++)
            frame_unref(in[i].f);
        free(in);
        take_keys(ch, rep->epoch, keys);
        mark_held(ch);
        channel_release(ch);
    } else if (ch && ch->live && !ch->sync) {
        /* Local subscribers follow it: its state is the owner's stream. */
        take_keys(ch, rep->epoch, keys);
        mark_held(ch);
    } else if (ch) {
        /* A join or repair is running: ask again once it is done. */
        channel_release(ch);
        restart(st);
        free(f);
        return;
    }
    st->fetched++;
    free(f);
    done_if_complete((unsigned)(st - ss.s));
}

static void pump(unsigned shard)
{
    struct shard_state *st = &ss.s[shard];
    while (st->next < st->nnames && ss.inflight < FETCH_WINDOW) {
        const char *name = st->names[st->next];
        size_t len = strlen(name);
        /* Every channel is fetched, a live mirror's too: its stream gave it
         * the messages, but only the owner has the keys published before
         * this node became a backup (a retry must still find them). */
        struct fetch *f = malloc(sizeof *f + len + 1);
        if (!f)
            return;
        *f = (struct fetch){.shard = shard, .since = st->since, .len = len};
        memcpy(f->name, name, len + 1);
        if (cluster_sync_state(name, len, &f->call, on_fetch, f) < 0) {
            free(f);
            restart(st);
            return;
        }
        DL_APPEND(ss.fetches, f);
        st->next++;
        st->inflight++;
        ss.inflight++;
    }
}

/* -------------------------------------------------------------- pages */

static void on_page(struct cluster_call *call, const struct envelope *rep,
                    const struct cluster_part *parts, int n)
{
    struct shard_state *st = call->ud;
    st->listing = false;
    if (cluster_reply_code(rep) != CHORUS_ERR__COUNT || !ss.on) {
        restart(st);
        return;
    }
    free_names(st);
    st->names = n ? calloc((size_t)n, sizeof *st->names) : NULL;
    for (int i = 0; st->names && i < n; i++) {
        if (!parts[i].len || parts[i].len > CODEC_CHANNEL_MAX || !(st->names[st->nnames] = malloc(parts[i].len + 1)))
            continue;
        memcpy(st->names[st->nnames], parts[i].data, parts[i].len);
        st->names[st->nnames][parts[i].len] = '\0';
        st->nnames++;
    }
    if (n && !st->names) {
        restart(st);
        return;
    }
    st->more = rep->flags & ENV_FLAG_MORE;
    if (n) {
        memcpy(st->after, parts[n - 1].data, parts[n - 1].len <= CODEC_CHANNEL_MAX ? parts[n - 1].len : 0);
        st->after_len = parts[n - 1].len <= CODEC_CHANNEL_MAX ? parts[n - 1].len : 0;
    }
    unsigned shard = (unsigned)(st - ss.s);
    pump(shard);
    done_if_complete(shard);
}

static void advance(unsigned shard, int64_t now)
{
    struct shard_state *st = &ss.s[shard];
    if (st->synced || st->role != CLUSTER_ROLE_BACKUP || st->listing || now < st->retry_at_ms)
        return;
    pump(shard);
    if (st->next < st->nnames || st->inflight || (st->started && !st->more))
        return;
    if (cluster_shard_list(shard, st->after, st->after_len, NAMES_PER_PAGE, &st->call, on_page,
                           st) < 0) {
        st->retry_at_ms = now + RETRY_MS;
        return;
    }
    if (!st->started)
        st->started_ms = now;
    st->started = st->listing = true;
}

static void tick(int64_t now)
{
    (void)now;
    int64_t t = runtime_now_ms();
    for (unsigned i = 0; i < CLUSTER_SHARDS; i++)
        advance(i, t);
}

/* ---------------------------------------------------------------- map */

static void reset(struct shard_state *st, enum cluster_role role, uint64_t since, bool synced)
{
    restart(st);
    st->role = role;
    st->since = since;
    st->synced = synced;
    st->retry_at_ms = 0;
    st->fetched = 0;
    /* calls in flight see the new since and drop their results */
    st->inflight = 0;
}

static void on_map(void)
{
    bool changed = false;
    for (unsigned i = 0; i < CLUSTER_SHARDS; i++) {
        struct shard_state *st = &ss.s[i];
        uint64_t since;
        const char *owner;
        enum cluster_role role = cluster_shard_role(i, &since, &owner);
        if (role == st->role && (role != CLUSTER_ROLE_BACKUP || since == st->since))
            continue;
        /* An owner holds its shard; one that just became its backup still
         * does (replica.c keeps its channels as replicas). */
        bool holds = role == CLUSTER_ROLE_OWNER ||
                     (role == CLUSTER_ROLE_BACKUP && st->role == CLUSTER_ROLE_OWNER);
        reset(st, role, since, holds);
        changed = true;
    }
    if (changed)
        report();
    tick(0);
}

void shardsync_start(void)
{
    if (!cluster_enabled())
        return;
    memset(&ss, 0, sizeof ss);
    ss.on = true;
    cluster_on_map(on_map);
    cluster_on_tick(tick);
}

void shardsync_stop(void)
{
    for (unsigned i = 0; i < CLUSTER_SHARDS; i++) {
        if (ss.s[i].listing)
            cluster_call_cancel(&ss.s[i].call);
        free_names(&ss.s[i]);
    }
    struct fetch *f, *tmp;
    DL_FOREACH_SAFE(ss.fetches, f, tmp) {
        DL_DELETE(ss.fetches, f);
        cluster_call_cancel(&f->call);
        free(f);
    }
    ss.on = false;
}
