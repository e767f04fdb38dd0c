/* sse.c - GET /sse?ch=A&ch=B[&token=JWT][&since=ID]: a receive-only
 * client stream in text/event-stream form (PROTOCOL.md 10).
 *
 * Every frame a WebSocket would get becomes one event whose data is that
 * frame's JSON (hello, acks, msg, epoch, gap, join/leave, err), so one
 * parser serves both transports. A msg (and an ack or epoch that moves a
 * channel's position) also carries `id:` with the position of every
 * channel of the stream, "EPOCH:SEQ" per ch parameter joined by ',', so
 * EventSource's Last-Event-ID resumes each one exactly like `since`.
 * Messages stay encoded once: the shared frame is copied into the write
 * buffer behind a per-stream prefix, as the WebSocket writer copies it
 * behind a frame header. */
#include "sse.h"
#include "auth_ws.h"
#include "codec.h"
#include "conflate.h"
#include "conn.h"
#include "frame.h"
#include "history.h"
#include "http_reply.h"
#include "keepalive.h"
#include "log.h"
#include "metrics.h"
#include "ops.h"
#include "runtime.h"
#include "ws.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <utlist.h>

static unsigned char write_buf[LWS_PRE + CONN_WRITE_BATCH];

size_t sse_session_size(void) { return sizeof(struct conn); }

/* ------------------------------------------------------------ positions */

/* How an event moves the stream's position: slot (index + 1; 0: it does
 * not) gets seq, and epoch when set_epoch. */
struct move {
    uint32_t slot;
    bool set_epoch;
    char epoch[CHANNEL_EPOCH_MAX];
    uint64_t seq;
};

static uint32_t slot_by_name(const struct sse_stream *st, const char *name, size_t len)
{
    for (uint32_t i = 0; i < st->n; i++)
        if (st->slot[i].len == len && !memcmp(st->slot[i].name, name, len))
            return i + 1;
    return 0;
}

/* An ack of a sub that did not recover, or an epoch event, names the
 * channel's new position. These are rare per stream (one per channel, one
 * per owner change), so parsing them here costs nothing per message. */
static void move_of_event(const struct sse_stream *st, const struct frame *f, struct move *m)
{
    static const char ack[] = "{\"op\":\"ack\"", epoch[] = "{\"op\":\"epoch\"";
    const char *p = (const char *)f->buf + FRAME_PRE;
    if (!(f->len > sizeof ack && !memcmp(p, ack, sizeof ack - 1)) &&
        !(f->len > sizeof epoch && !memcmp(p, epoch, sizeof epoch - 1)))
        return;
    json_t *j = json_loadb(p, f->len, 0, NULL);
    const char *ch = json_string_value(json_object_get(j, "ch"));
    const char *ep = json_string_value(json_object_get(j, "epoch"));
    json_t *seq = json_object_get(j, "seq");
    if (ch && ep && json_is_integer(seq) && !json_is_true(json_object_get(j, "recovered")) &&
        strlen(ep) < sizeof m->epoch) {
        m->slot = slot_by_name(st, ch, strlen(ch));
        m->set_epoch = true;
        snprintf(m->epoch, sizeof m->epoch, "%s", ep);
        m->seq = (uint64_t)json_integer_value(seq);
    }
    json_decref(j);
}

static void move_apply(struct sse_stream *st, const struct move *m)
{
    struct sse_slot *s = &st->slot[m->slot - 1];
    if (m->set_epoch) {
        memcpy(s->epoch, m->epoch, sizeof s->epoch);
        s->known = true;
    }
    s->seq = m->seq;
}

/* "id: E1:S1,E2:S2\n" for the stream's current positions (an unknown one is
 * empty); its length when out is NULL. Its cost grows with the stream's
 * channel count: fine for the few channels of a fallback client, and the
 * price of letting a plain EventSource resume every channel. */
static size_t id_line(const struct sse_stream *st, char *out)
{
    char tmp[CHANNEL_EPOCH_MAX + 24];
    size_t n = 4;
    if (out)
        memcpy(out, "id: ", 4);
    for (uint32_t i = 0; i < st->n; i++) {
        const struct sse_slot *s = &st->slot[i];
        int k = s->known ? snprintf(tmp, sizeof tmp, "%s%s:%" PRIu64, i ? "," : "", s->epoch, s->seq)
                         : snprintf(tmp, sizeof tmp, "%s", i ? "," : "");
        if (out)
            memcpy(out + n, tmp, (size_t)k);
        n += (size_t)k;
    }
    if (out)
        out[n] = '\n';
    return n + 1;
}

