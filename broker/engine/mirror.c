/* mirror.c - following channels owned by another node: joining the
 * owner's stream, repairing gaps, and holding the backup's copy of
 * replicated messages (the backup is a follower that must hold everything).
 *
 * Invariant: while ch->sync is set, messages from the owner are dropped; the
 * sync reply covers them, because the owner sends that reply on the same
 * ordered link after every message it had sequenced so far. */
#include "mirror.h"
#include "channel.h"
#include "cluster.h"
#include "codec.h"
#include "frame.h"
#include "log.h"
#include "metrics.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>


/* One per channel with a join or repair in flight; pins the channel. */
/* A replicated message that arrived while a sync was running. */
struct held_repl {
    struct envelope env;
    struct frame *f;
    char key[CODEC_KEY_MAX + 1];
    struct held_repl *prev, *next;   /* utlist DL: DL_APPEND is O(1) */
};

#define HELD_MAX 10000

/* A backup's copy of a message the owner has not delivered yet, held back
 * from this node's own subscribers: with two backups the one promoted may
 * lack what the other was sent, so nobody sees a message before the owner
 * delivers it (its MSG). Without local subscribers nothing is shown, and
 * copies go straight into the channel. */
struct held_msg {
    uint64_t seq;
    int64_t ts_ms;
    struct frame *f;            /* one reference */
    struct held_msg *prev, *next;
};

static void tail_free_one(struct channel *ch, struct held_msg *h)
{
    DL_DELETE(ch->tail, h);
    ch->ntail--;
    frame_unref(h->f);
    free(h);
}

/* Drops the copies the channel's position has reached (the owner's MSG or
 * a sync brought them). */
static void tail_trim(struct channel *ch)
{
    while (ch->tail && ch->tail->seq <= ch->seq)
        tail_free_one(ch, ch->tail);
}

/* Moves every held copy into the channel as delivered here (no local
 * subscriber is left to hold them back from). */
static void tail_apply(struct channel *ch)
{
    tail_trim(ch);
    struct held_msg *h;
    while ((h = ch->tail)) {
        if (h->seq == ch->seq + 1)
            channel_apply(ch, ch->epoch, h->seq, h->ts_ms, h->f);
        tail_free_one(ch, h);
    }
}

/* The owner delivered everything up to `upto` (a later MSG or a POS says
 * so): held copies up to there are shown now, so a MSG lost on the way
 * costs no repair. */
static void tail_show_upto(struct channel *ch, const char *epoch, uint64_t upto)
{
    if (!ch->tail || strcmp(epoch, ch->epoch) != 0)
        return;
    tail_trim(ch);
    struct held_msg *h;
    while ((h = ch->tail) && h->seq <= upto && h->seq == ch->seq + 1) {
        channel_apply(ch, ch->epoch, h->seq, h->ts_ms, h->f);
        tail_free_one(ch, h);
    }
}

void mirror_release_tail(struct channel *ch, mirror_resubmit_fn *resubmit)
{
    tail_trim(ch);
    struct held_msg *h;
    while ((h = ch->tail)) {
        if (resubmit && h->seq == ch->assigned + 1) {
            ch->assigned = h->seq;
            resubmit(ch, h->f, h->seq, h->ts_ms);
        }
        tail_free_one(ch, h);
    }
}

struct chan_sync {
    struct cluster_call call;
    struct channel *ch;
    bool repair;
    uint64_t gap_to;            /* repair: seq of the message that revealed the gap */
    bool gap_same_epoch;        /* ... and it was in the mirror's epoch */
    struct mirror_wait *waiters;  /* newest first (utlist DL) */
    struct held_repl *held;       /* applied, in order, once the sync is done (utlist DL) */
    uint32_t nheld;
};

/* ------------------------------------------------------------- waiters */

/* Tells every waiter how the join ended, newest first; each is unlinked
 * before its done runs (done may free it). The channel stays pinned by the
 * sync until sync_done. */
