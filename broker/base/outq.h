/* outq.h - a connection's bounded outbound queue of shared frames.
 *
 * A ring of frame references bounded both in frames and in bytes. The ring
 * starts empty and doubles when needed up to the frame bound, so an idle
 * connection costs nothing and a busy one allocates only on growth, never per
 * message. Each entry holds one reference, dropped when the entry is popped.
 *
 * Every entry has a position that never changes while it is queued (entries
 * ever popped + its index), so a caller may remember where an entry sits and
 * find it again in O(1): conflation (conn.c) replaces a channel's newest
 * unsent message in place this way. */
#ifndef CHORUS_OUTQ_H
#define CHORUS_OUTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct frame;

/* One queued frame. */
struct outq_entry {
    struct frame *f;    /* one reference */
    uint32_t skipped;   /* messages this one replaced (conflation); 0 normally */
    uint32_t tag;       /* the pusher's own mark (SSE: the channel's slot + 1); 0: none */
};

struct outq {
    struct outq_entry *ring;
    uint32_t cap;       /* power of two, or 0 before the first push */
    uint32_t head;      /* index of the oldest entry */
    uint32_t count;
    size_t bytes;       /* payload bytes queued */
    uint64_t popped;    /* entries ever popped or cleared: the oldest entry's position */
};

/* Takes a new reference on f. Returns 0, or -1 when adding f to a non-empty
 * queue would pass max_frames or max_bytes (or memory ran out); the queue is
 * unchanged then. An empty queue accepts any single frame. */
int outq_push(struct outq *q, struct frame *f, uint32_t max_frames, size_t max_bytes);
/* The same, marking the entry with tag. */
int outq_push_tag(struct outq *q, struct frame *f, uint32_t tag, uint32_t max_frames,
                  size_t max_bytes);
/* The position of the newest entry (after a push). */
static inline uint64_t outq_last_pos(const struct outq *q) { return q->popped + q->count - 1; }
/* The entry at position pos, or NULL when it is no longer (or not yet) queued. */
struct outq_entry *outq_at(struct outq *q, uint64_t pos);
/* Replaces e's frame with f (a new reference; the old one is dropped) and
 * counts the old one and what it had replaced in e->skipped. -1 when the
 * queue would pass max_bytes; nothing changes then. */
int outq_replace(struct outq *q, struct outq_entry *e, struct frame *f, size_t max_bytes);
static inline struct outq_entry *outq_head(const struct outq *q)
{
    return q->count ? &q->ring[q->head] : NULL;
}
static inline struct frame *outq_peek(const struct outq *q)
{
    return q->count ? q->ring[q->head].f : NULL;
}
/* Drops the oldest entry and its reference. */
void outq_pop(struct outq *q);
/* Drops every entry; returns how many there were. Frees the ring. */
uint32_t outq_clear(struct outq *q);
static inline bool outq_empty(const struct outq *q) { return q->count == 0; }

#endif
