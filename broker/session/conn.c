/* conn.c - the connection object: its outbound queue, the coalescing
 * write path, replies and orderly close, and the list of open connections.
 * What lws tells a connection is handled in ws.c.
 *
 * Write path: everything queued for a connection is sent in as few syscalls
 * as possible. When the connection becomes writable, the queued frames are
 * laid out as complete WebSocket frames (header + payload) in one scratch
 * buffer and handed to lws in a single LWS_WRITE_RAW write. This is valid
 * because connections are plain HTTP/1.1 WebSocket (HTTP/2 is not used for
 * /ws) and the one extension, permessage-deflate, is ours: a connection that
 * negotiated it gets the frame's shared compressed form with RSV1 set
 * (deflate.h), and lws passes RAW writes by its extension hooks. lws still
 * owns TLS and any partial-send buffering. */
#include "conn.h"
#include "cluster.h"
#include "conflate.h"
#include "deflate.h"
#include "frame.h"
#include "latency.h"
#include "log.h"
#include "metrics.h"
#include "readmore.h"
#include "runtime.h"
#include "sse.h"
#include "tcpstat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

static unsigned char write_buf[LWS_PRE + CONN_WRITE_BATCH];
static struct conn *conns;        /* every established connection (utlist DL) */

/* ------------------------------------------------------------------- list */

void conn_list_add(struct conn *c) { DL_PREPEND(conns, c); }

void conn_list_remove(struct conn *c)
{
    DL_DELETE(conns, c);
    free(c->close_reason_owned);
    c->close_reason_owned = NULL;
}

void conn_foreach(void (*fn)(struct conn *c, void *ud), void *ud)
{
    struct conn *c, *tmp;
    DL_FOREACH_SAFE(conns, c, tmp)
        fn(c, ud);
}

void conn_close_reason(struct conn *c, uint16_t code, const char *reason)
{
    if (c->closing)
        return;
    /* A close reason is at most 123 bytes (RFC 6455 5.5); cut at a UTF-8 boundary. */
    size_t n = strlen(reason);
    if (n > 123) {
        n = 123;
        while (n && ((unsigned char)reason[n] & 0xc0) == 0x80)
            n--;
    }
    char *r = strndup(reason, n);
    if (!r) {
        conn_close_with(c, code, "", false);
        return;
    }
    free(c->close_reason_owned);
    c->close_reason_owned = r;
    conn_close_with(c, code, r, false);
}

bool conn_list_empty(void) { return conns == NULL; }

void conn_close_all(uint16_t code, const char *reason)
{
    for (struct conn *c = conns; c; c = c->next)
        conn_close_with(c, code, reason, false);
}

void conn_drain_all(uint16_t code, const char *reason)
{
    for (struct conn *c = conns; c; c = c->next) {
        if (!c->pubs) {
            conn_close_with(c, code, reason, false);
            continue;
        }
        c->close_when_answered = true;
        c->close_code = code;
        c->close_reason = reason;
    }
}

/* A node without a lease for twice its length is on the minority side of a
 * partition (or stalled): it can acknowledge nothing, so its clients are
 * better served by another node. They are told once per such spell (4013);
 * upgrades are refused until it is back (ws.c). */
static void cutoff_tick(int64_t now_ms)
{
    static bool told;
    (void)now_ms;
    int64_t lost = cluster_lease_lost_ms();
    if (!lost) {
        told = false;
        return;
    }
    if (told || lost < 2 * (int64_t)rt.cfg->lease_ms || !conns)
        return;
    told = true;
    log_warn("event=cut_off lost_ms=%lld msg=\"closing clients with 4013 so they reconnect to the majority side\"",
             (long long)lost);
    conn_close_all(CHORUS_CLOSE_CUT_OFF, CHORUS_CLOSE_REASON_CUT_OFF);
}

void conn_watch_cluster(void) { cluster_on_tick(cutoff_tick); }

/* --------------------------------------------------------------- queueing */

/* Connections whose queue went from empty to non-empty during this loop
 * turn. They are written once the turn's input is processed, straight from
 * a zero-delay timer, instead of each asking lws for a WRITEABLE callback:
 * that costs two epoll_ctl calls per delivery (docs/benchmarks.md has what
 * it came to). Everything queued in the turn still goes out in one
 * write per connection. A connection with output already buffered in lws
 * waits for WRITEABLE as before. */
