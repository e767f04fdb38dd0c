/* latency.c - per-turn accounting of delivery latencies (latency.h). */
#include "latency.h"
#include "metrics.h"
#include "runtime.h"

/* Frames seen in this turn, each with one reference; a full table is
 * observed early and the turn goes on with an empty one. */
#define HELD_MAX 256

uint32_t latency_turn;
static uint32_t turn_ids;
static int64_t turn_now_us;
static struct frame *held[HELD_MAX];
static uint32_t nheld;

static void observe_n(const struct frame *f, int64_t now, uint64_t n)
{
    histogram_observe_us_n(&metrics.delivery_latency, now - f->arrived_us, n);
    histogram_observe_us_n(&metrics.queue_wait, now - f->queued_us, n);
}

static void release_held(void)
{
    for (uint32_t i = 0; i < nheld; i++) {
        struct frame *f = held[i];
        observe_n(f, turn_now_us, f->obs_n);
        f->obs_turn = 0; /* seen again this turn: held again */
        frame_unref(f);
    }
    nheld = 0;
}

void latency_turn_begin(void)
{
    if (++turn_ids == 0)
        turn_ids = 1;
    latency_turn = turn_ids;
    turn_now_us = runtime_mono_us();
}

void latency_turn_end(void)
{
    release_held();
    latency_turn = 0;
}

void latency_hold(struct frame *f)
{
    if (nheld == HELD_MAX)
        release_held();
    held[nheld++] = frame_ref(f);
    f->obs_turn = latency_turn;
    f->obs_n = 0;
}

void latency_observe_now(const struct frame *f, int64_t *now)
{
    if (!*now)
        *now = runtime_mono_us();
    observe_n(f, *now, 1);
}
