/* shardsync.h - a node that becomes a backup of a shard fetches the state
 * of every channel the owner holds in it (epoch, position, history), so
 * that a later move of the shard to this node continues every channel's
 * epoch, the idle ones included; REPL covers what is published meanwhile.
 * It lists the shard's channels from the owner page by page (SHARD_REQ),
 * fetches each with SYNC_REQ (a bounded window in flight), and tells the
 * cluster which shards it holds (cluster_set_synced), which the lease
 * requests carry to the leader (PROTOCOL.md 7.4). */
#ifndef CHORUS_SHARDSYNC_H
#define CHORUS_SHARDSYNC_H

/* Registers the map and tick hooks (after cluster_start); a no-op without
 * a cluster. */
void shardsync_start(void);
/* Forgets every fetch in flight (before cluster_stop). */
void shardsync_stop(void);

#endif