static void waiters_done(struct chan_sync *s, enum chorus_err code, const char *msg)
{
    struct mirror_wait *w;
    while ((w = s->waiters)) {
        DL_DELETE(s->waiters, w);
        w->ch = NULL;
        w->done(w, code, msg);
    }
}

struct take {
    struct channel *ch;
    const char *epoch;
    bool deliver;
};

static void take_one(struct frame *f, uint64_t seq, int64_t ts, void *ud)
{
    struct take *t = ud;
    if (t->deliver)
        channel_apply(t->ch, t->epoch, seq, ts, f);
    else
        channel_record(t->ch, f, seq, ts);
}

/* Records the (seq+ts, msg) pairs of a sync reply, oldest first; applies them
 * as deliveries when `deliver`, else only into history. */
static void take_messages(struct channel *ch, const struct envelope *rep,
                          const struct cluster_part *parts, int n, bool deliver)
{
    struct take t = {ch, rep->epoch, deliver};
    cluster_sync_each(parts, n, take_one, &t);
}

static void backup_apply(struct channel *ch, const struct envelope *env, struct frame *f,
                         const char *key);

static void sync_done(struct chan_sync *s)
{
    struct channel *ch = s->ch;
    ch->sync = NULL;
    tail_trim(ch);
    /* Replicated messages are newer than anything the sync reply held. */
    struct held_repl *h;
    while ((h = s->held)) {
        DL_DELETE(s->held, h);
        backup_apply(ch, &h->env, h->f, h->key);
        frame_unref(h->f);
        free(h);
    }
    ch->pins--;
    free(s);
    channel_release(ch);
}

static bool hold_repl(struct channel *ch, const struct envelope *env, const unsigned char *data,
                      size_t len, const char *key)
{
    struct chan_sync *s = ch->sync;
    if (!s || s->nheld >= HELD_MAX)
        return false;
    struct held_repl *h = calloc(1, sizeof *h);
    if (!h || !(h->f = frame_from(data, len))) {
        free(h);
        return false;
    }
    h->f->binary = env->flags & ENV_FLAG_BINARY;
    h->f->arrived_us = runtime_mono_us();
    h->env = *env;
    snprintf(h->key, sizeof h->key, "%s", key);
    DL_APPEND(s->held, h);
    s->nheld++;
    return true;
}

/* ----------------------------------------------------------------- join */

static void on_join(struct cluster_call *call, const struct envelope *rep,
                    const struct cluster_part *parts, int n)
{
    struct chan_sync *s = call->ud;
    struct channel *ch = s->ch;
    enum chorus_err code = cluster_reply_code(rep);
    if (code != CHORUS_ERR__COUNT) {
        char msg[200];
        cluster_reply_text(rep, parts, n, msg, sizeof msg);
        waiters_done(s, code, msg);
    } else {
        /* Subscribers acked before this join (this node owned the channel
         * until now) must hear that the epoch changed; the waiters learn it
         * from their ack. */
        uint32_t nwait;
        struct mirror_wait *w;
        DL_COUNT(s->waiters, w, nwait);
        channel_adopt(ch, rep->epoch, rep->seq, ch->nsubs > nwait);
        take_messages(ch, rep, parts, n, false);
        ch->seq = rep->seq;
        ch->live = true;
        waiters_done(s, CHORUS_ERR__COUNT, NULL);
    }
    sync_done(s);
}

