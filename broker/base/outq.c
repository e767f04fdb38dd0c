/* outq.c - ring buffer of frame references with frame and byte bounds. */
#include "outq.h"
#include "frame.h"

#include <stdlib.h>
#include <string.h>

static int grow(struct outq *q)
{
    /* One slot first: an idle subscriber holds one reply at a time, and
     * every idle connection keeps its ring (16 bytes, a 32-byte malloc chunk;
     * docs/benchmarks.md, idle memory). */
    uint32_t ncap = q->cap ? q->cap * 2 : 1;
    struct outq_entry *nr = malloc(sizeof *nr * ncap);
    if (!nr)
        return -1;
    /* Unwrap into the new ring so head restarts at 0; positions are
     * relative to head, so they stay valid. */
    for (uint32_t i = 0; i < q->count; i++)
        nr[i] = q->ring[(q->head + i) & (q->cap - 1)];
    free(q->ring);
    q->ring = nr;
    q->cap = ncap;
    q->head = 0;
    return 0;
}

int outq_push_tag(struct outq *q, struct frame *f, uint32_t tag, uint32_t max_frames,
                  size_t max_bytes)
{
    /* An empty queue takes any one frame, so a reply larger than the byte
     * bound (a long history) is still deliverable to a reader that keeps up. */
    if (q->count && (q->count >= max_frames || q->bytes + f->len > max_bytes))
        return -1;
    if (q->count == q->cap && grow(q) < 0)
        return -1;
    q->ring[(q->head + q->count) & (q->cap - 1)] = (struct outq_entry){frame_ref(f), 0, tag};
    q->count++;
    q->bytes += f->len;
    return 0;
}

int outq_push(struct outq *q, struct frame *f, uint32_t max_frames, size_t max_bytes)
{
    return outq_push_tag(q, f, 0, max_frames, max_bytes);
}

struct outq_entry *outq_at(struct outq *q, uint64_t pos)
{
    if (pos < q->popped || pos - q->popped >= q->count)
        return NULL;
    return &q->ring[(q->head + (uint32_t)(pos - q->popped)) & (q->cap - 1)];
}

int outq_replace(struct outq *q, struct outq_entry *e, struct frame *f, size_t max_bytes)
{
    size_t bytes = q->bytes - e->f->len + f->len;
    if (bytes > max_bytes && q->count > 1)
        return -1;
    q->bytes = bytes;
    frame_unref(e->f);
    e->f = frame_ref(f);
    e->skipped++;
    return 0;
}

void outq_pop(struct outq *q)
{
    if (!q->count)
        return;
    struct frame *f = q->ring[q->head].f;
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
    q->popped++;
    q->bytes -= f->len;
    frame_unref(f);
    /* A burst may have grown the ring; give the memory back once it drains so
     * idle connections stay small. */
    if (q->count == 0 && q->cap > 64) {
        free(q->ring);
        q->ring = NULL;
        q->cap = 0;
        q->head = 0;
    }
}

uint32_t outq_clear(struct outq *q)
{
    uint32_t n = q->count;
    while (q->count)
        outq_pop(q);
    free(q->ring);
    /* popped keeps counting: a position remembered before the clear must
     * not name an entry pushed after it. */
    uint64_t popped = q->popped;
    memset(q, 0, sizeof *q);
    q->popped = popped;
    return n;
}
