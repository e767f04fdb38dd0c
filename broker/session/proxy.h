/* proxy.h - synchronous backend hooks (PROTOCOL.md 11.1): before a
 * connection is greeted, a sub is served or a pub is sequenced, the node
 * POSTs a description to the backend named by --proxy-connect,
 * --proxy-subscribe or --proxy-publish (or the namespace's own) and goes on
 * only when it answers {"result":{...}}.
 *
 * While a hook waits, the connection reads nothing more (lws rx flow
 * control): its later ops stay behind it in order, and a connection has at
 * most one hook pending. Failure, a timeout or too many pending hooks on
 * the node are refusals (fail closed). */
#ifndef CHORUS_PROXY_H
#define CHORUS_PROXY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "codec.h"

struct conn;

/* What the op does once the backend allowed it. */
typedef void proxy_sub_fn(struct conn *c, const struct codec_request *req);
typedef void proxy_pub_fn(struct conn *c, bool has_id, long long id, const char *ch, size_t len,
                          const char *data, size_t data_len, bool binary, const char *key);
/* Connect: greets the client; `extra` (owned by the caller, may be NULL)
 * holds fields for hello. */
typedef void proxy_hello_fn(struct conn *c, json_t *extra);
/* Connect: subscribes the client to a channel the backend named. */
typedef void proxy_server_sub_fn(struct conn *c, const char *ch, size_t len);

/* Each returns false when no hook applies (the caller goes on at once), and
 * true when the hook took the op: it waits for the backend, or the client
 * was already answered (too many hooks pending). */
bool proxy_subscribe(struct conn *c, const struct codec_request *req, proxy_sub_fn *go);
bool proxy_publish(struct conn *c, bool has_id, long long id, const char *ch, size_t len,
                   const char *data, size_t data_len, bool binary, const char *key,
                   proxy_pub_fn *go);
bool proxy_connect(struct conn *c, proxy_hello_fn *hello, proxy_server_sub_fn *sub);
/* CLOSED: forgets the connection's hook (its answer, if it comes, is lost). */
void proxy_conn_closed(struct conn *c);

#endif
