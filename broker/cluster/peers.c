/* peers.c - DNS peer discovery for the SUB socket (peers.h). */
#include "peers.h"
#include "endpoint.h"
#include "fabric.h"
#include "log.h"
#include "membership.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define EP_MAX 80 /* "tcp://[" IPv6 "]:" port */

typedef char endpoint_t[EP_MAX];

/* A --peer given by name: the endpoints it currently resolves to. */
struct peer_spec {
    char host[256];
    char port[8];
    endpoint_t *endpoints;        /* peer_max_addresses of them */
    int n;
    int truncated_from;           /* resolved count last warned about; 0: none */
};

static struct {
    const struct config *cfg;
    struct peer_spec peers[CONFIG_MAX_PEERS];
    int npeers;
    int64_t last_resolve_ms;
    bool fast;                    /* re-resolving at peer_resolve_fast_ms */
} pr;

/* The name's addresses as endpoints, IPv4 first. A name with both kinds
 * is used by its IPv4 addresses only: a dual-stack node would otherwise be
 * linked twice and receive every message twice. Returns how many the name
 * resolved to (distinct, of the family used); at most cap are written. */
static int resolve_one(const struct peer_spec *p, endpoint_t *out, int cap)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(p->host, p->port, &hints, &res) != 0)
        return -1;
    bool has4 = false;
    for (struct addrinfo *a = res; a; a = a->ai_next)
        has4 |= a->ai_family == AF_INET;
    int n = 0, total = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        char ip[INET6_ADDRSTRLEN];
        endpoint_t ep;
        if (a->ai_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)a->ai_addr)->sin_addr, ip, sizeof ip);
            snprintf(ep, sizeof ep, "tcp://%s:%s", ip, p->port);
        } else if (a->ai_family == AF_INET6 && !has4) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)a->ai_addr)->sin6_addr, ip, sizeof ip);
            snprintf(ep, sizeof ep, "tcp://[%s]:%s", ip, p->port);
        } else {
            continue;
        }
        bool dup = false;
        for (int k = 0; k < n; k++)
            dup |= !strcmp(out[k], ep);
        if (dup)
            continue;
        total++;
        if (n < cap)
            memcpy(out[n++], ep, sizeof ep);
    }
    freeaddrinfo(res);
    return total;
}

/* getaddrinfo blocks the loop briefly (a hosts file or a DNS answer). */
static void resolve_peers(void)
{
    int cap = pr.cfg->peer_max_addresses;
    endpoint_t *now_eps = calloc((size_t)cap, sizeof *now_eps);
    if (!now_eps)
        return;
    for (int i = 0; i < pr.npeers; i++) {
        struct peer_spec *p = &pr.peers[i];
        int total = resolve_one(p, now_eps, cap);
        if (total < 0) {
            log_warn("event=peer_resolve_failed host=%s", p->host);
            continue;
        }
        int nn = total < cap ? total : cap;
        if (total > cap && total != p->truncated_from)
            log_warn("event=peer_addresses_truncated host=%s resolved=%d kept=%d msg=\"raise "
                     "--peer-max-addresses to link every node\"", p->host, total, cap);
        p->truncated_from = total > cap ? total : 0;
        for (int k = 0; k < p->n; k++) {
            bool keep = false;
            for (int j = 0; j < nn; j++)
                keep |= !strcmp(p->endpoints[k], now_eps[j]);
            if (!keep) {
                fabric_disconnect(p->endpoints[k]);
                log_info("event=peer_disconnect host=%s endpoint=%s", p->host, p->endpoints[k]);
            }
        }
        for (int j = 0; j < nn; j++) {
            bool had = false;
            for (int k = 0; k < p->n; k++)
                had |= !strcmp(p->endpoints[k], now_eps[j]);
            if (!had) {
                if (fabric_connect(now_eps[j]) != 0)
                    log_warn("event=peer_connect_failed host=%s endpoint=%s error=\"%s\"", p->host,
                             now_eps[j], zmq_strerror(zmq_errno()));
                else
                    log_info("event=peer_connect host=%s endpoint=%s", p->host, now_eps[j]);
            }
        }
        memcpy(p->endpoints, now_eps, (size_t)nn * sizeof *now_eps);
        p->n = nn;
    }
    free(now_eps);
    fabric_drain_later();
}

/* While a peer is down (or not heard yet) it may be coming back on a new
 * address: look every peer_resolve_fast_ms, so that it is linked within
 * about a second of its start instead of a whole interval later. */
static void tick(int64_t now)
{
    if (!pr.npeers)
        return;
    bool fast = membership_any_down();
    if (fast != pr.fast)
        log_info("event=peer_resolve_pace fast=%s", fast ? "yes" : "no");
    pr.fast = fast;
    int64_t every = fast ? pr.cfg->peer_resolve_fast_ms : (int64_t)pr.cfg->peer_resolve_interval * 1000;
    if (now - pr.last_resolve_ms >= every) {
        pr.last_resolve_ms = now;
        resolve_peers();
    }
}

int peers_start(const struct config *cfg)
{
    pr.cfg = cfg;
    /* Behind a forwarder the forwarder is the only peer. */
    for (int i = 0; !cfg->forwarder_connect && i < cfg->n_peer; i++) {
        struct peer_spec *p = &pr.peers[pr.npeers];
        if (!strncmp(cfg->peer[i], "ipc://", 6)) {
            /* Local workers (--workers): nothing to resolve. */
            if (fabric_connect(cfg->peer[i]) != 0) {
                log_error("event=cluster_start_failed bind=%s error=%s",
                          cfg->cluster_bind ? cfg->cluster_bind : "-", zmq_strerror(zmq_errno()));
                return -1;
            }
            continue;
        }
        if (!endpoint_split(cfg->peer[i], p->host, sizeof p->host, p->port, sizeof p->port)) {
            log_error("event=cluster_start_failed peer=%s msg=\"peers must be tcp://HOST:PORT\"",
                      cfg->peer[i]);
            return -1;
        }
        p->endpoints = calloc((size_t)cfg->peer_max_addresses, sizeof *p->endpoints);
        if (!p->endpoints)
            return -1;
        pr.npeers++;
    }
    cluster_on_tick(tick);
    return 0;
}

/* Resolves once now; the tick keeps it current. */
void peers_resolve_now(int64_t now_ms)
{
    resolve_peers();
    pr.last_resolve_ms = now_ms;
}

int peers_count(void) { return pr.npeers; }

void peers_stop(void)
{
    for (int i = 0; i < pr.npeers; i++)
        free(pr.peers[i].endpoints);
    memset(&pr, 0, sizeof pr);
}