/* --------------------------------------------------------------- events */

/* Bytes of p copied as the lines of a data field: a CR or LF inside (JSON
 * whitespace a publisher may have sent) starts a new "data: " line, which
 * EventSource joins back with LF. Its length when out is NULL. */
static size_t data_lines(unsigned char *out, const unsigned char *p, size_t n)
{
    size_t k = 0, i = 0;
    while (i < n) {
        size_t run = 0;
        while (i + run < n && p[i + run] != '\n' && p[i + run] != '\r')
            run++;
        if (out)
            memcpy(out + k, p + i, run);
        k += run;
        i += run;
        if (i < n) {
            i += (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') ? 2 : 1;
            if (out)
                memcpy(out + k, "\ndata: ", 7);
            k += 7;
        }
    }
    return k;
}

/* One queued frame as an event: its JSON (a binary msg in its history form,
 * with "bin"), "skipped" spliced in for a conflated msg. */
struct event {
    const unsigned char *json;
    size_t len, at;            /* splice point when skipped */
    char field[32];
    size_t field_len;
    bool ping;
    bool with_id;
};

static int event_of(struct sse_stream *st, const struct outq_entry *e, struct event *ev,
                    struct move *m)
{
    struct frame *f = e->f;
    memset(ev, 0, sizeof *ev);
    memset(m, 0, sizeof *m);
    if (f->opcode == FRAME_OP_PING) {
        ev->ping = true;
        return 0;
    }
    if (f->binary) {
        f = history_json_view(f);
        if (!f)
            return -1;
    }
    ev->json = f->buf + FRAME_PRE;
    ev->len = f->len;
    if (e->f->seq && e->tag && e->tag <= st->n) {
        m->slot = e->tag;
        m->seq = e->f->seq;
    } else if (!e->f->seq) {
        move_of_event(st, e->f, m);
    }
    ev->with_id = m->slot != 0;
    if (e->skipped) {
        static const char lead[] = "{\"op\":\"msg\",";
        ev->at = ev->len >= sizeof lead - 1 && !memcmp(ev->json, lead, sizeof lead - 1)
                     ? sizeof lead - 1 : 1;
        ev->field_len = (size_t)snprintf(ev->field, sizeof ev->field, "\"skipped\":%u,", e->skipped);
    }
    return 0;
}

/* Writes the event (out NULL: only measures it). The id must already be
 * the stream's position after this event. */
static size_t event_put(const struct sse_stream *st, const struct event *ev, unsigned char *out)
{
    if (ev->ping) {
        if (out)
            memcpy(out, ":\n\n", 3);
        return 3;
    }
    size_t n = ev->with_id ? id_line(st, out ? (char *)out : NULL) : 0;
    if (out)
        memcpy(out + n, "data: ", 6);
    n += 6;
    if (ev->field_len) {
        n += data_lines(out ? out + n : NULL, ev->json, ev->at);
        if (out)
            memcpy(out + n, ev->field, ev->field_len);
        n += ev->field_len;
        n += data_lines(out ? out + n : NULL, ev->json + ev->at, ev->len - ev->at);
    } else {
        n += data_lines(out ? out + n : NULL, ev->json, ev->len);
    }
    if (out)
        memcpy(out + n, "\n\n", 2);
    return n + 2;
}

/* An event larger than the write buffer goes out from its own copy (rare:
 * a message near max_frame_bytes). */
static int write_big(struct conn *c, const struct event *ev, size_t n)
{
    unsigned char *b = malloc(LWS_PRE + n);
    if (!b)
        return -1;
    event_put(c->sse, ev, b + LWS_PRE);
    int w = lws_write(c->wsi, b + LWS_PRE, n, LWS_WRITE_HTTP);
    free(b);
    return w < (int)n ? -1 : 0;
}

/* conn_flush for a stream: as many queued frames as fit in one write. */
static int sse_write(struct conn *c)
{
    struct sse_stream *st = c->sse;
    unsigned char *out = write_buf + LWS_PRE;
    size_t used = 0;
    bool pinged = false;
    struct outq_entry *e;

    while ((e = outq_head(&c->q))) {
        struct event ev;
        struct move m;
        if (event_of(st, e, &ev, &m) < 0)
            return -1;
        /* Measure with the position this event moves to, and move back if
         * it has to wait for the next write. */
        struct sse_slot saved;
        if (m.slot) {
            saved = st->slot[m.slot - 1];
            move_apply(st, &m);
        }
        size_t n = event_put(st, &ev, NULL);
        if (used + n > CONN_WRITE_BATCH) {
            if (used) {
                if (m.slot)
                    st->slot[m.slot - 1] = saved;
                break;
            }
            if (write_big(c, &ev, n) < 0)
                return -1;
            metrics.bytes_sent += n;
            outq_pop(&c->q);
            break;
        }
        used += event_put(st, &ev, out + used);
        pinged |= ev.ping;
        outq_pop(&c->q);
    }
    if (used) {
        if (lws_write(c->wsi, out, used, LWS_WRITE_HTTP) < (int)used)
            return -1;
        metrics.bytes_sent += used;
    }
    /* No PONG can come back over SSE: a keep-alive comment handed to the
     * socket is all the proof of life there is (a reader that stops
     * reading fills its queue and is dealt with as a slow consumer). */
    if (pinged)
        keepalive_conn_pong(c);
    if (!outq_empty(&c->q) || c->closing)
        lws_callback_on_writable(c->wsi);
    return 0;
}

void sse_start(void) { conn_set_sse_writer(sse_write); }

/* ------------------------------------------------------ the hang-up watch */

/* lws reads nothing from an HTTP connection while its transaction lasts, and
 * an SSE stream is one endless transaction: a client that closes would be
 * noticed only when a keep-alive comment fails, up to two ping intervals
 * later, holding a connection slot (and the per-IP count) meanwhile. So once
 * a second each open stream's socket is peeked at: EOF or an error means the
 * client is gone. Bytes from a plain-text client are a request pipelined
 * behind a stream that never ends: it is closed too. (Under TLS the bytes are
 * records the peek cannot read; the keep-alive still catches that client.)
 * O(streams) per second: SSE is the fallback transport, not the bulk. */
static struct sse_stream *streams;
static lws_sorted_usec_list_t watch_timer;

static bool hung_up(struct lws *wsi)
{
    char b;
    ssize_t n = recv(lws_get_socket_fd(wsi), &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
        return true;
    if (n < 0)
        return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
    return !lws_is_ssl(wsi);
}

static void watch(lws_sorted_usec_list_t *sul)
{
    struct sse_stream *st;
    DL_FOREACH(streams, st)
        if (st->c->wsi && hung_up(st->c->wsi))
            lws_set_timeout(st->c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    if (streams)
        lws_sul_schedule(rt.ctx, 0, sul, watch, LWS_US_PER_SEC);
}

static void watch_add(struct sse_stream *st, struct conn *c)
{
    st->c = c;
    if (!streams)
        lws_sul_schedule(rt.ctx, 0, &watch_timer, watch, LWS_US_PER_SEC);
    DL_APPEND(streams, st);
}

/* The last event of a stream the server closes: the WebSocket close code
 * and reason (PROTOCOL.md 5) as {"op":"close","code","reason"}. */
static int write_close(struct conn *c)
{
    json_t *j = json_pack("{s:s, s:i, s:s}", "op", "close", "code", (int)c->close_code, "reason",
                          c->close_reason ? c->close_reason : "");
    char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!txt)
        return -1;
    int n = snprintf((char *)write_buf + LWS_PRE, CONN_WRITE_BATCH, "data: %s\n\n", txt);
    free(txt);
    c->sse->close_sent = true;
    if (n <= 0 || lws_write(c->wsi, write_buf + LWS_PRE, (size_t)n, LWS_WRITE_HTTP) < n)
        return -1;
    lws_callback_on_writable(c->wsi);
    return 0;
}

/* ------------------------------------------------------------- request */

/* "E1:S1,E2:S2" (Last-Event-ID or ?since=) into the stream's positions; a
 * list of another length, or an element that does not parse, is ignored
 * whole: those channels then start from the current position. */
static void parse_since(struct sse_stream *st, char *text)
{
    uint32_t count = 1;
    for (char *p = text; *p; p++)
        count += *p == ',';
    if (count != st->n)
        return;
    struct sse_slot *tmp = calloc(st->n, sizeof *tmp);
    char *tok = text;
    if (!tmp)
        return;
    for (uint32_t i = 0; i < st->n; i++) {
        char *end = strchr(tok, ',');
        if (end)
            *end = '\0';
        if (*tok) {
            char *colon = strrchr(tok, ':');
            char *stop;
            if (!colon || colon == tok || (size_t)(colon - tok) >= sizeof tmp[i].epoch ||
                !colon[1] || colon[1] < '0' || colon[1] > '9')
                goto out;
            unsigned long long seq = strtoull(colon + 1, &stop, 10);
            if (*stop)
                goto out;
            memcpy(tmp[i].epoch, tok, (size_t)(colon - tok));
            tmp[i].seq = seq;
            tmp[i].known = true;
        }
        tok = end ? end + 1 : tok + strlen(tok);
    }
    for (uint32_t i = 0; i < st->n; i++) {
        st->slot[i].known = tmp[i].known;
        st->slot[i].seq = tmp[i].seq;
        memcpy(st->slot[i].epoch, tmp[i].epoch, sizeof tmp[i].epoch);
    }
out:
    free(tmp);
}

/* The ch parameters, checked like a sub's (bad_channel, limit_reached, and
 * each once), as a stream holding their names; or NULL with an HTTP status
 * and reason. lws keeps each query argument URL-decoded as one fragment. */
static struct sse_stream *stream_of(struct lws *wsi, unsigned int *status, const char **why)
{
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    char *frag = malloc(total > 0 ? (size_t)total + 1 : 1);
    struct sse_stream *st = NULL;
    uint32_t n = 0;
    size_t names = 0;
    *status = 400;
    *why = "out of memory";
    if (!frag)
        goto fail;
    /* Two passes: count and check, then copy into one allocation. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0;; i++) {
            int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
            if (len <= 0)
                break;
            if (lws_hdr_copy_fragment(wsi, frag, len + 1, WSI_TOKEN_HTTP_URI_ARGS, i) < 0 ||
                strncmp(frag, "ch=", 3) != 0)
                continue;
            size_t l = (size_t)len - 3;
            if (pass == 0) {
                if (!codec_channel_valid(frag + 3, l)) {
                    *why = "every ch must be a channel name: 1-255 bytes of [A-Za-z0-9_.:@/-]";
                    goto fail;
                }
                n++;
                names += l;
                continue;
            }
            if (slot_by_name(st, frag + 3, l)) {
                *why = "a channel is named twice";
                goto fail;
            }
            char *name = (char *)&st->slot[n] + names;
            memcpy(name, frag + 3, l);
            st->slot[st->n++] = (struct sse_slot){.name = name, .len = (uint32_t)l};
            names += l;
        }
        if (pass == 1)
            break;
        if (!n) {
            *why = "name at least one channel: /sse?ch=NAME[&ch=NAME...]";
            goto fail;
        }
        if (n > (uint32_t)rt.cfg->max_channels_per_conn) {
            *why = "more ch parameters than max_channels_per_conn";
            goto fail;
        }
        st = calloc(1, sizeof *st + n * sizeof st->slot[0] + names);
        if (!st) {
            *status = 503;
            *why = "out of memory";
            goto fail;
        }
        names = 0;
    }
    free(frag);
    return st;
fail:
    free(frag);
    free(st);
    return NULL;
}

/* Last-Event-ID (a reconnecting EventSource), else ?since= (a client that
 * opens a new stream itself). */
static void read_since(struct lws *wsi, struct sse_stream *st)
{
    size_t cap = st->n * (CHANNEL_EPOCH_MAX + 24) + 1;
    char *buf = malloc(cap + 8);
    if (!buf)
        return;
    int n = lws_hdr_custom_length(wsi, "last-event-id:", 14);
    if (n > 0 && (size_t)n < cap && lws_hdr_custom_copy(wsi, buf, (int)cap, "last-event-id:", 14) > 0) {
        parse_since(st, buf);
    } else {
        const char *v = lws_get_urlarg_by_name(wsi, "since=", buf, (int)cap);
        if (v) {
            memmove(buf, v, strlen(v) + 1);
            parse_since(st, buf);
        }
    }
    free(buf);
}

static int send_headers(struct lws *wsi)
{
    unsigned char hb[LWS_PRE + 1024], *start = hb + LWS_PRE, *p = start, *end = hb + sizeof hb - 1;
    char origin[256];
    if (lws_add_http_common_headers(wsi, HTTP_STATUS_OK, "text/event-stream",
                                    LWS_ILLEGAL_HTTP_CONTENT_LEN, &p, end) ||
        lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
                                     (const unsigned char *)"no-cache", 8, &p, end) ||
        lws_add_http_header_by_name(wsi, (const unsigned char *)"x-accel-buffering:",
                                    (const unsigned char *)"no", 2, &p, end))
        return -1;
    /* ws_admit() let this origin through (or there is no list): a page of
     * another origin may read the stream. */
    int n = lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN);
    if (n > 0 && (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_ACCESS_CONTROL_ALLOW_ORIGIN,
                                               (const unsigned char *)origin, n, &p, end) ||
                  lws_add_http_header_by_name(wsi, (const unsigned char *)"vary:",
                                              (const unsigned char *)"Origin", 6, &p, end)))
        return -1;
    return lws_finalize_write_http_header(wsi, start, &p, end) ? -1 : 0;
}

