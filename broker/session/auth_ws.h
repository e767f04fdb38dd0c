/* auth_ws.h - authentication and permissions of WebSocket connections.
 *
 * A connection is anonymous, authenticated (a valid token came with the
 * upgrade or in an `auth` request), or waiting for `auth` (no token and
 * --allow-anonymous false: only auth and ping are served, for auth_timeout
 * seconds). An authenticated connection is closed with 4001 when its token
 * expires unless a fresh token for the same user came first. Every op that
 * touches a channel asks here whether the namespace's rules allow it
 * (PROTOCOL.md section 8). */
#ifndef CHORUS_AUTH_WS_H
#define CHORUS_AUTH_WS_H

#include <libwebsockets.h>
#include <stdbool.h>

#include "auth.h"
#include "close_codes.h"
#include "codec.h"

struct conn;

struct auth_state;

/* Embedded in each connection; zeroed by lws with the rest of it. What a
 * token or the auth deadline needs (claims, attribution, a timer: 120 bytes)
 * is allocated only for connections that have one (auth_ws.c), so an
 * anonymous connection carries a pointer (docs/benchmarks.md, idle memory). */
struct conn_auth {
    struct auth_state *st;        /* NULL until authenticated or waiting for auth */
    bool authenticated;
    bool need_auth;               /* tokenless with anonymous access off */
};

/* Loads the keys named by the config. Returns -1 with a reason in err. */
int auth_ws_init(const struct config *cfg, char *err, size_t errlen);
void auth_ws_free(void);
/* SIGHUP: loads the keys cfg names now (the PEM file is read again even
 * under the same name; *pem_changed says whether its text changed) and
 * uses them for every token verified from now on. Connections already
 * authenticated keep what their token granted. -1 (reason in err): the
 * running keys stay. */
int auth_ws_reload(const struct config *cfg, bool *pem_changed, char *err, size_t errlen);

/* LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: refuses (HTTP 431, returns 1) an upgrade
 * whose Sec-WebSocket-Protocol header lws 4.1.6 could not parse; 0 otherwise. */
int auth_ws_confirm_upgrade(struct lws *wsi);
/* FILTER_PROTOCOL_CONNECTION, after the path, origin and capacity checks:
 * reads a token from the `token` query parameter or a `token.<jwt>`
 * sub-protocol entry. Returns 0 to accept or the HTTP status to refuse with
 * (401 for a token that does not verify). */
int auth_ws_filter(struct conn *c, struct lws *wsi);
/* ESTABLISHED: arms the expiry or auth-deadline timer; adds "user" to hello. */
void auth_ws_open(struct conn *c, json_t *hello);
/* The connect hook named the user (proxy.c): c is authenticated as user,
 * with info (may be NULL), without expiry, in place of any token's. */
void auth_ws_set_user(struct conn *c, const char *user, json_t *info);
/* CLOSED (established or not): forgets the claims, disarms the timer. */
void auth_ws_closed(struct conn *c);

/* The connection's claims, NULL while it is anonymous. */
const struct auth_claims *auth_ws_who(const struct conn *c);
/* What the node attests about the publisher in its msgs on channel ch
 * (PROTOCOL.md 2.7: "user", and "info" in namespaces with publish_info),
 * encoded once per connection and token; NULL while it is anonymous. */
const char *auth_ws_attr(const struct conn *c, const char *ch, size_t len);

/* Before any op (req NULL: a binary message): false when the request must
 * not be served (the connection is waiting for auth and was asked to close
 * with 4001). */
bool auth_ws_gate(struct conn *c, const struct codec_request *req);
/* {"op":"auth","id"?,"token"} -> ack {user} | close 4001 */
void auth_ws_op(struct conn *c, const struct codec_request *req);

/* sub, history, presence: may c read channel req->ch? On refusal the client
 * got err forbidden. A "token" field of the request is the subscription token
 * for namespaces with subscribe "token" (history and presence also accept a
 * current subscription instead). */
bool auth_ws_may_read(struct conn *c, const struct codec_request *req);
/* pub (JSON or binary): may c publish on ch now? Checks the namespace's
 * publish rule and then the publish rate limits; on refusal the client got
 * err forbidden or rate_limited. */
bool auth_ws_may_publish(struct conn *c, const char *ch, size_t len, bool has_id, long long id);

#endif
