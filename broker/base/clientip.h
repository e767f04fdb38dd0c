/* clientip.h - the client's address behind trusted reverse proxies.
 *
 * A connection's TCP peer is the client unless the peer is a trusted proxy
 * (--trusted-proxy CIDR, repeatable). Then the client is named by what the
 * proxy added: X-Forwarded-For, read from the right, skipping addresses
 * that are themselves trusted proxies (each proxy appends the address it
 * received the request from, so everything left of the first untrusted hop
 * was written by someone we do not trust); without X-Forwarded-For,
 * X-Real-IP; without either (or when they hold no address), the PROXY
 * protocol v1 line lws keeps; else the peer itself. Addresses come back in
 * canonical text form (inet_ntop), IPv4-mapped IPv6 as plain IPv4, so the
 * per-IP limits key on one spelling and logs never carry peer-chosen bytes.
 *
 * Pure functions over strings: no lws, no allocation. */
#ifndef CHORUS_CLIENTIP_H
#define CHORUS_CLIENTIP_H

#include <stdbool.h>
#include <stddef.h>

#define CLIENTIP_MAX_NETS 32
#define CLIENTIP_LEN 46           /* INET6_ADDRSTRLEN */

struct cidr {
    int family;                   /* AF_INET or AF_INET6 */
    unsigned char addr[16];       /* network bytes, host bits cleared */
    int bits;
};

struct trusted_nets {
    struct cidr net[CLIENTIP_MAX_NETS];
    int n;
};

/* "10.0.0.0/8", "fd00::/8", or a bare address (a /32 or /128). 0 or -1. */
int cidr_parse(const char *text, struct cidr *out);
/* Parses every entry; -1 names the first bad one in err. */
int trusted_nets_parse(struct trusted_nets *t, char *const *list, int n, char *err, size_t cap);
/* Is the address text (as inet_pton reads it) inside one of the nets? */
bool trusted_nets_match(const struct trusted_nets *t, const char *ip);

/* Writes the client's address into out (CLIENTIP_LEN bytes): see the top of
 * this file. xff, real_ip and proxy_v1 are raw header values (not
 * NUL-terminated; NULL or len 0 when absent); proxy_v1 is the text after
 * "PROXY " of a PROXY protocol v1 line ("TCP4 SRC DST SPORT DPORT").
 * Returns true when the address came from the proxy's headers. */
bool clientip_resolve(const struct trusted_nets *t, const char *peer, const char *xff,
                      size_t xff_len, const char *real_ip, size_t real_len,
                      const char *proxy_v1, size_t proxy_len, char *out);

#endif
