/* hookstats.h - counters of the backend hooks (session/proxy.c) and the
 * webhooks (base/webhook.c), rendered into /metrics by metrics.c. */
#ifndef CHORUS_HOOKSTATS_H
#define CHORUS_HOOKSTATS_H

#include <stdint.h>

struct sbuf;

enum hook_kind { HOOK_CONNECT, HOOK_SUBSCRIBE, HOOK_PUBLISH, HOOK__COUNT };
/* How a proxy hook ended: the backend allowed, answered error, answered
 * disconnect; failed (down, bad status or body), timed out; or it was not
 * even asked because too many hooks were pending (busy). */
enum hook_outcome { HOOK_ALLOWED, HOOK_REFUSED, HOOK_DISCONNECTED, HOOK_FAILED, HOOK_TIMEOUT,
                    HOOK_BUSY, HOOK_OUTCOME__COUNT };

struct hookstats {
    uint64_t proxy[HOOK__COUNT][HOOK_OUTCOME__COUNT];
    int64_t proxy_pending;
    uint64_t webhook_events;      /* events queued */
    uint64_t webhook_delivered;   /* events the receiver answered 2xx for */
    uint64_t webhook_attempts_failed; /* POSTs that failed (then retried or dropped) */
    uint64_t webhook_dropped_full;    /* events refused: the queue was full */
    uint64_t webhook_dropped_retries; /* events given up after the last retry */
    int64_t webhook_queued;
};

extern struct hookstats hookstats;

void hookstats_render(struct sbuf *b);

#endif
