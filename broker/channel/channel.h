/* channel.h - the channel registry: channel -> subscribers and connection ->
 * channels, both sides changed together; each channel's sequence and history.
 *
 * Subscribe and disconnect cost O(1) per (connection, channel) pair: a
 * subscription knows its slot in the channel's subscriber array and heads
 * the connection's list when it is added. Unsubscribing one channel walks
 * the connection's list (O(channels of the connection)), as finding the
 * subscription already does. A publish is sequenced, encoded once,
 * kept in history by reference and queued by reference to every subscriber. */
#ifndef CHORUS_CHANNEL_H
#define CHORUS_CHANNEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uthash.h>

#include "codec.h"
#include "config.h"
#include "envelope.h"

struct conn;
struct frame;
struct chan_sync;
struct chan_repl;
struct key_entry;
struct held_msg;
struct ns_metrics;

/* A channel's epoch travels in cluster envelopes and comes back from clients
 * in `since`, so its bound is the envelope's (with room for the NUL here). */
#define CHANNEL_EPOCH_MAX (ENVELOPE_EPOCH_MAX + 1)
_Static_assert(CODEC_EPOCH_MAX >= ENVELOPE_EPOCH_MAX, "a client must be able to send back any epoch");

/* One per (connection, channel) subscription; created by channel_subscribe(),
 * freed by channel_unsubscribe(). Every idle subscriber has one: 40 bytes
 * is a 48-byte malloc chunk, 48 would be 64 (docs/benchmarks.md, idle
 * memory), hence the singly linked connection list. */
struct sub {
    struct channel *ch;
    struct conn *conn;
    struct sub *conn_next;               /* the connection's sub_list (utlist LL) */
    uint32_t idx;                        /* slot in ch->subs */
    uint32_t slot;                       /* the session layer's: an SSE stream's channel index + 1 */
    uint64_t queued;                     /* the session layer's: queue position + 1 of this
                                          * channel's newest unsent msg (conflation); 0: none */
};
_Static_assert(sizeof(struct sub) <= 40, "struct sub outgrew its 48-byte malloc chunk");

/* The connection side of the index, embedded in each connection. */
struct sub_list {
    struct sub *head;                    /* utlist LL through conn_next */
    uint32_t n;
};

struct hist_entry {
    struct frame *f;     /* one reference */
    uint64_t seq;
    int64_t ts_ms;
};

/* One per live channel; created on first subscribe or publish, deleted when it
 * has neither subscribers nor unexpired history. Fields are grouped by size
 * so that no padding is left (a channel per subscriber is common). */
struct channel {
    char *name;                          /* NUL-terminated, validated */
    size_t len;
    const struct ns_opts *ns;            /* read-only, owned by the config */
    struct ns_metrics *nsm;              /* its namespace's counters (metrics.h) */
    uint64_t seq;                        /* last sequence number delivered */
    uint64_t assigned;                   /* last handed out; > seq while replication is pending */

    struct sub **subs;                   /* unordered; swap-removed */
    uint32_t nsubs, subs_cap;

    struct hist_entry *hist;             /* ring of ns->history_size entries */
    uint32_t hist_head, hist_count;

    struct channel *idle_prev, *idle_next; /* on the idle list (utlist DL) while nsubs == 0 */

    /* state the cluster and engine layers keep on the channel (cluster.h,
     * mirror.h, replica.h); this layer reads some of it and never calls them */
    uint64_t repl_gen;                   /* backup: shard gen of the last REPL accepted */
    struct chan_repl *repl;              /* engine/replica.c: messages waiting for the backup's ack */
    struct channel *beacon_prev, *beacon_next; /* cluster/stream.c: channels to announce (utlist DL) */
    int64_t last_sequenced_ms;
    struct key_entry *keys;              /* keys.c: idempotency keys of recent publishes (uthash) */
    struct key_entry *keys_age;          /* the same keys, oldest first (utlist DL); evicted from the head */
    struct chan_sync *sync;              /* engine/mirror.c: a join or repair in progress */
    struct held_msg *tail;               /* engine/mirror.c: a backup's copies after seq, not yet
                                          * shown to local subscribers (utlist DL, seq order) */
    uint32_t nkeys;
    uint32_t ntail;
    uint32_t pins;                       /* outstanding calls that will come back to it */

