/* metrics.h - process-wide counters and gauges, rendered for Prometheus.
 *
 * Plain integers updated on the event-loop thread; nothing here allocates on
 * the hot path. */
#ifndef CHORUS_METRICS_H
#define CHORUS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "errors.h"

enum reject_reason { REJECT_ORIGIN, REJECT_PATH, REJECT_MAX_CONNECTIONS, REJECT_SHUTDOWN, REJECT__COUNT };

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
};

extern struct metrics metrics;

/* Appends an HTTP API request to the per-path/status counters. */
void metrics_http_request(const char *path, int status);

/* Renders the text exposition into a malloc'd buffer; returns its length
 * and sets *out (caller frees). */
size_t metrics_render(char **out, const char *node_id);

#endif
