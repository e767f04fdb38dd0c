/* http_reply.h - answers that end an HTTP connection: a refused upgrade, a
 * request whose framing cannot be trusted. Written whole with an HTTP/1.1
 * status line and `Connection: close`, whatever state lws' parser is in. */
#ifndef CHORUS_HTTP_REPLY_H
#define CHORUS_HTTP_REPLY_H

#include <libwebsockets.h>

/* Writes the status line, headers and body in one write. Returns 1: the
 * caller returns non-zero from its lws callback so the connection closes
 * (lws flushes what the socket did not take first). */
int http_reply_close(struct lws *wsi, unsigned int status, const char *content_type,
                     const char *body);

/* Checks how the request says its body is delimited (RFC 9112 6.3): a
 * Transfer-Encoding (lws reads no chunked bodies), Transfer-Encoding with
 * Content-Length, more than one Content-Length, or one that is not a plain
 * decimal number would leave this server and a proxy in front of it
 * disagreeing on where the next request starts. Returns 0 when the request
 * is sound, else the status to refuse it with and the reason in *why. */
unsigned int http_framing_check(struct lws *wsi, const char **why);

/* http_framing_check, and when it fails the refusal (returns 1). */
int http_framing_refuse(struct lws *wsi);

/* Every plain HTTP request, before lws routes it to an endpoint or a file:
 * refuses (returns non-zero, after answering 400 and closing) a body sent
 * to a path outside /api/, where no endpoint reads one. */
int http_body_refuse(struct lws *wsi, const char *uri);

#endif
