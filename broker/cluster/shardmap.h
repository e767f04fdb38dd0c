/* shardmap.h - the committed map of who owns and who backs up each shard of
 * channels: the state machine Raft replicates (consensus.h), and the
 * questions the data path asks of it.
 *
 * Channels hash to SHARDMAP_SHARDS shards. A shard has one owner (the only
 * node that sequences its channels) and up to replication_factor - 1
 * backups, named by node reference "NODE-ID#INCARNATION": a restarted
 * process is a new incarnation and owns nothing its predecessor did. `gen`
 * changes whenever the shard's assignment does; owners stamp REPL with it
 * and backups refuse any other, so an owner working from an old map cannot
 * get a message acknowledged. No sockets here, no clock: pure data, so the
 * placement rules and the encoding are unit-tested alone. */
#ifndef CHORUS_SHARDMAP_H
#define CHORUS_SHARDMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.h"

#define SHARDMAP_SHARDS 64
#define SHARDMAP_MAX_NODES 48
#define SHARDMAP_MAX_BACKUPS 4
#define SHARDMAP_INC_LEN 16
#define SHARDMAP_REF_MAX (ENVELOPE_ID_MAX + 1 + SHARDMAP_INC_LEN)
/* `cont` of an owner that held no copy of the shard: every channel starts a new epoch. */
#define SHARDMAP_NEVER UINT64_MAX

struct shard_assign {
    uint64_t gen;                              /* map version of this assignment's last change */
    int owner;                                 /* index in nodes[]; -1: no owner (unavailable) */
    int nbackups;
    int backup[SHARDMAP_MAX_BACKUPS];          /* indexes in nodes[], first = next owner */
    uint64_t since[SHARDMAP_MAX_BACKUPS];      /* version since which each has been a backup without a break */
    /* The owner continues the epoch of a channel only when it accepted REPL
     * for it at gen >= cont (it was the backup all along, so it holds all
     * the old owner delivered); other channels start a new epoch. */
    uint64_t cont;
    /* A planned move in progress: the node (index in nodes[], one of the
     * backups) the owner is handing the shard to; -1: none. The owner stops
     * sequencing for the shard and says so when nothing is pending; only
     * then does the leader switch owners, so no publish is refused. */
    int handoff;
};

struct shardmap {
    uint64_t version;                          /* 0: nothing assigned yet */
    int nnodes;
    char nodes[SHARDMAP_MAX_NODES][SHARDMAP_REF_MAX + 1];
    struct shard_assign s[SHARDMAP_SHARDS];
};

/* An empty map: version 0, no owners. */
void shardmap_init(struct shardmap *m);
/* The shard a channel belongs to (the same on every node). */
unsigned shardmap_shard_of(const char *ch, size_t len);
/* The index of ref in m->nodes, added when missing; -1 when the table is full. */
int shardmap_node(struct shardmap *m, const char *ref);
/* The node id part of a reference (up to '#'), copied into out. */
void shardmap_node_id(const char *ref, char *out, size_t cap);
/* Is ref one of shard i's backups? Its position, or -1. */
int shardmap_backup_pos(const struct shardmap *m, unsigned shard, const char *ref);
/* Drops node table entries no shard names (indexes are renumbered). */
void shardmap_compact(struct shardmap *m);

/* A Raft log entry: "replace map version `base` by `next`" (JSON text, malloc'd). */
char *shardmap_entry_encode(uint64_t base, const struct shardmap *next, size_t *len);
/* Applies an entry to m: true when it replaced m, false when m is not at the
 * entry's base version (an entry from a deposed leader) or it is malformed. */
bool shardmap_entry_apply(struct shardmap *m, const char *buf, size_t len);
/* The whole map as JSON (a Raft snapshot), and back. */
char *shardmap_encode(const struct shardmap *m, size_t *len);
int shardmap_decode(struct shardmap *m, const char *buf, size_t len);

#endif
