/* httpc.h - an HTTP client on the lws event loop: libcurl's multi interface
 * fed by the loop's own wake-ups, so a backend that is slow or down never
 * stalls the node. Used by the proxy hooks (session/proxy.c) and the
 * webhooks (base/webhook.c).
 *
 * curl's sockets sit in one epoll set of this module's; the epoll fd itself
 * is adopted into lws as a raw file (as the cluster adopts ZeroMQ's and
 * Raft's fds), and curl's single timer is a timerfd in that set. */
#ifndef CHORUS_HTTPC_H
#define CHORUS_HTTPC_H

#include <libwebsockets.h>
#include <stddef.h>

struct httpc_req;

/* The answer: status is the HTTP status, or 0 when no answer came (err then
 * says why: refused, timed out, ...). body is NUL-terminated and only valid
 * during the call. Called once, from the loop, never from inside
 * httpc_post(); the request is freed when it returns. */
typedef void httpc_done_fn(void *ud, long status, const char *body, size_t len, const char *err);

/* Starts the client on the loop; max_conns bounds the connections open to
 * backends at once (more requests queue inside curl), max_body the answer
 * kept (a longer one fails as "answer too long"). -1 when curl or epoll
 * cannot start. */
int httpc_start(struct lws_vhost *vh, long max_conns, size_t max_body);
/* Cancels every request without calling its done; then stops the client. */
void httpc_stop(void);

/* POSTs body (copied) as application/json with the extra header lines
 * (NULL-terminated array, may be NULL), giving up after timeout_ms. NULL
 * when it could not even be queued (done is then never called). */
struct httpc_req *httpc_post(const char *url, const char *body, size_t len,
                             const char *const *headers, long timeout_ms, httpc_done_fn *done,
                             void *ud);
/* Forgets r: done will not be called. */
void httpc_cancel(struct httpc_req *r);

/* The lws protocol callback of the adopted epoll fd ("chorus-httpc"). */
int httpc_lws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len);

#endif
