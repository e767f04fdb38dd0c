/* cluster.h - the cluster layer's API: chorusd nodes linked by ZeroMQ
 * PUB/SUB (fabric.h), who is up and who owns each channel (membership.h),
 * requests to owners, and the handlers the layers above register.
 *
 * Every channel has one owner, named by the shard map the nodes agree on
 * through Raft (consensus.h, placement.h); only the owner sequences. Other nodes forward publishes to it and
 * mirror its stream for their local subscribers, repairing gaps from the
 * owner's history (PROTOCOL.md section 7). This layer knows channels (it
 * carries their streams) but nothing above them: the engine and session
 * layers hear from it only through the handlers they register at start. */
#ifndef CHORUS_CLUSTER_H
#define CHORUS_CLUSTER_H

#include <jansson.h>
#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "envelope.h"
#include "errors.h"

struct channel;

struct cluster_part {
    const unsigned char *data;
    size_t len;
};

struct cluster_call;
/* Called exactly once per started call: with the owner's reply, or with a
 * NULL reply after the timeout or when the owner is unreachable. `parts` are
 * the payload frames of the reply (valid only during the call). The call is
 * already unlinked, so the callback may free it. */
typedef void cluster_call_cb(struct cluster_call *call, const struct envelope *rep,
                             const struct cluster_part *parts, int nparts);

/* A request waiting for the owner's reply. Embedded in, and owned by, the
 * caller; linked into the cluster's pending list while outstanding. */
struct cluster_call {
    uint64_t id;
    int64_t deadline_ms;
    char target[ENVELOPE_ID_MAX + 1];   /* the node asked; its death fails the call at once */
    cluster_call_cb *cb;
    void *ud;
    struct cluster_call *prev, *next;   /* the outstanding calls (rpc.c) */
};

/* Starts the fabric when the config names a cluster; a no-op otherwise. */
int cluster_start(const struct config *cfg, struct lws_vhost *vh);
void cluster_stop(void);
bool cluster_enabled(void);

/* True once the cluster committed a shard map and this node holds a lease
 * (lease.h); false before, and while it is cut off from the majority. */
bool cluster_ready(void);
/* True while this node may acknowledge and deliver: it holds a lease (always
 * true without a cluster). */
bool cluster_can_act(void);
/* Planned leave: asks the leader to move this node's shards to their
 * backups now (it keeps its lease meanwhile); cluster_left() is true once
 * the committed map names it nowhere (or it holds no lease any more). */
void cluster_leave(void);
bool cluster_left(void);
/* Hands Raft leadership to another voter if this node leads (before exit). */
void cluster_step_down(void);
/* Monotonic ms since this node lost its lease (0 while it holds one). */
int64_t cluster_lease_lost_ms(void);
/* The committed shard map's version (0 before the first). */
uint64_t cluster_map_version(void);

/* True when the committed map makes this node the channel's owner (always
 * true without a cluster); it sequences only while cluster_can_act(). */
bool cluster_is_owner(const char *ch, size_t len);
/* The owner's node id (this node's own id when it owns the channel), or
 * NULL when the shard has no owner yet. */
const char *cluster_owner_of(const char *ch, size_t len);

/* Sends a publish to the channel's owner (flags: ENV_FLAG_BINARY), stamped
 * with this node's map version; attr (may be NULL) is the publisher's
 * attested identity (codec_attr). Returns 0 when the call was sent
 * (cb follows later), or -1 when no owner is reachable (cb is never called). */
int cluster_forward_publish(const char *ch, size_t len, const char *data, size_t data_len,
                            uint8_t flags, const char *client, const char *attr, const char *key,
                            struct cluster_call *call, cluster_call_cb *cb, void *ud);
/* cluster_sync's limit for "every message after since". */
#define CLUSTER_SYNC_ALL 0xffffffffu
/* Asks the owner for its position and messages after `since` (when given);
 * `join` says this node starts following the channel (the owner then keeps
 * it), otherwise a channel the owner does not hold is not created. */
int cluster_sync(const char *ch, size_t len, bool has_since, const char *epoch, uint64_t seq,
                 uint32_t limit, bool join, struct cluster_call *call, cluster_call_cb *cb,
                 void *ud);
/* Calls fn for each message of a SYNC_REP's payload (parts after the
 * channel name, up to n), oldest first, as a frame fn may take a reference
 * to. */
struct frame;
typedef void cluster_sync_item_fn(struct frame *f, uint64_t seq, int64_t ts_ms, void *ud);
void cluster_sync_each(const struct cluster_part *parts, int n, cluster_sync_item_fn *fn, void *ud);
/* cluster_sync for a new backup: everything, with the idempotency keys (the
 * reply's last frame: per key, seq as 8 bytes big-endian, length, bytes). */
int cluster_sync_state(const char *ch, size_t len, struct cluster_call *call, cluster_call_cb *cb,
                       void *ud);
/* The channel's backups in the committed map (node ids, the first takes
 * over when the owner is gone), at most max, and the shard's gen, which
 * REPL carries and backups check. */
int cluster_backups_of(const char *ch, size_t len, const char **out, int max, uint64_t *gen);
uint64_t cluster_shard_gen(const char *ch, size_t len);
/* Backup side: accept REPL from origin at gen? Only when the map names this
 * node a backup of the channel's shard at exactly that gen, origin its
 * owner, and this node holds a lease. */
bool cluster_backup_accepts(const char *ch, size_t len, const char *origin, uint64_t gen);
/* The new owner continues the epoch of a replica it accepted REPL for at
 * repl_gen (it was the backup all along); otherwise a new epoch starts. */
