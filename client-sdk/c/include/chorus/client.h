/* chorus/client.h - libchorus-client, the C client of the Chorus pub/sub broker
 * (wire protocol v1, proto/PROTOCOL.md), built on libwebsockets' client side.
 *
 * One chorus_client_t is one logical connection to one node. It keeps itself
 * connected (exponential backoff with jitter), resubscribes every channel it
 * holds after a reconnect with `since` = the last position it delivered, and
 * never delivers the same seq of a channel twice within an epoch.
 *
 * Threading (read this first):
 *   - The client is driven by chorus_client_run(), which services the client's
 *     own lws context. Call it from your loop with a short timeout, or give the
 *     client a dedicated thread that calls it in a loop. Every callback runs on
 *     that thread, inside chorus_client_run(): this is the "loop thread".
 *   - Every function below is loop-thread only (call it from the loop thread,
 *     from a callback, or while no thread is inside chorus_client_run()),
 *     EXCEPT these three, which any thread may call at any time between
 *     chorus_client_new() and chorus_client_free():
 *         chorus_client_wakeup()      (also safe in a signal handler)
 *         chorus_client_publish_ts()
 *         chorus_client_post()
 *   - Callbacks may call any loop-thread function, including
 *     chorus_client_unsubscribe() of the channel being delivered and
 *     chorus_client_free() (the free then happens when chorus_client_run()
 *     returns). They must not call chorus_client_run().
 *
 * Errors: functions return CHORUS_OK (0) or a chorus_status code. As in libuv,
 * a function that takes a callback and returns an error never calls that
 * callback; once it has returned CHORUS_OK, the callback is called exactly
 * once (with CHORUS_E_CLOSED at the latest, from chorus_client_free()).
 *
 * Pointers passed in (URL, channel names, JSON text) are copied before the call
 * returns; the caller keeps ownership. Pointers passed to callbacks are
 * borrowed and valid only until the callback returns. */
#ifndef CHORUS_CLIENT_H
#define CHORUS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* jansson's value type; include <jansson.h> to read message data as JSON. */
struct json_t;

#define CHORUS_CHANNEL_MAX 255 /* channel names: 1-255 bytes of [A-Za-z0-9_.:@/-] */
#define CHORUS_EPOCH_MAX 64    /* longest epoch string the SDK stores */
#define CHORUS_KEY_MAX 64      /* idempotency keys: 1-64 bytes of UTF-8 (PROTOCOL.md 2.3) */

/* Close code of a node cut off from its cluster's majority (PROTOCOL.md 5):
 * it acknowledges nothing until it is back. The SDK reconnects after the
 * shortest backoff delay, resumes with `since` and retries the publishes that
 * were waiting for an ack (see publish_retry_ms). */
#define CHORUS_CLIENT_CLOSE_CUT_OFF 4013

/* ------------------------------------------------------------------ status */

/* Result codes. Positive codes are the protocol's error codes (PROTOCOL.md
 * section 3 and 6), in the order of proto/errors.h; the SDK also returns some
 * of them itself when it can tell before sending (a bad channel name, a frame
 * larger than max_frame_bytes). Negative codes are local conditions. */
enum chorus_status {
    CHORUS_OK = 0,

    CHORUS_E_BAD_REQUEST = 1,     /* "bad_request" */
    CHORUS_E_UNKNOWN_OP,          /* "unknown_op" */
    CHORUS_E_BAD_CHANNEL,         /* "bad_channel" */
    CHORUS_E_TOO_LARGE,           /* "too_large" */
    CHORUS_E_FORBIDDEN,           /* "forbidden" */
    CHORUS_E_NOT_SUBSCRIBED,      /* "not_subscribed" */
    CHORUS_E_LIMIT_REACHED,       /* "limit_reached" */
    CHORUS_E_RATE_LIMITED,        /* "rate_limited" */
    CHORUS_E_UNAVAILABLE,         /* "unavailable" */
    CHORUS_E_UNAUTHORIZED,        /* "unauthorized" (HTTP API) */
    CHORUS_E_NOT_FOUND,           /* "not_found" (HTTP API) */
    CHORUS_E_METHOD_NOT_ALLOWED,  /* "method_not_allowed" (HTTP API) */
    CHORUS_E_SERVER,              /* a code this SDK does not know; the wire string is in err_code */

