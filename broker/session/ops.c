/* ops.c - the client protocol v1 operations (PROTOCOL.md section 2).
 *
 * Each handler gets a decoded, validated request and answers with exactly
 * one reply when the request has an id, and an err even when it has none. */
#include "ops.h"
#include "auth_ws.h"
#include "cluster.h"
#include "codec.h"
#include "conn.h"
#include "frame.h"
#include "history_fetch.h"
#include "metrics.h"
#include "mirror.h"
#include "proxy.h"
#include "publish.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

static json_t *reply(const char *op, const struct codec_request *req)
{
    json_t *j = json_pack("{s:s}", "op", op);
    if (j && req->has_id)
        json_object_set_new(j, "id", json_integer(req->id));
    return j;
}

static void send_ack(struct conn *c, const struct codec_request *req, json_t *fields)
{
    if (!req->has_id) {
        json_decref(fields);
        return;
    }
    json_t *j = reply("ack", req);
    if (j && fields)
        json_object_update(j, fields);
    json_decref(fields);
    conn_send_json(c, j);
}

/* A recovery replays through the subscription, like live messages. */
static void queue_history_entry(const struct hist_entry *e, void *ud)
{
    conn_deliver(ud, e->f);
}

/* ------------------------------------------------ waiting for an owner */

/* A request of one connection that waits for a channel's owner: a
 * subscribe waiting for the mirror to become current, or a history request.
 * Linked in conn->calls until it is answered or the connection closes. */
struct conn_call {
    struct conn *conn;
    struct conn_call *prev, *next;
    bool has_id;
    long long id;
    bool is_history;
    bool server;                  /* subscribed by the server: no ack */
    bool announce;                /* ... and told with "subscribed" (server API) */
    struct history_fetch hist;    /* is_history */
    struct mirror_wait wait;      /* a subscribe: */
    struct channel *ch;
    bool has_since;
    char since_epoch[CODEC_EPOCH_MAX + 1];
    uint64_t since_seq;
};

static struct conn_call *conn_call_new(struct conn *c, const struct codec_request *req)
{
    struct conn_call *cc = calloc(1, sizeof *cc);
    if (!cc)
        return NULL;
    cc->conn = c;
    cc->has_id = req->has_id;
    cc->id = req->id;
    DL_PREPEND(c->calls, cc);
    return cc;
}

static void conn_call_free(struct conn_call *cc)
{
    DL_DELETE(cc->conn->calls, cc);
    free(cc);
}

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
    struct sub *s = recovered ? channel_sub_find(&c->subs, ch) : NULL;
    if (s)
        channel_history_each(ch, since_seq, -1, now, queue_history_entry, s);
}

/* {"op":"subscribed","ch","epoch","seq"}: the server API subscribed c (PROTOCOL.md 6). */
static void send_subscribed(struct conn *c, struct channel *ch)
{
    conn_send_json(c, json_pack("{s:s, s:s, s:s, s:I}", "op", "subscribed", "ch", ch->name, "epoch",
                                ch->epoch, "seq", (json_int_t)ch->seq));
}

static void on_mirror_current(struct mirror_wait *w, enum chorus_err err, const char *msg)
{
    struct conn_call *cc = w->ud;
    struct conn *c = cc->conn;
    struct channel *ch = cc->ch;
    if (err == CHORUS_ERR__COUNT && cc->server) {
        if (cc->announce)
            send_subscribed(c, ch);
    } else if (err == CHORUS_ERR__COUNT) {
        ack_sub(c, ch, cc->has_id, cc->id, cc->has_since, cc->since_epoch, cc->since_seq);
    } else {
        if (!cc->server)
            conn_send_err(c, cc->has_id, cc->id, err, msg);
        struct sub *sub = channel_sub_find(&c->subs, ch);
        if (sub)
            channel_unsubscribe(sub, &c->subs); /* a join keeps ch pinned until it returns */
    }
    conn_call_free(cc);
}

/* c is subscribed to ch, whose owner is another node: ack once the mirror
 * is current. */
