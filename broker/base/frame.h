/* frame.h - an encoded outgoing WebSocket frame, shared by reference: text
 * (JSON) unless `binary` is set (binmsg.h).
 *
 * A message is encoded once into a frame; every subscriber's queue and the
 * channel's history each hold one reference, never a copy. The buffer keeps
 * LWS_PRE bytes of headroom in front of the payload because lws_write() builds
 * the WebSocket header in place there. Frames live on one event-loop thread,
 * so the count is not atomic. */
#ifndef CHORUS_FRAME_H
#define CHORUS_FRAME_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The headroom lws_write() needs in front of a payload. */
#define FRAME_PRE LWS_PRE

struct frame {
    uint32_t refs;
    uint32_t len;                     /* payload bytes */
    bool binary;                      /* sent as a binary frame (opcode 2); false after frame_new */
    uint8_t opcode;                   /* a control frame's opcode (FRAME_OP_PING); 0 for data */
    uint64_t seq;                     /* a channel's msg: its seq (set by the channel layer
                                       * before fan-out); 0 for every other frame */
    struct frame *alt;                /* binary: its JSON form for history replies, made on
                                       * demand by history.c; one reference, dropped with f */
    int64_t arrived_us;               /* a channel message: when it was sequenced here or
                                       * received from its owner (runtime_mono_us); 0 for
                                       * replies and control frames, which are not timed */
    int64_t queued_us;                /* when its last fan-out queued it to subscribers */
    uint32_t obs_turn;                /* session/latency.h: the write turn it was last counted in */
    uint32_t obs_n;                   /* deliveries counted in that turn */
    bool plain;                       /* never compressed (its namespace has compression off) */
    bool z_tried;                     /* deflate.c has tried to compress it: z is the result */
    struct frame *z;                  /* its permessage-deflate form, made once by deflate.c
                                       * for the first connection that negotiated it and
                                       * shared by all of them; NULL when compressing did not
                                       * pay; one reference, dropped with f */
    unsigned char buf[];              /* FRAME_PRE headroom, then the payload */
};

/* A frame with room for len payload bytes and one reference owned by the caller. */
struct frame *frame_new(size_t len);
/* A frame holding a copy of len bytes of payload. */
struct frame *frame_from(const void *payload, size_t len);

static inline unsigned char *frame_payload(struct frame *f) { return f->buf + FRAME_PRE; }
static inline struct frame *frame_ref(struct frame *f) { f->refs++; return f; }
void frame_unref(struct frame *f);

#define FRAME_OP_PING 0x9
#define FRAME_RSV1 0x40

/* The WebSocket opcode f is sent with. */
static inline uint8_t frame_opcode(const struct frame *f)
{
    return f->opcode ? f->opcode : f->binary ? 0x2 : 0x1;
}

/* Bytes of the unmasked server-to-client WebSocket header for a payload of len. */
static inline size_t frame_ws_header_len(size_t len) { return len < 126 ? 2 : len < 65536 ? 4 : 10; }
/* Writes that header (FIN + text opcode) into out; returns its length. */
size_t frame_ws_header(unsigned char *out, size_t len);
/* The same with another opcode (frame_opcode()); a compressed frame ORs in
 * RSV1 (FRAME_RSV1, RFC 7692 6). */
size_t frame_ws_header_op(unsigned char *out, size_t len, uint8_t opcode);

/* Frames currently allocated (for tests and metrics). */
extern long frame_live;

#endif
