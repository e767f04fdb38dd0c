/* conn.c - the client's one WebSocket connection: connecting and
 * reconnecting, reading and dispatching server frames, writing requests.
 *
 * Connection life: IDLE -> CONNECTING -> OPEN (upgraded) -> READY (hello)
 * -> back to IDLE through chorus__conn_ended(), which runs exactly once per
 * attempt, or DEAD when reconnecting is off. Only READY sends requests, one
 * per WRITEABLE callback; resubscriptions go first.
 *
 * Delivery rule: a subscription delivers a msg only once its sub is
 * acknowledged on the current connection, and only seqs above the last one
 * it delivered (within the epoch), so resuming with `since` after a reconnect
 * never repeats a message. */
#include "internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHORUS__HELLO_TIMEOUT_MS 10000
#define CHORUS__TICK_US (500 * LWS_US_PER_MS)
#define CHORUS__RX_KEEP ((size_t)64 * 1024)

static int chorus__callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                            void *in, size_t len);

const struct lws_protocols chorus__protocols[] = {
    {"chorus-client", chorus__callback, 0, 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}
};

/* ================================================================ helpers */

uint64_t chorus__rand(chorus_client_t *cl)
{
    /* xorshift64*: jitter only, not security. */
    uint64_t x = cl->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    cl->rng = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* Exponential backoff with "equal jitter": the delay doubles per failed
 * attempt up to reconnect_max_ms, and is uniform in [d/2, d], so clients that
 * lost the same node spread out without ever retrying in a tight loop. */
static unsigned chorus__backoff_ms(chorus_client_t *cl)
{
    uint64_t d = cl->opts.reconnect_min_ms, max = cl->opts.reconnect_max_ms;
    for (unsigned i = 0; i < cl->attempt && d < max; i++)
        d *= 2;
    if (d > max)
        d = max;
    uint64_t half = d / 2;
    return (unsigned)(half + chorus__rand(cl) % (d - half + 1));
}

static void chorus__report(chorus_client_t *cl, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void chorus__report(chorus_client_t *cl, int status, const char *fmt, ...)
{
    char msg[320];
    va_list ap;
    if (!cl->opts.on_error || cl->freeing)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cl->opts.on_error(cl, status, msg, cl->opts.user);
}

static void chorus__sub_event(chorus_client_t *cl, const chorus_sub_event_t *ev)
{
    if (cl->opts.on_sub_event && !cl->freeing)
        cl->opts.on_sub_event(cl, ev, cl->opts.user);
}

static const char *chorus__jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* Reads a non-negative integer member; false when absent or mistyped. */
static bool chorus__juint(json_t *o, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static struct chorus__req *chorus__inflight_find(chorus_client_t *cl, uint64_t id)
{
    /* Replies come in request order, so this is normally the head. */
    for (struct chorus__req *r = cl->inflight.head; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

void chorus__kick_writer(chorus_client_t *cl)
{
    if (cl->state == CHORUS__READY && cl->wsi && cl->queued.head)
        lws_callback_on_writable(cl->wsi);
}

void chorus__close_connection(chorus_client_t *cl)
{
    if (!cl->wsi)
        return;
    cl->closing_conn = true;
    lws_callback_on_writable(cl->wsi);
}

/* ============================================================ connecting */

void chorus__connect(lws_sorted_usec_list_t *sul)
{
    chorus_client_t *cl = lws_container_of(sul, chorus_client_t, sul_connect);
    struct lws_client_connect_info i;

    if (cl->freeing || cl->state != CHORUS__IDLE)
        return;
    memset(&i, 0, sizeof i);
    i.context = cl->ctx;
    i.address = cl->host;
    i.port = cl->port;
    i.ssl_connection = cl->tls ? LCCSCF_USE_SSL : 0;
    i.path = cl->path;
    i.host = cl->host_hdr;
    i.protocol = "chorus.v1";
    i.local_protocol_name = "chorus-client";
    i.pwsi = &cl->wsi;
    i.retry_and_idle_policy = &cl->idle_policy;

    cl->state = CHORUS__CONNECTING;
    cl->close_code = 0;
    cl->close_reason[0] = '\0';
    cl->closing_conn = false;
    if (!lws_client_connect_via_info(&i) && cl->state == CHORUS__CONNECTING) {
        /* Failed before any callback could say so (e.g. the name did not resolve). */
        chorus__conn_ended(cl, "could not start the connection");
    }
}

/* Ends the current connection or attempt: requests in flight are failed
 * (publishes: the outcome is unknown) or requeued (history), subscriptions
 * wait for the next hello, and a retry is scheduled. Runs once per attempt.
 * After close code 4013 the node acknowledged nothing and asks its clients to
 * go elsewhere: publishes in flight are retried with their keys (like an
 * `unavailable`), and the reconnect comes after the shortest backoff delay. */
void chorus__conn_ended(chorus_client_t *cl, const char *reason)
{
    struct chorus__req_list failed = {NULL, NULL, 0};
    struct chorus__req *r, *prev;
    char why[sizeof cl->close_reason];
    bool was_connected, cut_off;
    int delay = -1;

    if (cl->state == CHORUS__IDLE || cl->state == CHORUS__DEAD)
        return;
    was_connected = cl->state == CHORUS__OPEN || cl->state == CHORUS__READY;
    cut_off = was_connected && cl->close_code == CHORUS_CLIENT_CLOSE_CUT_OFF && !cl->opts.no_reconnect;
    snprintf(why, sizeof why, "%s", reason && *reason ? reason : "connection closed");
    cl->wsi = NULL;
    cl->closing_conn = false;
    cl->rx_in_msg = false;
    cl->rx_len = 0;
    free(cl->rx);
    cl->rx = NULL;
    cl->rx_cap = 0;
    if (cl->freeing) {
        cl->state = CHORUS__IDLE; /* chorus_client_free() completes every request */
        return;
    }

    /* Walk backwards so requeued history keeps its order at the front. */
    for (r = cl->inflight.tail; r; r = prev) {
        prev = r->prev;
        chorus__req_unlink(&cl->inflight, r);
        if (r->kind == CHORUS__REQ_PUB && cut_off && chorus__retry_pub(cl, r))
            continue;
        if (r->kind == CHORUS__REQ_PUB)
            chorus__req_prepend(&failed, r);
        else if (r->kind == CHORUS__REQ_HISTORY)
            chorus__req_prepend(&cl->queued, r);
        else
            chorus__req_free(cl, r);
    }
    /* Sub and unsub frames belong to the connection; hello rebuilds subs. */
    for (r = cl->queued.head; r; r = prev) {
        prev = r->next;
        if (r->kind == CHORUS__REQ_SUB || r->kind == CHORUS__REQ_UNSUB) {
            chorus__req_unlink(&cl->queued, r);
            chorus__req_free(cl, r);
        }
    }
    for (struct chorus__sub *s = cl->subs; s; s = s->next) {
        s->pending_id = 0;
        s->active = false;
    }

    if (cl->opts.no_reconnect) {
        cl->state = CHORUS__DEAD;
        while ((r = cl->queued.head)) {
            chorus__req_unlink(&cl->queued, r);
            chorus__req_append(&failed, r);
        }
        chorus__retry_cancel_all(cl, &failed);
    } else {
        cl->state = CHORUS__IDLE;
        if (cut_off)
            cl->attempt = 0; /* reset at each hello anyway; kept so should that change */
        delay = (int)chorus__backoff_ms(cl);
        cl->attempt++;
        lws_sul_schedule(cl->ctx, 0, &cl->sul_connect, chorus__connect,
                         (lws_usec_t)delay * LWS_US_PER_MS);
    }

    if (cl->opts.on_disconnected) {
        chorus_disconnect_t d = {was_connected, cl->close_code, why, delay};
        cl->opts.on_disconnected(cl, &d, cl->opts.user);
    }
    while ((r = failed.head)) {
        chorus__req_unlink(&failed, r);
        chorus__fail_req(cl, r, CHORUS_E_DISCONNECTED, NULL,
                         r->kind == CHORUS__REQ_PUB
                             ? "connection lost before the ack: the message may or may not have been published"
                             : NULL);
    }
}

/* Every 500 ms: fail requests whose reply is overdue, and drop a connection
 * that never said hello or whose subscription went unanswered. */
void chorus__tick(lws_sorted_usec_list_t *sul)
{
    chorus_client_t *cl = lws_container_of(sul, chorus_client_t, sul_tick);
    int64_t now = chorus__now_ms();
    struct chorus__req *r, *next;
    bool reset = false;

    lws_sul_schedule(cl->ctx, 0, &cl->sul_tick, chorus__tick, CHORUS__TICK_US);
    if (cl->freeing)
        return;
    if (cl->state == CHORUS__OPEN && now - cl->open_since_ms > CHORUS__HELLO_TIMEOUT_MS) {
        chorus__report(cl, CHORUS_E_PROTOCOL, "no hello from the server within %d ms; reconnecting",
                       CHORUS__HELLO_TIMEOUT_MS);
        chorus__close_connection(cl);
        return;
    }
    for (r = cl->inflight.head; r; r = next) {
        next = r->next;
        if (r->deadline_ms > now)
            continue;
        chorus__req_unlink(&cl->inflight, r);
        if (r->kind == CHORUS__REQ_SUB)
            reset = true;
        if (r->kind == CHORUS__REQ_PUB || r->kind == CHORUS__REQ_HISTORY)
            chorus__fail_req(cl, r, CHORUS_E_TIMEOUT, NULL, NULL);
        else
            chorus__req_free(cl, r);
        /* The callback may have changed the list: start over. */
        next = cl->inflight.head;
    }
    if (reset && cl->wsi) {
        chorus__report(cl, CHORUS_E_TIMEOUT, "a subscription was not acknowledged in time; reconnecting");
        chorus__close_connection(cl);
    }
}

/* ============================================================ server frames */

/* {"op":"hello","v":1,"node","client"} */
static void chorus__on_hello(chorus_client_t *cl, json_t *j)
{
    json_t *v = json_object_get(j, "v");
    if (cl->state != CHORUS__OPEN)
        return; /* a second hello means nothing */
    cl->state = CHORUS__READY;
    cl->attempt = 0;

    /* Resubscribe everything, ahead of what was queued while disconnected,
     * so the application's own publishes reach its subscriptions. */
    for (struct chorus__sub *s = cl->subs; s; s = s->next) {
        struct chorus__req *r = chorus__req_sub(cl, s);
        if (r)
            chorus__req_prepend(&cl->queued, r);
        else
            chorus__report(cl, CHORUS_E_NOMEM, "could not resubscribe to '%s'", s->ch);
    }
    if (!json_is_integer(v) || json_integer_value(v) != 1)
        chorus__report(cl, CHORUS_E_PROTOCOL, "the server speaks protocol v%lld; this SDK speaks v1",
                       json_is_integer(v) ? (long long)json_integer_value(v) : -1LL);
    if (cl->opts.on_connected) {
        const char *node = chorus__jstr(j, "node"), *client = chorus__jstr(j, "client");
        chorus_hello_t h = {json_is_integer(v) ? (int)json_integer_value(v) : 0, node ? node : "",
                            client ? client : ""};
        cl->opts.on_connected(cl, &h, cl->opts.user);
    }
    chorus__kick_writer(cl);
}

/* {"op":"ack","id","ch","epoch","seq","recovered"?} for a sub */
static void chorus__on_sub_ack(chorus_client_t *cl, const struct chorus__req *r, json_t *j)
{
    struct chorus__sub *s = chorus__sub_find(cl, r->ch);
    const char *epoch = chorus__jstr(j, "epoch");
    bool recovered = json_is_true(json_object_get(j, "recovered"));
    uint64_t seq;

    if (!s || s->pending_id != r->id)
        return; /* unsubscribed (and maybe subscribed again) meanwhile */
    s->pending_id = 0;
    s->active = true;
    if (!epoch || strlen(epoch) > CHORUS_EPOCH_MAX || !chorus__juint(j, "seq", &seq)) {
        chorus__report(cl, CHORUS_E_PROTOCOL, "sub ack for '%s' without a usable epoch/seq", r->ch);
        s->has_pos = false;
        return;
    }
    if (r->since && recovered && !strcmp(epoch, s->epoch)) {
        /* Keep our position: the missed messages follow the ack. */
    } else {
        recovered = false;
        strcpy(s->epoch, epoch);
        s->seq = seq;
        s->has_pos = true;
    }
    chorus_sub_event_t ev = {CHORUS_SUB_SUBSCRIBED, s->ch, s->epoch, s->seq, r->since, recovered,
                             0, 0, CHORUS_OK, NULL, NULL};
    chorus__sub_event(cl, &ev);
}

/* {"op":"ack","id",...} */
static void chorus__on_ack(chorus_client_t *cl, json_t *j)
{
    uint64_t id, seq = 0;
    struct chorus__req *r;

    if (!chorus__juint(j, "id", &id) || !(r = chorus__inflight_find(cl, id)))
        return;
    chorus__req_unlink(&cl->inflight, r);
    switch (r->kind) {
    case CHORUS__REQ_SUB:
        chorus__on_sub_ack(cl, r, j);
        break;
    case CHORUS__REQ_UNSUB:
        break;
    case CHORUS__REQ_PUB:
        if (r->ack_cb) {
            const char *epoch = chorus__jstr(j, "epoch");
            if (!chorus__juint(j, "seq", &seq)) {
                chorus__fail_req(cl, r, CHORUS_E_PROTOCOL, NULL, "publish ack without a seq");
                return;
            }
            /* A duplicate (a key the node had seen, e.g. an earlier attempt
             * of this one that was sequenced after all) is the same success. */
            chorus_ack_t a = {CHORUS_OK, NULL, NULL, r->ch, epoch ? epoch : "", seq,
                              json_is_true(json_object_get(j, "duplicate")), r->key, r->attempts};
            r->ack_cb(cl, &a, r->ud);
        }
        break;
    case CHORUS__REQ_HISTORY:
        chorus__fail_req(cl, r, CHORUS_E_PROTOCOL, NULL, "history answered with an ack");
        return;
    }
    chorus__req_free(cl, r);
}

/* {"op":"err","id"?,"code","msg"} */
static void chorus__on_err(chorus_client_t *cl, json_t *j)
{
    const char *code = chorus__jstr(j, "code"), *msg = chorus__jstr(j, "msg");
    int status = chorus__status_from_wire(code);
    struct chorus__req *r;
    uint64_t id;

    if (!code)
        code = "server_error";
    if (!msg)
        msg = "";
    if (chorus__juint(j, "id", &id))
        r = chorus__inflight_find(cl, id);
    else
        /* The node answers requests in order, and every request the SDK
         * sends has an id, so an err without one answers the oldest request
         * still waiting: in practice a frame over max_frame_bytes, which the
         * node discards before it can read the id. */
        r = cl->inflight.head;
    if (!r) {
        chorus__report(cl, status, "%s: %s", code, msg);
        return;
    }
    chorus__req_unlink(&cl->inflight, r);
    if (r->kind == CHORUS__REQ_SUB) {
        struct chorus__sub *s = chorus__sub_find(cl, r->ch);
        if (s && s->pending_id == r->id) {
            chorus_sub_event_t ev = {CHORUS_SUB_FAILED, r->ch, "", 0, false, false,
                                     0, 0, status, code, msg};
            chorus__sub_remove(cl, s);
            chorus__sub_event(cl, &ev);
        }
        chorus__req_free(cl, r);
    } else if (r->kind == CHORUS__REQ_UNSUB) {
        chorus__req_free(cl, r); /* not_subscribed after a refused sub: nothing to undo */
    } else if (status == CHORUS_E_UNAVAILABLE && chorus__retry_pub(cl, r)) {
        /* sent again later with the same key (retry.c) */
    } else {
        chorus__fail_req(cl, r, status, code, msg);
    }
}

/* {"op":"msg","ch","seq","ts","client"?,"data"} */
static void chorus__on_msg(chorus_client_t *cl, json_t *j, const char *raw, size_t raw_len)
{
    const char *ch = chorus__jstr(j, "ch");
    struct chorus__sub *s;
    uint64_t seq;
    char epoch[CHORUS_EPOCH_MAX + 1];

    if (!ch || !chorus__juint(j, "seq", &seq))
        return;
    s = chorus__sub_find(cl, ch);
    if (!s || !s->active)
        return; /* not ours, or sent before our sub's ack on this connection */
    if (s->has_pos && seq <= s->seq)
        return; /* already delivered (a resume overlapping what we had) */
    /* A conflated msg (slow_consumer "conflate") stands for `skipped` older
     * ones the server replaced on purpose: that jump is not a gap. */
    uint64_t skipped = 0;
    if (!chorus__juint(j, "skipped", &skipped))
        skipped = 0;
    if (s->has_pos && seq > s->seq + 1 + skipped) {
        chorus_sub_event_t ev = {CHORUS_SUB_GAP, s->ch, s->epoch, seq, false, false,
                                 s->seq + 1, seq - 1 - skipped, CHORUS_OK, NULL, NULL};
        s->seq = seq;
        chorus__sub_event(cl, &ev);
        /* The event handler may have unsubscribed. */
        if (chorus__sub_find(cl, ch) != s || !s->active)
            return;
    }
    s->seq = seq;
    s->has_pos = true;
    strcpy(epoch, s->epoch);

    json_t *ts = json_object_get(j, "ts");
    chorus_msg_t m = {
        .ch = ch,
        .seq = seq,
        .ts = json_is_integer(ts) ? (int64_t)json_integer_value(ts) : 0,
        .skipped = skipped,
        .epoch = epoch,
        .client = chorus__jstr(j, "client"),
        .user = chorus__jstr(j, "user"),
        .data = json_object_get(j, "data"),
        .frame = j,
        .raw = raw,
        .raw_len = raw_len,
    };
    s->cb(cl, &m, s->ud); /* s may be gone after this */
}

/* {"op":"epoch","ch","epoch","seq"} */
static void chorus__on_epoch(chorus_client_t *cl, json_t *j)
{
    const char *ch = chorus__jstr(j, "ch"), *epoch = chorus__jstr(j, "epoch");
    struct chorus__sub *s;
    uint64_t seq = 0;

    if (!ch || !epoch || strlen(epoch) > CHORUS_EPOCH_MAX)
        return;
    s = chorus__sub_find(cl, ch);
    if (!s || !s->active)
        return;
    chorus__juint(j, "seq", &seq);
    strcpy(s->epoch, epoch);
    s->seq = seq;
    s->has_pos = true;
    chorus_sub_event_t ev = {CHORUS_SUB_EPOCH, s->ch, s->epoch, seq, false, false,
                             0, 0, CHORUS_OK, NULL, NULL};
    chorus__sub_event(cl, &ev);
}

/* {"op":"gap","ch","epoch","from","to"} (cluster only): the node could not
 * repair seqs from..to; what follows continues after `to`. */
static void chorus__on_gap(chorus_client_t *cl, json_t *j)
{
    const char *ch = chorus__jstr(j, "ch"), *epoch = chorus__jstr(j, "epoch");
    struct chorus__sub *s;
    uint64_t from, to;

    if (!ch || !chorus__juint(j, "from", &from) || !chorus__juint(j, "to", &to) || to < from)
        return;
    s = chorus__sub_find(cl, ch);
    if (!s || !s->active)
        return;
    if (epoch && strlen(epoch) <= CHORUS_EPOCH_MAX && strcmp(epoch, s->epoch)) {
        strcpy(s->epoch, epoch); /* should not happen: an epoch event comes first */
        s->seq = 0;
    }
    if (to > s->seq)
        s->seq = to;
    s->has_pos = true;
    chorus_sub_event_t ev = {CHORUS_SUB_GAP, s->ch, s->epoch, s->seq, false, false,
                             from, to, CHORUS_OK, NULL, NULL};
    chorus__sub_event(cl, &ev);
}

/* {"op":"history","id","ch","epoch","seq","msgs":[msg...]} */
static void chorus__on_history(chorus_client_t *cl, json_t *j)
{
    json_t *msgs = json_object_get(j, "msgs");
    const char *epoch = chorus__jstr(j, "epoch");
    struct chorus__req *r;
    chorus_msg_t *m = NULL;
    size_t n = 0, i;
    uint64_t id, seq = 0;

    if (!chorus__juint(j, "id", &id) || !(r = chorus__inflight_find(cl, id)))
        return;
    chorus__req_unlink(&cl->inflight, r);
    if (r->kind != CHORUS__REQ_HISTORY || !json_is_array(msgs)) {
        if (r->kind == CHORUS__REQ_HISTORY || r->kind == CHORUS__REQ_PUB)
            chorus__fail_req(cl, r, CHORUS_E_PROTOCOL, NULL, "unexpected history reply");
        else
            chorus__req_free(cl, r);
        return;
    }
    chorus__juint(j, "seq", &seq);
    if (!epoch)
        epoch = "";
    n = json_array_size(msgs);
    if (n && !(m = calloc(n, sizeof *m))) {
        chorus__fail_req(cl, r, CHORUS_E_NOMEM, NULL, NULL);
        return;
    }
    for (i = 0; i < n; i++) {
        json_t *e = json_array_get(msgs, i), *ts = json_object_get(e, "ts");
        char *raw = json_dumps(e, JSON_COMPACT | JSON_ENCODE_ANY);
        m[i].ch = chorus__jstr(e, "ch");
        if (!m[i].ch)
            m[i].ch = r->ch;
        chorus__juint(e, "seq", &m[i].seq);
        m[i].ts = json_is_integer(ts) ? (int64_t)json_integer_value(ts) : 0;
        m[i].epoch = epoch;
        m[i].client = chorus__jstr(e, "client");
        m[i].user = chorus__jstr(e, "user");
        m[i].data = json_object_get(e, "data");
        m[i].frame = e;
        m[i].raw = raw ? raw : "";
        m[i].raw_len = raw ? strlen(raw) : 0;
    }
    chorus_history_t h = {CHORUS_OK, NULL, NULL, r->ch, epoch, seq, n, m};
    r->hist_cb(cl, &h, r->ud);
    for (i = 0; i < n; i++)
        if (m[i].raw_len)
            free((char *)m[i].raw);
    free(m);
    chorus__req_free(cl, r);
}

static void chorus__dispatch(chorus_client_t *cl, char *buf, size_t len)
{
    json_error_t jerr;
    json_t *j = json_loadb(buf, len, JSON_ALLOW_NUL, &jerr);
    const char *op;

    if (!j || !(op = chorus__jstr(j, "op"))) {
        chorus__report(cl, CHORUS_E_PROTOCOL, "unreadable frame from the server: %s",
                       j ? "no 'op'" : jerr.text);
        json_decref(j);
        return;
    }
    if (!strcmp(op, "msg"))
        chorus__on_msg(cl, j, buf, len);
    else if (!strcmp(op, "ack"))
        chorus__on_ack(cl, j);
    else if (!strcmp(op, "err"))
        chorus__on_err(cl, j);
    else if (!strcmp(op, "history"))
        chorus__on_history(cl, j);
    else if (!strcmp(op, "epoch"))
        chorus__on_epoch(cl, j);
    else if (!strcmp(op, "gap"))
        chorus__on_gap(cl, j);
    else if (!strcmp(op, "hello"))
        chorus__on_hello(cl, j);
    /* pong, presence and ops of later protocol versions: nothing to do */
    json_decref(j);
}

/* ======================================================== lws callbacks */

/* Assembles fragments into cl->rx (NUL-terminated) and dispatches whole
 * frames. Returns -1 to drop the connection. */
static int chorus__receive(chorus_client_t *cl, struct lws *wsi, const void *in, size_t len)
{
    bool final = lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi);

    if (!cl->rx_in_msg) {
        cl->rx_in_msg = true;
        cl->rx_len = 0;
        cl->rx_discard = false;
        cl->rx_binary = lws_frame_is_binary(wsi);
    }
    if (!cl->rx_discard && cl->rx_len + len > cl->opts.max_rx_bytes)
        cl->rx_discard = true;
    if (!cl->rx_discard) {
        if (cl->rx_len + len + 1 > cl->rx_cap) {
            size_t cap = cl->rx_cap ? cl->rx_cap : 4096;
            while (cap < cl->rx_len + len + 1)
                cap *= 2;
            char *n = realloc(cl->rx, cap);
            if (!n) {
                cl->rx_discard = true;
            } else {
                cl->rx = n;
                cl->rx_cap = cap;
            }
        }
        if (!cl->rx_discard) {
            memcpy(cl->rx + cl->rx_len, in, len);
            cl->rx_len += len;
        }
    }
    if (!final)
        return 0;

    cl->rx_in_msg = false;
    if (cl->rx_discard) {
        /* A reply is lost, so nothing the client holds can be trusted:
         * start over on a new connection. */
        chorus__report(cl, CHORUS_E_TOO_LARGE,
                       "a frame from the server exceeds max_rx_bytes (%zu); reconnecting",
                       cl->opts.max_rx_bytes);
        return -1;
    }
    if (cl->rx_binary) {
        chorus__report(cl, CHORUS_E_PROTOCOL, "ignored a binary frame from the server");
    } else if (!cl->freeing) {
        cl->rx[cl->rx_len] = '\0';
        chorus__dispatch(cl, cl->rx, cl->rx_len);
    }
    cl->rx_len = 0;
    if (cl->rx_cap > CHORUS__RX_KEEP) {
        free(cl->rx);
        cl->rx = NULL;
        cl->rx_cap = 0;
    }
    return 0;
}

/* One frame per WRITEABLE. Returns -1 to close. */
static int chorus__write(chorus_client_t *cl, struct lws *wsi)
{
    struct chorus__req *r = cl->queued.head;

    if (cl->closing_conn) {
        lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
        return -1;
    }
    if (cl->state != CHORUS__READY || !r)
        return 0;
    if (LWS_PRE + r->len > cl->tx_cap) {
        size_t cap = LWS_PRE + r->len + 256;
        unsigned char *n = realloc(cl->tx, cap);
        if (!n)
            return 0; /* try again at the next WRITEABLE */
        cl->tx = n;
        cl->tx_cap = cap;
    }
    /* lws masks the payload in place: write a copy, keep the request text. */
    memcpy(cl->tx + LWS_PRE, r->frame, r->len);
    if (lws_write(wsi, cl->tx + LWS_PRE, r->len, LWS_WRITE_TEXT) < (int)r->len)
        return -1;
    chorus__req_unlink(&cl->queued, r);
    r->attempts++;
    r->deadline_ms = chorus__now_ms() + cl->opts.request_timeout_ms;
    chorus__req_append(&cl->inflight, r);
    if (cl->queued.head)
        lws_callback_on_writable(wsi);
    return 0;
}

static bool chorus__ours(const chorus_client_t *cl, const struct lws *wsi)
{
    return cl->wsi == wsi && cl->state != CHORUS__IDLE && cl->state != CHORUS__DEAD;
}

static int chorus__callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                            void *in, size_t len)
{
    chorus_client_t *cl = lws_context_user(lws_get_context(wsi));
    (void)user;

    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        if (cl->origin_hdr) {
            unsigned char **p = in, *end = *p + len;
            if (lws_add_http_header_by_token(wsi, WSI_TOKEN_ORIGIN,
                                             (const unsigned char *)cl->origin_hdr,
                                             (int)strlen(cl->origin_hdr), p, end))
                return -1;
        }
        break;

    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        /* Before the upgrade completed: refused, unreachable, HTTP error. */
        if (cl->state == CHORUS__CONNECTING && (!cl->wsi || cl->wsi == wsi))
            chorus__conn_ended(cl, in ? (const char *)in : "connection failed");
        break;

    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (!chorus__ours(cl, wsi))
            return -1;
        cl->state = CHORUS__OPEN;
        cl->open_since_ms = chorus__now_ms();
        cl->rx_in_msg = false;
        break;

    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (!chorus__ours(cl, wsi))
            return -1;
        return chorus__receive(cl, wsi, in, len);

    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (!chorus__ours(cl, wsi))
            return -1;
        return chorus__write(cl, wsi);

    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (chorus__ours(cl, wsi) && len >= 2) {
            const unsigned char *b = in;
            size_t rl = len - 2 < sizeof cl->close_reason - 1 ? len - 2 : sizeof cl->close_reason - 1;
            cl->close_code = (b[0] << 8) | b[1];
            memcpy(cl->close_reason, b + 2, rl);
            cl->close_reason[rl] = '\0';
        }
        break;

    case LWS_CALLBACK_CLIENT_CLOSED:
        if (chorus__ours(cl, wsi)) {
            char why[sizeof cl->close_reason + 32];
            if (cl->closing_conn)
                snprintf(why, sizeof why, "closed by the client");
            else if (cl->close_code)
                snprintf(why, sizeof why, "closed by the server (%d%s%s)", cl->close_code,
                         cl->close_reason[0] ? " " : "", cl->close_reason);
            else
                snprintf(why, sizeof why, "connection lost");
            chorus__conn_ended(cl, why);
        }
        break;

    default:
        break;
    }
    return 0;
}
