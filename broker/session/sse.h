/* sse.h - Server-Sent Events (PROTOCOL.md 10): GET /sse?ch=A&ch=B streams
 * what a WebSocket subscribed to those channels would receive, as
 * text/event-stream, for clients whose WebSocket cannot open.
 *
 * An SSE stream is a struct conn (the per-session data lws allocates for
 * the request) with c->sse set: it shares the WebSocket's admission checks,
 * subscriptions, queue bounds, slow-consumer policy, keepalive wheel and
 * close; only the writer differs. Each event's `id` names the stream's
 * position in every channel, so EventSource's Last-Event-ID resumes all of
 * them exactly like `since`. */
#ifndef CHORUS_SSE_H
#define CHORUS_SSE_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "channel.h"

/* One channel of a stream, in the order of the ch parameters. */
struct sse_slot {
    const char *name;                  /* inside the stream's allocation */
    uint32_t len;
    bool known;                        /* a position is known: epoch and seq hold it */
    uint64_t seq;                      /* the last msg written (or the ack's position) */
    char epoch[CHANNEL_EPOCH_MAX];
};

/* One per SSE request, allocated with its names when the request is
 * accepted and freed when it closes. Touched only by sse.c, except that
 * conn.c reads the names (sse_slot_of). */
struct sse_stream {
    uint32_t n;
    bool close_sent;                   /* the closing event is written; hang up next */
    struct conn *c;                    /* the stream's connection */
    struct sse_stream *prev, *next;    /* every open stream, for the hang-up watch */
    struct sse_slot slot[];
};

/* The place (index + 1) of ch in the stream, 0 when it is not one of its
 * channels. O(channels of the stream); conn.c asks once per subscription. */
static inline uint32_t sse_slot_of(const struct sse_stream *st, const struct channel *ch)
{
    for (uint32_t i = 0; i < st->n; i++)
        if (st->slot[i].len == ch->len && !memcmp(st->slot[i].name, ch->name, ch->len))
            return i + 1;
    return 0;
}

/* The "chorus-sse" protocol bound to the /sse mount, and its session size. */
int sse_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                 size_t len);
size_t sse_session_size(void);
/* Registers the writer with conn.c; call at start. */
void sse_start(void);

#endif
