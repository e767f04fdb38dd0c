/* sdnotify.c - READY=1 and STOPPING=1 through libsystemd's sd_notify. */
#include "sdnotify.h"
#include "cluster.h"
#include "log.h"
#include "runtime.h"

#include <stdbool.h>
#include <stdlib.h>

#ifdef CHORUS_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

static lws_sorted_usec_list_t ready_timer;
static bool told_ready, told_stopping;

static void tell(const char *state)
{
#ifdef CHORUS_HAVE_SYSTEMD
    int rc = sd_notify(0, state);
    if (rc > 0)
        log_info("event=sd_notify state=\"%s\"", state);
    else if (rc < 0)
        log_warn("event=sd_notify_failed state=\"%s\" rc=%d", state, rc);
#else
    (void)state;
#endif
}

/* Polled, not pushed: readiness depends on the lease and the committed map,
 * which change in the cluster layer; a 50 ms poll until the first success
 * costs nothing and keeps that layer unaware of systemd. */
static void check_ready(lws_sorted_usec_list_t *sul)
{
    if (told_ready || told_stopping || rt.shutting_down || rt.leaving)
        return;
    if (!cluster_ready()) {
        lws_sul_schedule(rt.ctx, 0, sul, check_ready, 50 * LWS_US_PER_MS);
        return;
    }
    told_ready = true;
    tell("READY=1\nSTATUS=serving");
}

void sdnotify_start(void)
{
    if (!getenv("NOTIFY_SOCKET"))
        return;
    lws_sul_schedule(rt.ctx, 0, &ready_timer, check_ready, 1);
}

void sdnotify_ready_now(void)
{
    if (told_ready || !getenv("NOTIFY_SOCKET"))
        return;
    told_ready = true;
    tell("READY=1\nSTATUS=forwarding");
}

void sdnotify_stopping(void)
{
    if (told_stopping || !getenv("NOTIFY_SOCKET"))
        return;
    told_stopping = true;
    tell("STOPPING=1\nSTATUS=draining");
}

void sdnotify_stop(void)
{
    if (rt.ctx && !rt.event_lib)
        lws_sul_cancel(&ready_timer);
}