    char epoch[CHANNEL_EPOCH_MAX];
    /* one byte between them: 280 bytes is a 288-byte malloc chunk */
    bool idle : 1;                       /* on the idle list (a DL's links cannot tell) */
    bool mirror : 1;                     /* seq and history copied from a remote owner */
    bool live : 1;                       /* mirror: following the owner's stream, state current */
    bool replica : 1;                    /* backup: holds every message the owner delivered */
    bool beacon : 1;
    bool remote_interest : 1;            /* owner: other nodes subscribe to it */
    UT_hash_handle hh;
};
_Static_assert(sizeof(struct channel) <= 280, "struct channel outgrew its 288-byte malloc chunk");

/* Delivery of a frame to one subscription (s->conn): the session layer
 * registers conn_deliver at start (tests register their own), so this layer
 * never calls up into connections. f->seq is the message's seq, or 0 for an
 * event (epoch, gap). It takes its own reference to f if it keeps it. Must
 * not unsubscribe anything synchronously: the fan-out loop is iterating the
 * subscriber array when it is called. */
typedef void channel_deliver_fn(struct sub *s, struct frame *f);
void channel_set_deliver(channel_deliver_fn *fn);

/* What the cluster wants to hear about; every member may be NULL. */
struct channel_hooks {
    /* Local subscribers went 0 -> 1 (on) or 1 -> 0 (off). */
    void (*interest)(struct channel *ch, bool on);
    /* This node sequenced f (the owner published); called after local fan-out. */
    void (*sequenced)(struct channel *ch, struct frame *f, uint64_t seq, int64_t ts_ms);
    /* A channel object was created (the cluster fills in remote_interest). */
    void (*created)(struct channel *ch);
};

/* Local subscribers went 0 -> 1 (on) or 1 -> 0, in a cluster or not: the
 * webhooks' occupancy (engine/occupancy.c); after the cluster's hook. */
typedef void channel_occupancy_fn(struct channel *ch, bool on);
void channel_on_occupancy(channel_occupancy_fn *fn);

void channel_registry_init(const struct config *cfg);
void channel_set_hooks(const struct channel_hooks *hooks);
void channel_registry_free(void);

struct channel *channel_find(const char *name, size_t len);
/* Finds or creates the channel; NULL only when memory ran out. */
struct channel *channel_get(const char *name, size_t len);
uint32_t channel_count(void);

/* Returns the existing subscription of c to ch, or NULL. O(channels of c). */
struct sub *channel_sub_find(struct sub_list *list, struct channel *ch);
/* Links a new subscription on both sides; NULL when memory ran out. */
struct sub *channel_subscribe(struct channel *ch, struct conn *c, struct sub_list *list);
/* Unlinks and frees s; deletes the channel when it is left empty. */
void channel_unsubscribe(struct sub *s, struct sub_list *list);
/* Unsubscribes everything in the list (connection closed). */
void channel_unsubscribe_all(struct sub_list *list);

struct publish_result {
    uint64_t seq;
    char epoch[CHANNEL_EPOCH_MAX];
};

/* This node has become the channel's owner: with keep_epoch (the engine
 * found it was the backup all along, so it holds every message the old owner
 * delivered) the epoch continues; otherwise a new epoch starts and
 * subscribers are told. A no-op for a channel already owned. */
void channel_claim(struct channel *ch, bool keep_epoch);
/* Where new epochs come from in a cluster: the gen of the committed shard
 * map entry that placed this node as the channel's owner, so an epoch names
 * the assignment it was minted under ("GEN.BOOT-N"; "BOOT-N" without one). */