    CHORUS_E_INVALID = -1,        /* "invalid_argument": NULL/empty argument, bad option, misuse */
    CHORUS_E_NOMEM = -2,          /* "out_of_memory" */
    CHORUS_E_BAD_JSON = -3,       /* "bad_json": the data is not one valid JSON value */
    CHORUS_E_QUEUE_FULL = -4,     /* "queue_full": max_queue / max_queue_bytes reached */
    CHORUS_E_DISCONNECTED = -5,   /* "disconnected": the connection ended before the reply (the
                                   * publish may or may not have been sequenced), or reconnecting
                                   * is off and the connection is gone */
    CHORUS_E_TIMEOUT = -6,        /* "timeout": no reply within request_timeout_ms */
    CHORUS_E_CLOSED = -7,         /* "closed": the client is being freed */
    CHORUS_E_EXISTS = -8,         /* "already_subscribed" */
    CHORUS_E_CONNECT = -9,        /* "connect_failed": could not reach the server (HTTP helper) */
    CHORUS_E_PROTOCOL = -10,      /* "protocol_error": the server sent something unreadable */
    CHORUS_E_BAD_URL = -11,       /* "bad_url" */
};

/* Stable short name of a status: the wire string for protocol codes
 * ("bad_channel"), the quoted name above for local ones ("queue_full"). */
const char *chorus_status_name(int status);
/* One-line English description of a status. */
const char *chorus_strerror(int status);

/* ---------------------------------------------------------- event structs */

typedef struct chorus_client chorus_client_t;

/* A `msg` frame (PROTOCOL.md 2.7). */
typedef struct chorus_msg {
    const char *ch;
    uint64_t seq;
    int64_t ts;                   /* server time in ms since the Unix epoch */
    const char *epoch;            /* the epoch this seq belongs to, as known to the SDK ("" if unknown) */
    const char *client;           /* publishing connection id; NULL for HTTP publishes */
    const struct json_t *data;    /* the payload, any JSON value (borrowed) */
    const struct json_t *frame;   /* the whole frame object (borrowed) */
    const char *raw;              /* the frame as JSON text, NUL-terminated: as received for live
                                   * messages, re-encoded compactly for history entries */
    size_t raw_len;
    const char *user;             /* the publisher's user as the node attests it (its token's
                                   * sub, or an HTTP publish's "user"); NULL when anonymous */
    uint64_t skipped;             /* slow_consumer "conflate": older msgs of the channel the
                                   * server replaced by this one (seq jumped by skipped + 1) */
} chorus_msg_t;

/* Receives the messages of one subscribed channel, in seq order, each once. */
typedef void chorus_msg_cb(chorus_client_t *cl, const chorus_msg_t *msg, void *ud);

/* Outcome of a publish. On success status == CHORUS_OK and epoch/seq give the
 * position the message was sequenced at; otherwise err_code/err_msg say why. */
typedef struct chorus_ack {
    int status;
    const char *err_code;         /* wire code or local name; NULL on success */
    const char *err_msg;          /* human-readable; NULL on success */
    const char *ch;
    const char *epoch;            /* "" when not known */
    uint64_t seq;
    bool duplicate;               /* the node had seen the key: nothing new was published and
                                   * seq is the first publish's (a success all the same) */
    const char *key;              /* the idempotency key the publish carried; NULL when none */
    unsigned attempts;            /* times it was sent (> 1 after retries on `unavailable`) */
} chorus_ack_t;

typedef void chorus_ack_cb(chorus_client_t *cl, const chorus_ack_t *ack, void *ud);

/* Outcome of a history request: `count` messages, oldest first. */
typedef struct chorus_history {
    int status;
    const char *err_code;
    const char *err_msg;
    const char *ch;
    const char *epoch;            /* the channel's current epoch ("" if the channel is unknown) */
    uint64_t seq;                 /* the channel's current seq */
    size_t count;
    const chorus_msg_t *msgs;
} chorus_history_t;

