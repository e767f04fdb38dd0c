/* ratelimit.h - token buckets for publishes (per connection, per user) and
 * for WebSocket upgrades (per client IP: a rate and a count of open ones).
 *
 * A bucket holds up to `burst` tokens and refills at `rate` per second; an
 * action takes one token or is refused. Buckets of users and IPs live in hash
 * tables that only hold entries in use: an IP entry goes when its last
 * connection closed and its bucket refilled, a user entry when the user's last
 * connection on this node closed. Everything runs on the event-loop thread. */
#ifndef CHORUS_RATELIMIT_H
#define CHORUS_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

struct rate_bucket {
    double tokens;
    int64_t last_us;              /* when tokens was last brought up to date; 0 = never */
};

/* Takes one token if there is one (a fresh bucket starts full). */
bool rate_bucket_take(struct rate_bucket *b, double rate, double burst, int64_t now_us);

struct rl_ip;
struct rl_user;

/* The limits state of one connection, embedded in struct conn. */
struct conn_limits {
    struct rl_ip *ip_entry;       /* the IP's entry, set by an accepted upgrade */
    struct rl_user *user_entry;   /* shared bucket of the connection's user, if any */
    struct rate_bucket pub;
    char ip[46];                  /* peer address, from the upgrade (INET6_ADDRSTRLEN) */
    bool counted;                 /* established: counted in ip_entry->conns */
};

void ratelimit_init(const struct config *cfg);
void ratelimit_free(void);

/* At the upgrade: 0 to accept, or the HTTP status to refuse with (429) when
 * the IP opens connections too fast or holds too many. `l` gets the IP. */
int ratelimit_upgrade(struct conn_limits *l, const char *ip, int64_t now_us);
/* The connection is established / closed (counts it for its IP). */
void ratelimit_conn_open(struct conn_limits *l);
void ratelimit_conn_closed(struct conn_limits *l);
/* The connection now acts for user (NULL: anonymous); shares that user's bucket. */
void ratelimit_set_user(struct conn_limits *l, const char *user);
/* One publish: true when both the connection's and the user's bucket allow it. */
bool ratelimit_publish(struct conn_limits *l, int64_t now_us);
/* Forgets idle IP entries; call periodically. */
void ratelimit_sweep(int64_t now_us);

#endif
