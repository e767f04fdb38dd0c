/* metrics.c - Prometheus text exposition (format 0.0.4) of struct metrics. */
#include "metrics.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "log.h"
#include "procstat.h"
#include "runtime.h"

struct metrics metrics;

#define HTTP_ROWS 48
static struct {
    char path[24];
    int status;
    uint64_t n;
} http_rows[HTTP_ROWS];

void metrics_http_request(const char *path, int status)
{
    /* Only known paths become label values so a scanner cannot grow the table. */
    static const char *const known[] = {"/api/publish", "/api/history", "/api/presence", "/healthz",
                                        "/metrics", "/api/info", "/api/channels", "/api/broadcast",
                                        "/api/disconnect", "/api/unsubscribe", "/api/subscribe"};
    const char *p = "other";
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(path, known[i]))
            p = known[i];
    for (int i = 0; i < HTTP_ROWS; i++) {
        if (http_rows[i].n && http_rows[i].status == status && !strcmp(http_rows[i].path, p)) {
            http_rows[i].n++;
            return;
        }
        if (!http_rows[i].n) {
            snprintf(http_rows[i].path, sizeof http_rows[i].path, "%s", p);
            http_rows[i].status = status;
            http_rows[i].n = 1;
            return;
        }
    }
}

static struct ns_metrics ns_rows[METRICS_NS_MAX];
static int ns_used;

struct ns_metrics *metrics_ns(const char *name)
{
    for (int i = 0; i < ns_used; i++)
        if (!strcmp(ns_rows[i].name, name))
            return &ns_rows[i];
    if (ns_used == METRICS_NS_MAX - 1) {
        struct ns_metrics *other = &ns_rows[METRICS_NS_MAX - 1];
        snprintf(other->name, sizeof other->name, "_other");
        return other;
    }
    snprintf(ns_rows[ns_used].name, sizeof ns_rows[ns_used].name, "%s", name);
    return &ns_rows[ns_used++];
}

static void render_ns(struct sbuf *b)
{
    static const struct {
        const char *name, *type, *help;
        size_t off;
        bool gauge;
    } fams[] = {
        {"chorus_namespace_published_total", "counter", "Messages sequenced on this node (as owner), by namespace.",
         offsetof(struct ns_metrics, published), false},
        {"chorus_namespace_delivered_total", "counter", "msg frames queued to subscribers, by namespace.",
         offsetof(struct ns_metrics, delivered), false},
        {"chorus_namespace_subscriptions", "gauge", "Subscriptions, by namespace.",
         offsetof(struct ns_metrics, subscriptions), true},
        {"chorus_namespace_errors_total", "counter", "err replies to ops on the namespace's channels.",
         offsetof(struct ns_metrics, errors), false},
    };
    /* Every configured namespace has its series from the start, before its
     * first channel, so that rate() and absent-series alerts see zeros. */
    if (rt.cfg) {
        metrics_ns(rt.cfg->default_ns.name);
        for (int i = 0; i < rt.cfg->n_namespaces; i++)
            metrics_ns(rt.cfg->namespaces[i].name);
    }
    int rows = ns_rows[METRICS_NS_MAX - 1].name[0] ? METRICS_NS_MAX : ns_used;
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        family(b, fams[f].name, fams[f].type, fams[f].help);
        for (int i = 0; i < rows; i++) {
            const char *v = (const char *)&ns_rows[i] + fams[f].off;
            if (!ns_rows[i].name[0] && i >= ns_used)
                continue;
            if (fams[f].gauge)
                put(b, "%s{namespace=\"%s\"} %lld\n", fams[f].name, ns_rows[i].name,
                    (long long)*(const int64_t *)(const void *)v);
            else
                put(b, "%s{namespace=\"%s\"} %llu\n", fams[f].name, ns_rows[i].name,
                    (unsigned long long)*(const uint64_t *)(const void *)v);
        }
    }
}

#define MAX_EXTRA 4
static void (*extra_render[MAX_EXTRA])(struct sbuf *b);
static int n_extra;

