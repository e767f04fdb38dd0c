/* mirror.c - following, repairing and forwarding for channels owned by
 * another node.
 *
 * Invariant: while ch->sync is set, messages from the owner are dropped; the
 * sync reply covers them, because the owner sends that reply on the same
 * ordered link after every message it had sequenced so far. */
#include "mirror.h"
#include "channel.h"
#include "cluster.h"
#include "conn.h"
#include "frame.h"
#include "history.h"
#include "log.h"
#include "metrics.h"
#include "replica.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYNC_ALL 0xffffffffu

/* A local subscribe waiting for the mirror to become current. */
struct join_waiter {
    struct conn *conn;
    bool has_id, has_since;
    long long id;
    char since_epoch[CODEC_EPOCH_MAX + 1];
    uint64_t since_seq;
    struct join_waiter *next;
};

/* One per channel with a join or repair in flight; pins the channel. */
/* A replicated message that arrived while a sync was running. */
struct held_repl {
    struct envelope env;
    struct frame *f;
    char key[CODEC_KEY_MAX + 1];
    struct held_repl *next;
};

#define HELD_MAX 10000

struct chan_sync {
    struct cluster_call call;
    struct channel *ch;
    bool repair;
    uint64_t gap_to;            /* repair: seq of the message that revealed the gap */
    bool gap_same_epoch;        /* ... and it was in the mirror's epoch */
    struct join_waiter *waiters;
    struct held_repl *held, *held_tail;  /* applied, in order, once the sync is done */
    uint32_t nheld;
};

/* A request of one connection waiting for the owner; linked in conn->calls. */
struct conn_call {
    struct cluster_call call;
    struct conn *conn;
    struct conn_call *prev, *next;
    bool has_id;
    long long id;
    bool is_history;
    long long limit;
    char ch[CODEC_CHANNEL_MAX + 1];
};

static enum chorus_err reply_code(const struct envelope *rep)
{
    if (!rep)
        return CHORUS_ERR_UNAVAILABLE;
    return rep->status ? (enum chorus_err)(rep->status - 1) : CHORUS_ERR__COUNT;
}

static void reply_text(const struct envelope *rep, const struct cluster_part *parts, int n,
                       char *out, size_t cap)
{
    if (!rep) {
        snprintf(out, cap, "the channel's owner did not answer in time");
        return;
    }
    size_t l = n > 0 && parts[0].len < cap ? parts[0].len : 0;
    memcpy(out, l ? (const char *)parts[0].data : "", l);
    out[l] = '\0';
    if (!l)
        snprintf(out, cap, "the channel's owner refused the request");
}

/* ----------------------------------------------------------- local acks */

static void queue_entry(const struct hist_entry *e, void *ud) { conn_enqueue(ud, e->f); }

/* The mirror is current: ack like a local subscribe (PROTOCOL.md 2.1). */
static void ack_sub(struct conn *c, struct channel *ch, bool has_id, long long id, bool has_since,
                    const char *since_epoch, uint64_t since_seq)
{
    int64_t now = runtime_now_ms();
    bool recovered = has_since && channel_can_recover(ch, since_epoch, since_seq, now);
    if (has_id) {
        json_t *j = json_pack("{s:s, s:I, s:s, s:s, s:I}", "op", "ack", "id", (json_int_t)id, "ch",
                              ch->name, "epoch", ch->epoch, "seq", (json_int_t)ch->seq);
        if (j && has_since)
            json_object_set_new(j, "recovered", json_boolean(recovered));
        conn_send_json(c, j);
    }
    if (recovered)
        channel_history_each(ch, since_seq, -1, now, queue_entry, c);
}

static void waiters_free(struct chan_sync *s, bool ok, enum chorus_err code, const char *msg)
{
    struct channel *ch = s->ch;
    struct join_waiter *w, *next;
    for (w = s->waiters; w; w = next) {
        next = w->next;
        if (ok) {
            ack_sub(w->conn, ch, w->has_id, w->id, w->has_since, w->since_epoch, w->since_seq);
        } else {
            conn_send_err(w->conn, w->has_id, w->id, code, msg);
            struct sub *sub = channel_sub_find(&w->conn->subs, ch);
            if (sub)
                channel_unsubscribe(sub, &w->conn->subs); /* ch stays pinned until we return */
        }
        free(w);
    }
    s->waiters = NULL;
}

/* Records the (seq+ts, msg) pairs of a sync reply, oldest first; applies them
 * as deliveries when `deliver`, else only into history. */
