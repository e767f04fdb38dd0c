/* membership.h - which nodes are up, and which of them owns each channel.
 *
 * A node is up while its messages (at least its heartbeats) keep arriving
 * within peer_timeout. Every channel has one owner, the live node with the
 * highest rendezvous-hash score for it, and one backup, the runner-up; every
 * node computes the same answer from the same view. No sockets here: the
 * fabric reports what it hears (membership_seen) and asks who went silent
 * (membership_sweep). The public questions (cluster_is_owner,
 * cluster_backup_of, cluster_peers, cluster_enabled, cluster_ready) are
 * declared in cluster.h. */
#ifndef CHORUS_MEMBERSHIP_H
#define CHORUS_MEMBERSHIP_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* This node is `self`; the cluster counts as enabled from now on. */
void membership_start(const struct config *cfg, int64_t now_ms);
/* Forgets every member; the cluster is disabled again. */
void membership_stop(void);
/* This node's id ("" while disabled). */
const char *membership_self(void);

/* The channel's owner: this node's id string itself (compare pointers with
 * membership_self()) or a member's. */
const char *cluster_owner_of(const char *ch, size_t len);

/* A message from node id arrived at now_ms. */
void membership_seen(const char *id, int64_t now_ms);
/* Marks down every member silent for longer than peer_timeout and calls
 * down(id) for each. */
void membership_sweep(int64_t now_ms, void (*down)(const char *id));

#endif
