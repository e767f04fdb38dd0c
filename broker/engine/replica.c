/* replica.c - the owner's queue of messages awaiting its backups (the
 * backup's side of replication is mirror.c's: it follows the channel).
 *
 * Invariant (owner): a channel's pending messages have consecutive seqs
 * ch->seq + 1 .. ch->assigned and are delivered strictly in that order. */
#include "replica.h"
#include "channel.h"
#include "frame.h"
#include "codec.h"
#include "log.h"
#include "metrics.h"
#include "mirror.h"
#include "publish.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

#define MAX_BACKUPS 4

/* One sequenced message not yet delivered. */
struct pending_msg {
    struct frame *f;           /* one reference */
    uint64_t seq;
    int64_t ts_ms;
    char key[CODEC_KEY_MAX + 1];
    struct pub_wait *waiters;  /* utlist DL; answered head first */
    struct pending_msg *prev, *next;  /* utlist DL in the channel's queue */
};

/* One per channel with pending messages; pins the channel. */
struct chan_repl {
    struct channel *ch;
    struct pending_msg *msgs;           /* oldest first (utlist DL) */
    uint64_t gen;                       /* the shard gen they were last sent under */
    int nbackups;
    char backup[MAX_BACKUPS][ENVELOPE_ID_MAX + 1];
    uint64_t acked[MAX_BACKUPS];        /* highest contiguous seq each holds, at gen */
    int64_t sent_ms;                    /* when they were last sent */
    int64_t oldest_ms;                  /* when the head was queued */
    bool retry_soon;                    /* a backup refused (older map): re-send at the next tick */
    struct chan_repl *prev, *next;
};

static struct chan_repl *repls;         /* channels with pending messages (utlist DL) */
static const struct config *cfg;

/* ----------------------------------------------------------------- owner */

static void resubmit(struct channel *ch, struct frame *f, uint64_t seq, int64_t ts_ms)
{
    replica_submit(ch, f, seq, ts_ms, NULL, NULL);
}

void replica_claim(struct channel *ch)
{
    if (!ch->mirror)
        return;
    bool keep = ch->replica && cluster_continues(ch->name, ch->len, ch->repl_gen);
    channel_claim(ch, keep);
    /* The old owner's last messages this backup held come first, held by
     * the new backups before they are shown. */
    mirror_release_tail(ch, keep ? resubmit : NULL);
}

/* Answers a message's waiters, head first; each is unlinked before its done
 * runs, so a callback that cancels another waiter still finds it listed. */
static void notify(struct pub_wait **waiters, enum chorus_err err, const char *msg,
                   const char *epoch, uint64_t seq)
{
    struct pub_wait *w;
    while ((w = *waiters)) {
        DL_DELETE(*waiters, w);
        w->pm = NULL;
        w->prev = w->next = NULL;
        w->done(w, err, msg, epoch, seq, err == CHORUS_ERR__COUNT && w->duplicate);
    }
}

static void repl_free(struct chan_repl *r)
{
    struct channel *ch = r->ch;
    DL_DELETE(repls, r);
    ch->repl = NULL;
    ch->pins--;
    free(r);
    channel_release(ch);
}

static void pending_free(struct chan_repl *r, struct pending_msg *pm)
{
    DL_DELETE(r->msgs, pm);
    frame_unref(pm->f);
    free(pm);
}

/* Delivers pending messages with seq <= upto, in order. */
static void deliver_upto(struct chan_repl *r, uint64_t upto)
{
    struct channel *ch = r->ch;
    ch->pins++; /* done callbacks must not see the channel go */
    while (r->msgs && r->msgs->seq <= upto) {
        struct pending_msg *pm = r->msgs;
        channel_deliver(ch, pm->f, pm->seq, pm->ts_ms);
        if (*pm->key)
            channel_key_record(ch, pm->key, pm->seq, runtime_now_ms());
        notify(&pm->waiters, CHORUS_ERR__COUNT, NULL, ch->epoch, pm->seq);
        pending_free(r, pm);
        r->oldest_ms = runtime_now_ms();
    }
    ch->pins--;
    if (!r->msgs)
        repl_free(r);
}