typedef uint64_t channel_epoch_gen_fn(const char *name, size_t len);
void channel_set_epoch_gen(channel_epoch_gen_fn *fn);
/* Calls fn for every channel; fn must not delete channels. Rare events
 * only (a change of the shard map): it is O(channels). */
void channel_foreach(void (*fn)(struct channel *ch, void *ud), void *ud);
/* Owner, first half of a publish: hands out the next seq and encodes the msg
 * frame (one reference returned in *f): data is JSON text, or the bytes of a
 * binary message when `binary`. Nothing is delivered yet. A channel
 * that was a replica continues its epoch; a plain mirror starts a new one.
 * `attr` (may be NULL) is the publisher's attested identity (codec_attr).
 * Returns -1 when data cannot be encoded. */
int channel_sequence(struct channel *ch, const char *data, size_t data_len, bool binary,
                     const char *client, const char *attr, int64_t now_ms, struct frame **f,
                     uint64_t *seq);
/* Owner, second half: records f in history, fans it out locally and hands it
 * to the cluster. Messages must be delivered in seq order. */
void channel_deliver(struct channel *ch, struct frame *f, uint64_t seq, int64_t ts_ms);
/* Drops handed-out but undelivered seqs (their replication failed). */
void channel_unassign(struct channel *ch);

/* Idempotency keys (PROTOCOL.md 2.3): keys.h. */
#include "keys.h"

/* Sequences, encodes, records and fans out one message at once, without
 * replication (single node, and tests); data is a parsed JSON value. `client` is the
 * publisher's connection id or NULL. Returns 0 and fills res, or -1 when data
 * cannot be encoded or memory ran out. The channel may be deleted by this call
 * (no subscribers, no history): do not use ch afterwards. */
int channel_publish(struct channel *ch, const json_t *data, const char *client, int64_t now_ms,
                    struct publish_result *res);

/* True when every message after (epoch, seq) is still in history, i.e. a
 * subscriber at that position can be brought up to date exactly. */
bool channel_can_recover(struct channel *ch, const char *epoch, uint64_t seq, int64_t now_ms);
/* Calls fn for each unexpired history entry with seq > after, oldest first,
 * limited to the newest `limit` such entries (limit < 0: no limit). */
void channel_history_each(struct channel *ch, uint64_t after, long long limit, int64_t now_ms,
                          void (*fn)(const struct hist_entry *e, void *ud), void *ud);

enum apply_result { APPLY_OK, APPLY_DUP, APPLY_GAP };

/* Applies a message sequenced by a remote owner: records it and fans it out
 * when it is the next one; a new epoch starting at seq 1 replaces the old
 * one (subscribers get an `epoch` event first). APPLY_GAP means messages are
 * missing before it and nothing was done. */
enum apply_result channel_apply(struct channel *ch, const char *epoch, uint64_t seq,
                                int64_t ts_ms, struct frame *f);
/* Takes the owner's position (from a sync reply); a different epoch clears
 * history and, when notify is set, sends subscribers an `epoch` event. */
void channel_adopt(struct channel *ch, const char *epoch, uint64_t seq, bool notify);
/* Sends every subscriber one event frame (epoch, gap). */
void channel_broadcast(struct channel *ch, const char *json, size_t len);
/* Backup, fetching a channel it holds no state of (engine/shardsync.c):
 * takes the owner's position and history entries (seq order). Another epoch
 * replaces what this node held; the same epoch keeps what it held, each seq
 * once, and the higher position. Nothing is delivered: for channels
 * without local subscribers. */
void channel_merge(struct channel *ch, const char *epoch, uint64_t seq, const struct hist_entry *in,
                   uint32_t n);
/* Adds a message to history without delivering it (sync replies prime a
 * mirror's history). */
void channel_record(struct channel *ch, struct frame *f, uint64_t seq, int64_t ts_ms);
/* Deletes the channel if nothing keeps it: no subscribers, no remote
 * interest, no pins, and no history worth keeping (mirrors keep none). */
void channel_release(struct channel *ch);

/* Expires history and deletes channels left with nothing; call periodically. */
void channel_sweep(int64_t now_ms);

#endif
