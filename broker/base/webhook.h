/* webhook.h - events for the backend (--webhook, PROTOCOL.md 11.2):
 * queued in a bounded queue, POSTed in batches as {"events":[...]}, signed
 * with HMAC-SHA256 (X-Chorus-Signature), retried with backoff.
 *
 * Who emits which event, so that each happens once per cluster, is the
 * callers' business (engine/occupancy.c, session/presence.c). */
#ifndef CHORUS_WEBHOOK_H
#define CHORUS_WEBHOOK_H

#include <jansson.h>
#include <stdbool.h>

struct config;
struct lws_context;

/* Starts sending when cfg->webhook is set (after httpc_start). */
int webhook_start(struct lws_context *ctx, const struct config *cfg);
/* Forgets what is queued (after the loop is gone). */
void webhook_stop(void);
/* Is there a receiver? Callers skip building events when not. */
bool webhook_enabled(void);
/* Queues {"event":name,"ch":ch,"ts":...,"id":...} with the fields of
 * `fields` (taken; may be NULL) added; counted and dropped when the queue
 * is full. */
void webhook_emit(const char *name, const char *ch, json_t *fields);

#endif
