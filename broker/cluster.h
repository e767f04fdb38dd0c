/* cluster.h - the node fabric: ZeroMQ PUB/SUB links between chorusd nodes.
 *
 * Each node binds one XPUB and connects one SUB to every peer (mesh), or
 * connects both to a forwarder (XSUB/XPUB proxy). Topics are
 * "<channel>\0" for channel messages, "!hb\0" for heartbeats and
 * "!to:<node>\0" for messages addressed to one node; '!' cannot start a
 * channel name, so the spaces never overlap.
 *
 * Every channel has one owner, chosen by rendezvous hashing over the live
 * members; only the owner sequences. Other nodes forward publishes to it and
 * mirror its stream for their local subscribers, repairing gaps from the
 * owner's history (PROTOCOL.md section 7). */
#ifndef CHORUS_CLUSTER_H
#define CHORUS_CLUSTER_H

#include <jansson.h>
#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "envelope.h"

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
    struct cluster_call *prev, *next;
};

/* Starts the fabric when the config names a cluster; a no-op otherwise. */
int cluster_start(const struct config *cfg, struct lws_vhost *vh);
void cluster_stop(void);
bool cluster_enabled(void);

/* False for the first moments after start, until heartbeats have had time
 * to arrive from every peer: before that this node would wrongly believe it
 * owns channels that belong to peers it has not heard yet. */
bool cluster_ready(void);

/* True when this node sequences the channel (always true without a cluster). */
bool cluster_is_owner(const char *ch, size_t len);

/* Sends a publish to the channel's owner. Returns 0 when the call was sent
 * (cb follows later), or -1 when no owner is reachable (cb is never called). */
int cluster_forward_publish(const char *ch, size_t len, const char *data, size_t data_len,
                            bool binary, const char *client, const char *key,
                            struct cluster_call *call, cluster_call_cb *cb, void *ud);
/* Asks the owner for its position and messages after `since` (when given);
 * `join` says this node starts following the channel (the owner then keeps
 * it), otherwise a channel the owner does not hold is not created. */
int cluster_sync(const char *ch, size_t len, bool has_since, const char *epoch, uint64_t seq,
                 uint32_t limit, bool join, struct cluster_call *call, cluster_call_cb *cb,
                 void *ud);
/* The node that takes over when the owner dies (second by rendezvous
 * score among live nodes), or NULL when no other node is up. */
const char *cluster_backup_of(const char *ch, size_t len);
/* Sends one envelope addressed to `node`; -1 when it could not be queued. */
int cluster_send_to(const char *node, const struct envelope *env, const struct cluster_part *parts,
                    int nparts);
/* Clears e and sets its type and this node as origin. */
void cluster_env_init(struct envelope *e, uint8_t type);

/* Announces a local presence change of `key` in channel ch to the nodes
 * following it (member is the member's JSON, for joins). No-op without a
 * cluster. */
void cluster_presence_send(const char *ch, bool join, const char *key, const json_t *member);

/* Forgets an outstanding call; its cb will not be called. */
void cluster_call_cancel(struct cluster_call *call);

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
