/* endpoint.c - parsing tcp://HOST:PORT (endpoint.h). */
#include "endpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool endpoint_split(const char *ep, char *host, size_t hcap, char *port, size_t pcap)
{
    if (strncmp(ep, "tcp://", 6) != 0)
        return false;
    const char *h = ep + 6, *colon = strrchr(h, ':');
    if (!colon || colon == h || (size_t)(colon - h) >= hcap || strlen(colon + 1) >= pcap ||
        !*(colon + 1))
        return false;
    /* An IPv6 literal is written [ADDR]:PORT; the host is ADDR. */
    size_t hl = (size_t)(colon - h);
    if (*h == '[') {
        if (hl < 3 || h[hl - 1] != ']')
            return false;
        h++;
        hl -= 2;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    strcpy(port, colon + 1);
    return true;
}

bool endpoint_plus(const char *ep, int delta, char *out, size_t cap)
{
    char host[256], port[8];
    if (!endpoint_split(ep, host, sizeof host, port, sizeof port))
        return false;
    snprintf(out, cap, strchr(host, ':') ? "tcp://[%s]:%d" : "tcp://%s:%d", host, atoi(port) + delta);
    return true;
}
