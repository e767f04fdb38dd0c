/* fabric.h - the ZeroMQ sockets between nodes and the dispatch of what
 * arrives on them; internal to the cluster layer (cluster.h is its API).
 *
 * Each node binds one XPUB and connects one SUB to every peer (mesh), or
 * connects both to a forwarder (XSUB/XPUB proxy). Topics are "<channel>\0"
 * for channel messages, "!hb\0" for heartbeats and "!to:<node>\0" for
 * messages addressed to one node; '!' cannot start a channel name, so the
 * spaces never overlap. Every received envelope goes to the one handler
 * registered for its type (cluster_handle); the periodic tick sends the
 * heartbeat, reports silent peers and runs the registered tick handlers. */
#ifndef CHORUS_FABRIC_H
#define CHORUS_FABRIC_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>

#include "cluster.h"

/* Opens, binds or connects and adopts the sockets. 0, or -1 (logged). */
int fabric_start(const struct config *cfg, struct lws_vhost *vh);
/* Starts the periodic tick (heartbeat, liveness, tick handlers). */
void fabric_run(void);
/* Closes the sockets; forgets every handler. */
void fabric_stop(void);

/* Sends topic, header and parts as one multipart message. Returns -1 when
 * the message was not sent (high-water mark); the caller's protocol copes
 * (requests time out, gaps are repaired). */
int fabric_send(const char *topic, size_t tlen, const struct envelope *env,
                const struct cluster_part *parts, int nparts);
/* Starts or stops receiving a topic (tlen includes its NUL). */
void fabric_subscribe(const char *topic, size_t tlen, bool on);
/* Connects or disconnects the SUB socket to or from a peer's endpoint. */
int fabric_connect(const char *endpoint);
void fabric_disconnect(const char *endpoint);

/* What the XPUB socket heard: another node subscribed (on) to a channel's
 * topic or dropped it. One handler (stream.c). */
typedef void fabric_subscription_fn(const char *name, size_t len, bool on);
void fabric_on_subscription(fabric_subscription_fn *fn);

/* Reads what is waiting soon, from the loop (after a zmq call made outside
 * the fd callback: ZMQ_FD is edge-triggered). */
void fabric_drain_later(void);

#endif