static void take_messages(struct channel *ch, const struct envelope *rep,
                          const struct cluster_part *parts, int n, bool deliver)
{
    for (int i = 1; i + 1 < n; i += 2) {
        uint64_t seq;
        int64_t ts;
        uint8_t flags;
        if (!envelope_get_sync_item(parts[i].data, parts[i].len, &seq, &ts, &flags))
            continue;
        struct frame *f = frame_from(parts[i + 1].data, parts[i + 1].len);
        if (!f)
            continue;
        f->binary = flags & ENV_FLAG_BINARY;
        if (deliver)
            channel_apply(ch, rep->epoch, seq, ts, f);
        else
            channel_record(ch, f, seq, ts);
        frame_unref(f);
    }
}

static void sync_done(struct chan_sync *s)
{
    struct channel *ch = s->ch;
    ch->sync = NULL;
    /* Replicated messages are newer than anything the sync reply held. */
    while (s->held) {
        struct held_repl *h = s->held;
        s->held = h->next;
        replica_backup_apply(ch, &h->env, h->f, h->key);
        frame_unref(h->f);
        free(h);
    }
    ch->pins--;
    free(s);
    channel_release(ch);
}

bool mirror_hold_repl(struct channel *ch, const struct envelope *env, const unsigned char *data,
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
    h->env = *env;
    snprintf(h->key, sizeof h->key, "%s", key);
    if (s->held_tail)
        s->held_tail->next = h;
    else
        s->held = h;
    s->held_tail = h;
    s->nheld++;
    return true;
}

/* ----------------------------------------------------------------- join */

static void on_join(struct cluster_call *call, const struct envelope *rep,
                    const struct cluster_part *parts, int n)
{
    struct chan_sync *s = call->ud;
    struct channel *ch = s->ch;
    enum chorus_err code = reply_code(rep);
    if (code != CHORUS_ERR__COUNT) {
        char msg[200];
        reply_text(rep, parts, n, msg, sizeof msg);
        waiters_free(s, false, code, msg);
    } else {
        /* Subscribers acked before this join (this node owned the channel
         * until now) must hear that the epoch changed; the waiters learn it
         * from their ack. */
        uint32_t nwait = 0;
        for (struct join_waiter *w = s->waiters; w; w = w->next)
            nwait++;
        channel_adopt(ch, rep->epoch, rep->seq, ch->nsubs > nwait);
        take_messages(ch, rep, parts, n, false);
        ch->seq = rep->seq;
        ch->live = true;
        waiters_free(s, true, 0, NULL);
    }
    sync_done(s);
}

void mirror_sub(struct conn *c, struct channel *ch, const struct codec_request *req)
{
    if (ch->live && !ch->sync) {
        ack_sub(c, ch, req->has_id, req->id, req->has_since, req->since_epoch, req->since_seq);
        return;
    }
    struct join_waiter *w = calloc(1, sizeof *w);
    if (!w) {
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_UNAVAILABLE, "out of memory");
        return;
    }
    w->conn = c;
    w->has_id = req->has_id;
    w->id = req->id;
    w->has_since = req->has_since;
    memcpy(w->since_epoch, req->since_epoch, sizeof w->since_epoch);
    w->since_seq = req->since_seq;

    if (!ch->sync) {
        struct chan_sync *s = calloc(1, sizeof *s);
        if (!s) {
            free(w);
            conn_send_err(c, req->has_id, req->id, CHORUS_ERR_UNAVAILABLE, "out of memory");
            return;
        }
        s->ch = ch;
        if (cluster_sync(ch->name, ch->len, false, "", 0, (uint32_t)ch->ns->history_size, true,
                         &s->call, on_join, s) < 0) {
            free(s);
            free(w);
            conn_send_err(c, req->has_id, req->id, CHORUS_ERR_UNAVAILABLE,
                          "the channel's owner is unreachable");
            struct sub *sub = channel_sub_find(&c->subs, ch);
            if (sub)
                channel_unsubscribe(sub, &c->subs);
            return;
        }
        ch->sync = s;
        ch->pins++;
    }
    w->next = ch->sync->waiters;
    ch->sync->waiters = w;
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

    if (reply_code(rep) != CHORUS_ERR__COUNT) {
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
    if (cluster_sync(ch->name, ch->len, same_epoch, ch->epoch, ch->seq, SYNC_ALL, true,
                     &s->call, on_repair, s) < 0) {
        free(s);
        metrics.gaps_unrepaired++;
        send_gap(ch, ch->seq + 1, gap_to - 1);
        return;
    }
    ch->sync = s;
    ch->pins++;
}

