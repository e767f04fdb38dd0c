/* internal.h - the state shared by the C SDK's modules: the client object, its
 * requests and its subscriptions.
 *
 * Everything here belongs to the loop thread (the thread inside
 * chorus_client_run()), except the fields under "inbox", which every thread
 * reaches through inbox_lock, and wake_requested, an atomic. */
#ifndef CHORUS_CLIENT_INTERNAL_H
#define CHORUS_CLIENT_INTERNAL_H

#include "chorus/client.h"
#include "status.h"

#include <jansson.h>
#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>

#define CHORUS__DEFAULT_RECONNECT_MIN_MS 250u
#define CHORUS__DEFAULT_RECONNECT_MAX_MS 10000u
#define CHORUS__DEFAULT_MAX_QUEUE 1024u
#define CHORUS__DEFAULT_MAX_QUEUE_BYTES ((size_t)4 << 20)
#define CHORUS__DEFAULT_MAX_FRAME_BYTES ((size_t)65536)
#define CHORUS__DEFAULT_MAX_RX_BYTES ((size_t)64 << 20)
#define CHORUS__DEFAULT_REQUEST_TIMEOUT_MS 15000u
#define CHORUS__DEFAULT_PING_INTERVAL_S 20u
#define CHORUS__PING_GRACE_S 10u
#define CHORUS__DEFAULT_PUBLISH_RETRY_MS 10000u
#define CHORUS__RETRY_MIN_MS 100u     /* first delay before a publish is sent again */
#define CHORUS__RETRY_MAX_MS 2000u    /* cap of that delay */
#define CHORUS__KEY_PREFIX_LEN 16     /* random url-safe characters per client (96 bits) */

enum chorus__req_kind { CHORUS__REQ_SUB, CHORUS__REQ_UNSUB, CHORUS__REQ_PUB, CHORUS__REQ_HISTORY };

/* One request frame. Created by the public calls (or by a resubscription),
 * it sits on cl->queued until written, then on cl->inflight until its reply
 * (or the end of the connection) completes it. The frame text stays intact:
 * lws masks what it sends in place, so writes go through a scratch copy and a
 * history request can be resent after a reconnect. */
struct chorus__req {
    struct chorus__req *prev, *next;
    enum chorus__req_kind kind;
    uint64_t id;
    char *ch;
    char *frame;                  /* JSON text, NUL-terminated */
    size_t len;
    int64_t deadline_ms;          /* set when written */
    bool since;                   /* SUB: carried `since` */
    char *key;                    /* PUB: its idempotency key (also in the frame), or NULL */
    int64_t created_ms;           /* PUB: when publish was called (the retry deadline counts from it) */
    int64_t retry_at_ms;          /* PUB on cl->retrying: when it goes back to cl->queued */
    unsigned attempts;            /* PUB: times written */
    chorus_ack_cb *ack_cb;        /* PUB */
    chorus_history_cb *hist_cb;   /* HISTORY */
    void *ud;
};

struct chorus__req_list {
    struct chorus__req *head, *tail;
    size_t n;
};

/* One per channel the application subscribed to; lives from subscribe() to
 * unsubscribe() (or a refused subscription), across reconnects. */
struct chorus__sub {
    struct chorus__sub *next;
    char *ch;
    chorus_msg_cb *cb;
    void *ud;
    bool has_pos;                 /* epoch/seq hold the last position delivered */
    char epoch[CHORUS_EPOCH_MAX + 1];
    uint64_t seq;
    uint64_t pending_id;          /* id of the sub request awaiting its ack; 0 when none */
    bool active;                  /* acknowledged on the current connection */
};

/* A unit of work handed over by another thread. */
struct chorus__task {
    struct chorus__task *next;
    chorus_task_cb *fn;           /* NULL: a publish_ts */
    char *ch, *data;
    chorus_ack_cb *ack_cb;
    void *ud;
};

