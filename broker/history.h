/* history.h - the `history` reply ({"op":"history",...,"msgs":[...]}),
 * spliced from stored msg frames so nothing is re-encoded.
 *
 * Shared by the WebSocket op, the HTTP API and the cluster path that asks a
 * channel's owner; each returns one frame with one reference for the caller. */
#ifndef CHORUS_HISTORY_H
#define CHORUS_HISTORY_H

#include <stdbool.h>
#include <stdint.h>

#include "cluster.h"

struct channel;
struct frame;

/* From this node's copy of the channel (ch may be NULL: no messages). With
 * has_since, only messages after that position, and none when the epoch
 * differs; at most the newest `limit`. */
struct frame *history_local(struct channel *ch, const char *name, bool has_id, long long id,
                            bool has_since, const char *since_epoch, uint64_t since_seq,
                            long long limit);

/* From an owner's SYNC_REP (parts: channel, then (seq+ts, msg) pairs),
 * keeping the newest `limit`. */
struct frame *history_from_sync(const char *name, bool has_id, long long id,
                                const struct envelope *rep, const struct cluster_part *parts,
                                int n, long long limit);

#endif
