/* mirror.h - channels whose owner is another node.
 *
 * A node that is not a channel's owner keeps a mirror of it for its local
 * subscribers: it joins the owner's stream (sync reply, then live messages),
 * repairs gaps from the owner's history before delivering anything later, and
 * forwards history requests to the owner (publishes go through publish.h). */
#ifndef CHORUS_MIRROR_H
#define CHORUS_MIRROR_H

#include <stddef.h>

#include "codec.h"
#include "envelope.h"

struct channel;
struct conn;

/* {"op":"sub"} on a channel owned elsewhere; c is already subscribed to ch.
 * The ack is sent once the mirror is current. */
void mirror_sub(struct conn *c, struct channel *ch, const struct codec_request *req);
/* {"op":"history"} for a channel owned elsewhere. */
void mirror_history(struct conn *c, const struct codec_request *req);

/* c stops waiting on ch (unsubscribe) or on everything (close). */
void mirror_unsub(struct conn *c, struct channel *ch);
void mirror_conn_closed(struct conn *c);

/* Keeps a replicated message that arrived during a join or repair, to be
 * applied (and acknowledged) when the sync is done; false when there is no
 * sync running or the hold is full. */
bool mirror_hold_repl(struct channel *ch, const struct envelope *env, const unsigned char *data,
                      size_t len, const char *key);

/* The owner's position beacon (POS) for a channel with local subscribers. */
void mirror_on_pos(struct channel *ch, const struct envelope *env);
/* A MSG from the owner for a channel with local subscribers. */
void mirror_on_msg(struct channel *ch, const struct envelope *env, const unsigned char *data,
                   size_t len);

#endif