int mirror_join(struct channel *ch, struct mirror_wait *w, mirror_done_cb *done, void *ud)
{
    w->done = done;
    w->ud = ud;
    w->ch = NULL;
    w->prev = w->next = NULL;
    if (ch->live && !ch->sync) {
        done(w, CHORUS_ERR__COUNT, NULL);
        return 0;
    }
    if (!ch->sync) {
        struct chan_sync *s = calloc(1, sizeof *s);
        if (!s)
            return -1;
        s->ch = ch;
        if (cluster_sync(ch->name, ch->len, false, "", 0, (uint32_t)ch->ns->history_size, true,
                         &s->call, on_join, s) < 0) {
            free(s);
            done(w, CHORUS_ERR_UNAVAILABLE, "the channel's owner is unreachable");
            return 0;
        }
        ch->sync = s;
        ch->pins++;
    }
    w->ch = ch;
    DL_PREPEND(ch->sync->waiters, w);
    return 0;
}

void mirror_wait_cancel(struct mirror_wait *w)
{
    if (!w->ch || !w->ch->sync)
        return;
    DL_DELETE(w->ch->sync->waiters, w);
    w->prev = w->next = NULL;
    w->ch = NULL;
}

/* --------------------------------------------------------------- repair */

static void send_gap(struct channel *ch, uint64_t from, uint64_t to)
{
    char buf[CODEC_CHANNEL_MAX + 200];
    int n = snprintf(buf, sizeof buf,
                     "{\"op\":\"gap\",\"ch\":\"%s\",\"epoch\":\"%s\",\"from\":%llu,\"to\":%llu}",
                     ch->name, ch->epoch, (unsigned long long)from, (unsigned long long)to);
    if (n > 0 && (size_t)n < sizeof buf)
        channel_broadcast(ch, buf, (size_t)n);
}

static void start_repair(struct channel *ch, uint64_t gap_to, bool same_epoch);

static void on_repair(struct cluster_call *call, const struct envelope *rep,
                      const struct cluster_part *parts, int n)
{
    struct chan_sync *s = call->ud;
    struct channel *ch = s->ch;
    uint64_t from = ch->seq + 1;
    bool again = false;

    if (cluster_reply_code(rep) != CHORUS_ERR__COUNT) {
        /* No owner answered (it may just have died): nothing is skipped; the
         * next message or position beacon from the new owner repairs again. */
        log_info("event=gap_repair_deferred ch=%s from=%llu", ch->name, (unsigned long long)from);
    } else if (strcmp(rep->epoch, ch->epoch) != 0) {
        /* The owner restarted the sequence: whatever this epoch still lacked is
         * gone. Say so, switch epochs, and fetch the new epoch from its start. */
        metrics.gaps_unrepaired++;
        if (s->gap_to > from && s->gap_same_epoch)
            send_gap(ch, from, s->gap_to - 1);
        channel_adopt(ch, rep->epoch, 0, true);
        again = rep->seq > 0;
    } else if (rep->flags & ENV_FLAG_RECOVERED) {
        take_messages(ch, rep, parts, n, true);
        metrics.gaps_repaired++;
    } else if (rep->seq >= from) {
        /* Same epoch, but the owner's history no longer reaches back here. */
        metrics.gaps_unrepaired++;
        log_warn("event=gap_unrepaired ch=%s from=%llu to=%llu", ch->name,
                 (unsigned long long)from, (unsigned long long)rep->seq);
        send_gap(ch, from, rep->seq);
        ch->seq = ch->assigned = rep->seq;
    }
    uint64_t target = rep ? rep->seq + 1 : 0;
    ch->pins++; /* sync_done may release the channel */
    sync_done(s);
    if (again && !ch->sync)
        start_repair(ch, target, true);
    ch->pins--;
    channel_release(ch);
}

/* Asks the owner for everything after this mirror's position; messages
 * before gap_to are missing. Delivery holds until the reply. */
static void start_repair(struct channel *ch, uint64_t gap_to, bool same_epoch)
{
    metrics.gaps_detected++;
    struct chan_sync *s = calloc(1, sizeof *s);
    if (!s)
        return;
    s->ch = ch;
    s->repair = true;
    s->gap_to = gap_to;
    s->gap_same_epoch = same_epoch;
    if (cluster_sync(ch->name, ch->len, same_epoch, ch->epoch, ch->seq, CLUSTER_SYNC_ALL, true,
                     &s->call, on_repair, s) < 0) {
        free(s);
        metrics.gaps_unrepaired++;
        send_gap(ch, ch->seq + 1, gap_to - 1);
        return;
    }
    ch->sync = s;
    ch->pins++;
}

