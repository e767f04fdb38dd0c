/* channel.c - channel registry, subscriptions, sequencing, history, fan-out.
 *
 * Invariant: a subscription is on exactly one channel's array and one
 * connection's list; both links are changed in the same function. */
#include "channel.h"
#include "codec.h"
#include "frame.h"
#include "keys.h"
#include "metrics.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <utlist.h>

static struct channel *registry;        /* uthash table by name */
static struct channel *idle_head;       /* channels without subscribers (utlist DL) */
static const struct config *cfg;
static struct channel_hooks hooks;
static channel_deliver_fn *deliver;     /* set by the session layer at start */
static char boot_id[16];                /* makes epochs unique across restarts */
static uint64_t epoch_counter;


void channel_registry_init(const struct config *config)
{
    uint32_t rnd = 0;
    cfg = config;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
        rnd = (uint32_t)time(NULL) * 2654435761u;
    snprintf(boot_id, sizeof boot_id, "%08x", rnd ^ (uint32_t)time(NULL));
    keys_init(config);
}

void channel_set_deliver(channel_deliver_fn *fn) { deliver = fn; }

static channel_occupancy_fn *occupancy;

void channel_on_occupancy(channel_occupancy_fn *fn) { occupancy = fn; }

void channel_set_hooks(const struct channel_hooks *h)
{
    if (h)
        hooks = *h;
    else
        memset(&hooks, 0, sizeof hooks);
}

/* ---------------------------------------------------------------- history */

static bool hist_expired(const struct channel *ch, const struct hist_entry *e, int64_t now_ms)
{
    return ch->ns->history_ttl > 0 && now_ms - e->ts_ms > (int64_t)ch->ns->history_ttl * 1000;
}

static struct hist_entry *hist_at(struct channel *ch, uint32_t i)
{
    return &ch->hist[(ch->hist_head + i) % (uint32_t)ch->ns->history_size];
}

static void hist_drop_oldest(struct channel *ch)
{
    struct hist_entry *e = hist_at(ch, 0);
    frame_unref(e->f);
    e->f = NULL;
    ch->hist_head = (ch->hist_head + 1) % (uint32_t)ch->ns->history_size;
    ch->hist_count--;
}

static void hist_expire(struct channel *ch, int64_t now_ms)
{
    while (ch->hist_count && hist_expired(ch, hist_at(ch, 0), now_ms))
        hist_drop_oldest(ch);
}

static void clear_history(struct channel *ch);

/* History holds consecutive seqs of one epoch, oldest first: recovery
 * (channel_can_recover) only looks at its first entry, and every path that
 * fills a mirror (join, repair, resume after a rejoin) may bring seqs this
 * node already holds. A seq already held is skipped; one that would leave a
 * hole drops the older entries, which can no longer serve a recovery. */
static void hist_push(struct channel *ch, struct frame *f, uint64_t seq, int64_t ts_ms)
{
    uint32_t size = (uint32_t)ch->ns->history_size;
    if (!size)
        return;
    if (ch->hist_count) {
        uint64_t last = hist_at(ch, ch->hist_count - 1)->seq;
        if (seq <= last)
            return;
        if (seq != last + 1)
            clear_history(ch);
    }
    if (!ch->hist) {
        ch->hist = calloc(size, sizeof *ch->hist);
        if (!ch->hist)
            return; /* history is best effort under memory pressure; recovery then says false */
    }
    if (ch->hist_count == size)
        hist_drop_oldest(ch);
    struct hist_entry *e = hist_at(ch, ch->hist_count);
    f->seq = seq; /* replays conflate like live messages (conn.c) */
    e->f = frame_ref(f);
    e->seq = seq;
    e->ts_ms = ts_ms;
    ch->hist_count++;
}

