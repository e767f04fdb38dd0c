/* peers.c - DNS peer discovery for the SUB socket (peers.h). */
#include "peers.h"
#include "endpoint.h"
#include "fabric.h"
#include "log.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

/* A --peer given by name: the endpoints it currently resolves to. */
struct peer_spec {
    char host[256];
    char port[8];
    char endpoints[16][64];
    int n;
};

static struct {
    const struct config *cfg;
    struct peer_spec peers[CONFIG_MAX_PEERS];
    int npeers;
    int64_t last_resolve_ms;
} pr;

/* getaddrinfo blocks the loop briefly; it runs every peer_resolve_interval. */
static void resolve_peers(void)
{
    for (int i = 0; i < pr.npeers; i++) {
        struct peer_spec *p = &pr.peers[i];
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
        char now_eps[16][64];
        int nn = 0;
        if (getaddrinfo(p->host, p->port, &hints, &res) != 0) {
            log_warn("event=peer_resolve_failed host=%s", p->host);
            continue;
        }
        for (struct addrinfo *a = res; a && nn < 16; a = a->ai_next) {
            char ip[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &((struct sockaddr_in *)a->ai_addr)->sin_addr, ip, sizeof ip);
            snprintf(now_eps[nn], sizeof now_eps[nn], "tcp://%s:%s", ip, p->port);
            bool dup = false;
            for (int k = 0; k < nn; k++)
                dup |= !strcmp(now_eps[k], now_eps[nn]);
            if (!dup)
                nn++;
        }
        freeaddrinfo(res);
        for (int k = 0; k < p->n; k++) {
            bool keep = false;
            for (int j = 0; j < nn; j++)
                keep |= !strcmp(p->endpoints[k], now_eps[j]);
            if (!keep) {
                fabric_disconnect(p->endpoints[k]);
                log_info("event=peer_disconnect endpoint=%s", p->endpoints[k]);
            }
        }
        for (int j = 0; j < nn; j++) {
            bool had = false;
            for (int k = 0; k < p->n; k++)
                had |= !strcmp(p->endpoints[k], now_eps[j]);
            if (!had) {
                fabric_connect(now_eps[j]);
                log_info("event=peer_connect endpoint=%s", now_eps[j]);
            }
        }
        memcpy(p->endpoints, now_eps, sizeof now_eps);
        p->n = nn;
    }
    fabric_drain_later();
}

static void tick(int64_t now)
{
    if (pr.npeers && now - pr.last_resolve_ms >= (int64_t)pr.cfg->peer_resolve_interval * 1000) {
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

void peers_stop(void) { memset(&pr, 0, sizeof pr); }
