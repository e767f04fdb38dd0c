/* placement.h - the Raft leader's rules for the next shard map.
 *
 * Given the committed map and what the leader knows of every node's lease,
 * computes the map to propose. Ownership moves only away from a node whose
 * lease has certainly expired (NODE_GONE): it can no longer acknowledge or
 * deliver, so the promoted backup cannot be contradicted. Backups that are
 * gone are replaced; missing ones are filled from leased nodes by
 * rendezvous rank. A live owner keeps its shards (moving them away from a
 * live node needs a handover: not done here). Pure: unit-tested alone. */
#ifndef CHORUS_PLACEMENT_H
#define CHORUS_PLACEMENT_H

#include <stdbool.h>

#include "shardmap.h"

enum node_state {
    NODE_LEASED,     /* holds a lease the leader granted */
    NODE_UNCERTAIN,  /* lease lapsed, but it may still believe it holds one */
    NODE_GONE,       /* certainly not acting: its lease expired with margin, or a newer incarnation asked */
};

typedef enum node_state placement_state_fn(const char *ref, void *ud);

/* Fills *next from cur; returns true when it differs (then next->version is
 * cur->version + 1 and every changed shard's gen is that version). `leased`
 * are the refs of leased nodes, in any order; rf is the replication factor. */
bool placement_next(const struct shardmap *cur, placement_state_fn *state, void *ud,
                    const char *const *leased, int nleased, int rf, struct shardmap *next);

#endif
