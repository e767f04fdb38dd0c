/* ws.h - the WebSocket protocol callback ("chorus.v1") that server.c
 * registers with lws, and the size of its per-connection data (a struct
 * conn, zeroed by lws at the upgrade and freed after LWS_CALLBACK_CLOSED). */
#ifndef CHORUS_WS_H
#define CHORUS_WS_H

#include <libwebsockets.h>
#include <stddef.h>

int ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                size_t len);
size_t ws_session_size(void);
/* The reverse proxies whose forwarding headers name the client
 * (--trusted-proxy; at start and on SIGHUP). -1 with err for a bad range:
 * then the previous ranges stay. */
int ws_set_trusted_proxies(char *const *cidrs, int n, char *err, size_t cap);

#endif