static lws_dll2_owner_t flush_list;
static lws_sorted_usec_list_t flush_timer;
static void flush_all(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    latency_turn_begin();
    /* Busy publishers first, so this turn's writes carry all they sent. */
    readmore_run();
    while (flush_list.head) {
        struct conn *c = lws_container_of(flush_list.head, struct conn, flush);
        lws_dll2_remove(&c->flush);
        if (!c->established || c->closing || outq_empty(&c->q))
            continue;
        if (lws_partial_buffered(c->wsi)) {
            lws_callback_on_writable(c->wsi);
            continue;
        }
        if (conn_flush(c) < 0)
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
    latency_turn_end();
}

static void slow_consumer(struct conn *c)
{
    metrics.slow_consumer_closes++;
    log_info("event=slow_consumer client=%s queued_frames=%u queued_bytes=%zu", c->id,
             c->q.count, c->q.bytes);
    conn_close_with(c, CHORUS_CLOSE_SLOW_CONSUMER, CHORUS_CLOSE_REASON_SLOW_CONSUMER, true);
}

static void enqueue(struct conn *c, struct frame *f, uint32_t tag)
{
    const struct config *cfg = rt.cfg;
    if (c->closing)
        return;
    bool was_empty = outq_empty(&c->q);
    if (outq_push_tag(&c->q, f, tag, (uint32_t)cfg->max_queue_frames,
                      (size_t)cfg->max_queue_bytes) < 0) {
        slow_consumer(c);
        return;
    }
    if (was_empty && lws_dll2_is_detached(&c->flush)) {
        if (!flush_list.count)
            lws_sul_schedule(rt.ctx, 0, &flush_timer, flush_all, 1);
        lws_dll2_add_head(&c->flush, &flush_list);
    }
}

void conn_enqueue(struct conn *c, struct frame *f) { enqueue(c, f, 0); }

/* What only conflating namespaces and SSE streams need: the queue position
 * of the channel's newest msg, its replacement, the stream's slot. Not
 * inlined: it would make every delivery save the registers it needs. */
__attribute__((noinline)) static void deliver_tracked(struct sub *s, struct frame *f)
{
    struct conn *c = s->conn;
    if (c->closing)
        return;
    /* An event (epoch, gap) ends what a later msg may replace: nothing of
     * the channel moves ahead of it. */
    if (!f->seq) {
        s->queued = 0;
    } else {
        if (!c->sndbuf_capped && s->ch->ns->slow_consumer == NS_SLOW_CONFLATE)
            conflate_cap_sndbuf(c);
        int rc = conflate_replace(&c->q, s, f);
        if (rc < 0)
            slow_consumer(c);
        if (rc)
            return;
    }
    /* An SSE stream marks each msg with its channel's place in the stream
     * (the event id names every channel's position, sse.c); found once per
     * subscription. */
    if (c->sse && !s->slot)
        s->slot = sse_slot_of(c->sse, s->ch);
    enqueue(c, f, s->slot);
    if (f->seq && !c->closing)
        s->queued = outq_last_pos(&c->q) + 1;
}

void conn_deliver(struct sub *s, struct frame *f)
{
    /* The common case costs what a plain enqueue does. */
    if (s->ch->ns->slow_consumer == NS_SLOW_CONFLATE || s->conn->sse)
        deliver_tracked(s, f);
    else
        enqueue(s->conn, f, 0);
}

void conn_send_json(struct conn *c, json_t *j)
{
    char small[512];
    if (!j)
        return;
    size_t n = json_dumpb(j, small, sizeof small, JSON_COMPACT);
    struct frame *f = NULL;
    if (n && n <= sizeof small) {
        f = frame_from(small, n);
    } else if (n) {
        f = frame_new(n);
        if (f && json_dumpb(j, (char *)frame_payload(f), n, JSON_COMPACT) != n) {
            frame_unref(f);
            f = NULL;
        }
    }
    json_decref(j);
    if (f) {
        conn_enqueue(c, f);
        frame_unref(f);
    }
}

/* The channel of the op being answered, for the per-namespace error count;
 * its namespace is looked up only when an error is sent. */
static const char *err_ch;
static size_t err_ch_len;

void conn_err_channel(const char *ch, size_t len)
{
    err_ch = ch;
    err_ch_len = len;
}

void conn_send_err(struct conn *c, bool has_id, long long id, enum chorus_err code,
                   const char *msg)
{
    if (err_ch)
        metrics_ns(config_ns_for(rt.cfg, err_ch, err_ch_len)->name)->errors++;
    json_t *j = json_pack("{s:s, s:s, s:s}", "op", "err", "code", chorus_err_str(code), "msg", msg);
    if (j && has_id)
        json_object_set_new(j, "id", json_integer(id));
    metrics.errors[code]++;
    conn_send_json(c, j);
}

void conn_close_with(struct conn *c, uint16_t code, const char *reason, bool drop)
{
    if (c->closing)
        return;
    c->closing = true;
    c->close_code = code;
    c->close_reason = reason;
    if (drop)
        metrics.queue_drops += outq_clear(&c->q);
    /* A peer that reads nothing never becomes writable: bound the wait for the
     * close frame, then lws drops the connection. */
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, 2);
    lws_callback_on_writable(c->wsi);
}