/* A message from the owner's stream (delivered: true), or a REPL that
 * revealed a gap (false: it says nothing of what the owner delivered). */
static void on_msg(struct channel *ch, const struct envelope *env, const unsigned char *data,
                   size_t len, bool delivered)
{
    if (ch->sync) {
        metrics.cluster_held_back++;
        return;
    }
    struct frame *f = frame_from(data, len);
    if (!f)
        return;
    f->binary = env->flags & ENV_FLAG_BINARY;
    f->arrived_us = runtime_mono_us();
    if (delivered)
        tail_show_upto(ch, env->epoch, env->seq - 1);
    enum apply_result r = channel_apply(ch, env->epoch, env->seq, env->ts_ms, f);
    frame_unref(f);
    tail_trim(ch);
    if (r == APPLY_GAP)
        start_repair(ch, env->seq, !strcmp(env->epoch, ch->epoch));
}

/* The owner announced its position after a quiet spell: messages lost at the
 * end of a burst have no later message to reveal them, this does. */
static void on_pos(struct channel *ch, const struct envelope *env)
{
    if (ch->sync || !ch->live)
        return;
    tail_show_upto(ch, env->epoch, env->seq);
    bool same_epoch = !strcmp(env->epoch, ch->epoch);
    if (!same_epoch || env->seq > ch->seq)
        start_repair(ch, env->seq + 1, same_epoch);
}

/* ---------------------------------------------------------------- backup */

static void send_ack(const struct envelope *req, struct channel *ch, const struct cluster_part *name,
                     enum chorus_err refuse)
{
    struct envelope e;
    cluster_env_init(&e, ENV_REPL_ACK);
    snprintf(e.epoch, sizeof e.epoch, "%s", ch ? ch->epoch : req->epoch);
    e.seq = ch ? ch->seq + ch->ntail : 0; /* held contiguously, shown or not */
    e.req_id = req->req_id; /* the shard gen the owner sent under */
    if (refuse != CHORUS_ERR__COUNT)
        e.status = (uint16_t)(refuse + 1);
    cluster_send_to(req->origin, &e, name, 1);
}

static void backup_apply(struct channel *ch, const struct envelope *env, struct frame *f,
                          const char *key)
{
    struct cluster_part name = {(const unsigned char *)ch->name, ch->len};
    bool same_epoch = !strcmp(env->epoch, ch->epoch);
    enum apply_result r;
    if (ch->nsubs && same_epoch) {
        /* Local subscribers see it only once the owner delivers it. */
        uint64_t top = ch->seq + ch->ntail;
        if (env->seq == top + 1) {
            struct held_msg *h = calloc(1, sizeof *h);
            if (!h)
                return; /* unacknowledged: the owner sends it again */
            h->seq = env->seq;
            h->ts_ms = env->ts_ms;
            h->f = frame_ref(f);
            DL_APPEND(ch->tail, h);
            ch->ntail++;
        }
        r = env->seq <= top + 1 ? APPLY_OK : APPLY_GAP;
    } else {
        tail_apply(ch); /* nobody here to hold back from, or another epoch */
        r = channel_apply(ch, env->epoch, env->seq, env->ts_ms, f);
        if (r == APPLY_GAP && !ch->nsubs) {
            /* Nobody here needs the messages before it: start the copy here. */
            channel_adopt(ch, env->epoch, env->seq - 1, false);
            r = channel_apply(ch, env->epoch, env->seq, env->ts_ms, f);
        }
    }
    if (r == APPLY_GAP) {
        /* Local subscribers need the missing messages first: repair, and hold
         * this one until the repair is done. */
        on_msg(ch, env, frame_payload(f), f->len, false);
        hold_repl(ch, env, frame_payload(f), f->len, key); /* else the owner re-sends it */
        return;
    }
    if (*key)
        channel_key_record(ch, key, env->seq, runtime_now_ms());
    send_ack(env, ch, &name, CHORUS_ERR__COUNT);
}

