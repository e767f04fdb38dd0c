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

int server_start(const struct config *cfg);
/* Runs the loop until a signal; then drains clients and returns 0. */
int server_run(void);
void server_stop(void);
/* Called in the loop after a signal woke it: refuse new clients, close the
 * open ones with 1001 once their queues drain, then end the loop. */
void server_begin_shutdown(void);

#endif