bool channel_can_recover(struct channel *ch, const char *epoch, uint64_t seq, int64_t now_ms)
{
    if (strcmp(epoch, ch->epoch) != 0 || seq > ch->seq)
        return false;
    if (seq == ch->seq)
        return true;
    hist_expire(ch, now_ms);
    return ch->hist_count && hist_at(ch, 0)->seq <= seq + 1;
}

void channel_history_each(struct channel *ch, uint64_t after, long long limit, int64_t now_ms,
                          void (*fn)(const struct hist_entry *e, void *ud), void *ud)
{
    hist_expire(ch, now_ms);
    uint32_t first = 0;
    /* Entries are in seq order: skip those at or before `after`. */
    while (first < ch->hist_count && hist_at(ch, first)->seq <= after)
        first++;
    if (limit >= 0 && ch->hist_count - first > (unsigned long long)limit)
        first = ch->hist_count - (uint32_t)limit;
    for (uint32_t i = first; i < ch->hist_count; i++)
        fn(hist_at(ch, i), ud);
}

/* --------------------------------------------------------------- registry */

static void idle_link(struct channel *ch)
{
    ch->idle = true;
    DL_PREPEND2(idle_head, ch, idle_prev, idle_next);
}

static void idle_unlink(struct channel *ch)
{
    if (!ch->idle)
        return;
    DL_DELETE2(idle_head, ch, idle_prev, idle_next);
    ch->idle = false;
}

static void new_epoch(struct channel *ch);

static void channel_delete(struct channel *ch)
{
    idle_unlink(ch);
    HASH_DEL(registry, ch);
    clear_history(ch);
    keys_clear(ch);
    free(ch->hist);
    free(ch->subs);
    free(ch->name);
    free(ch);
    metrics.channels--;
}

/* A channel with no subscribers is kept only while it has history to serve.
 * A mirror's history is only trustworthy while this node receives the
 * owner's stream, that is while it has subscribers. */
static void channel_maybe_delete(struct channel *ch)
{
    /* Other nodes' interest keeps the owner's copy, not a mirror's. */
    if (ch->nsubs || ch->pins || (ch->remote_interest && !ch->mirror))
        return;
    if (!ch->hist_count || (ch->mirror && !ch->replica))
        channel_delete(ch);
    else if (!ch->idle)
        idle_link(ch);
}

void channel_release(struct channel *ch) { channel_maybe_delete(ch); }

struct channel *channel_find(const char *name, size_t len)
{
    struct channel *ch;
    HASH_FIND(hh, registry, name, len, ch);
    return ch;
}

struct channel *channel_get(const char *name, size_t len)
{
    struct channel *ch = channel_find(name, len);
    if (ch)
        return ch;
    ch = calloc(1, sizeof *ch);
    if (!ch)
        return NULL;
    ch->name = malloc(len + 1);
    if (!ch->name) {
        free(ch);
        return NULL;
    }
    memcpy(ch->name, name, len);
    ch->name[len] = '\0';
    ch->len = len;
    ch->ns = config_ns_for(cfg, name, len);
    ch->nsm = metrics_ns(ch->ns->name);
    new_epoch(ch);
    HASH_ADD_KEYPTR(hh, registry, ch->name, ch->len, ch);
    metrics.channels++;
    if (hooks.created)
        hooks.created(ch);
    return ch;
}

uint32_t channel_count(void) { return HASH_COUNT(registry); }

void channel_registry_free(void)
{
    struct channel *ch, *tmp;
    HASH_ITER(hh, registry, ch, tmp) {
        /* Connections are gone by now; their subscriptions were unlinked. */
        channel_delete(ch);
    }
    keys_free();
}

/* ---------------------------------------------------------- subscriptions */

struct sub *channel_sub_find(struct sub_list *list, struct channel *ch)
{
    struct sub *s;
    LL_SEARCH_SCALAR2(list->head, s, ch, ch, conn_next);
    return s;
}

