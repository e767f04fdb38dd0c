/* consensus.h - agreement on the shard map through Raft (canonical's
 * libraft 0.15, its libuv log store and TCP transport on a port of its own).
 *
 * Every node of the cluster is a voter; the voter set is the node itself
 * plus its configured peers, and must be the same on every node. The
 * replicated state machine is the shard map (shardmap.h): only committed
 * entries change it, and only the leader proposes them (lease.c decides
 * what). Raft's libuv loop runs inside the lws loop: its backend fd is
 * adopted into lws, so everything here runs on the event-loop thread and
 * nothing on the publish path touches Raft. */
#ifndef CHORUS_CONSENSUS_H
#define CHORUS_CONSENSUS_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "shardmap.h"

/* Opens the log in the data dir, bootstraps a new cluster's configuration
 * (a no-op when the log already holds one) and starts Raft. */
int consensus_start(const struct config *cfg, struct lws_vhost *vh);
void consensus_stop(void);

bool consensus_is_leader(void);
/* This node's and the current leader's Raft ids (0: no leader known). */
uint64_t consensus_self_id(void);
uint64_t consensus_leader_id(void);
int consensus_voters(void);
/* The committed map. */
const struct shardmap *consensus_map(void);
/* Proposes `next` as the successor of the committed map. -1 when this node
 * is not the leader or a proposal is still in flight. */
int consensus_propose(const struct shardmap *next);
bool consensus_proposing(void);

/* Called after every committed change of the map (on every node). */
typedef void consensus_map_fn(const struct shardmap *before, const struct shardmap *now);
void consensus_on_map(consensus_map_fn *fn);

/* lws protocol callback for Raft's adopted event fd ("chorus-raft"). */
int consensus_lws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len);

#endif
