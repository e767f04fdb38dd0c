/* conn.c - the connection object: its outbound queue, the coalescing
 * write path, replies and orderly close, and the list of open connections.
 * What lws tells a connection is handled in ws.c.
 *
 * Write path: everything queued for a connection is sent in as few syscalls
 * as possible. When the connection becomes writable, the queued frames are
 * laid out as complete WebSocket frames (header + payload) in one scratch
 * buffer and handed to lws in a single LWS_WRITE_RAW write. This is valid
 * because connections are plain HTTP/1.1 WebSocket without extensions
 * (no permessage-deflate is offered and HTTP/2 is not used for /ws); lws still
 * owns TLS and any partial-send buffering. */
#include "conn.h"
#include "cluster.h"
#include "frame.h"
#include "log.h"
#include "metrics.h"
#include "readmore.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

static unsigned char write_buf[LWS_PRE + CONN_WRITE_BATCH];
static struct conn *conns;        /* every established connection (utlist DL) */

/* ------------------------------------------------------------------- list */

void conn_list_add(struct conn *c) { DL_PREPEND(conns, c); }

void conn_list_remove(struct conn *c) { DL_DELETE(conns, c); }

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
}

void conn_enqueue(struct conn *c, struct frame *f)
{
    const struct config *cfg = rt.cfg;
    if (c->closing)
        return;
    bool was_empty = outq_empty(&c->q);
    if (outq_push(&c->q, f, (uint32_t)cfg->max_queue_frames, (size_t)cfg->max_queue_bytes) < 0) {
        metrics.slow_consumer_closes++;
        log_info("event=slow_consumer client=%s queued_frames=%u queued_bytes=%zu", c->id,
                 c->q.count, c->q.bytes);
        conn_close_with(c, CHORUS_CLOSE_SLOW_CONSUMER, CHORUS_CLOSE_REASON_SLOW_CONSUMER, true);
        return;
    }
    if (was_empty && lws_dll2_is_detached(&c->flush)) {
        if (!flush_list.count)
            lws_sul_schedule(rt.ctx, 0, &flush_timer, flush_all, 1);
        lws_dll2_add_head(&c->flush, &flush_list);
    }
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

void conn_send_err(struct conn *c, bool has_id, long long id, enum chorus_err code,
                   const char *msg)
{
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

int conn_flush(struct conn *c)
{
    unsigned char *out = write_buf + LWS_PRE;
    size_t used = 0;
    struct frame *f;

    while ((f = outq_peek(&c->q))) {
        size_t h = frame_ws_header_len(f->len);
        if (used + h + f->len > CONN_WRITE_BATCH) {
            if (used)
                break;
            /* Larger than a batch: let lws frame it straight from the shared buffer. */
            if (lws_write(c->wsi, frame_payload(f), f->len,
                          f->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) < (int)f->len)
                return -1;
            metrics.bytes_sent += h + f->len;
            outq_pop(&c->q);
            break;
        }
        used += frame_ws_header_op(out + used, f->len, frame_opcode(f));
        memcpy(out + used, frame_payload(f), f->len);
        used += f->len;
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