static void sub_remote(struct conn *c, struct channel *ch, const struct codec_request *req)
{
    struct conn_call *cc = conn_call_new(c, req);
    if (!cc) {
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_UNAVAILABLE, "out of memory");
        return;
    }
    cc->ch = ch;
    cc->has_since = req->has_since;
    memcpy(cc->since_epoch, req->since_epoch, sizeof cc->since_epoch);
    cc->since_seq = req->since_seq;
    if (mirror_join(ch, &cc->wait, on_mirror_current, cc) < 0) {
        conn_call_free(cc);
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_UNAVAILABLE, "out of memory");
    }
}

/* c stops waiting on ch (unsubscribe), or on everything (ch NULL: close). */
static void calls_cancel(struct conn *c, struct channel *ch)
{
    struct conn_call *cc = c->calls, *next;
    for (; cc; cc = next) {
        next = cc->next;
        if (ch && (cc->is_history || cc->ch != ch))
            continue;
        if (cc->is_history)
            history_fetch_cancel(&cc->hist);
        else
            mirror_wait_cancel(&cc->wait);
        conn_call_free(cc);
    }
}

/* A sub the namespace's rules (and the subscribe hook, if any) allowed. */
static void sub_allowed(struct conn *c, const struct codec_request *req)
{
    struct channel *ch = channel_find(req->ch, req->ch_len);
    /* Refuse before creating anything, so refused requests cannot leave
     * empty channels behind. */
    if (!(ch && channel_sub_find(&c->subs, ch)) &&
        c->subs.n >= (uint32_t)rt.cfg->max_channels_per_conn) {
        char msg[80];
        snprintf(msg, sizeof msg, "at most %d channels per connection",
                 rt.cfg->max_channels_per_conn);
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_LIMIT_REACHED, msg);
        return;
    }
    ch = channel_get(req->ch, req->ch_len);
    if (!ch) {
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_UNAVAILABLE, "out of memory");
        return;
    }
    if (!channel_sub_find(&c->subs, ch) && !channel_subscribe(ch, c, &c->subs)) {
        channel_release(ch);
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_UNAVAILABLE, "out of memory");
        return;
    }

    if (!cluster_is_owner(req->ch, req->ch_len)) {
        presence_join(c, ch);
        sub_remote(c, ch, req);
        return;
    }
    int64_t now = runtime_now_ms();
    bool recovered = req->has_since && channel_can_recover(ch, req->since_epoch, req->since_seq, now);
    /* The ack and the missed messages are queued before control returns to
     * the loop, so no live message can come between them. */
    json_t *f = json_pack("{s:s, s:s, s:I}", "ch", ch->name, "epoch", ch->epoch, "seq",
                          (json_int_t)ch->seq);
    if (f && req->has_since)
        json_object_set_new(f, "recovered", json_boolean(recovered));
    send_ack(c, req, f);
    struct sub *s = recovered ? channel_sub_find(&c->subs, ch) : NULL;
    if (s)
        channel_history_each(ch, req->since_seq, -1, now, queue_history_entry, s);
    presence_join(c, ch);
}

/* ------------------------------------ the server API's and the connect hook's */

int ops_server_subscribe(struct conn *c, const char *name, size_t len, bool announce)
{
    struct channel *ch = channel_find(name, len);
    if (ch && channel_sub_find(&c->subs, ch))
        return 0;
    if (c->closing || c->subs.n >= (uint32_t)rt.cfg->max_channels_per_conn)
        return -1;
    if (!(ch = channel_get(name, len)))
        return -1;
    if (!channel_subscribe(ch, c, &c->subs)) {
        channel_release(ch);
        return -1;
    }
    presence_join(c, ch);
    if (cluster_is_owner(name, len)) {
        if (announce)
            send_subscribed(c, ch);
        return 1;
    }
    struct codec_request none = {0};
    struct conn_call *cc = conn_call_new(c, &none);
    if (cc) {
        cc->server = true;
        cc->announce = announce;
        cc->ch = ch;
        if (mirror_join(ch, &cc->wait, on_mirror_current, cc) == 0)
            return 1;
        conn_call_free(cc);
    }
    presence_leave(c, ch);
    channel_unsubscribe(channel_sub_find(&c->subs, ch), &c->subs);
    return -1;
}

