/* clientip.c - trusted proxy ranges and the client address they vouch for
 * (see clientip.h). Everything here reads bytes a client may have chosen:
 * each value is bounded by its length, never by a NUL, and only what
 * inet_pton accepts is ever copied out. */
#include "clientip.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An address as bytes: IPv4-mapped IPv6 (::ffff:a.b.c.d) becomes IPv4, so a
 * dual-stack listener and an IPv4 range agree. */
struct addr {
    int family;
    unsigned char b[16];
};

static bool addr_parse(const char *s, size_t len, struct addr *a)
{
    char buf[CLIENTIP_LEN + 2];
    /* Trim what a header list puts around an element. */
    while (len && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    /* "[v6]" and "[v6]:port" (RFC 7239 style, and some proxies' XFF). */
    if (len && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return false;
        len = (size_t)(close - s) - 1;
        s++;
    } else {
        /* "a.b.c.d:port": one colon only (two or more is IPv6). */
        const char *colon = memchr(s, ':', len);
        if (colon && !memchr(colon + 1, ':', len - (size_t)(colon - s) - 1) && memchr(s, '.', len))
            len = (size_t)(colon - s);
    }
    if (!len || len >= sizeof buf)
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, a->b) == 1) {
        a->family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, buf, a->b) != 1)
        return false;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (!memcmp(a->b, mapped, sizeof mapped)) {
        memmove(a->b, a->b + 12, 4);
        a->family = AF_INET;
    } else {
        a->family = AF_INET6;
    }
    return true;
}

static void addr_text(const struct addr *a, char *out)
{
    if (!inet_ntop(a->family, a->b, out, CLIENTIP_LEN))
        snprintf(out, CLIENTIP_LEN, "?");
}

/* Strict: an address as inet_pton reads it, then at most "/" and 1-3 digits;
 * no brackets, ports or spaces. An IPv4-mapped range (::ffff:0:0/96) would
 * never match, as addresses are compared in IPv4 form: write it as IPv4. */
int cidr_parse(const char *text, struct cidr *out)
{
    const char *slash = strchr(text, '/');
    size_t alen = slash ? (size_t)(slash - text) : strlen(text);
    char buf[CLIENTIP_LEN];
    unsigned char b[16];
    int family, max;

    if (!alen || alen >= sizeof buf)
        return -1;
    memcpy(buf, text, alen);
    buf[alen] = '\0';
    if (inet_pton(AF_INET, buf, b) == 1)
        family = AF_INET, max = 32;
    else if (inet_pton(AF_INET6, buf, b) == 1)
        family = AF_INET6, max = 128;
    else
        return -1;
    int bits = max;
    if (slash) {
        const char *d = slash + 1;
        size_t nd = strlen(d);
        if (nd < 1 || nd > 3 || strspn(d, "0123456789") != nd)
            return -1;
        bits = atoi(d);
        if (bits > max)
            return -1;
    }
    memset(out, 0, sizeof *out);
    out->family = family;
    out->bits = bits;
    /* Clear the host bits, so matching compares whole bytes then one mask. */
    for (int i = 0; i < max / 8; i++) {
        int keep = bits - i * 8;
        out->addr[i] = keep >= 8 ? b[i] : keep <= 0 ? 0 : (unsigned char)(b[i] & (0xff << (8 - keep)));
    }
    return 0;
}

int trusted_nets_parse(struct trusted_nets *t, char *const *list, int n, char *err, size_t cap)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < n; i++) {
        if (t->n == CLIENTIP_MAX_NETS || cidr_parse(list[i], &t->net[t->n]) < 0) {
            snprintf(err, cap, "trusted-proxy: '%s' is not an IPv4 or IPv6 address or CIDR "
                     "(e.g. 10.0.0.0/8, fd00::/8)", list[i]);
            return -1;
        }
        t->n++;
    }
    return 0;
}

static bool nets_match(const struct trusted_nets *t, const struct addr *a)
{
    for (int i = 0; i < t->n; i++) {
        const struct cidr *c = &t->net[i];
        if (c->family != a->family)
            continue;
        int full = c->bits / 8, rest = c->bits % 8;
        if (memcmp(c->addr, a->b, (size_t)full))
            continue;
        if (rest && (a->b[full] & (unsigned char)(0xff << (8 - rest))) != c->addr[full])
            continue;
        return true;
    }
    return false;
}

bool trusted_nets_match(const struct trusted_nets *t, const char *ip)
{
    struct addr a;
    return t->n && addr_parse(ip, strlen(ip), &a) && nets_match(t, &a);
}

/* X-Forwarded-For: the rightmost address that is not a trusted proxy. An
 * element that is not an address (garbage, "unknown", an obfuscated node)
 * ends the walk: what is left of it cannot be trusted either, so the last
 * trusted hop right of it is the best answer there is. */
static bool from_xff(const struct trusted_nets *t, const char *xff, size_t len, struct addr *out)
{
    bool have = false;
    size_t end = len;
    while (end > 0) {
        size_t start = end;
        while (start > 0 && xff[start - 1] != ',')
            start--;
        struct addr a;
        if (!addr_parse(xff + start, end - start, &a))
            return have;
        *out = a;
        have = true;
        if (!nets_match(t, &a))
            return true;
        end = start ? start - 1 : 0;
    }
    return have;      /* every hop trusted: the leftmost is the client */
}

/* "TCP4 SRC DST SPORT DPORT" or "TCP6 ..." (haproxy's proxy-protocol.txt
 * 2.1); "UNKNOWN" and anything else give nothing. */
static bool from_proxy_v1(const char *p, size_t len, struct addr *out)
{
    if (len < 5 || (memcmp(p, "TCP4 ", 5) && memcmp(p, "TCP6 ", 5)))
        return false;
    const char *src = p + 5, *sp = memchr(src, ' ', len - 5);
    if (!sp || !addr_parse(src, (size_t)(sp - src), out))
        return false;
    return (out->family == AF_INET) == (p[3] == '4');
}

bool clientip_resolve(const struct trusted_nets *t, const char *peer, const char *xff,
                      size_t xff_len, const char *real_ip, size_t real_len,
                      const char *proxy_v1, size_t proxy_len, char *out)
{
    struct addr a;
    if (!addr_parse(peer, strlen(peer), &a)) {
        snprintf(out, CLIENTIP_LEN, "%s", "?");
        return false;
    }
    if (nets_match(t, &a)) {
        struct addr c;
        if ((xff && xff_len && from_xff(t, xff, xff_len, &c)) ||
            (real_ip && real_len && addr_parse(real_ip, real_len, &c)) ||
            (proxy_v1 && proxy_len && from_proxy_v1(proxy_v1, proxy_len, &c))) {
            addr_text(&c, out);
            return true;
        }
    }
    addr_text(&a, out);
    return false;
}
