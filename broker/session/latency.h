/* latency.h - the delivery latency and queue wait histograms (metrics.h),
 * observed where a message frame is handed to a subscriber's socket.
 *
 * In the end-of-turn flush (conn.c's flush_all), every subscriber written in
 * the turn shares one clock read, so all deliveries of one frame in a turn
 * have the same latency: they are counted on the frame (a compare and an
 * increment per delivery) and go into the histograms once per frame at the
 * end of the turn. Writes outside a turn (WRITEABLE) are observed at once,
 * with one clock read per write batch. */
#ifndef CHORUS_LATENCY_H
#define CHORUS_LATENCY_H

#include <stdint.h>

#include "frame.h"

extern uint32_t latency_turn;       /* the turn's id; 0 outside a turn */

/* Around a turn's writes: begin reads the clock, end observes what the
 * turn counted and drops the references it held. */
void latency_turn_begin(void);
void latency_turn_end(void);

/* Internal: the first delivery of f in this turn, and an observation now. */
void latency_hold(struct frame *f);
void latency_observe_now(const struct frame *f, int64_t *now);

/* f is about to be handed to a socket; *now is the batch's clock read (0
 * until it is needed). */
static inline void latency_observe(struct frame *f, int64_t *now)
{
    if (!f->arrived_us)
        return; /* not a channel message */
    if (!latency_turn) {
        latency_observe_now(f, now);
        return;
    }
    if (f->obs_turn != latency_turn)
        latency_hold(f);
    f->obs_n++;
}

#endif
