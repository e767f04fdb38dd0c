/* ops.h - the client protocol's operations on a WebSocket connection
 * (PROTOCOL.md section 2): decoding a request and answering it. */
#ifndef CHORUS_OPS_H
#define CHORUS_OPS_H

#include <stdbool.h>
#include <stddef.h>

struct conn;

/* Handles one complete client message. */
void ops_handle(struct conn *c, const char *buf, size_t len);
/* Publishes for c and acks it (or answers err) once delivered; data is JSON
 * text, or the bytes of a binary message. */
void ops_publish(struct conn *c, bool has_id, long long id, const char *ch, size_t len,
                 const char *data, size_t data_len, bool binary, const char *key);
/* Server API (PROTOCOL.md 6) and connect hook (11.1): subscribes c to a
 * channel without the namespace's rules (the backend is trusted) and, when
 * announce, sends it "subscribed" once it is current; no ack either way. Or
 * unsubscribes it with "unsubscribed" and the reason. 1 when done (or
 * started), 0 when there was nothing to do, -1 when it could not be done
 * (max_channels_per_conn, memory). */
int ops_server_subscribe(struct conn *c, const char *ch, size_t len, bool announce);
int ops_server_unsubscribe(struct conn *c, const char *ch, size_t len, const char *reason);
/* ops_server_subscribe without the announcement, in proxy_server_sub_fn's
 * shape: the channels a connect hook names are listed in hello instead. */
void ops_hook_subscribe(struct conn *c, const char *ch, size_t len);
struct codec_request;
/* A `sub` request (2.1) made for c by the server itself (an SSE stream's
 * channels, sse.h): acked, or answered err, exactly as if c had sent it. */
void ops_subscribe(struct conn *c, const struct codec_request *req);
/* Forgets the connection's requests in flight: publishes (they may still be
 * delivered), subscribes waiting for a mirror, history from an owner. */
void ops_conn_closed(struct conn *c);

#endif