/* The map moved the channel away: its pending messages were never
 * delivered here. The new owner, when it is the backup that acknowledged a
 * message, holds it and continues the epoch past it (PROTOCOL.md 7.4), so
 * that message's publishers are told it is published; the others may or
 * may not be held there: they are answered unavailable (a retry with the
 * same key is answered from the new owner). */
static void abandon(struct chan_repl *r, const char *why)
{
    struct channel *ch = r->ch;
    const char *owner = cluster_owner_of(ch->name, ch->len);
    uint64_t held = 0;
    for (int k = 0; owner && k < r->nbackups; k++)
        if (!strcmp(r->backup[k], owner))
            held = r->acked[k];
    ch->pins++;
    while (r->msgs) {
        struct pending_msg *pm = r->msgs;
        if (pm->seq <= held)
            notify(&pm->waiters, CHORUS_ERR__COUNT, NULL, ch->epoch, pm->seq);
        else
            notify(&pm->waiters, CHORUS_ERR_UNAVAILABLE, why, NULL, 0);
        pending_free(r, pm);
    }
    channel_unassign(ch);
    ch->pins--;
    repl_free(r);
}

static void send_repl(struct chan_repl *r, const char *backup, struct pending_msg *pm)
{
    struct envelope e;
    cluster_env_init(&e, ENV_REPL);
    if (pm->f->binary)
        e.flags |= ENV_FLAG_BINARY;
    snprintf(e.epoch, sizeof e.epoch, "%s", r->ch->epoch);
    e.seq = pm->seq;
    e.ts_ms = pm->ts_ms;
    e.req_id = r->gen;
    struct cluster_part parts[3] = {
        {(const unsigned char *)r->ch->name, r->ch->len},
        {frame_payload(pm->f), pm->f->len},
        {(const unsigned char *)pm->key, strlen(pm->key)},
    };
    cluster_send_to(backup, &e, parts, 3);
    metrics.replicated++;
}

/* Takes the backups the committed map names now; true when they changed
 * (acks counted under the old gen no longer count). */
static bool refresh_backups(struct chan_repl *r)
{
    const char *b[MAX_BACKUPS];
    uint64_t gen;
    int n = cluster_backups_of(r->ch->name, r->ch->len, b, MAX_BACKUPS, &gen);
    if (gen == r->gen && n == r->nbackups)
        return false;
    if (r->nbackups)
        log_info("event=backups_changed ch=%s gen=%llu backups=%d", r->ch->name,
                 (unsigned long long)gen, n);
    r->gen = gen;
    r->nbackups = n;
    for (int k = 0; k < n; k++) {
        snprintf(r->backup[k], sizeof r->backup[k], "%s", b[k]);
        r->acked[k] = 0;
    }
    return true;
}

/* Delivers what every backup holds, while this node may act. */
static void try_deliver(struct chan_repl *r)
{
    if (!cluster_can_act())
        return;
    uint64_t upto = UINT64_MAX;
    if (r->nbackups == 0 && cfg->replication_factor > 1)
        return; /* no backup placed yet: nothing is held twice */
    for (int k = 0; k < r->nbackups; k++)
        if (r->acked[k] < upto)
            upto = r->acked[k];
    deliver_upto(r, upto);
}

static void send_all(struct chan_repl *r, int64_t now)
{
    r->sent_ms = now;
    for (int k = 0; k < r->nbackups; k++)
        for (struct pending_msg *pm = r->msgs; pm; pm = pm->next)
            if (pm->seq > r->acked[k])
                send_repl(r, r->backup[k], pm);
}