struct sub *channel_subscribe(struct channel *ch, struct conn *c, struct sub_list *list)
{
    if (ch->nsubs == ch->subs_cap) {
        /* Three first: 24 bytes fill the smallest malloc chunk (32), and
         * many channels have one subscriber (docs/benchmarks.md, idle memory). */
        uint32_t ncap = ch->subs_cap ? ch->subs_cap * 2 : 3;
        struct sub **n = realloc(ch->subs, sizeof *n * ncap);
        if (!n)
            return NULL;
        ch->subs = n;
        ch->subs_cap = ncap;
    }
    struct sub *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    s->ch = ch;
    s->conn = c;
    s->slot = 0;
    s->queued = 0;
    s->idx = ch->nsubs;
    ch->subs[ch->nsubs++] = s;
    LL_PREPEND2(list->head, s, conn_next);
    list->n++;
    idle_unlink(ch);
    metrics.subscriptions++;
    ch->nsm->subscriptions++;
    if (ch->nsubs == 1 && hooks.interest)
        hooks.interest(ch, true);
    if (ch->nsubs == 1 && occupancy)
        occupancy(ch, true);
    return s;
}

void channel_unsubscribe(struct sub *s, struct sub_list *list)
{
    struct channel *ch = s->ch;
    struct sub *last = ch->subs[--ch->nsubs];
    ch->subs[s->idx] = last;
    last->idx = s->idx;
    LL_DELETE2(list->head, s, conn_next); /* O(1) for the head: disconnect */
    list->n--;
    free(s);
    metrics.subscriptions--;
    ch->nsm->subscriptions--;
    /* A big room that emptied gives its array back. */
    if (ch->nsubs == 0 && ch->subs_cap > 64) {
        free(ch->subs);
        ch->subs = NULL;
        ch->subs_cap = 0;
    }
    if (ch->nsubs == 0 && hooks.interest)
        hooks.interest(ch, false);
    if (ch->nsubs == 0 && occupancy)
        occupancy(ch, false);
    channel_maybe_delete(ch);
}

void channel_unsubscribe_all(struct sub_list *list)
{
    while (list->head)
        channel_unsubscribe(list->head, list);
}

/* ---------------------------------------------------------------- publish */

/* Delivery never unsubscribes synchronously, so the array is stable here.
 * The hook is read once per fan-out: one indirect call per delivery. */
static void fanout(struct channel *ch, struct frame *f)
{
    channel_deliver_fn *fn = deliver;
    /* Read by the write path when a subscriber negotiated compression. */
    f->plain = !ch->ns->compression;
    for (uint32_t i = 0; i < ch->nsubs; i++)
        fn(ch->subs[i], f);
}

/* A message's fan-out: its frame is stamped for the latency histograms
 * (conn.c observes them when it writes the frame), one clock read per
 * message however many subscribers it has. */
static void fanout_msg(struct channel *ch, struct frame *f)
{
    ch->nsm->delivered += ch->nsubs;
    if (!ch->nsubs)
        return;
    f->queued_us = runtime_mono_us();
    if (!f->arrived_us)
        f->arrived_us = f->queued_us;
    fanout(ch, f);
}

static void clear_history(struct channel *ch)
{
    while (ch->hist_count)
        hist_drop_oldest(ch);
    ch->hist_head = 0;
}

void channel_broadcast(struct channel *ch, const char *json, size_t len)
{
    if (!ch->nsubs)
        return;
    struct frame *f = frame_from(json, len);
    if (f) {
        fanout(ch, f);
        frame_unref(f);
    }
}

/* Tells subscribers the sequence restarted: {"op":"epoch","ch","epoch","seq"}. */
static void notify_epoch(struct channel *ch)
{
    char buf[CODEC_CHANNEL_MAX + CHANNEL_EPOCH_MAX + 96];
    int n = snprintf(buf, sizeof buf, "{\"op\":\"epoch\",\"ch\":\"%s\",\"epoch\":\"%s\",\"seq\":%llu}",
                     ch->name, ch->epoch, (unsigned long long)ch->seq);
    if (n > 0 && (size_t)n < sizeof buf)
        channel_broadcast(ch, buf, (size_t)n);
}

