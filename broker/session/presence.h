/* presence.h - who is in a channel of a namespace with `presence: true`.
 *
 * A member is a user (the token's sub), counted once however many of its
 * connections subscribe; an anonymous connection is a member of its own,
 * named by its client id. Subscribers get {"op":"join"} when a member's
 * first connection subscribes and {"op":"leave"} when its last one leaves,
 * except the connection that caused it. Past the namespace's
 * presence_max_members the events stop and the presence op answers a count
 * without the list, so a big room costs O(1) per subscribe, not O(members).
 *
 * In a cluster a room also holds the members other nodes announced (join and
 * leave deltas, a full list on request and every few seconds, and everything
 * of a node that goes down is dropped), so presence is cluster-wide
 * (PROTOCOL.md section 8.4). A node that stops following a room forgets the
 * others' members (it hears none of their leaves any more), and a node's
 * listing of a member expires unless that node repeats it. One room exists per channel with members; each
 * connection keeps a list of the rooms it joined, so leaving never depends on
 * anything but this file's own state. */
#ifndef CHORUS_PRESENCE_H
#define CHORUS_PRESENCE_H

#include <jansson.h>
#include <stddef.h>

#include "codec.h"

/* Other nodes a member can be present on at once (cluster size bound). */
#define PRESENCE_MAX_NODES 16

/* Node-to-node presence operations (envelope status of ENV_PRES). */
enum { PRESENCE_JOIN = 1, PRESENCE_LEAVE = 2, PRESENCE_FULL = 3, PRESENCE_ASK = 4 };

struct conn;
struct channel;
struct pres_link;

/* Embedded in each connection. */
struct conn_presence {
    struct pres_link *links;      /* rooms this connection is in (utlist DL) */
};

/* c has just subscribed to ch (a no-op outside presence namespaces or when
 * c is in the room already). */
void presence_join(struct conn *c, struct channel *ch);
/* c is about to unsubscribe from ch. */
void presence_leave(struct conn *c, struct channel *ch);
/* c is closing: leaves every room (before its subscriptions are dropped). */
void presence_conn_closed(struct conn *c);

/* {"op":"presence","id"?,"ch"} -> {"op":"presence",id,ch,count,members?} */
void presence_op(struct conn *c, const struct codec_request *req);
/* {"ch","count","members"?} for GET /api/presence; NULL when the namespace
 * has no presence. */
json_t *presence_describe(const char *ch, size_t len);

/* Registers the node-to-node presence handlers (after cluster_start). */
void presence_start(void);
void presence_free(void);

#endif