void metrics_set_extra(void (*render)(struct sbuf *b))
{
    for (int i = 0; i < n_extra; i++)
        if (extra_render[i] == render)
            return;
    /* A renderer dropped here would hide a whole family of metrics without a
     * word; the table is sized for the callers, so outgrowing it is a bug. */
    if (n_extra == MAX_EXTRA) {
        log_error("event=metrics_extra_overflow max=%d", MAX_EXTRA);
        abort();
    }
    extra_render[n_extra++] = render;
}

size_t metrics_render(char **out, const char *node_id)
{
    static const char *const reasons[REJECT__COUNT] = {"origin", "path", "max_connections",
                                                        "shutdown", "auth", "ip_limit", "starting"};
    struct sbuf b = {malloc(4096), 0, 4096};
    if (!b.p)
        return 0;
    b.p[0] = '\0';

    family(&b, "chorus_build_info", "gauge", "Build and node information.");
    put(&b, "chorus_build_info{node=\"%s\",version=\"%s\"} 1\n", node_id, CHORUS_VERSION);
    family(&b, "chorus_connections", "gauge", "Open WebSocket connections.");
    put(&b, "chorus_connections %lld\n", (long long)metrics.connections);
    family(&b, "chorus_connections_accepted_total", "counter", "WebSocket connections established.");
    put(&b, "chorus_connections_accepted_total %llu\n", (unsigned long long)metrics.connections_accepted);
    family(&b, "chorus_connections_rejected_total", "counter", "WebSocket upgrades refused.");
    for (int i = 0; i < REJECT__COUNT; i++)
        put(&b, "chorus_connections_rejected_total{reason=\"%s\"} %llu\n", reasons[i],
            (unsigned long long)metrics.connections_rejected[i]);
    family(&b, "chorus_subscriptions", "gauge", "Subscriptions (connection, channel).");
    put(&b, "chorus_subscriptions %lld\n", (long long)metrics.subscriptions);
    family(&b, "chorus_channels", "gauge", "Channels held in memory.");
    put(&b, "chorus_channels %lld\n", (long long)metrics.channels);
    family(&b, "chorus_messages_published_total", "counter", "Messages sequenced, by source.");
    put(&b, "chorus_messages_published_total{source=\"ws\"} %llu\n", (unsigned long long)metrics.published_ws);
    put(&b, "chorus_messages_published_total{source=\"http\"} %llu\n", (unsigned long long)metrics.published_http);
    family(&b, "chorus_messages_delivered_total", "counter", "msg frames queued to subscribers.");
    put(&b, "chorus_messages_delivered_total %llu\n", (unsigned long long)metrics.delivered);
    family(&b, "chorus_frames_received_total", "counter", "WebSocket messages received from clients.");
    put(&b, "chorus_frames_received_total %llu\n", (unsigned long long)metrics.frames_received);
    family(&b, "chorus_bytes_received_total", "counter", "WebSocket payload bytes received.");
    put(&b, "chorus_bytes_received_total %llu\n", (unsigned long long)metrics.bytes_received);
    family(&b, "chorus_bytes_sent_total", "counter", "WebSocket bytes written, headers included.");
    put(&b, "chorus_bytes_sent_total %llu\n", (unsigned long long)metrics.bytes_sent);
    family(&b, "chorus_errors_total", "counter", "err replies sent, by code.");
    for (int i = 0; i < CHORUS_ERR__COUNT; i++)
        if (i <= CHORUS_ERR_UNAVAILABLE)
            put(&b, "chorus_errors_total{code=\"%s\"} %llu\n", chorus_err_str((enum chorus_err)i),
                (unsigned long long)metrics.errors[i]);
    family(&b, "chorus_queue_drops_total", "counter", "Queued frames dropped when a slow consumer was closed.");
    put(&b, "chorus_queue_drops_total %llu\n", (unsigned long long)metrics.queue_drops);
    family(&b, "chorus_slow_consumer_closes_total", "counter", "Connections closed with 4008 slow consumer.");
    put(&b, "chorus_slow_consumer_closes_total %llu\n", (unsigned long long)metrics.slow_consumer_closes);
    family(&b, "chorus_sse_streams", "gauge", "Open Server-Sent Events streams (GET /sse), also counted in chorus_connections.");
    put(&b, "chorus_sse_streams %lld\n", (long long)metrics.sse_streams);
    family(&b, "chorus_conflated_total", "counter", "Queued messages replaced by their channel's newer one (slow_consumer conflate).");
    put(&b, "chorus_conflated_total %llu\n", (unsigned long long)metrics.conflated);
    family(&b, "chorus_pings_sent_total", "counter", "WebSocket PINGs sent to clients.");
    put(&b, "chorus_pings_sent_total %llu\n", (unsigned long long)metrics.pings_sent);
    family(&b, "chorus_ping_timeouts_total", "counter", "Connections dropped for not answering a PING in time.");
    put(&b, "chorus_ping_timeouts_total %llu\n", (unsigned long long)metrics.ping_timeouts);
    family(&b, "chorus_ping_extensions_total", "counter",
           "Waits for a PONG lengthened by ping_timeout because the peer had acknowledged more meanwhile (its PING was behind its backlog).");
    put(&b, "chorus_ping_extensions_total %llu\n", (unsigned long long)metrics.ping_extensions);
    family(&b, "chorus_auth_total", "counter", "Connection tokens checked, by result.");
    put(&b, "chorus_auth_total{result=\"accepted\"} %llu\n", (unsigned long long)metrics.auth_accepted);
    put(&b, "chorus_auth_total{result=\"refused\"} %llu\n", (unsigned long long)metrics.auth_refused);
    family(&b, "chorus_auth_expired_closes_total", "counter", "Connections closed with 4001 when their token expired.");
    put(&b, "chorus_auth_expired_closes_total %llu\n", (unsigned long long)metrics.auth_expired_closes);
    family(&b, "chorus_presence_events_total", "counter", "Presence join/leave events fanned out.");
    put(&b, "chorus_presence_events_total %llu\n", (unsigned long long)metrics.presence_events);
    family(&b, "chorus_messages_published_binary_total", "counter", "Binary messages sequenced (also counted in source=ws).");
    put(&b, "chorus_messages_published_binary_total %llu\n", (unsigned long long)metrics.published_binary);
    family(&b, "chorus_idempotency_keys", "gauge", "Publish keys remembered for deduplication, all channels.");
    put(&b, "chorus_idempotency_keys %lld\n", (long long)metrics.idempotency_keys);
    family(&b, "chorus_idempotency_keys_dropped_total", "counter",
           "Publish keys forgotten before their channel's epoch ended, by reason.");
    static const char *const drop_reasons[3] = {"window", "channel_limit", "node_limit"};
    for (int i = 0; i < 3; i++)
        put(&b, "chorus_idempotency_keys_dropped_total{reason=\"%s\"} %llu\n", drop_reasons[i],
            (unsigned long long)metrics.idempotency_dropped[i]);
    family(&b, "chorus_frames_live", "gauge", "Encoded frames currently held in queues and history.");
    put(&b, "chorus_frames_live %ld\n", frame_live);
    family(&b, "chorus_http_requests_total", "counter", "HTTP API requests, by path and status.");
    for (int i = 0; i < HTTP_ROWS && http_rows[i].n; i++)
        put(&b, "chorus_http_requests_total{path=\"%s\",status=\"%d\"} %llu\n", http_rows[i].path,
            http_rows[i].status, (unsigned long long)http_rows[i].n);
    histogram_render(&b, "chorus_delivery_latency_seconds",
                     "From a message's arrival on this node (sequenced here, or received from its owner) "
                     "to its frame being handed to a subscriber's socket.",
                     &metrics.delivery_latency);
    histogram_render(&b, "chorus_queue_wait_seconds",
                     "Time a message frame waited in a subscriber's outbound queue before being handed to its socket.",
                     &metrics.queue_wait);
    render_ns(&b);
    for (int i = 0; i < n_extra; i++)
        extra_render[i](&b);
    procstat_render(&b);

    *out = b.p;
    return b.len;
}
