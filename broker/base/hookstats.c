/* hookstats.c - /metrics families of the backend hooks (hookstats.h). */
#include "hookstats.h"
#include "metrics.h"

struct hookstats hookstats;

void hookstats_render(struct sbuf *b)
{
    static const char *const kinds[HOOK__COUNT] = {"connect", "subscribe", "publish"};
    static const char *const outcomes[HOOK_OUTCOME__COUNT] = {
        "allowed", "refused", "disconnected", "failed", "timeout", "busy"};
    family(b, "chorus_proxy_hooks_total", "counter",
           "Proxy hook calls by kind and outcome; failed, timeout and busy are refusals (fail closed).");
    for (int k = 0; k < HOOK__COUNT; k++)
        for (int o = 0; o < HOOK_OUTCOME__COUNT; o++)
            put(b, "chorus_proxy_hooks_total{kind=\"%s\",outcome=\"%s\"} %llu\n", kinds[k],
                outcomes[o], (unsigned long long)hookstats.proxy[k][o]);
    family(b, "chorus_proxy_hooks_pending", "gauge", "Proxy hooks waiting for the backend.");
    put(b, "chorus_proxy_hooks_pending %lld\n", (long long)hookstats.proxy_pending);
    family(b, "chorus_webhook_events_total", "counter", "Webhook events by fate.");
    put(b, "chorus_webhook_events_total{fate=\"queued\"} %llu\n",
        (unsigned long long)hookstats.webhook_events);
    put(b, "chorus_webhook_events_total{fate=\"delivered\"} %llu\n",
        (unsigned long long)hookstats.webhook_delivered);
    put(b, "chorus_webhook_events_total{fate=\"dropped_queue_full\"} %llu\n",
        (unsigned long long)hookstats.webhook_dropped_full);
    put(b, "chorus_webhook_events_total{fate=\"dropped_after_retries\"} %llu\n",
        (unsigned long long)hookstats.webhook_dropped_retries);
    family(b, "chorus_webhook_failed_posts_total", "counter",
           "Webhook POSTs that failed (no answer, timeout or non-2xx) and were retried or given up.");
    put(b, "chorus_webhook_failed_posts_total %llu\n",
        (unsigned long long)hookstats.webhook_attempts_failed);
    family(b, "chorus_webhook_queued", "gauge", "Webhook events waiting to be sent.");
    put(b, "chorus_webhook_queued %lld\n", (long long)hookstats.webhook_queued);
}
