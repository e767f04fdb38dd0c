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

struct conn {
    struct lws *wsi;
    char id[24];                  /* public connection id ("client" on the wire) */
    struct outq q;
    struct sub_list subs;
    struct conn *prev, *next;     /* the list of open connections (conn.c) */
    struct conn_call *calls;      /* requests waiting for a channel owner (ops.c) */
    struct conn_pub *pubs;        /* publishes not yet acknowledged (ops.c) */
    lws_dll2_t flush;             /* on the end-of-turn flush list while attached */

    unsigned char *rx;            /* message being assembled across fragments */
    uint32_t rx_len, rx_cap;
    bool rx_in_msg;               /* a message has started and not yet ended */
    bool rx_discard;              /* current message is over the limit: drop it */
    bool rx_binary;
    struct utf8_check rx_utf8;    /* text message: UTF-8 state across fragments */
    uint16_t rx_turn_bytes;       /* readmore.c: payload read in turn rx_turn (saturates) */

    struct conn_auth auth;        /* auth_ws.c: who this is; set from FILTER on */
    struct conn_limits limits;    /* ratelimit.c: peer IP, publish buckets */
    struct conn_presence presence; /* presence.c: rooms joined */
    struct conn_keepalive ka;     /* keepalive.c: when it is next PINGed */

    bool established;             /* ESTABLISHED seen: CLOSED may unlink */
    bool closing;                 /* close requested; accept nothing more */
    bool close_when_answered;     /* shutdown: close once no publish is in flight */
    bool rx_more;                 /* readmore.c: to be read again at the end of this turn */
    uint16_t close_code;
    uint16_t rx_turn;             /* readmore.c: the turn rx_turn_bytes counts */
    const char *close_reason;     /* static string */
};

/* Queues f (takes its own reference) and schedules the write; a queue over
 * its bounds closes the connection as a slow consumer. The channel layer's
 * delivery hook (channel_set_deliver). */
void conn_enqueue(struct conn *c, struct frame *f);
/* Queues a reply built as JSON; takes ownership of j. */
void conn_send_json(struct conn *c, json_t *j);
/* Queues an err reply; id is included when has_id. */
void conn_send_err(struct conn *c, bool has_id, long long id, enum chorus_err code,
                   const char *msg);
/* Asks for an orderly close with code and reason once the queue has drained;
 * `drop` discards what is queued first (slow consumers). */
void conn_close_with(struct conn *c, uint16_t code, const char *reason, bool drop);
/* Writes what is queued, as many frames per write as fit in a batch (from
 * the WRITEABLE callback or the end of a loop turn). -1 when the connection
 * failed. */
int conn_flush(struct conn *c);

/* The list of open connections: added at ESTABLISHED, removed at CLOSED. */
void conn_list_add(struct conn *c);
void conn_list_remove(struct conn *c);
bool conn_list_empty(void);
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
