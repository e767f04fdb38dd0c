/* lease.h - leases from the Raft leader, and the leader's placement loop.
 *
 * A node acknowledges, delivers (as owner) and accepts REPL (as backup)
 * only while it holds a lease: the leader confirmed it within lease_ms,
 * counted on this node's monotonic clock from when it asked, so the lease
 * ends here no later than the leader believes. The leader moves a node's
 * shards away only once its lease has certainly expired (lease_ms plus a
 * margin after the last grant; after a change of leader, counted from the
 * new leader's start), so an old owner can never act after its successor
 * starts. A grant needs the requester to have applied the leader's map:
 * a leased node never acts on a stale map. A stalled node's lease runs out
 * while it is stopped, so on resume it acts on nothing before asking again. */
#ifndef CHORUS_LEASE_H
#define CHORUS_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

void lease_start(const struct config *cfg, const char *self_ref);
void lease_stop(void);
/* True while this node holds a lease. */
bool lease_valid(void);
/* Monotonic ms since this node last held a lease (0 while it holds one). */
int64_t lease_lost_ms(void);

#endif
