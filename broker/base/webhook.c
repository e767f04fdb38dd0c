/* webhook.c - batching, signing and retrying webhook events (webhook.h).
 *
 * One POST is in flight at a time, so the receiver sees events in the
 * order this node emitted them; the events that came meanwhile make the
 * next batch. A failed POST is sent again, byte for byte (same signature,
 * same event ids), after 0.5 s, 1 s, 2 s ... up to 30 s, webhook_retries
 * times; then its events are dropped and counted. */
#include "webhook.h"
#include "config.h"
#include "hookstats.h"
#include "httpc.h"
#include "log.h"
#include "runtime.h"

#include <libwebsockets.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_FIRST_MS 500
#define BACKOFF_MAX_MS 30000
/* Events that come together go in one POST: wait this long after the
 * first before sending. */
#define BATCH_DELAY_MS 20

static struct {
    const struct config *cfg;
    struct lws_context *ctx;
    json_t **q;                   /* ring of webhook_max_queue events */
    int head, count;
    int inflight;                 /* the first `inflight` events are in the POST */
    char *body;                   /* that POST's body, kept for retries */
    char sig[128];                /* and its header (27 + 64 hex) */
    struct httpc_req *req;
    int attempt;
    uint64_t next_id;
    lws_sorted_usec_list_t timer;
    bool timer_armed;
    bool started;
} wh;

bool webhook_enabled(void) { return wh.started; }

static void arm(int64_t ms);

static void drop_batch(void)
{
    for (int i = 0; i < wh.inflight; i++) {
        json_decref(wh.q[wh.head]);
        wh.head = (wh.head + 1) % wh.cfg->webhook_max_queue;
    }
    wh.count -= wh.inflight;
    hookstats.webhook_queued = wh.count;
    wh.inflight = 0;
    free(wh.body);
    wh.body = NULL;
    wh.attempt = 0;
}

static void on_done(void *ud, long status, const char *body, size_t len, const char *err)
{
    (void)ud;
    (void)body;
    (void)len;
    wh.req = NULL;
    if (status >= 200 && status < 300) {
        hookstats.webhook_delivered += (uint64_t)wh.inflight;
        drop_batch();
        if (wh.count)
            arm(0);
        return;
    }
    hookstats.webhook_attempts_failed++;
    if (wh.attempt >= wh.cfg->webhook_retries) {
        log_warn("event=webhook_dropped events=%d status=%ld error=\"%s\" msg=\"gave up after %d attempts\"",
                 wh.inflight, status, err ? err : "non-2xx answer", wh.attempt + 1);
        hookstats.webhook_dropped_retries += (uint64_t)wh.inflight;
        drop_batch();
        if (wh.count)
            arm(0);
        return;
    }
    int64_t delay = BACKOFF_FIRST_MS;
    for (int i = 0; i < wh.attempt && delay < BACKOFF_MAX_MS; i++)
        delay *= 2;
    wh.attempt++;
    log_info("event=webhook_retry attempt=%d in_ms=%lld status=%ld error=\"%s\"", wh.attempt,
             (long long)(delay < BACKOFF_MAX_MS ? delay : BACKOFF_MAX_MS), status,
             err ? err : "non-2xx answer");
    arm(delay < BACKOFF_MAX_MS ? delay : BACKOFF_MAX_MS);
}

/* {"node":...,"events":[the first batch of the queue]}, and its signature. */
static bool build_batch(void)
{
    json_t *events = json_array();
    int n = wh.count < wh.cfg->webhook_batch ? wh.count : wh.cfg->webhook_batch;
    for (int i = 0; events && i < n; i++)
        json_array_append(events, wh.q[(wh.head + i) % wh.cfg->webhook_max_queue]);
    json_t *root = events ? json_pack("{s:s, s:o}", "node", wh.cfg->node_id, "events", events) : NULL;
    wh.body = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!wh.body)
        return false;
    wh.inflight = n;
    wh.sig[0] = '\0';
    const char *secret = wh.cfg->webhook_secret;
    if (secret && *secret) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int ml = 0;
        if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)wh.body,
                  strlen(wh.body), mac, &ml))
            return false;
        int o = snprintf(wh.sig, sizeof wh.sig, "X-Chorus-Signature: sha256=");
        for (unsigned int i = 0; i < ml && o + 3 <= (int)sizeof wh.sig; i++)
            o += snprintf(wh.sig + o, sizeof wh.sig - (size_t)o, "%02x", mac[i]);
    }
    return true;
}

static void send_now(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    wh.timer_armed = false;
    if (wh.req || !wh.count)
        return;
    if (!wh.body && !build_batch()) {
        arm(BACKOFF_FIRST_MS); /* out of memory: try again later */
        return;
    }
    const char *hdr[] = {wh.sig[0] ? wh.sig : NULL, NULL};
    wh.req = httpc_post(wh.cfg->webhook, wh.body, strlen(wh.body), hdr,
                        wh.cfg->webhook_timeout_ms, on_done, NULL);
    if (!wh.req)
        on_done(NULL, 0, "", 0, "could not queue the request");
}

static void arm(int64_t ms)
{
    if (wh.timer_armed || wh.req)
        return;
    wh.timer_armed = true;
    lws_sul_schedule(wh.ctx, 0, &wh.timer, send_now, ms ? (lws_usec_t)ms * LWS_US_PER_MS : 1);
}

void webhook_emit(const char *name, const char *ch, json_t *fields)
{
    if (!wh.started) {
        json_decref(fields);
        return;
    }
    if (wh.count >= wh.cfg->webhook_max_queue) {
        hookstats.webhook_dropped_full++;
        json_decref(fields);
        return;
    }
    char id[96];
    snprintf(id, sizeof id, "%s-%llu", wh.cfg->node_id, (unsigned long long)++wh.next_id);
    json_t *e = json_pack("{s:s, s:s, s:s, s:I}", "id", id, "event", name, "ch", ch, "ts",
                          (json_int_t)runtime_now_ms());
    if (!e) {
        json_decref(fields);
        return;
    }
    if (fields)
        json_object_update(e, fields);
    json_decref(fields);
    wh.q[(wh.head + wh.count) % wh.cfg->webhook_max_queue] = e;
    wh.count++;
    hookstats.webhook_events++;
    hookstats.webhook_queued = wh.count;
    arm(BATCH_DELAY_MS);
}

int webhook_start(struct lws_context *ctx, const struct config *cfg)
{
    if (!cfg->webhook)
        return 0;
    wh.cfg = cfg;
    wh.ctx = ctx;
    wh.q = calloc((size_t)cfg->webhook_max_queue, sizeof *wh.q);
    if (!wh.q)
        return -1;
    wh.started = true;
    return 0;
}

void webhook_stop(void)
{
    if (!wh.started)
        return;
    /* httpc_stop has dropped the request in flight, if any. */
    wh.req = NULL;
    wh.inflight = 0;
    free(wh.body);
    for (int i = 0; i < wh.count; i++)
        json_decref(wh.q[(wh.head + i) % wh.cfg->webhook_max_queue]);
    free(wh.q);
    memset(&wh, 0, sizeof wh);
}