void replica_submit(struct channel *ch, struct frame *f, uint64_t seq, int64_t ts_ms,
                    const char *key, struct pub_wait *w)
{
    if (!cluster_enabled()) {
        channel_deliver(ch, f, seq, ts_ms);
        if (key)
            channel_key_record(ch, key, seq, ts_ms);
        if (w)
            w->done(w, CHORUS_ERR__COUNT, NULL, ch->epoch, seq, false);
        return;
    }
    struct pending_msg *pm = calloc(1, sizeof *pm);
    struct chan_repl *r = ch->repl;
    if (!pm || (!r && !(r = calloc(1, sizeof *r)))) {
        /* Out of memory: this seq must still be delivered, in order. */
        free(pm);
        channel_unassign(ch);
        if (w)
            w->done(w, CHORUS_ERR_UNAVAILABLE, "out of memory", NULL, 0, false);
        return;
    }
    int64_t now = runtime_now_ms();
    if (!ch->repl) {
        r->ch = ch;
        DL_PREPEND(repls, r);
        ch->repl = r;
        ch->pins++;
        r->oldest_ms = now;
        r->sent_ms = now;
        r->gen = UINT64_MAX;
        refresh_backups(r);
    }
    pm->f = frame_ref(f);
    pm->seq = seq;
    pm->ts_ms = ts_ms;
    if (key)
        snprintf(pm->key, sizeof pm->key, "%s", key);
    if (w) {
        w->pm = pm;
        DL_APPEND(pm->waiters, w);
    }
    DL_APPEND(r->msgs, pm);
    for (int k = 0; k < r->nbackups; k++)
        send_repl(r, r->backup[k], pm);
    try_deliver(r); /* replication factor 1: at once */
}

bool replica_wait_key(struct channel *ch, const char *key, struct pub_wait *w)
{
    if (!ch->repl)
        return false;
    for (struct pending_msg *pm = ch->repl->msgs; pm; pm = pm->next)
        if (!strcmp(pm->key, key)) {
            w->duplicate = true;
            w->pm = pm;
            /* Prepended: later duplicates are answered before earlier ones. */
            DL_PREPEND(pm->waiters, w);
            return true;
        }
    return false;
}

bool replica_wait_seq(struct channel *ch, uint64_t seq, struct pub_wait *w)
{
    if (!ch->repl)
        return false;
    for (struct pending_msg *pm = ch->repl->msgs; pm; pm = pm->next)
        if (pm->seq == seq) {
            w->duplicate = true;
            w->pm = pm;
            DL_PREPEND(pm->waiters, w);
            return true;
        }
    return false;
}

void replica_cancel(struct pub_wait *w)
{
    if (!w->pm)
        return;
    DL_DELETE(w->pm->waiters, w);
    w->pm = NULL;
    w->prev = w->next = NULL;
}

/* REPL_ACK [channel] {epoch, seq = highest contiguous seq held, req_id = gen} */
static void on_ack(const struct cluster_part *topic, const struct envelope *env,
                   const struct cluster_part *parts, int n)
{
    (void)topic;
    if (n < 1 || !codec_channel_valid((const char *)parts[0].data, parts[0].len))
        return;
    struct channel *ch = channel_find((const char *)parts[0].data, parts[0].len);
    if (!ch || !ch->repl || strcmp(env->epoch, ch->epoch) != 0)
        return;
    struct chan_repl *r = ch->repl;
    if (env->status) {
        /* The backup works from another map than ours for a moment. Keep the
         * messages and retry soon (at the next tick: it applies the map
         * within a heartbeat); never hand their seqs out again. */
        metrics.replication_refused++;
        r->retry_soon = true;
        return;
    }
    if (env->req_id != r->gen)
        return; /* an ack under an older assignment counts for nothing */
    for (int k = 0; k < r->nbackups; k++)
        if (!strcmp(r->backup[k], env->origin) && env->seq > r->acked[k])
            r->acked[k] = env->seq;
    try_deliver(r);
}