int ops_server_unsubscribe(struct conn *c, const char *name, size_t len, const char *reason)
{
    struct channel *ch = channel_find(name, len);
    struct sub *s = ch ? channel_sub_find(&c->subs, ch) : NULL;
    if (!s)
        return 0;
    presence_leave(c, ch);
    calls_cancel(c, ch);
    /* The event is queued after every msg already queued, and none follows. */
    conn_send_json(c, json_pack("{s:s, s:s, s:s}", "op", "unsubscribed", "ch", ch->name, "reason",
                                reason));
    channel_unsubscribe(s, &c->subs);
    return 1;
}

/* {"op":"sub","id"?,"ch","since"?:{"epoch","seq"}} -> ack {ch,epoch,seq,recovered?}, then missed msgs */
static void op_sub(struct conn *c, const struct codec_request *req)
{
    if (!auth_ws_may_read(c, req) || proxy_subscribe(c, req, sub_allowed))
        return;
    sub_allowed(c, req);
}

void ops_hook_subscribe(struct conn *c, const char *ch, size_t len)
{
    ops_server_subscribe(c, ch, len, false);
}

void ops_subscribe(struct conn *c, const struct codec_request *req) { op_sub(c, req); }

/* {"op":"unsub","id"?,"ch"} -> ack {ch} | err not_subscribed */
static void op_unsub(struct conn *c, const struct codec_request *req)
{
    struct channel *ch = channel_find(req->ch, req->ch_len);
    struct sub *s = ch ? channel_sub_find(&c->subs, ch) : NULL;
    if (!s) {
        char msg[300];
        snprintf(msg, sizeof msg, "not subscribed to '%s'", req->ch);
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_NOT_SUBSCRIBED, msg);
        return;
    }
    presence_leave(c, ch);
    calls_cancel(c, ch);
    channel_unsubscribe(s, &c->subs);
    send_ack(c, req, json_pack("{s:s}", "ch", req->ch));
}

/* {"op":"pub","id"?,"ch","data"} -> ack {ch,epoch,seq} */
/* A publish of one connection in flight; linked in conn->pubs until done. */
struct conn_pub {
    struct pub_wait w;
    struct conn *conn;
    bool has_id;
    long long id;
    struct conn_pub *prev, *next;
};

static void conn_pub_unlink(struct conn_pub *p) { DL_DELETE(p->conn->pubs, p); }

static void pub_done(struct pub_wait *w, enum chorus_err err, const char *msg, const char *epoch,
                     uint64_t seq, bool duplicate)
{
    struct conn_pub *p = w->ud;
    conn_pub_unlink(p);
    if (err != CHORUS_ERR__COUNT) {
        conn_err_channel(w->ch, strlen(w->ch));
        conn_send_err(p->conn, p->has_id, p->id, err, msg);
        conn_err_channel(NULL, 0);
    } else {
        metrics.published_ws++;
        if (p->has_id) {
            json_t *j = json_pack("{s:s, s:I, s:s, s:s, s:I}", "op", "ack", "id", (json_int_t)p->id,
                                  "ch", w->ch, "epoch", epoch, "seq", (json_int_t)seq);
            if (j && duplicate)
                json_object_set_new(j, "duplicate", json_true());
            conn_send_json(p->conn, j);
        }
    }
    struct conn *c = p->conn;
    free(p);
    /* Shutdown waits for a connection's publishes in flight, so that the
     * client has every answer before its 1001 (conn_drain_all). */
    if (c->close_when_answered && !c->pubs)
        conn_close_with(c, c->close_code, c->close_reason, false);
}

/* A publish the rules (and the publish hook, if any) allowed. */
static void pub_allowed(struct conn *c, bool has_id, long long id, const char *ch, size_t len,
                        const char *data, size_t data_len, bool binary, const char *key)
{
    struct conn_pub *p = calloc(1, sizeof *p);
    if (!p) {
        conn_send_err(c, has_id, id, CHORUS_ERR_UNAVAILABLE, "out of memory");
        return;
    }
    p->conn = c;
    p->has_id = has_id;
    p->id = id;
    DL_PREPEND(c->pubs, p);
    publish_submit_as(ch, len, data, data_len, binary, c->id, auth_ws_attr(c, ch, len), key, &p->w,
                      pub_done, p);
}

