/* replica.c - the owner's queue of messages awaiting the backup (the
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
#include "publish.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

/* One sequenced message not yet delivered. */
struct pending_msg {
    struct frame *f;           /* one reference */
    uint64_t seq;
    int64_t ts_ms;
    char key[CODEC_KEY_MAX + 1];
    struct pub_wait *waiters;  /* utlist DL; answered head first */
    struct pending_msg *next;
};

/* One per channel with pending messages; pins the channel. */
struct chan_repl {
    struct channel *ch;
    struct pending_msg *head, *tail;
    char backup[ENVELOPE_ID_MAX + 1];   /* where the pending messages were last sent */
    int64_t sent_ms;                    /* when they were last sent */
    int64_t oldest_ms;                  /* when the head was queued */
    struct chan_repl *prev, *next;
};

static struct chan_repl *repls;         /* channels with pending messages (utlist DL) */

/* ----------------------------------------------------------------- owner */

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

/* Delivers pending messages with seq <= upto, in order. */
static void deliver_upto(struct chan_repl *r, uint64_t upto)
{
    struct channel *ch = r->ch;
    ch->pins++; /* done callbacks must not see the channel go */
    while (r->head && r->head->seq <= upto) {
        struct pending_msg *pm = r->head;
        r->head = pm->next;
        if (!r->head)
            r->tail = NULL;
        channel_deliver(ch, pm->f, pm->seq, pm->ts_ms);
        if (*pm->key)
            channel_key_record(ch, pm->key, pm->seq);
        notify(&pm->waiters, CHORUS_ERR__COUNT, NULL, ch->epoch, pm->seq);
        frame_unref(pm->f);
        free(pm);
        r->oldest_ms = runtime_now_ms();
    }
    ch->pins--;
    if (!r->head)
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
    struct cluster_part parts[3] = {
        {(const unsigned char *)r->ch->name, r->ch->len},
        {frame_payload(pm->f), pm->f->len},
        {(const unsigned char *)pm->key, strlen(pm->key)},
    };
    cluster_send_to(backup, &e, parts, 3);
    metrics.replicated++;
}

void replica_submit(struct channel *ch, struct frame *f, uint64_t seq, int64_t ts_ms,
                    const char *key, struct pub_wait *w)
{
    const char *backup = cluster_backup_of(ch->name, ch->len);
    if (!backup && !ch->repl) {
        if (cluster_enabled()) {
            metrics.unreplicated++;
            ch->unreplicated = true;
        }
        channel_deliver(ch, f, seq, ts_ms);
        if (key)
            channel_key_record(ch, key, seq);
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
    if (!ch->repl) {
        r->ch = ch;
        DL_PREPEND(repls, r);
        ch->repl = r;
        ch->pins++;
        r->oldest_ms = runtime_now_ms();
        r->sent_ms = r->oldest_ms;
        snprintf(r->backup, sizeof r->backup, "%s", backup ? backup : "");
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
    if (r->tail)
        r->tail->next = pm;
    else
        r->head = pm;
    r->tail = pm;
    if (*r->backup)
        send_repl(r, r->backup, pm);
}

bool replica_wait_key(struct channel *ch, const char *key, struct pub_wait *w)
{
    if (!ch->repl)
        return false;
    for (struct pending_msg *pm = ch->repl->head; pm; pm = pm->next)
        if (!strcmp(pm->key, key)) {
            w->duplicate = true;
            w->pm = pm;
            /* Prepended: later duplicates are answered before earlier ones. */
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

/* REPL_ACK [channel] {epoch, seq = highest contiguous seq the backup holds} */
static void on_ack(const struct cluster_part *topic, const struct envelope *env,
                   const struct cluster_part *parts, int n)
{
    (void)topic;
    if (n < 1 || !codec_channel_valid((const char *)parts[0].data, parts[0].len))
        return;
    struct channel *ch = channel_find((const char *)parts[0].data, parts[0].len);
    if (!ch || !ch->repl || strcmp(env->epoch, ch->epoch) != 0)
        return;
    if (env->status) {
        /* The backup believes it owns the channel: views differ for a moment.
         * Keep the messages and retry; never hand their seqs out again. */
        metrics.replication_refused++;
        return;
    }
    deliver_upto(ch->repl, env->seq);
}

static void replica_tick(int64_t now)
{
    int64_t resend_ms = rt.cfg->cluster_timeout_ms / 4 > 100 ? rt.cfg->cluster_timeout_ms / 4 : 100;
    struct chan_repl *r = repls, *next;
    for (; r; r = next) {
        next = r->next;
        if (now - r->oldest_ms >= rt.cfg->cluster_timeout_ms) {
            /* Publishers waited long enough: answer them now. The messages stay
             * queued and are still delivered once a backup holds them. Only
             * those that waited the whole timeout: a publish queued behind
             * them a moment ago may yet reach a new backup in time. */
            for (struct pending_msg *pm = r->head;
                 pm && now - pm->ts_ms >= rt.cfg->cluster_timeout_ms; pm = pm->next) {
                notify(&pm->waiters, CHORUS_ERR_UNAVAILABLE, "the channel's backup node did not confirm in time",
                       NULL, 0);
            }
        }
        if (now - r->sent_ms < resend_ms)
            continue;
        const char *backup = cluster_backup_of(r->ch->name, r->ch->len);
        if (!backup) {
            metrics.unreplicated++;
            log_warn("event=replication_degraded ch=%s msg=\"no backup node is up; delivering unreplicated\"",
                     r->ch->name);
            r->ch->unreplicated = true;
            deliver_upto(r, UINT64_MAX);
            continue;
        }
        if (strcmp(backup, r->backup) != 0)
            log_info("event=backup_changed ch=%s from=%s to=%s", r->ch->name, r->backup, backup);
        snprintf(r->backup, sizeof r->backup, "%s", backup);
        r->sent_ms = now;
        metrics.replication_resends++;
        for (struct pending_msg *pm = r->head; pm; pm = pm->next)
            send_repl(r, backup, pm);
    }
}

void replica_start(void)
{
    cluster_handle(ENV_REPL_ACK, on_ack);
    cluster_on_tick(replica_tick);
}
