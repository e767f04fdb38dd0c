/* readmore.h - lets a small receive buffer read as fast as a large one.
 *
 * lws allocates rx_buffer_size bytes for every WebSocket connection for its
 * whole life and reads at most that much from it per event-loop turn
 * (lws 4.1.6 roles/ws/ops-ws.c). A large buffer costs every idle connection
 * that memory; a small one costs a loop turn per buffer read and, where the
 * turn's writes follow every read (--event-loop poll; with libev they wait
 * until no socket is readable), how many messages each fan-out write can
 * batch (docs/benchmarks.md, "Idle memory"). So the buffer is small
 * (--rx-buffer-bytes) and a connection that filled it in a turn is read
 * again at the end of that turn, before the turn's writes, by servicing its
 * socket once more per buffer's worth of bytes waiting in the kernel, up to
 * --rx-turn-bytes per turn. Idle and slow connections never pay for it. */
#ifndef CHORUS_READMORE_H
#define CHORUS_READMORE_H

#include <stddef.h>
#include <stdint.h>

struct conn;

/* What a connection received (payload bytes of one RECEIVE callback);
 * past a quarter of the buffer in one turn it is read again at the turn's
 * end. */
void readmore_note(struct conn *c, size_t len);
/* Reads every connection noted this turn once more, up to the per-turn
 * budget; runs before the turn's writes (conn.c) and from its own timer. */
void readmore_run(void);
/* Forgets c (its CLOSED callback). */
void readmore_conn_closed(struct conn *c);

#endif
