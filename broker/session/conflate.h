/* conflate.h - slow_consumer "conflate" (PROTOCOL.md 5.1): a lagging
 * connection gets a channel's newest message in place of the one it still
 * has queued, marked with how many it replaced ("skipped").
 *
 * The shared msg frame is never copied or re-encoded for this: the queue
 * entry keeps the count, and the writer splices `"skipped":N,` into the
 * payload as it copies it to the socket (conn.c, sse.c). Finding the entry
 * to replace is O(1): each subscription remembers the queue position of its
 * channel's newest unsent msg (struct sub.queued). */
#ifndef CHORUS_CONFLATE_H
#define CHORUS_CONFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sub;
struct frame;
struct outq;

/* For a msg f to s->conn, whose queue is q: 1 when f took the place of the
 * channel's queued msg, 0 to queue f as usual, -1 when even the replacement
 * does not fit the queue's bounds (the connection is a slow consumer). */
int conflate_replace(struct outq *q, struct sub *s, struct frame *f);

/* The payload of f with "skipped":skipped added: its length, and the bytes
 * written to out (which has room for that length). */
size_t conflate_payload_len(const struct frame *f, uint32_t skipped);
void conflate_payload(unsigned char *out, const struct frame *f, uint32_t skipped);

struct conn;
/* Caps c's socket send buffer at --conflate-sndbuf-bytes and its unsent
 * bytes at --conflate-notsent-bytes (TCP_NOTSENT_LOWAT), once, at its first
 * message of a conflating namespace: what the kernel buffers is beyond
 * conflation's reach, and Linux grows a slow reader's buffer to megabytes,
 * seconds of stale quotes (docs/benchmarks.md, ticker scenario). */
void conflate_cap_sndbuf(struct conn *c);

/* How many bytes conn_flush may write to such a connection now: 0 while its
 * socket holds --conflate-notsent-bytes unsent (wait for WRITEABLE, which
 * TCP_NOTSENT_LOWAT holds back until then; meanwhile its messages queue
 * here, where conflation reaches them), the room left below that while its
 * reader's window is what holds it back, a whole batch once it has caught
 * up. */
size_t conflate_write_room(struct conn *c);

#endif
