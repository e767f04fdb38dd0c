/* replica.h - primary/backup replication of each channel's messages.
 *
 * The owner of a channel hands every sequenced message to the channel's
 * backup (the live node ranked second by the same rendezvous hash, so it is
 * the node that takes over when the owner dies) and delivers it, locally and
 * to the cluster, only when the backup has acknowledged it. The backup
 * therefore holds every message anyone was given or acknowledged, and
 * continues the same epoch when it becomes the owner. Sequence numbers are
 * never handed out twice: a message waits, and is re-sent to whichever node
 * is the backup, until one acknowledges it or no other node is left. */
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
/* Detaches w from the message it waits for. */
void replica_cancel(struct pub_wait *w);

/* Registers the REPL_ACK handler and the re-send tick (after cluster_start). */
void replica_start(void);

#endif