/* GET /sse: admits the stream, answers 200 and subscribes its channels
 * (each acked or refused with an err event, as a sub would be). */
static int sse_open(struct conn *c, struct lws *wsi)
{
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0)
        return http_reply_close(wsi, 405, "text/plain", "SSE streams are opened with GET");
    unsigned int status;
    const char *why = NULL;
    struct sse_stream *st = stream_of(wsi, &status, &why);
    if (!st)
        return http_reply_close(wsi, status, "text/plain", why);
    if (ws_admit(c, wsi, true)) {
        free(st);
        return 1;
    }
    if (c->auth.need_auth) {
        free(st);
        return http_reply_close(wsi, 401, "text/plain",
                                "this node admits only token holders: add ?token=");
    }
    read_since(wsi, st);
    if (send_headers(wsi) < 0) {
        auth_ws_closed(c); /* the claims ws_admit() stored */
        free(st);
        return -1;
    }
    c->sse = st;
    watch_add(st, c);
    ws_conn_open(c, wsi);
    metrics.sse_streams++;
    for (uint32_t i = 0; i < st->n && !c->closing; i++) {
        char name[CODEC_CHANNEL_MAX + 1];
        memcpy(name, st->slot[i].name, st->slot[i].len);
        name[st->slot[i].len] = '\0';
        struct codec_request req = {
            .op = CODEC_OP_SUB, .has_id = true, .id = (long long)i + 1,
            .ch = name, .ch_len = st->slot[i].len, .has_since = st->slot[i].known,
            .since_seq = st->slot[i].seq,
        };
        if (st->slot[i].known)
            memcpy(req.since_epoch, st->slot[i].epoch, sizeof req.since_epoch < sizeof st->slot[i].epoch
                                                           ? sizeof req.since_epoch
                                                           : sizeof st->slot[i].epoch);
        ops_subscribe(c, &req);
    }
    /* Unlike a request, a stream has no deadline: it lasts until either
     * side closes it (keepalive comments keep proxies from timing it out). */
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    return 0;
}

static void sse_closed(struct conn *c)
{
    if (c->established)
        metrics.sse_streams--;
    ws_conn_closed(c);
    DL_DELETE(streams, c->sse);
    free(c->sse);
    c->sse = NULL;
}

int sse_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                 size_t len)
{
    struct conn *c = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return sse_open(c, wsi);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (!c || !c->established)
            return 0;
        if (c->sse->close_sent)
            return -1;
        if (conn_flush(c) < 0)
            return -1;
        if (c->closing && outq_empty(&c->q))
            return write_close(c) < 0 ? -1 : 0;
        return 0;
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (c && c->sse)
            sse_closed(c);
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}
