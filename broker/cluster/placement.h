/* placement.h - the Raft leader's rules for the next shard map.
 *
 * Given the committed map and what the leader knows of every node's lease,
 * computes the map to propose. Ownership moves only away from a node whose
 * lease has certainly expired (NODE_GONE): it can no longer acknowledge or
 * deliver, so the promoted backup cannot be contradicted. Backups that are
 * gone are replaced; missing ones are filled from leased nodes by
 * rendezvous rank. A live owner keeps its shards, unless it is leaving: then
 * each goes at once to its first leased backup, which holds everything the
 * leaving owner delivered (delivery needs its ack), and whose acceptance of
 * REPL stops at the new gen; with no leased backup the shard stays until
 * the owner is gone.
 *
 * Planned moves go only to nodes that hold the shard's state (they fetched
 * its channels as a backup, `synced`), so no channel changes epoch: a
 * leaving owner waits for such a backup. And they take two maps: the first
 * names the target (`handoff`), the owner stops sequencing for the shard
 * and, once nothing is pending, says so (`quiesced`); the second switches,
 * so no publish in flight is refused. When every node is leased, each
 * shard drifts back to its rendezvous-preferred nodes (a node that
 * restarted gets its shards back): the preferred node joins as an extra
 * backup; once it holds the state the other backups leave and it takes
 * ownership (the old owner stays its sole backup); then the preferred
 * backups join and, once they hold the state, the others leave. One step
 * per shard per map. Pure: unit-tested alone. */
#ifndef CHORUS_PLACEMENT_H
#define CHORUS_PLACEMENT_H

#include <stdbool.h>

#include "shardmap.h"

enum node_state {
    NODE_LEASED,     /* holds a lease the leader granted */
    NODE_UNCERTAIN,  /* lease lapsed, but it may still believe it holds one */
    NODE_GONE,       /* certainly not acting: its lease expired with margin, or a newer incarnation asked */
    NODE_LEAVING,    /* leased, and asked to hand its shards over before it stops (SIGTERM) */
};

typedef enum node_state placement_state_fn(const char *ref, void *ud);
/* Does ref hold shard's state (as the map's backup or owner)? Has the
 * owner ref stopped sequencing for a shard it hands off, with nothing
 * pending? */
typedef bool placement_shard_fn(const char *ref, unsigned shard, void *ud);

/* What the leader knows of the nodes, for placement_next. */
struct placement_view {
    placement_state_fn *state;
    placement_shard_fn *synced;
    placement_shard_fn *quiesced;
    void *ud;
    /* Every node the leader knows, in any state (not the superseded ones):
     * a shard drifts back only to its preferred nodes among these, and only
     * while they all hold leases, so nothing shuffles among the survivors
     * while a node is away. */
    const char *const *members;
    int nmembers;
};

/* Fills *next from cur; returns true when it differs (then next->version is
 * cur->version + 1 and every changed shard's gen is that version). `leased`
 * are the refs of leased nodes, in any order; rf is the replication factor. */
bool placement_next(const struct shardmap *cur, const struct placement_view *view,
                    const char *const *leased, int nleased, int rf, struct shardmap *next);

#endif
