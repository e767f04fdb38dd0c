/* histogram.h - fixed-bucket latency histograms for the Prometheus exposition.
 *
 * One bucket table serves every histogram: powers of two of 128 us, from
 * 128 us to 8.4 s, so an observation finds its bucket with one shift and a
 * count of leading zeros (no scan, no division, no clock read) and is two
 * additions. The write path (session/latency.h) adds a frame's deliveries of
 * one loop turn at once; the exposition makes the counts cumulative. */
#ifndef CHORUS_HISTOGRAM_H
#define CHORUS_HISTOGRAM_H

#include <stdint.h>

#define HISTOGRAM_SHIFT 7        /* the first bound: 2^7 us */
#define HISTOGRAM_BUCKETS 17     /* bounds 2^7 .. 2^23 us (8.39 s), then +Inf */

struct histogram {
    uint64_t counts[HISTOGRAM_BUCKETS + 1]; /* the last one is +Inf */
    uint64_t sum_us;
};

/* Adds n observations of us microseconds. */
static inline void histogram_observe_us_n(struct histogram *h, int64_t us, uint64_t n)
{
    if (us < 0)
        us = 0; /* a frame stamped after the clock read of its write batch */
    uint64_t v = (uint64_t)(us > 0 ? us - 1 : 0) >> HISTOGRAM_SHIFT;
    /* bucket i holds (2^(i-1+SHIFT), 2^(i+SHIFT)] us; bucket 0 up to 2^SHIFT */
    int i = v ? 64 - __builtin_clzll(v) : 0;
    h->counts[i < HISTOGRAM_BUCKETS ? i : HISTOGRAM_BUCKETS] += n;
    h->sum_us += (uint64_t)us * n;
}

struct sbuf;
/* Appends the family (HELP, TYPE, _bucket, _sum, _count) in seconds. */
void histogram_render(struct sbuf *b, const char *name, const char *help, const struct histogram *h);

#endif
