/* ratelimit.c - publish and connection rate limits (see ratelimit.h).
 *
 * Invariant: an rl_ip entry exists while it counts an open connection or its
 * upgrade bucket is not yet full again; an rl_user entry exists while refs > 0. */
#include "ratelimit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

struct rl_ip {
    char ip[48];
    uint32_t conns;               /* established WebSocket connections */
    struct rate_bucket upgrades;
    UT_hash_handle hh;
};

struct rl_user {
    char *user;
    uint32_t refs;                /* connections acting for this user */
    struct rate_bucket pub;
    UT_hash_handle hh;
};

static const struct config *cfg;
static struct rl_ip *ips;
static struct rl_user *users;

bool rate_bucket_take(struct rate_bucket *b, double rate, double burst, int64_t now_us)
{
    if (b->last_us == 0) {
        b->tokens = burst;
    } else if (now_us > b->last_us) {
        b->tokens += (double)(now_us - b->last_us) / 1e6 * rate;
        if (b->tokens > burst)
            b->tokens = burst;
    }
    b->last_us = now_us;
    if (b->tokens < 1.0)
        return false;
    b->tokens -= 1.0;
    return true;
}

static double burst_for(int rate)
{
    return cfg->pub_burst > 0 ? cfg->pub_burst : rate;
}

void ratelimit_init(const struct config *config) { cfg = config; }

void ratelimit_free(void)
{
    struct rl_ip *i, *itmp;
    HASH_ITER(hh, ips, i, itmp) {
        HASH_DEL(ips, i);
        free(i);
    }
    struct rl_user *u, *utmp;
    HASH_ITER(hh, users, u, utmp) {
        HASH_DEL(users, u);
        free(u->user);
        free(u);
    }
}

int ratelimit_upgrade(struct conn_limits *l, const char *ip, int64_t now_us)
{
    snprintf(l->ip, sizeof l->ip, "%s", ip);
    if (!cfg->max_conn_rate_ip && !cfg->max_conns_per_ip)
        return 0;
    struct rl_ip *e;
    HASH_FIND_STR(ips, l->ip, e);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e)
            return 503;
        _Static_assert(sizeof e->ip >= sizeof l->ip, "an IP entry holds any connection's IP");
        memcpy(e->ip, l->ip, sizeof l->ip);
        HASH_ADD_STR(ips, ip, e);
    }
    if (cfg->max_conns_per_ip && e->conns >= (uint32_t)cfg->max_conns_per_ip)
        return 429;
    if (cfg->max_conn_rate_ip &&
        !rate_bucket_take(&e->upgrades, cfg->max_conn_rate_ip, cfg->max_conn_rate_ip, now_us))
        return 429;
    l->ip_entry = e;
    return 0;
}

void ratelimit_conn_open(struct conn_limits *l)
{
    if (l->ip_entry && !l->counted) {
        l->ip_entry->conns++;
        l->counted = true;
    }
}

void ratelimit_conn_closed(struct conn_limits *l)
{
    if (l->ip_entry && l->counted)
        l->ip_entry->conns--;
    l->counted = false;
    l->ip_entry = NULL;            /* the sweep frees it once idle */
    ratelimit_set_user(l, NULL);
}

void ratelimit_set_user(struct conn_limits *l, const char *user)
{
    if (l->user_entry && user && !strcmp(l->user_entry->user, user))
        return;
    if (l->user_entry && --l->user_entry->refs == 0) {
        HASH_DEL(users, l->user_entry);
        free(l->user_entry->user);
        free(l->user_entry);
    }
    l->user_entry = NULL;
    if (!user || !cfg->max_pub_rate_user)
        return;
    struct rl_user *u;
    HASH_FIND_STR(users, user, u);
    if (!u) {
        u = calloc(1, sizeof *u);
        if (!u || !(u->user = strdup(user))) {
            free(u);
            return;                /* out of memory: the user goes unlimited, not refused */
        }
        HASH_ADD_KEYPTR(hh, users, u->user, strlen(u->user), u);
    }
    u->refs++;
    l->user_entry = u;
}

bool ratelimit_publish(struct conn_limits *l, int64_t now_us)
{
    if (cfg->max_pub_rate &&
        !rate_bucket_take(&l->pub, cfg->max_pub_rate, burst_for(cfg->max_pub_rate), now_us))
        return false;
    if (l->user_entry && cfg->max_pub_rate_user &&
        !rate_bucket_take(&l->user_entry->pub, cfg->max_pub_rate_user,
                          burst_for(cfg->max_pub_rate_user), now_us))
        return false;
    return true;
}

void ratelimit_sweep(int64_t now_us)
{
    struct rl_ip *e, *tmp;
    HASH_ITER(hh, ips, e, tmp) {
        if (e->conns)
            continue;
        /* Idle and refilled: forgetting it changes nothing. */
        double full = cfg->max_conn_rate_ip;
        double t = e->upgrades.tokens + (double)(now_us - e->upgrades.last_us) / 1e6 * full;
        if (!cfg->max_conn_rate_ip || e->upgrades.last_us == 0 || t >= full) {
            HASH_DEL(ips, e);
            free(e);
        }
    }
}

