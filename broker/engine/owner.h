/* owner.h - what a channel's owner answers other nodes: forwarded
 * publishes (PUB_REQ -> PUB_REP once delivered) and sync requests
 * (SYNC_REQ -> SYNC_REP with the owner's position and history). */
#ifndef CHORUS_OWNER_H
#define CHORUS_OWNER_H

/* Registers the PUB_REQ, SYNC_REQ and SHARD_REQ handlers (after cluster_start). */
void owner_start(void);
/* Frees the requests waiting to be served again. */
void owner_stop(void);

#endif