/* Shards this node hands off with nothing pending there: the leader may
 * switch their owner now (cluster.h). */
static void report_quiesced(void)
{
    uint64_t busy = 0, mask = 0;
    for (struct chan_repl *r = repls; r; r = r->next)
        if (r->msgs)
            busy |= UINT64_C(1) << cluster_shard_of(r->ch->name, r->ch->len);
    for (unsigned s = 0; s < CLUSTER_SHARDS; s++)
        if (cluster_shard_handing_off(s) && !(busy >> s & 1))
            mask |= UINT64_C(1) << s;
    cluster_set_quiesced(mask);
}

static void replica_tick(int64_t now)
{
    int64_t resend_ms = cfg->cluster_timeout_ms / 4 > 100 ? cfg->cluster_timeout_ms / 4 : 100;
    struct chan_repl *r = repls, *next;
    for (; r; r = next) {
        next = r->next;
        if (now - r->oldest_ms >= cfg->cluster_timeout_ms) {
            /* Publishers waited long enough: answer them now. The messages stay
             * queued and are still delivered once the backups hold them. Only
             * those that waited the whole timeout: a publish queued behind
             * them a moment ago may yet be held in time. */
            for (struct pending_msg *pm = r->msgs;
                 pm && now - pm->ts_ms >= cfg->cluster_timeout_ms; pm = pm->next) {
                notify(&pm->waiters, CHORUS_ERR_UNAVAILABLE,
                       cluster_can_act() ? "the channel's backup nodes did not confirm in time"
                                         : "this node is cut off from the cluster majority (no lease)",
                       NULL, 0);
            }
        }
        if (now - r->sent_ms >= resend_ms || r->retry_soon) {
            r->retry_soon = false;
            metrics.replication_resends++;
            send_all(r, now);
        }
        try_deliver(r);
    }
    report_quiesced();
}

static void on_map(void)
{
    int64_t now = runtime_now_ms();
    struct chan_repl *r = repls, *next;
    for (; r; r = next) {
        next = r->next;
        if (!cluster_is_owner(r->ch->name, r->ch->len))
            abandon(r, "the channel moved to another node; retry");
        else if (refresh_backups(r))
            send_all(r, now);
    }
}

/* A channel this node sequenced but no longer owns becomes a follower: if
 * the map gives it back later, it must not continue its old numbering
 * (others sequenced meanwhile) unless it was their backup all along. */
static void demote(struct channel *ch, void *ud)
{
    (void)ud;
    bool owner = cluster_is_owner(ch->name, ch->len);
    if (!ch->mirror && !owner) {
        ch->mirror = true;
        ch->live = false;
        /* Handed to a backup on purpose, and this node stays one: it holds
         * everything it delivered, and the new owner has nothing beyond that
         * unless messages were pending here (the new owner may deliver those
         * without this node's ack). Then only its next REPL makes it whole. */
        uint64_t since;
        const char *o;
        ch->replica = ch->assigned == ch->seq &&
                      cluster_shard_role(cluster_shard_of(ch->name, ch->len), &since, &o) ==
                          CLUSTER_ROLE_BACKUP;
        ch->repl_gen = ch->replica ? cluster_shard_gen(ch->name, ch->len) : 0;
    } else if (ch->mirror && owner && ch->ntail && cluster_can_act()) {
        /* Promoted with copies held back from local subscribers: deliver
         * them now rather than at the next publish. */
        replica_claim(ch);
    }
}

static void replica_map_changed(void)
{
    /* Demotion first: it must see what was still pending here. */
    channel_foreach(demote, NULL);
    on_map();
    report_quiesced();
}

void replica_start(const struct config *config)
{
    cfg = config;
    cluster_handle(ENV_REPL_ACK, on_ack);
    cluster_on_tick(replica_tick);
    cluster_on_map(replica_map_changed);
    if (cluster_enabled())
        channel_set_epoch_gen(cluster_shard_gen);
}
