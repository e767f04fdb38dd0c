/* http_api.h - the HTTP endpoints on the WebSocket port (PROTOCOL.md
 * section 6): POST /api/publish, GET /api/history, GET /api/presence, the
 * server API (GET /api/info, /api/channels; POST /api/broadcast,
 * /api/disconnect, /api/unsubscribe, /api/subscribe), GET /healthz,
 * GET /metrics. The top layer: it uses the session layer (presence, admin)
 * and the engine (publish, history_fetch); nothing calls it but
 * lws, through the protocol server.c mounts. */
#ifndef CHORUS_HTTP_API_H
#define CHORUS_HTTP_API_H

#include <libwebsockets.h>
#include <stddef.h>

/* The "chorus-http" protocol callback and its per-request data size. */
int http_api_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len);
size_t http_api_session_size(void);

#endif
