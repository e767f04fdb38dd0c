/* outq.h - a connection's bounded outbound queue of shared frames.
 *
 * A ring of frame references bounded both in frames and in bytes. The ring
 * starts empty and doubles when needed up to the frame bound, so an idle
 * connection costs nothing and a busy one allocates only on growth, never per
 * message. Each entry holds one reference, dropped when the entry is popped. */
#ifndef CHORUS_OUTQ_H
#define CHORUS_OUTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct frame;

struct outq {
    struct frame **ring;
    uint32_t cap;       /* power of two, or 0 before the first push */
    uint32_t head;      /* index of the oldest entry */
    uint32_t count;
    size_t bytes;       /* payload bytes queued */
};

/* Takes a new reference on f. Returns 0, or -1 when adding f to a non-empty
 * queue would pass max_frames or max_bytes (or memory ran out); the queue is
 * unchanged then. An empty queue accepts any single frame. */
int outq_push(struct outq *q, struct frame *f, uint32_t max_frames, size_t max_bytes);
static inline struct frame *outq_peek(const struct outq *q)
{
    return q->count ? q->ring[q->head] : NULL;
}
/* Drops the oldest entry and its reference. */
void outq_pop(struct outq *q);
/* Drops every entry; returns how many there were. Frees the ring. */
uint32_t outq_clear(struct outq *q);
static inline bool outq_empty(const struct outq *q) { return q->count == 0; }

#endif