/* ------------------------------------------------------------------ write */

/* A conflated msg, with "skipped" spliced into its copy: appended to the
 * batch at out + *used (1), left for the next write when the batch is full
 * (0), or, larger than a whole batch, written from its own copy (0; rare:
 * only a lagging reader of large messages pays for it). -1 on failure. */
static int put_conflated(struct conn *c, const struct outq_entry *e, unsigned char *out,
                         size_t *used, size_t room)
{
    struct frame *f = e->f;
    size_t plen = conflate_payload_len(f, e->skipped);
    size_t h = frame_ws_header_len(plen);
    if (*used + h + plen <= room) {
        *used += frame_ws_header_op(out + *used, plen, frame_opcode(f));
        conflate_payload(out + *used, f, e->skipped);
        *used += plen;
        outq_pop(&c->q);
        return 1;
    }
    if (*used)
        return 0;
    unsigned char *b = malloc(LWS_PRE + plen);
    if (!b)
        return -1;
    conflate_payload(b + LWS_PRE, f, e->skipped);
    int n = lws_write(c->wsi, b + LWS_PRE, plen, f->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
    free(b);
    if (n < (int)plen)
        return -1;
    metrics.bytes_sent += h + plen;
    outq_pop(&c->q);
    return 0;
}

/* Where the PING in this batch ends in the connection's byte stream, for
 * keepalive.c: everything written before the batch is acknowledged or still
 * in the socket (a batch is written only once the last one is out). With
 * TLS these are plaintext bytes, fewer than the ciphertext's: the PING then
 * seems to arrive early, which only shortens the extra wait. */
static void ping_written(struct conn *c, size_t end)
{
    uint32_t pos = tcpstat_written(c->wsi) + (uint32_t)end;
    c->ping_end = pos ? pos : 1;
}

static conn_writer_fn *sse_writer;

void conn_set_sse_writer(conn_writer_fn *fn) { sse_writer = fn; }

int conn_flush(struct conn *c)
{
    unsigned char *out = write_buf + LWS_PRE;
    size_t used = 0;
    int64_t now = 0; /* latency.h: read at most once per batch */
    struct outq_entry *e;

    if (c->sse)
        return sse_writer(c);
    /* A conflating connection behind its reader gets small writes, or none
     * while its socket is full (conflate.h). */
    size_t room = CONN_WRITE_BATCH;
    if (c->sndbuf_capped && !outq_empty(&c->q) && !(room = conflate_write_room(c))) {
        lws_callback_on_writable(c->wsi);
        return 0;
    }
    while ((e = outq_head(&c->q))) {
        struct frame *f = e->f;
        if (e->skipped) {
            int rc = put_conflated(c, e, out, &used, room);
            if (rc < 0)
                return -1;
            if (rc == 0)
                break;
            continue;
        }
        /* s is what goes on the wire: f, or its compressed form. */
        struct frame *z = c->deflate ? deflate_frame(f) : NULL, *s = z ? z : f;
        uint8_t op = (uint8_t)(frame_opcode(f) | (z ? FRAME_RSV1 : 0));
        size_t h = frame_ws_header_len(s->len);
        if (used + h + s->len > room) {
            if (used)
                break;
            /* Larger than a batch (or the room left): the header goes in the shared frame's
             * headroom (the same bytes for every connection) and lws copies
             * whatever the socket does not take at once. */
            unsigned char *p = frame_payload(s) - h;
            frame_ws_header_op(p, s->len, op);
            if (lws_write(c->wsi, p, h + s->len, LWS_WRITE_RAW) < (int)(h + s->len))
                return -1;
            metrics.bytes_sent += h + s->len;
            latency_observe(f, &now);
            outq_pop(&c->q);
            break;
        }
        used += frame_ws_header_op(out + used, s->len, op);
        memcpy(out + used, frame_payload(s), s->len);
        used += s->len;
        if (f->opcode == FRAME_OP_PING)
            ping_written(c, used);
        latency_observe(f, &now);
        outq_pop(&c->q);
    }
    if (used) {
        if (lws_write(c->wsi, out, used, LWS_WRITE_RAW) < (int)used)
            return -1;
        metrics.bytes_sent += used;
    }
    if (!outq_empty(&c->q) || c->closing)
        lws_callback_on_writable(c->wsi);
    return 0;
}
