/* url.h - node URL parsing shared by the WebSocket client and the HTTP helper. */
#ifndef CHORUS_CLIENT_URL_H
#define CHORUS_CLIENT_URL_H

#include <stdbool.h>

struct chorus__url {
    bool tls;                     /* wss:// or https:// */
    bool http;                    /* http(s):// rather than ws(s):// */
    char host[256];               /* without IPv6 brackets */
    int port;                     /* explicit, or 80 / 443 */
    char path[1024];              /* path and query; "/ws" when the URL has no path */
};

/* 0 on success, -1 for anything but scheme://host[:port][/path][?query][#frag]. */
int chorus__url_parse(const char *url, struct chorus__url *u);

/* Percent-encodes everything but RFC 3986 unreserved characters; the caller
 * frees the result. NULL on allocation failure. */
char *chorus__url_encode(const char *s);

#endif