typedef void chorus_history_cb(chorus_client_t *cl, const chorus_history_t *h, void *ud);

typedef struct chorus_history_opts {
    int limit;                    /* newest N messages; 0 = the server's default (all it keeps) */
    const char *since_epoch;      /* NULL: no `since`; else only messages after {since_epoch, since_seq} */
    uint64_t since_seq;
} chorus_history_opts_t;

/* The server's `hello` (PROTOCOL.md 1). */
typedef struct chorus_hello {
    int version;
    const char *node;
    const char *client;           /* this connection's id */
} chorus_hello_t;

typedef struct chorus_disconnect {
    bool was_connected;           /* false: this was a failed connection attempt */
    int close_code;               /* WebSocket close code (1001 shutdown, 4008 slow consumer, 4013
                                   * node cut off from its cluster's majority), 0 if none */
    const char *reason;           /* close reason or connection error text, never NULL */
    int retry_in_ms;              /* next attempt in this many ms; -1 when the client will not retry */
} chorus_disconnect_t;

enum chorus_sub_event_kind {
    CHORUS_SUB_SUBSCRIBED,        /* the server acknowledged a (re)subscription */
    CHORUS_SUB_FAILED,            /* the server refused it; the subscription is removed */
    CHORUS_SUB_EPOCH,             /* the channel's epoch changed while subscribed */
    CHORUS_SUB_GAP,               /* messages gap_from..gap_to are lost: the server said so (a `gap`
                                   * event, cluster only) or a msg skipped seqs; delivery goes on */
};

typedef struct chorus_sub_event {
    enum chorus_sub_event_kind kind;
    const char *ch;
    const char *epoch;            /* SUBSCRIBED, EPOCH, GAP: the position after the event (for a GAP
                                   * seen on a msg, that msg is delivered right after the event) */
    uint64_t seq;
    bool resumed;                 /* SUBSCRIBED: `since` was sent (a resubscription or _from) */
    bool recovered;               /* SUBSCRIBED with resumed: every missed message follows. When
                                   * false, messages were lost: refetch your state. */
    uint64_t gap_from, gap_to;    /* GAP: the missing seqs, inclusive */
    int status;                   /* FAILED */
    const char *err_code;         /* FAILED */
    const char *err_msg;          /* FAILED */
} chorus_sub_event_t;

typedef void chorus_connected_cb(chorus_client_t *cl, const chorus_hello_t *hello, void *user);
typedef void chorus_disconnected_cb(chorus_client_t *cl, const chorus_disconnect_t *d, void *user);
/* Errors not tied to a request: an `err` frame the SDK cannot match, an
 * unreadable frame from the server. Informational; the client carries on. */
typedef void chorus_error_cb(chorus_client_t *cl, int status, const char *msg, void *user);
typedef void chorus_sub_event_cb(chorus_client_t *cl, const chorus_sub_event_t *ev, void *user);
/* A function run on the loop thread by chorus_client_post(). `cl` is NULL when
 * the client was freed before the task could run: release `ud` and return. */
typedef void chorus_task_cb(chorus_client_t *cl, void *ud);

/* --------------------------------------------------------------- options */

