/* history.h - the `history` reply ({"op":"history",...,"msgs":[...]}),
 * spliced from stored msg frames so nothing is re-encoded.
 *
 * Shared by the WebSocket op, the HTTP API and the owner's replies to other
 * nodes (history_fetch.h); each returns one frame with one reference for the
 * caller. In a JSON reply a binary message appears as its header object with
 * its bytes base64-encoded in "bin" (binmsg.h). */
#ifndef CHORUS_HISTORY_H
#define CHORUS_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct channel;
struct frame;

/* From this node's copy of the channel (ch may be NULL: no messages). With
 * has_since, only messages after that position, and none when the epoch
 * differs; at most the newest `limit`. */
struct frame *history_local(struct channel *ch, const char *name, bool has_id, long long id,
                            bool has_since, const char *since_epoch, uint64_t since_seq,
                            long long limit);

/* One message of a reply: the JSON text of its msg frame. */
struct history_item {
    const unsigned char *data;
    size_t len;
};
/* The reply frame for channel `name` at position (epoch, seq) holding items
 * in order; NULL when memory ran out. */
struct frame *history_splice(const char *name, bool has_id, long long id, const char *epoch,
                             uint64_t seq, const struct history_item *items, size_t n);
/* The JSON form of binary message frame f, kept in f->alt so it is built
 * once; borrowed (valid while f is). NULL when memory ran out. */
struct frame *history_json_view(struct frame *f);

#endif