enum chorus__state {
    CHORUS__IDLE,                 /* no connection; maybe a retry scheduled */
    CHORUS__CONNECTING,           /* lws is connecting / upgrading */
    CHORUS__OPEN,                 /* upgraded, waiting for hello */
    CHORUS__READY,                /* hello received: requests flow */
    CHORUS__DEAD,                 /* no_reconnect and the connection ended */
};

struct chorus_client {
    /* settings, fixed after new() */
    chorus_client_opts_t opts;    /* defaults filled in; string fields point to our copies */
    char *url;
    char *token;
    char *origin_hdr;
    char *host;                   /* address to connect to */
    char *host_hdr;               /* Host header: host[:port] */
    int port;
    bool tls;
    char *path;                   /* path + query (token) */
    lws_retry_bo_t idle_policy;

    struct lws_context *ctx;
    struct lws *wsi;              /* the current connection, NULL when none */
    enum chorus__state state;
    int close_code;               /* from the peer's close frame */
    char close_reason[128];
    unsigned attempt;             /* consecutive attempts without a hello */
    uint64_t rng;
    uint64_t next_id;
    int64_t open_since_ms;        /* when the upgrade completed (hello deadline) */
    bool closing_conn;            /* send a normal close at the next WRITEABLE */
    bool freeing;
    bool free_deferred;
    bool in_run;
    lws_sorted_usec_list_t sul_connect, sul_tick, sul_run;

    struct chorus__req_list queued, inflight;
    struct chorus__req_list retrying; /* publishes answered `unavailable`, waiting for retry_at_ms */
    lws_sorted_usec_list_t sul_retry;
    char key_prefix[CHORUS__KEY_PREFIX_LEN + 1]; /* generated keys: this, then key_counter */
    uint64_t key_counter;
    size_t n_pub;                 /* publishes queued or in flight */
    size_t pub_bytes;
    size_t n_hist;

    struct chorus__sub *subs;     /* linear list: lookups are O(subscriptions), at most
                                   * max_channels_per_conn (128 by default) */

    /* receive assembly */
    char *rx;
    size_t rx_len, rx_cap;
    bool rx_in_msg, rx_discard, rx_binary;

    /* one write at a time: a copy with LWS_PRE headroom, masked by lws */
    unsigned char *tx;
    size_t tx_cap;

    /* inbox */
    pthread_mutex_t inbox_lock;
    struct chorus__task *inbox_head, *inbox_tail;
    size_t inbox_n;
    atomic_int wake_requested;
};

/* client.c */
int64_t chorus__now_ms(void);
void chorus__req_append(struct chorus__req_list *l, struct chorus__req *r);
void chorus__req_prepend(struct chorus__req_list *l, struct chorus__req *r);
void chorus__req_unlink(struct chorus__req_list *l, struct chorus__req *r);
void chorus__req_free(chorus_client_t *cl, struct chorus__req *r);
struct chorus__req *chorus__req_sub(chorus_client_t *cl, struct chorus__sub *s);
struct chorus__sub *chorus__sub_find(const chorus_client_t *cl, const char *ch);
void chorus__sub_remove(chorus_client_t *cl, struct chorus__sub *s);
void chorus__fail_req(chorus_client_t *cl, struct chorus__req *r, int status, const char *code,
                      const char *msg);

/* retry.c */
void chorus__key_prefix_init(chorus_client_t *cl);
void chorus__key_generate(chorus_client_t *cl, char *out, size_t size);
bool chorus__retry_pub(chorus_client_t *cl, struct chorus__req *r);
void chorus__retry_cancel_all(chorus_client_t *cl, struct chorus__req_list *into);

/* conn.c */
uint64_t chorus__rand(chorus_client_t *cl);
extern const struct lws_protocols chorus__protocols[];
void chorus__connect(lws_sorted_usec_list_t *sul);
void chorus__conn_ended(chorus_client_t *cl, const char *reason);
void chorus__tick(lws_sorted_usec_list_t *sul);
void chorus__kick_writer(chorus_client_t *cl);
void chorus__close_connection(chorus_client_t *cl);

#endif
