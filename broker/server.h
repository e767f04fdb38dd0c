/* server.h - the node's one libwebsockets context: listener, protocols,
 * mounts, timers, start and stop order. The state every layer shares is in
 * runtime.h.
 *
 * One of these exists per process; only the event-loop thread touches it. */
#ifndef CHORUS_SERVER_H
#define CHORUS_SERVER_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "runtime.h"

/* cfg stays the caller's and must outlive the server; SIGHUP changes the
 * settings in it that can change while running (config_reload). */
int server_start(struct config *cfg);
/* main's argv, read again on SIGHUP; without it SIGHUP only logs. */
void server_set_args(int argc, char **argv);
/* Runs the loop until a signal; then drains clients and returns 0. */
int server_run(void);
void server_stop(void);
/* Called in the loop after a signal woke it: refuse new clients at once,
 * close the open ones with 1001 once drain_delay has passed and their
 * queues drain, then end the loop. */
void server_begin_shutdown(void);
/* Called in the loop after a signal woke it: reloads on SIGHUP. */
void server_reload_if_asked(void);

#endif