static channel_epoch_gen_fn *epoch_gen;

void channel_set_epoch_gen(channel_epoch_gen_fn *fn) { epoch_gen = fn; }

static void new_epoch(struct channel *ch)
{
    uint64_t gen = epoch_gen ? epoch_gen(ch->name, ch->len) : 0;
    if (gen)
        snprintf(ch->epoch, sizeof ch->epoch, "%llx.%s-%llx", (unsigned long long)gen, boot_id,
                 (unsigned long long)++epoch_counter);
    else
        snprintf(ch->epoch, sizeof ch->epoch, "%s-%llx", boot_id, (unsigned long long)++epoch_counter);
    ch->seq = ch->assigned = 0;
    clear_history(ch);
    keys_clear(ch);
}

enum apply_result channel_apply(struct channel *ch, const char *epoch, uint64_t seq,
                                int64_t ts_ms, struct frame *f)
{
    if (strcmp(epoch, ch->epoch) != 0) {
        if (seq != 1)
            return APPLY_GAP;
        channel_adopt(ch, epoch, 0, true);
    }
    ch->mirror = true;
    if (seq <= ch->seq)
        return APPLY_DUP;
    if (seq != ch->seq + 1)
        return APPLY_GAP;
    /* Current only while local subscribers keep this node on the owner's
     * stream: a backup nobody here reads takes REPLs alone, and when the map
     * stops naming it nothing more comes and nothing says so. */
    ch->live = ch->nsubs > 0;
    ch->seq = seq;
    f->seq = seq;
    hist_expire(ch, ts_ms);
    hist_push(ch, f, seq, ts_ms);
    fanout_msg(ch, f);
    metrics.delivered += ch->nsubs;
    return APPLY_OK;
}

void channel_adopt(struct channel *ch, const char *epoch, uint64_t seq, bool notify)
{
    ch->mirror = true;
    if (strcmp(epoch, ch->epoch) != 0) {
        snprintf(ch->epoch, sizeof ch->epoch, "%s", epoch);
        clear_history(ch);
        keys_clear(ch);
        ch->seq = ch->assigned = seq;
        if (notify)
            notify_epoch(ch);
        return;
    }
    ch->seq = ch->assigned = seq;
}