bool cluster_continues(const char *ch, size_t len, uint64_t repl_gen);
/* ------------------------------------------------------------ shards
 * Channels are grouped in CLUSTER_SHARDS shards; the committed map places
 * each shard (owner, backups). A node that becomes a backup fetches the
 * state of the shard's channels from the owner (engine/shardsync.c) and
 * says so with its lease requests: the leader moves a shard only to a node
 * that holds its state, so a planned move keeps every channel's epoch. */
#define CLUSTER_SHARDS 64
enum cluster_role { CLUSTER_ROLE_NONE, CLUSTER_ROLE_OWNER, CLUSTER_ROLE_BACKUP };
unsigned cluster_shard_of(const char *ch, size_t len);
/* This node's role in the shard (OWNER without a cluster); for a backup,
 * *since is the map version it has been one since. *owner is the owner's
 * id, or NULL while the shard has none. */
enum cluster_role cluster_shard_role(unsigned shard, uint64_t *since, const char **owner);
/* Bit s set: this node holds the state of shard s for its current role. */
void cluster_set_synced(uint64_t mask);
/* Planned moves (PROTOCOL.md 7.4): true while the committed map has this
 * node, the channel's owner, hand the channel's shard to a backup. It then
 * sequences nothing new for the shard (publish.c holds publishes back) and,
 * bit s set, says it has nothing pending there, after which the leader
 * switches owners. */
bool cluster_handing_off(const char *ch, size_t len);
bool cluster_shard_handing_off(unsigned shard);
void cluster_set_quiesced(uint64_t mask);
/* Asks the shard's owner for the names of its channels in that shard that
 * sort after `after` (sorted, at most limit; the reply's ENV_FLAG_MORE says
 * more remain). Same contract as cluster_sync. */
int cluster_shard_list(unsigned shard, const char *after, size_t after_len, uint32_t limit,
                       struct cluster_call *call, cluster_call_cb *cb, void *ud);
/* Sends e to `node` as a call (its req_id set to the call's id): cb gets
 * the reply whose req_id matches (a handler registered for the reply type
 * routes it here), or NULL after cluster_timeout_ms or when the node goes
 * down. Same contract as cluster_sync. Only reply types rpc.c routes:
 * ENV_API_REQ -> ENV_API_REP. */
int cluster_call_node(const char *node, struct envelope *e, const struct cluster_part *parts,
                      int nparts, struct cluster_call *call, cluster_call_cb *cb, void *ud);
/* Sends one envelope addressed to `node`; -1 when it could not be queued. */
int cluster_send_to(const char *node, const struct envelope *env, const struct cluster_part *parts,
                    int nparts);
/* Clears e and sets its type and this node as origin. */
void cluster_env_init(struct envelope *e, uint8_t type);

/* Sends one envelope on channel ch's topic, to every node following it. */
int cluster_send_channel(const char *ch, size_t len, const struct envelope *env,
                         const struct cluster_part *parts, int nparts);
/* Answers request req with an error reply of `type` (status code + 1, msg). */
void cluster_reply_status(const struct envelope *req, uint8_t type, enum chorus_err code,
                          const char *msg);
/* A reply's outcome: CHORUS_ERR__COUNT for success; a NULL reply (timeout,
 * owner gone) is CHORUS_ERR_UNAVAILABLE. */
enum chorus_err cluster_reply_code(const struct envelope *rep);
/* A failed reply's reason as text (the owner's message, or why there was
 * no answer). */
void cluster_reply_text(const struct envelope *rep, const struct cluster_part *parts, int n,
                        char *out, size_t cap);

/* Calls waiting for a reply (a leaving node waits for them before it goes:
 * some are publishes it forwarded for other nodes). */
int cluster_calls_outstanding(void);
/* Forgets an outstanding call; its cb will not be called. */
void cluster_call_cancel(struct cluster_call *call);

/* ------------------------------------------------------------ handlers
 * Registered by the layers above at start (after cluster_start), forgotten
 * by cluster_stop. Without a cluster they are never called. */

/* An envelope of one type arrived from another node; topic is the topic it
 * came on (the channel name with its NUL for MSG and POS). */
typedef void cluster_handler_fn(const struct cluster_part *topic, const struct envelope *env,
                                const struct cluster_part *parts, int n);
/* One handler per type; a type without one is dropped. */
void cluster_handle(uint8_t type, cluster_handler_fn *fn);
/* Every tick (100 ms), after liveness was checked. */
typedef void cluster_tick_fn(int64_t now_ms);
void cluster_on_tick(cluster_tick_fn *fn);
/* A node stopped answering (after this layer failed the calls made to it). */
typedef void cluster_peer_down_fn(const char *node);
void cluster_on_peer_down(cluster_peer_down_fn *fn);
/* Local subscribers of ch went 0 -> 1 (on) or 1 -> 0, before this node
 * subscribes to or drops the channel's stream. */
typedef void cluster_interest_fn(struct channel *ch, bool on);
void cluster_on_interest(cluster_interest_fn *fn);
/* Some other node started following ch (on: its first subscriber among
 * the peers this node hears) or the last one stopped, as this node's XPUB
 * reports it. */
typedef void cluster_remote_interest_fn(const char *ch, size_t len, bool on);
void cluster_on_remote_interest(cluster_remote_interest_fn *fn);
/* The committed shard map changed; is_owner() and friends already answer
 * from the new one. */
typedef void cluster_map_fn(void);
void cluster_on_map(cluster_map_fn *fn);

/* Adopts a ZeroMQ socket's fd into lws (the "chorus-zmq" protocol callback). */
int cluster_zmq_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len);

/* Figures for /metrics and /healthz. */
struct cluster_peer_info {
    const char *node;
    bool up;
    int64_t last_seen_ms;
};
int cluster_peers(struct cluster_peer_info *out, int max);

#endif