/* Zero-initialise and set what you need; 0 / NULL selects the default. */
typedef struct chorus_client_opts {
    const char *url;              /* required: ws://host:port/ws or wss://...; a URL without a
                                   * path gets "/ws" */
    const char *token;            /* optional, sent as the `token` query parameter */
    const char *origin;           /* optional Origin header, e.g. "https://app.example.com" */

    unsigned reconnect_min_ms;    /* first retry delay (default 250) */
    unsigned reconnect_max_ms;    /* cap of the exponential backoff (default 10000) */
    bool no_reconnect;            /* true: never reconnect; once the connection is gone the client
                                   * fails everything with CHORUS_E_DISCONNECTED */

    unsigned max_queue;           /* publishes waiting to be sent or acknowledged (default 1024) */
    size_t max_queue_bytes;       /* their total frame bytes (default 4 MiB) */
    size_t max_frame_bytes;       /* largest frame sent, checked before queueing; match the
                                   * node's max_frame_bytes (default 65536) */
    size_t max_rx_bytes;          /* largest frame accepted from the server (default 64 MiB) */
    unsigned request_timeout_ms;  /* a request without reply fails after this (default 15000) */
    unsigned ping_interval_s;     /* PING the server after this much silence (default 20; the
                                   * connection is dropped 10 s later without an answer) */
    unsigned publish_retry_ms;    /* a publish answered `unavailable` is sent again with the same
                                   * idempotency key, after 100 ms doubling up to 2 s (each delay
                                   * uniform in [d/2, d]), while the next attempt starts within this
                                   * many ms of the publish call (default 10000); then its callback
                                   * gets CHORUS_E_UNAVAILABLE */
    bool no_publish_retry;        /* true: never retry, and send only the keys the caller gives */

    void *user;                   /* passed to the client-level callbacks below */
    chorus_connected_cb *on_connected;        /* after `hello`; resubscriptions are queued,
                                               * not yet acknowledged */
    chorus_disconnected_cb *on_disconnected;  /* a connection or connection attempt ended */
    chorus_error_cb *on_error;
    chorus_sub_event_cb *on_sub_event;
} chorus_client_opts_t;

/* ------------------------------------------------------------- lifecycle */

/* Creates a client and schedules its first connection attempt (made by the
 * first chorus_client_run()). Returns NULL on a bad URL or option, or when
 * lws cannot create its context; opts and its strings are copied. */
chorus_client_t *chorus_client_new(const chorus_client_opts_t *opts);

/* Services the client for up to timeout_ms: > 0 waits at most that long,
 * 0 handles only what is ready now, < 0 runs until chorus_client_wakeup().
 * Returns early (CHORUS_OK) when chorus_client_wakeup() is called. Returns
 * CHORUS_E_DISCONNECTED at once when no_reconnect is set and the connection is
 * gone, CHORUS_E_INVALID when called from a callback. */
int chorus_client_run(chorus_client_t *cl, int timeout_ms);

/* Thread-safe and async-signal-safe: makes the current (or next)
 * chorus_client_run() return as soon as possible. */
void chorus_client_wakeup(chorus_client_t *cl);

/* Closes the connection (a normal 1000 close when possible), calls every
 * pending ack/history callback with CHORUS_E_CLOSED and every pending post()
 * task with cl == NULL, then frees everything. From a callback, the free is
 * deferred until chorus_client_run() returns. No other thread may still use
 * the client. NULL is ignored. */
void chorus_client_free(chorus_client_t *cl);

void *chorus_client_user(const chorus_client_t *cl);
/* True between `hello` and the end of that connection. */
bool chorus_client_is_connected(const chorus_client_t *cl);
/* Publishes and history requests not completed yet (queued or in flight):
 * run until this is 0 to flush before freeing. */
size_t chorus_client_pending(const chorus_client_t *cl);

/* ---------------------------------------------------------- subscriptions */

/* Subscribes to `ch`; `cb` receives its messages from the position the server
 * acknowledges onwards (see on_sub_event). The subscription survives
 * reconnects. CHORUS_E_EXISTS if `ch` is already subscribed,
 * CHORUS_E_BAD_CHANNEL for an invalid name. */
int chorus_client_subscribe(chorus_client_t *cl, const char *ch, chorus_msg_cb *cb, void *ud);

/* The same, resuming from a stored position: the server replays what came
 * after {epoch, seq} when it still has it (CHORUS_SUB_SUBSCRIBED with
 * recovered = true). */
int chorus_client_subscribe_from(chorus_client_t *cl, const char *ch, const char *epoch,
                                 uint64_t seq, chorus_msg_cb *cb, void *ud);

/* Unsubscribes; `cb` is not called for `ch` after this returns.
 * CHORUS_E_NOT_SUBSCRIBED if the client does not hold `ch`. */
int chorus_client_unsubscribe(chorus_client_t *cl, const char *ch);

