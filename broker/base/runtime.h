/* runtime.h - what every layer of one chorusd process shares: its config,
 * its lws context and vhost, whether it is shutting down, and the clock.
 *
 * One of these exists per process (`rt`); server.c fills it at start and
 * sets shutting_down; every other file only reads it, and only the
 * event-loop thread touches it. */
#ifndef CHORUS_RUNTIME_H
#define CHORUS_RUNTIME_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"

struct runtime {
    const struct config *cfg;
    struct lws_context *ctx;      /* NULL before start and after stop */
    struct lws_vhost *vh;
    bool draining;                /* SIGTERM came: /healthz 503, upgrades refused, clients still served */
    bool leaving;                 /* SIGTERM in a cluster: handing shards over before shutting down */
    bool shutting_down;           /* set once the drain begins (SIGTERM/SIGINT); never cleared */
    bool event_lib;               /* lws runs on libev (epoll) instead of its poll loop */
};

extern struct runtime rt;

/* Milliseconds since the Unix epoch (message timestamps). */
int64_t runtime_now_ms(void);
/* Milliseconds on the monotonic clock: leases and timeouts, which a
 * wall-clock step must not stretch. It keeps running while the process is
 * stopped (SIGSTOP), so a resumed node sees how long it was gone. */
int64_t runtime_mono_ms(void);
/* The same clock in microseconds: latency metrics (frame.h's stamps). */
int64_t runtime_mono_us(void);

#endif
