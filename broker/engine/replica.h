/* replica.h - primary/backup replication of each channel's messages.
 *
 * The owner of a channel hands every sequenced message to each of the
 * channel's backups (the committed shard map names them, cluster.h) and
 * delivers it, locally and to the cluster, only when every backup has
 * acknowledged it at the shard's current gen and this node still holds its
 * lease. The first backup therefore holds every message anyone was given or
 * acknowledged, and continues the same epoch when it is promoted. Sequence
 * numbers are never handed out twice: a message waits, re-sent to the
 * backups, until they hold it, or until the map moves the channel away. */
#ifndef CHORUS_REPLICA_H
#define CHORUS_REPLICA_H

#include <stdbool.h>
#include <stdint.h>

#include "cluster.h"

struct channel;
struct frame;
struct pub_wait;

/* Owner: queue a sequenced message for delivery; w (may be NULL) is told when
 * it is delivered. Without a cluster it is delivered at once. */
void replica_submit(struct channel *ch, struct frame *f, uint64_t seq, int64_t ts_ms,
                    const char *key, struct pub_wait *w);
/* Owner: w also waits for the pending message published with `key`; false
 * when no pending message has it. */
bool replica_wait_key(struct channel *ch, const char *key, struct pub_wait *w);
/* Owner: w waits for the pending message at seq (a key recorded for a copy
 * a promoted backup is still replicating); false when none is pending. */
bool replica_wait_seq(struct channel *ch, uint64_t seq, struct pub_wait *w);
/* Detaches w from the message it waits for. */
void replica_cancel(struct pub_wait *w);
/* This node owns ch by the committed map: make it the sequencer, keeping
 * the epoch only when it was the backup all along (cluster_continues). */
void replica_claim(struct channel *ch);

/* Registers the REPL_ACK handler, the re-send tick and the map hook (after
 * cluster_start). */
void replica_start(const struct config *cfg);

#endif
