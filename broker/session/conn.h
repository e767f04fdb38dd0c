/* conn.h - one WebSocket client connection: its outbound queue, its
 * subscriptions and the assembly of its incoming messages. conn.c keeps the
 * queue, the writes and the list of open connections; ws.c drives it from
 * the lws callback; the session layer's other files keep their own state of
 * a connection in the struct (auth, limits, presence, keepalive).
 *
 * One of these is created for each client connecting to /ws; it lives in the
 * per-session data that lws allocates zeroed at the upgrade and frees after
 * LWS_CALLBACK_CLOSED. Everything is written only from the WRITEABLE
 * callback; closing is always asynchronous, so a connection is never freed
 * while a fan-out loop may still reach it. */
#ifndef CHORUS_CONN_H
#define CHORUS_CONN_H

#include <jansson.h>
#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>

#include "auth_ws.h"
#include "channel.h"
#include "close_codes.h"
#include "errors.h"
#include "keepalive.h"
#include "outq.h"
#include "presence.h"
#include "ratelimit.h"
#include "utf8.h"

/* One write to a connection carries at most this many payload bytes; it is
 * also lws' tx_packet_size for the protocol, so a batch normally reaches the
 * kernel in one send(). */
#define CONN_WRITE_BATCH (64 * 1024)

/* Every idle subscriber carries one of these (lws' per-session data, a heap
 * chunk of its own): the fields are ordered to leave no holes, and what
 * most connections never use lives behind a pointer (auth_ws.h). Keep it
 * at most 360 bytes (a 368-byte malloc chunk; docs/benchmarks.md, idle
 * memory). */
struct conn {
    struct lws *wsi;
    char id[24];                  /* public connection id ("client" on the wire) */
    struct outq q;
    struct sub_list subs;
    struct conn *prev, *next;     /* the list of open connections (conn.c) */
    struct conn_call *calls;      /* requests waiting for a channel owner (ops.c) */
    struct conn_pub *pubs;        /* publishes not yet acknowledged (ops.c) */
    struct proxy_call *proxy;     /* the backend hook it waits for; reads paused (proxy.c) */
    lws_dll2_t flush;             /* on the end-of-turn flush list while attached */
    struct sse_stream *sse;       /* sse.c: an SSE stream, not a WebSocket; NULL for WS */
    const char *close_reason;     /* static string, or close_reason_owned */
    char *close_reason_owned;     /* conn_close_reason's copy; freed when unlisted */

    unsigned char *rx;            /* message being assembled across fragments */
    uint32_t rx_len, rx_cap;

    struct conn_auth auth;        /* auth_ws.c: who this is; set from FILTER on */
    struct conn_limits limits;    /* ratelimit.c: peer IP, publish buckets */
    struct conn_presence presence; /* presence.c: rooms joined */
    struct conn_keepalive ka;     /* keepalive.c: when it is next PINGed */

    uint16_t close_code;
    uint16_t rx_turn;             /* readmore.c: the turn rx_turn_bytes counts */
    uint16_t rx_turn_bytes;       /* readmore.c: payload read in turn rx_turn (saturates) */
    uint32_t ping_end;            /* keepalive.c: where the PING out ends in our byte stream; 0: unwritten */
    struct utf8_check rx_utf8;    /* text message: UTF-8 state across fragments */
    bool rx_in_msg;               /* a message has started and not yet ended */
    bool rx_discard;              /* current message is over the limit: drop it */
    bool rx_binary;
    bool rx_deflated;             /* RSV1: the message is compressed (deflate.h) */
    bool deflate;                 /* permessage-deflate negotiated at the upgrade */
    uint8_t deflate_offers;       /* offers deflate_confirm() has looked at */
    bool established;             /* ESTABLISHED seen: CLOSED may unlink */
    bool closing;                 /* close requested; accept nothing more */
    bool close_when_answered;     /* shutdown: close once no publish is in flight */
    bool rx_more;                 /* readmore.c: to be read again at the end of this turn */
    bool sndbuf_capped;           /* conflate.c: its socket is set up for conflation (sndbuf, lowat) */
    bool tx_blocked;              /* conflate.c: its reader's window held --conflate-notsent-bytes back */
};
_Static_assert(sizeof(struct conn) <= 360, "struct conn outgrew its 368-byte malloc chunk");

/* Queues f (takes its own reference) and schedules the write; a queue over
 * its bounds closes the connection as a slow consumer. */
void conn_enqueue(struct conn *c, struct frame *f);
/* The same for a frame of subscription s's channel: a msg may take the place
 * of the channel's queued one (conflate.h). The channel layer's delivery
 * hook (channel_set_deliver); history replays come this way too. */
void conn_deliver(struct sub *s, struct frame *f);
/* Queues a reply built as JSON; takes ownership of j. */
void conn_send_json(struct conn *c, json_t *j);
/* Queues an err reply; id is included when has_id. */
void conn_send_err(struct conn *c, bool has_id, long long id, enum chorus_err code,
                   const char *msg);
/* Errors sent until the next call count against channel ch's namespace
 * (ch NULL: none); ch must stay valid until then. */
void conn_err_channel(const char *ch, size_t len);
/* Asks for an orderly close with code and reason once the queue has drained;
 * `drop` discards what is queued first (slow consumers). */
void conn_close_with(struct conn *c, uint16_t code, const char *reason, bool drop);
/* conn_close_with for a reason built at run time (the server API's): the
 * connection keeps a copy, cut to what a close frame can carry. */
void conn_close_reason(struct conn *c, uint16_t code, const char *reason);
/* Writes what is queued, as many frames per write as fit in a batch (from
 * the WRITEABLE callback or the end of a loop turn). -1 when the connection
 * failed. */
int conn_flush(struct conn *c);

/* What conn_flush does for an SSE stream (c->sse): sse.c registers its
 * writer at start, so this file never calls up into it. */
typedef int conn_writer_fn(struct conn *c);
void conn_set_sse_writer(conn_writer_fn *fn);

/* The list of open connections: added at ESTABLISHED, removed at CLOSED. */
void conn_list_add(struct conn *c);
void conn_list_remove(struct conn *c);
bool conn_list_empty(void);
/* Calls fn for every open connection (O(connections): server API calls
 * only); fn may close c, which stays listed until its CLOSED. */
void conn_foreach(void (*fn)(struct conn *c, void *ud), void *ud);
/* Asks every open connection to close once its queue drains. */
void conn_close_all(uint16_t code, const char *reason);
/* The same for shutdown, except that a connection with publishes in flight
 * first gets their answers (ops.c closes it after the last one; no new
 * publish is taken while shutting down, and each is bounded by
 * cluster_timeout_ms): a client is never left not knowing whether its
 * publish was sequenced. */
void conn_drain_all(uint16_t code, const char *reason);
/* Closes every client with 4013 when this node has been without a lease for
 * twice lease_ms (PROTOCOL.md 7.4); registered at start. */
void conn_watch_cluster(void);

#endif
