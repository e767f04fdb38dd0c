/* pipelined.h - refusing a request with a body that was pipelined behind
 * another in the same read.
 *
 * lws 4.1.6 reads the body of a request it parsed from input it had already
 * read (roles/http/server/server.c, lws_http_action: the buflist loop after
 * "Prepare to read body") out of the buffer that parsing the request is
 * still consuming: the buffer is used up under the outer reader, and closing
 * the connection then frees a stale pointer (ASan with freed memory filled
 * shows it; under glibc one such request could corrupt the heap). Such a
 * request is recognised before lws goes there: nothing was read from the
 * socket since the previous request on the connection was read whole. */
#ifndef CHORUS_PIPELINED_H
#define CHORUS_PIPELINED_H

#include <libwebsockets.h>
#include <stdbool.h>

/* At the start of every HTTP request (FILTER_HTTP_CONNECTION): true when it
 * has a body and came from input read with an earlier request. */
bool pipelined_body(struct lws *wsi);
/* Answers such a request 400 and says to close (the callback's return). */
int pipelined_refuse(struct lws *wsi);
/* The request's body has been read (before its transaction completes). */
void pipelined_mark(struct lws *wsi);

#endif