static int by_seq(const void *a, const void *b)
{
    const struct hist_entry *x = a, *y = b;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

void channel_merge(struct channel *ch, const char *epoch, uint64_t seq, const struct hist_entry *in,
                   uint32_t n)
{
    ch->mirror = true;
    if (strcmp(epoch, ch->epoch) != 0) {
        channel_adopt(ch, epoch, seq, ch->nsubs > 0);
        for (uint32_t i = 0; i < n; i++)
            hist_push(ch, in[i].f, in[i].seq, in[i].ts_ms);
        return;
    }
    /* The same epoch: what this node holds (REPL that came first) and what
     * the owner sent, each seq once, oldest first. */
    uint32_t total = ch->hist_count + n;
    struct hist_entry *all = total ? malloc(total * sizeof *all) : NULL;
    if (all) {
        uint32_t k = 0;
        for (uint32_t i = 0; i < ch->hist_count; i++) {
            all[k] = *hist_at(ch, i);
            frame_ref(all[k++].f);
        }
        for (uint32_t i = 0; i < n; i++) {
            all[k] = in[i];
            frame_ref(all[k++].f);
        }
        qsort(all, total, sizeof *all, by_seq);
        clear_history(ch);
        for (uint32_t i = 0; i < total; i++) {
            if (!i || all[i].seq != all[i - 1].seq)
                hist_push(ch, all[i].f, all[i].seq, all[i].ts_ms);
            frame_unref(all[i].f);
        }
        free(all);
    }
    if (seq > ch->seq)
        ch->seq = ch->assigned = seq;
}

void channel_record(struct channel *ch, struct frame *f, uint64_t seq, int64_t ts_ms)
{
    hist_push(ch, f, seq, ts_ms);
}

void channel_claim(struct channel *ch, bool keep_epoch)
{
    if (!ch->mirror)
        return;
    ch->mirror = false;
    ch->live = false;
    if (keep_epoch) {
        /* This node was the backup: it holds every message the old owner
         * delivered, so the epoch simply continues. */
        ch->replica = false;
        ch->assigned = ch->seq;
    } else {
        ch->replica = false;
        /* Ownership moved here without a replica: this node cannot know the
         * old owner's last messages, so a new epoch begins. */
        new_epoch(ch);
        notify_epoch(ch);
    }
}

int channel_sequence(struct channel *ch, const char *data, size_t data_len, bool binary,
                     const char *client, const char *attr, int64_t now_ms, struct frame **out,
                     uint64_t *seq_out)
{
    if (ch->mirror)
        channel_claim(ch, false); /* the engine claims first; a new epoch is the safe default */
    if (ch->assigned < ch->seq)
        ch->assigned = ch->seq;
    uint64_t seq = ch->assigned + 1;
    const unsigned char *bytes = (const unsigned char *)data;
    size_t need = binary ? codec_encode_binmsg(NULL, 0, ch->name, ch->len, seq, now_ms, client, attr, bytes, data_len)
                         : codec_encode_msg_raw(NULL, 0, ch->name, ch->len, seq, now_ms, client, attr, data, data_len);
    struct frame *f = need ? frame_new(need) : NULL;
    if (!f)
        return -1;
    if (binary)
        codec_encode_binmsg(frame_payload(f), need, ch->name, ch->len, seq, now_ms, client, attr, bytes,
                            data_len);
    else
        codec_encode_msg_raw((char *)frame_payload(f), need, ch->name, ch->len, seq, now_ms, client,
                             attr, data, data_len);
    f->binary = binary;
    f->arrived_us = runtime_mono_us();
    ch->nsm->published++;
    ch->assigned = seq;
    *out = f;
    *seq_out = seq;
    return 0;
}

void channel_deliver(struct channel *ch, struct frame *f, uint64_t seq, int64_t ts_ms)
{
    ch->seq = seq;
    f->seq = seq;
    hist_expire(ch, ts_ms);
    hist_push(ch, f, seq, ts_ms);
    fanout_msg(ch, f);
    metrics.delivered += ch->nsubs;
    if (hooks.sequenced)
        hooks.sequenced(ch, f, seq, ts_ms);
}

void channel_unassign(struct channel *ch) { ch->assigned = ch->seq; }

int channel_publish(struct channel *ch, const json_t *data, const char *client, int64_t now_ms,
                    struct publish_result *res)
{
    struct frame *f;
    uint64_t seq;
    char *text = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    int rc = text ? channel_sequence(ch, text, strlen(text), false, client, NULL, now_ms, &f, &seq) : -1;
    free(text);
    if (rc < 0) {
        /* A channel created for this publish must not outlive the failure. */
        channel_maybe_delete(ch);
        return -1;
    }
    res->seq = seq;
    memcpy(res->epoch, ch->epoch, sizeof res->epoch);
    channel_deliver(ch, f, seq, now_ms);
    frame_unref(f);
    channel_maybe_delete(ch);
    return 0;
}

void channel_sweep(int64_t now_ms)
{
    struct channel *ch, *next;
    keys_expire(now_ms);
    DL_FOREACH_SAFE2(idle_head, ch, next, idle_next) {
        hist_expire(ch, now_ms);
        if (!ch->hist_count)
            channel_delete(ch);
    }
}

void channel_foreach(void (*fn)(struct channel *ch, void *ud), void *ud)
{
    struct channel *ch, *tmp;
    HASH_ITER(hh, registry, ch, tmp)
        fn(ch, ud);
}
