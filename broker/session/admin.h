/* admin.h - the server API's operations (PROTOCOL.md 6, "Server API"): what
 * one node does to its own connections and channels, and the gathering of
 * every node's answer. The node a backend calls runs the operation itself
 * and sends it to every peer (ENV_API_REQ); each peer runs it and answers
 * (ENV_API_REP); replies are merged once all came or cluster_timeout_ms
 * passed, and the answer names the nodes that did not reply ("missing").
 * Operations are rare and O(connections) or O(channels) on each node. */
#ifndef CHORUS_ADMIN_H
#define CHORUS_ADMIN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct admin_call;

/* Called exactly once per admin_run that returned 0 (possibly before it
 * returns), unless cancelled first: with the merged answer, which the
 * callee owns. */
typedef void admin_done_cb(json_t *answer, void *ud);

/* Checks req ({"op":"info"|"channels"|"disconnect"|"unsubscribe"|
 * "subscribe", ...}, borrowed); on error returns -1 with a message in err.
 * Otherwise runs it here and on every peer and returns 0; *out is the
 * call while it waits for peers (NULL once done ran). */
int admin_run(const json_t *req, admin_done_cb *done, void *ud, struct admin_call **out,
              char *err, size_t errlen);
/* Forgets a call still waiting; its done will not be called. */
void admin_cancel(struct admin_call *a);
/* Registers the ENV_API_REQ handler (after cluster_start); notes the start
 * time for "uptime_s". */
void admin_start(void);
/* This node's view of its peers, [{"node","state","last_seen_ms_ago"}]: the
 * "peers" of /healthz and of /api/info. */
json_t *admin_peers_json(void);

#endif
