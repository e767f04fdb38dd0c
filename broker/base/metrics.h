/* metrics.h - process-wide counters and gauges, rendered for Prometheus.
 *
 * Plain integers updated on the event-loop thread; nothing here allocates on
 * the hot path. */
#ifndef CHORUS_METRICS_H
#define CHORUS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "envelope.h"
#include "errors.h"
#include "expo.h"
#include "histogram.h"

enum reject_reason { REJECT_ORIGIN, REJECT_PATH, REJECT_MAX_CONNECTIONS, REJECT_SHUTDOWN,
                     REJECT_AUTH, REJECT_IP_LIMIT, REJECT_STARTING, REJECT__COUNT };

struct metrics {
    int64_t connections;
    uint64_t connections_accepted;
    uint64_t connections_rejected[REJECT__COUNT];
    int64_t subscriptions;
    int64_t channels;
    uint64_t published_ws;
    uint64_t published_http;
    uint64_t delivered;
    uint64_t frames_received;
    uint64_t bytes_received;
    uint64_t bytes_sent;
    uint64_t errors[CHORUS_ERR__COUNT];
    uint64_t queue_drops;
    uint64_t slow_consumer_closes;
    int64_t sse_streams;          /* open GET /sse streams (also counted in connections) */
    uint64_t conflated;           /* queued msgs replaced by a newer one (slow_consumer conflate) */
    uint64_t pings_sent;
    uint64_t ping_timeouts;              /* connections dropped for not answering a PING */
    uint64_t ping_extensions;            /* unanswered PINGs waited for longer: the peer read meanwhile */

    /* who may do what (auth_ws.c, presence.c, binmsg.c) */
    uint64_t auth_accepted;              /* tokens verified (upgrade or auth op) */
    uint64_t auth_refused;               /* tokens refused (401 or close 4001) */
    uint64_t auth_expired_closes;        /* connections closed 4001 when their token expired */
    uint64_t presence_events;            /* join/leave events fanned out */
    uint64_t published_binary;           /* binary messages sequenced (also in published_ws) */
    int64_t idempotency_keys;            /* publish keys remembered (channel.c) */
    uint64_t idempotency_dropped[3];     /* by enum key_drop (channel.c): window, channel, node */

    /* cluster */
    uint64_t cluster_sent[ENV_TYPE_COUNT];     /* by envelope type */
    uint64_t cluster_received[ENV_TYPE_COUNT];
    uint64_t replicated;                 /* REPL messages sent */
    uint64_t replication_resends;        /* rounds of re-sending pending messages */
    uint64_t replication_refused;        /* REPL_ACKs refusing (the backup thought it owned) */
    uint64_t cluster_send_drops;
    uint64_t cluster_unwanted;           /* channel messages for channels without local subscribers */
    uint64_t cluster_bad_messages;
    uint64_t cluster_auth_failures;
    uint64_t cluster_forwarded_publishes;
    uint64_t cluster_call_timeouts;
    uint64_t cluster_held_back;          /* messages dropped during a sync (covered by its reply) */
    uint64_t gaps_detected;
    uint64_t gaps_repaired;
    uint64_t gaps_unrepaired;

    /* latency (conn.c, from the stamps channel.c and the engine put on message frames) */
    struct histogram delivery_latency;   /* received or sequenced here -> handed to the socket */
    struct histogram queue_wait;         /* queued for the subscriber -> handed to the socket */
};

extern struct metrics metrics;

/* Per-namespace counters. Namespaces come from the configuration, so the
 * label's values are bounded; past METRICS_NS_MAX distinct names (a reload
 * that keeps adding them) every further one shares the row "_other". */
#define METRICS_NS_MAX 64
struct ns_metrics {
    char name[64];                       /* "" for channels without a configured namespace */
    uint64_t published;                  /* messages sequenced here as the channel's owner */
    uint64_t delivered;                  /* msg frames queued to subscribers here */
    int64_t subscriptions;
    uint64_t errors;                     /* err replies to ops on its channels */
};
/* The row for namespace `name`, made on first use; never NULL. Look it up
 * once per channel (channel.c keeps it), not per message. */
struct ns_metrics *metrics_ns(const char *name);

/* Appends an HTTP API request to the per-path/status counters. */
void metrics_http_request(const char *path, int status);

/* Lets a module that is not always linked (the cluster, the hooks) add its
 * families; each renderer is added once, in the order given. */
void metrics_set_extra(void (*render)(struct sbuf *b));

/* Renders the text exposition into a malloc'd buffer; returns its length
 * and sets *out (caller frees). */
size_t metrics_render(char **out, const char *node_id);

#endif
