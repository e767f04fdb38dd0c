/* membership.h - which nodes are up, and who owns and backs up each channel.
 *
 * A node is up while its messages (at least its heartbeats) keep arriving
 * within peer_timeout: that only fails calls early and feeds metrics.
 * Ownership comes from the shard map Raft committed (consensus.h), never
 * from this node's own view, so every node answers the same. No sockets
 * here: the fabric reports what it hears (membership_seen) and asks who
 * went silent (membership_sweep). The public questions (cluster_is_owner,
 * cluster_backups_of, cluster_peers, cluster_enabled, cluster_ready) are
 * declared in cluster.h. */
#ifndef CHORUS_MEMBERSHIP_H
#define CHORUS_MEMBERSHIP_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "shardmap.h"

/* This node is `self`; the cluster counts as enabled from now on. */
void membership_start(const struct config *cfg, int64_t now_ms);
/* Forgets every member; the cluster is disabled again. */
void membership_stop(void);
/* This node's id ("" while disabled). */
const char *membership_self(void);

/* "NODE-ID#INCARNATION": this process in the shard map. */
const char *membership_self_ref(void);
/* The committed shard map changed: refresh what the data path reads. */
struct shardmap;
void membership_map_changed(const struct shardmap *m);
/* Does the committed map name this node a backup of ch at gen, with
 * origin its owner? */
bool membership_backup_of(const char *ch, size_t len, const char *origin, uint64_t gen);
/* The committed map exists and no longer names an earlier incarnation of
 * this node (whose shards the leader moves once it hears this one). */
bool membership_map_current(void);
/* The committed map names this incarnation as an owner or a backup. */
bool membership_in_map(void);
/* Shards this node owns (owner) or backs up (!owner) in the committed map. */
int membership_shards(bool owner);
/* Heartbeats name each node's Raft id; the node id of a Raft id, or NULL. */
void membership_seen_raft(const char *id, uint64_t raft_id);
const char *membership_node_of_raft(uint64_t raft_id);

/* A message from node id arrived at now_ms. */
void membership_seen(const char *id, int64_t now_ms);
/* Node id's SUB socket subscribed (on) to its "!to:ID" topic on our XPUB,
 * i.e. it hears us, or dropped it. */
void membership_heard_by(const char *id, bool on);
/* Some member is down or does not hear us (or none is known yet): the
 * peer names are worth resolving again soon. */
bool membership_any_down(void);
/* Every member that is up hears us, or join_wait_ms passed since start;
 * true from then on. */
bool membership_joined(int64_t now_ms);
/* Marks down every member silent for longer than peer_timeout and calls
 * down(id) for each. */
void membership_sweep(int64_t now_ms, void (*down)(const char *id));

#endif