void mirror_on_msg(struct channel *ch, const struct envelope *env, const unsigned char *data,
                   size_t len)
{
    if (ch->sync) {
        metrics.cluster_held_back++;
        return;
    }
    struct frame *f = frame_from(data, len);
    if (!f)
        return;
    f->binary = env->flags & ENV_FLAG_BINARY;
    enum apply_result r = channel_apply(ch, env->epoch, env->seq, env->ts_ms, f);
    frame_unref(f);
    if (r == APPLY_GAP)
        start_repair(ch, env->seq, !strcmp(env->epoch, ch->epoch));
}

/* The owner announced its position after a quiet spell: messages lost at the
 * end of a burst have no later message to reveal them, this does. */
void mirror_on_pos(struct channel *ch, const struct envelope *env)
{
    if (ch->sync || !ch->live)
        return;
    bool same_epoch = !strcmp(env->epoch, ch->epoch);
    if (!same_epoch || env->seq > ch->seq)
        start_repair(ch, env->seq + 1, same_epoch);
}

/* ------------------------------------------------------ forwarded calls */

static void conn_call_unlink(struct conn_call *cc)
{
    if (cc->prev)
        cc->prev->next = cc->next;
    else if (cc->conn)
        cc->conn->calls = cc->next;
    if (cc->next)
        cc->next->prev = cc->prev;
}

static struct conn_call *conn_call_new(struct conn *c, const struct codec_request *req)
{
    struct conn_call *cc = calloc(1, sizeof *cc);
    if (!cc)
        return NULL;
    cc->conn = c;
    cc->has_id = req->has_id;
    cc->id = req->id;
    memcpy(cc->ch, req->ch, req->ch_len);
    cc->ch[req->ch_len] = '\0';
    return cc;
}

static void conn_call_link(struct conn_call *cc)
{
    cc->next = cc->conn->calls;
    if (cc->next)
        cc->next->prev = cc;
    cc->conn->calls = cc;
}

static void on_history(struct cluster_call *call, const struct envelope *rep,
                       const struct cluster_part *parts, int n)
{
    struct conn_call *cc = call->ud;
    conn_call_unlink(cc);
    enum chorus_err code = reply_code(rep);
    if (code != CHORUS_ERR__COUNT) {
        char msg[200];
        reply_text(rep, parts, n, msg, sizeof msg);
        conn_send_err(cc->conn, cc->has_id, cc->id, code, msg);
        free(cc);
        return;
    }
    struct frame *f = history_from_sync(cc->ch, cc->has_id, cc->id, rep, parts, n, cc->limit);
    if (f) {
        conn_enqueue(cc->conn, f);
        frame_unref(f);
    } else {
        conn_send_err(cc->conn, cc->has_id, cc->id, CHORUS_ERR_UNAVAILABLE, "out of memory");
    }
    free(cc);
}

void mirror_history(struct conn *c, const struct codec_request *req)
{
    const struct ns_opts *ns = config_ns_for(rt.cfg, req->ch, req->ch_len);
    struct conn_call *cc = conn_call_new(c, req);
    if (!cc) {
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_UNAVAILABLE, "out of memory");
        return;
    }
    cc->is_history = true;
    cc->limit = req->has_limit && req->limit < ns->history_size ? req->limit : ns->history_size;
    if (cluster_sync(req->ch, req->ch_len, req->has_since, req->since_epoch, req->since_seq,
                     req->has_since ? SYNC_ALL : (uint32_t)cc->limit, false, &cc->call,
                     on_history, cc) < 0) {
        free(cc);
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_UNAVAILABLE,
                      "the channel's owner is unreachable");
        return;
    }
    conn_call_link(cc);
}

/* -------------------------------------------------------------- cleanup */

void mirror_unsub(struct conn *c, struct channel *ch)
{
    if (!ch->sync)
        return;
    struct join_waiter **pp = &ch->sync->waiters;
    while (*pp) {
        if ((*pp)->conn == c) {
            struct join_waiter *w = *pp;
            *pp = w->next;
            free(w);
        } else {
            pp = &(*pp)->next;
        }
    }
}

void mirror_conn_closed(struct conn *c)
{
    for (struct sub *s = c->subs.head; s; s = s->conn_next)
        mirror_unsub(c, s->ch);
    while (c->calls) {
        struct conn_call *cc = c->calls;
        c->calls = cc->next;
        cluster_call_cancel(&cc->call);
        free(cc);
    }
}
