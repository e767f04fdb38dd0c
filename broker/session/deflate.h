/* deflate.h - permessage-deflate (RFC 7692) with one compression per
 * message: the negotiation through lws' extension hooks, the shared
 * compressor that gives a frame its compressed form once for every
 * connection that negotiated it, and the inflation of what clients send,
 * bounded by --max-frame-bytes. PROTOCOL.md section 1.1 is the contract. */
#ifndef CHORUS_DEFLATE_H
#define CHORUS_DEFLATE_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>

#include "frame.h"

struct conn;

/* The extension table for the vhost (info.extensions), when
 * config_compression_any(). Its callback passes every payload through: lws
 * only negotiates and accepts RSV1; conn.c and ws.c do the rest. */
extern const struct lws_extension deflate_extensions[];

/* LWS_CALLBACK_CONFIRM_EXTENSION_OKAY: 0 accepts the client's offer, 1
 * declines it (the connection then goes on uncompressed). */
int deflate_confirm(struct conn *c, struct lws *wsi, const char *ext_name);
/* LWS_CALLBACK_ADD_HEADERS of an upgrade: completes the response's
 * Sec-WebSocket-Extensions for a connection that negotiated it. -1 fails the
 * upgrade. */
int deflate_add_headers(struct conn *c, void *args);

/* The compressed form of f for a connection that negotiated the extension,
 * made on the first call and kept on f; NULL when f goes as it is (a control
 * frame, small, its namespace says no, or compressing did not make it
 * smaller). The result lives as long as f. Inline: every delivery to such a
 * connection asks, and only the first one compresses. */
struct frame *deflate_frame_make(struct frame *f);
static inline struct frame *deflate_frame(struct frame *f)
{
    return f->z_tried ? f->z : deflate_frame_make(f);
}

/* Inflates one compressed message (the payload with the 00 00 ff ff tail
 * stripped, RFC 7692 7.2.2) into a buffer shared by every connection, valid
 * until the next call. 0 with *out and *out_len; 1 when it inflates to more
 * than max bytes (nothing more is inflated); -1 when it is not valid DEFLATE
 * data. */
int deflate_inflate(const unsigned char *in, size_t len, size_t max, const unsigned char **out,
                    size_t *out_len);

/* Longest compressed message worth inflating when max is the limit on the
 * inflated one: DEFLATE's stored blocks add 5 bytes per 65,535. */
static inline size_t deflate_input_max(size_t max) { return max + max / 8192 + 64; }

#endif
