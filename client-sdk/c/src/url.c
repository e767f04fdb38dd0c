/* url.c - splits the node URLs the SDK accepts (ws, wss, http, https) into
 * host, port and path, and percent-encodes query values. */
#include "url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int chorus__url_parse(const char *url, struct chorus__url *u)
{
    const char *p, *auth, *end;
    size_t n;

    memset(u, 0, sizeof *u);
    if (!url)
        return -1;
    p = strstr(url, "://");
    if (!p)
        return -1;
    n = (size_t)(p - url);
    if (n == 2 && !strncasecmp(url, "ws", 2)) {
        u->tls = false;
    } else if (n == 3 && !strncasecmp(url, "wss", 3)) {
        u->tls = true;
    } else if (n == 4 && !strncasecmp(url, "http", 4)) {
        u->tls = false;
        u->http = true;
    } else if (n == 5 && !strncasecmp(url, "https", 5)) {
        u->tls = true;
        u->http = true;
    } else {
        return -1;
    }
    u->port = u->tls ? 443 : 80;

    auth = p + 3;
    end = auth + strcspn(auth, "/?#");
    if (memchr(auth, '@', (size_t)(end - auth)))
        return -1; /* user info is not supported */

    const char *host = auth, *host_end, *colon = NULL;
    if (*host == '[') {
        const char *rb = memchr(host, ']', (size_t)(end - host));
        if (!rb)
            return -1;
        host++;
        host_end = rb;
        if (rb + 1 < end) {
            if (rb[1] != ':')
                return -1;
            colon = rb + 1;
        }
    } else {
        colon = memchr(host, ':', (size_t)(end - host));
        host_end = colon ? colon : end;
    }
    n = (size_t)(host_end - host);
    if (!n || n >= sizeof u->host)
        return -1;
    memcpy(u->host, host, n);
    u->host[n] = '\0';

    if (colon) {
        char *e;
        long port = strtol(colon + 1, &e, 10);
        if (e != end || colon + 1 == end || port < 1 || port > 65535)
            return -1;
        u->port = (int)port;
    }

    /* Path and query, without any fragment. */
    n = strcspn(end, "#");
    if (n >= sizeof u->path)
        return -1;
    if (!n || *end == '?') {
        strcpy(u->path, "/ws");
        if (n + 3 >= sizeof u->path)
            return -1;
        memcpy(u->path + 3, end, n);
        u->path[n + 3] = '\0';
    } else {
        memcpy(u->path, end, n);
        u->path[n] = '\0';
    }
    return 0;
}

char *chorus__url_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1), *o = out;
    if (!out)
        return NULL;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    return out;
}
