/* metrics.c - Prometheus text exposition (format 0.0.4) of struct metrics. */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"

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
                                        "/metrics"};
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

static void (*extra_render)(struct sbuf *b);

void metrics_set_extra(void (*render)(struct sbuf *b)) { extra_render = render; }

void put(struct sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap * 2 + (size_t)n;
        char *np = realloc(b->p, ncap);
        if (!np)
            return;
        b->p = np;
        b->cap = ncap;
    }
}

void family(struct sbuf *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static long rss_bytes(void)
{
    long pages_total, pages_rss;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    int ok = fscanf(f, "%ld %ld", &pages_total, &pages_rss) == 2;
    fclose(f);
    return ok ? pages_rss * sysconf(_SC_PAGESIZE) : 0;
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
    if (extra_render)
        extra_render(&b);
    family(&b, "process_resident_memory_bytes", "gauge", "Resident memory of the process.");
    put(&b, "process_resident_memory_bytes %ld\n", rss_bytes());

    *out = b.p;
    return b.len;
}