/* REPL [channel, msg frame, key] {epoch, seq, ts} -> REPL_ACK */
static void on_repl(const struct cluster_part *topic, const struct envelope *env,
                    const struct cluster_part *parts, int n)
{
    (void)topic;
    if (n != 3 || !codec_channel_valid((const char *)parts[0].data, parts[0].len) ||
        parts[2].len > CODEC_KEY_MAX)
        return;
    const char *name = (const char *)parts[0].data;
    size_t len = parts[0].len;
    if (!cluster_backup_accepts(name, len, env->origin, env->req_id)) {
        /* Fencing: only the owner the committed map names, at its current
         * gen, while this node holds a lease; an owner working from an older
         * map (or cut off) gets nothing acknowledged. */
        send_ack(env, NULL, &parts[0], CHORUS_ERR_UNAVAILABLE);
        return;
    }
    struct channel *ch = channel_get(name, len);
    if (!ch)
        return;
    ch->mirror = true;
    ch->replica = true;
    ch->repl_gen = env->req_id;
    char key[CODEC_KEY_MAX + 1];
    memcpy(key, parts[2].data, parts[2].len);
    key[parts[2].len] = '\0';
    if (ch->sync) {
        /* A join or repair is running for local subscribers; apply this one
         * right after it (or let the owner re-send it if the hold is full). */
        hold_repl(ch, env, parts[1].data, parts[1].len, key);
        channel_release(ch);
        return;
    }
    struct frame *f = frame_from(parts[1].data, parts[1].len);
    if (f) {
        f->binary = env->flags & ENV_FLAG_BINARY;
        f->arrived_us = runtime_mono_us();
        backup_apply(ch, env, f, key);
        frame_unref(f);
    }
    channel_release(ch);
}

/* --------------------------------------------------------------- stream */

/* MSG on a channel's topic: the owner's next message. */
static void on_msg_env(const struct cluster_part *topic, const struct envelope *env,
                       const struct cluster_part *parts, int n)
{
    if (n != 1 || topic->len < 2 || topic->data[topic->len - 1] != '\0')
        return;
    struct channel *ch = channel_find((const char *)topic->data, topic->len - 1);
    if (!ch || !ch->nsubs) {
        metrics.cluster_unwanted++;
        return;
    }
    on_msg(ch, env, parts[0].data, parts[0].len, true);
}

/* POS on a channel's topic: the owner's position after a quiet spell. */
static void on_pos_env(const struct cluster_part *topic, const struct envelope *env,
                       const struct cluster_part *parts, int n)
{
    (void)parts;
    if (n != 0 || topic->len < 2 || topic->data[topic->len - 1] != '\0')
        return;
    struct channel *ch = channel_find((const char *)topic->data, topic->len - 1);
    if (ch && ch->nsubs)
        on_pos(ch, env);
}

/* Local subscribers left: the held copies join the channel (they are the
 * replica); nobody is left to hold them back from. */
static void on_interest(struct channel *ch, bool on)
{
    if (!on && ch->tail)
        tail_apply(ch);
}

void mirror_start(void)
{
    cluster_on_interest(on_interest);
    cluster_handle(ENV_MSG, on_msg_env);
    cluster_handle(ENV_POS, on_pos_env);
    cluster_handle(ENV_REPL, on_repl);
}

static void free_tail(struct channel *ch, void *ud)
{
    (void)ud;
    while (ch->tail)
        tail_free_one(ch, ch->tail);
}

void mirror_stop(void) { channel_foreach(free_tail, NULL); }