/* The last position delivered for `ch` (to store and resume from later).
 * `epoch` receives at most CHORUS_EPOCH_MAX + 1 bytes. CHORUS_E_NOT_SUBSCRIBED
 * if not subscribed; CHORUS_E_UNAVAILABLE if no position is known yet. */
int chorus_client_position(const chorus_client_t *cl, const char *ch,
                           char epoch[CHORUS_EPOCH_MAX + 1], uint64_t *seq);

/* -------------------------------------------------------------- requests */

/* Per-publish options of chorus_client_publish_ex(); zero-initialise. */
typedef struct chorus_publish_opts {
    const char *key;              /* idempotency key, 1-64 bytes of UTF-8 (copied). NULL: the SDK
                                   * makes one (unless no_publish_retry): 16 random url-safe
                                   * characters per client and a counter */
} chorus_publish_opts_t;

/* Publishes `json_data` (the text of one JSON value: object, array, string,
 * number, true/false/null) to `ch`. The frame is queued (while disconnected
 * too) and `cb` (may be NULL) gets the seq or the error. Fails at once with
 * CHORUS_E_BAD_CHANNEL, CHORUS_E_BAD_JSON, CHORUS_E_TOO_LARGE or
 * CHORUS_E_QUEUE_FULL. Every publish carries an idempotency key (one the SDK
 * makes, unless no_publish_retry), kept across reconnects and retries: an
 * `unavailable` answer is retried with it (publish_retry_ms), and an ack of a
 * key the node had seen is a success (ack->duplicate). A publish in flight
 * when the connection drops fails with CHORUS_E_DISCONNECTED (it is not
 * resent: it may have been sequenced), except after close code 4013
 * (CHORUS_CLIENT_CLOSE_CUT_OFF), where it is retried like an `unavailable`. */
int chorus_client_publish(chorus_client_t *cl, const char *ch, const char *json_data,
                          chorus_ack_cb *cb, void *ud);

/* The same with options (opts may be NULL): a key of your own, e.g. to send
 * the same publish again yourself after CHORUS_E_DISCONNECTED. CHORUS_E_INVALID
 * for a key that is empty, longer than 64 bytes or not UTF-8. */
int chorus_client_publish_ex(chorus_client_t *cl, const char *ch, const char *json_data,
                             const chorus_publish_opts_t *opts, chorus_ack_cb *cb, void *ud);

/* The same with a jansson value (not stolen; encoded before returning). */
int chorus_client_publish_json(chorus_client_t *cl, const char *ch, const struct json_t *data,
                               chorus_ack_cb *cb, void *ud);

/* Thread-safe publish for threads other than the loop thread. Checks the
 * channel and the JSON, copies both into the client's inbox (bounded by
 * max_queue) and wakes the loop, which queues the publish as
 * chorus_client_publish() would. Returns CHORUS_E_QUEUE_FULL when the inbox is
 * full. `cb` runs on the loop thread, with CHORUS_E_QUEUE_FULL if the outbound
 * queue is full when the loop takes the publish. */
int chorus_client_publish_ts(chorus_client_t *cl, const char *ch, const char *json_data,
                             chorus_ack_cb *cb, void *ud);

/* Thread-safe: runs fn(cl, ud) on the loop thread during a later
 * chorus_client_run(), in the order posted (publish_ts included). Use it to
 * subscribe or unsubscribe from another thread. CHORUS_E_QUEUE_FULL when the
 * inbox is full. */
int chorus_client_post(chorus_client_t *cl, chorus_task_cb *fn, void *ud);

/* Fetches the channel's history (PROTOCOL.md 2.4). opts may be NULL. History
 * requests are resent after a reconnect. */
int chorus_client_history(chorus_client_t *cl, const char *ch, const chorus_history_opts_t *opts,
                          chorus_history_cb *cb, void *ud);

/* The data of a message as compact JSON text; the caller frees it. NULL on
 * allocation failure. */
char *chorus_msg_data_text(const chorus_msg_t *msg);

#ifdef __cplusplus
}
#endif
#endif
