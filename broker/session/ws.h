/* ws.h - the WebSocket protocol callback ("chorus.v1") that server.c
 * registers with lws, and the size of its per-connection data (a struct
 * conn, zeroed by lws at the upgrade and freed after LWS_CALLBACK_CLOSED). */
#ifndef CHORUS_WS_H
#define CHORUS_WS_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>

int ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                size_t len);
size_t ws_session_size(void);
/* The reverse proxies whose forwarding headers name the client
 * (--trusted-proxy; at start and on SIGHUP). -1 with err for a bad range:
 * then the previous ranges stay. */
int ws_set_trusted_proxies(char *const *cidrs, int n, char *err, size_t cap);

struct conn;
/* The checks every client stream passes before it opens, WebSocket or SSE
 * (sse.h): shutting down or starting (503), origin (403; a request without
 * Origin passes when origin_optional: a same-origin GET carries none),
 * max_connections (503), per-IP limits (429), a token that does not verify
 * (401). Answers the refusal itself and returns non-zero; 0 admits c. */
int ws_admit(struct conn *c, struct lws *wsi, bool origin_optional);
/* A client stream opened (hello queued, keepalive, auth timers, the list of
 * connections) and closed (everything undone); SSE streams share them. */
void ws_conn_open(struct conn *c, struct lws *wsi);
void ws_conn_closed(struct conn *c);

#endif