void ops_publish(struct conn *c, bool has_id, long long id, const char *ch, size_t len,
                 const char *data, size_t data_len, bool binary, const char *key)
{
    if (!proxy_publish(c, has_id, id, ch, len, data, data_len, binary, key, pub_allowed))
        pub_allowed(c, has_id, id, ch, len, data, data_len, binary, key);
}

/* {"op":"pub","id"?,"ch","data","key"?} -> ack {ch,epoch,seq,duplicate?} once delivered */
static void op_pub(struct conn *c, const struct codec_request *req)
{
    if (rt.shutting_down) {
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_UNAVAILABLE, "node is shutting down");
        return;
    }
    if (!auth_ws_may_publish(c, req->ch, req->ch_len, req->has_id, req->id))
        return;
    ops_publish(c, req->has_id, req->id, req->ch, req->ch_len, req->data_raw, req->data_raw_len,
                false, req->key);
}

void ops_conn_closed(struct conn *c)
{
    calls_cancel(c, NULL);
    while (c->pubs) {
        struct conn_pub *p = c->pubs;
        DL_DELETE(c->pubs, p);
        publish_cancel(&p->w);
        free(p);
    }
}

static void on_history(struct history_fetch *h, struct frame *f, enum chorus_err err,
                       const char *msg)
{
    struct conn_call *cc = h->ud;
    if (f) {
        conn_enqueue(cc->conn, f);
        frame_unref(f);
    } else {
        conn_send_err(cc->conn, cc->has_id, cc->id, err, msg);
    }
    conn_call_free(cc);
}

/* {"op":"history","id"?,"ch","since"?,"limit"?} -> {"op":"history",id,ch,epoch,seq,msgs:[msg...]} */
static void op_history(struct conn *c, const struct codec_request *req)
{
    if (!auth_ws_may_read(c, req))
        return;
    const struct ns_opts *ns = config_ns_for(rt.cfg, req->ch, req->ch_len);
    long long limit = req->has_limit && req->limit < ns->history_size ? req->limit : ns->history_size;
    struct conn_call *cc = conn_call_new(c, req);
    if (!cc) {
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_UNAVAILABLE, "out of memory");
        return;
    }
    cc->is_history = true;
    history_fetch(&cc->hist, req->ch, req->ch_len, req->has_id, req->id, req->has_since,
                  req->since_epoch, req->since_seq, limit, on_history, cc);
}

/* {"op":"presence","id"?,"ch"} -> {"op":"presence",id,ch,count,members?:[{user,info?}|{client}...]} */
static void op_presence(struct conn *c, const struct codec_request *req)
{
    if (auth_ws_may_read(c, req))
        presence_op(c, req);
}

/* {"op":"ping","id"?} -> {"op":"pong","id"?} */
static void op_ping(struct conn *c, const struct codec_request *req)
{
    conn_send_json(c, reply("pong", req));
}

void ops_handle(struct conn *c, const char *buf, size_t len)
{
    struct codec_request req;
    struct codec_error err;

    if (!codec_decode_request(buf, len, &req, &err)) {
        if (auth_ws_gate(c, NULL))
            conn_send_err(c, req.has_id, req.id, err.code, err.msg);
        return;
    }
    if (!auth_ws_gate(c, &req)) {
        codec_request_free(&req);
        return;
    }
    conn_err_channel(req.ch, req.ch_len);
    switch (req.op) {
    case CODEC_OP_SUB: op_sub(c, &req); break;
    case CODEC_OP_UNSUB: op_unsub(c, &req); break;
    case CODEC_OP_PUB: op_pub(c, &req); break;
    case CODEC_OP_HISTORY: op_history(c, &req); break;
    case CODEC_OP_PRESENCE: op_presence(c, &req); break;
    case CODEC_OP_PING: op_ping(c, &req); break;
    case CODEC_OP_AUTH: auth_ws_op(c, &req); break;
    }
    conn_err_channel(NULL, 0);
    codec_request_free(&req);
}
