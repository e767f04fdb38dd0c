/* publish.h - the one entry point for publishing, whoever asks (a WebSocket
 * client, the HTTP API, another node) and wherever the channel's owner is.
 *
 * A publish is acknowledged only once it is delivered: sequenced by the owner
 * and, in a cluster, held by the channel's backup node as well, so killing
 * any one node cannot lose an acknowledged message (PROTOCOL.md 7.4). */
#ifndef CHORUS_PUBLISH_H
#define CHORUS_PUBLISH_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cluster.h"
#include "errors.h"

struct pub_wait;
struct pending_msg;
struct parked_pub;

/* Called exactly once per submitted publish unless it is cancelled first:
 * err == CHORUS_ERR__COUNT means success with epoch and seq; otherwise msg
 * says why. `duplicate` is set when an idempotency key matched an earlier
 * publish, whose seq is returned. */
typedef void pub_done_cb(struct pub_wait *w, enum chorus_err err, const char *msg,
                         const char *epoch, uint64_t seq, bool duplicate);

/* A publish in flight. Embedded in, and owned by, whoever submitted it; it
 * must stay valid until done is called or publish_cancel() returns. */
struct pub_wait {
    pub_done_cb *done;
    void *ud;
    /* private */
    struct pending_msg *pm;        /* waiting for the backup's ack */
    struct pub_wait *prev, *next;  /* other waiters of the same message (utlist DL) */
    struct cluster_call call;      /* waiting for a remote owner */
    bool forwarded;
    bool duplicate;                /* waits for an earlier publish with the same key */
    struct parked_pub *parked;     /* held back while the owner hands its shard off */
    char ch[256];
};

/* Publishes data (one valid JSON value as text, delivered byte for byte; or
 * the bytes of a binary message when `binary`) on
 * channel ch; `client` is the publisher's connection id and `key` an
 * idempotency key, either may be NULL. done may run before this returns. */
void publish_submit(const char *ch, size_t len, const char *data, size_t data_len, bool binary,
                    const char *client, const char *key, struct pub_wait *w, pub_done_cb *done,
                    void *ud);
/* publish_submit for an attested publisher: `attr` (codec_attr: its user,
 * and its token's info when the namespace asks for it) goes into the msg
 * frame after "client", on every node, in history and recovery alike. NULL
 * is publish_submit (anonymous and HTTP publishes without "user"). */
void publish_submit_as(const char *ch, size_t len, const char *data, size_t data_len, bool binary,
                       const char *client, const char *attr, const char *key, struct pub_wait *w,
                       pub_done_cb *done, void *ud);
/* A publish another node forwarded here although this node's newer map
 * makes that node the owner: it goes back to it (which serves it once it
 * applied that map), and is answered with its reply (owner.c). */
void publish_bounce(const char *ch, size_t len, const char *data, size_t data_len, bool binary,
                    const char *client, const char *attr, const char *key, struct pub_wait *w,
                    pub_done_cb *done, void *ud);
/* Forgets w; its done will not be called. The message itself may still be
 * delivered. */
void publish_cancel(struct pub_wait *w);
/* Registers the map and tick hooks that release held-back publishes (after
 * cluster_start); a no-op without a cluster. Stop answers what is still
 * held (unavailable). */
void publish_start(const struct config *cfg);
void publish_stop(void);

#endif
