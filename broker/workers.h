/* workers.h - `--workers N`: N chorusd processes on one port, one per core.
 *
 * Each worker binds its own listening socket to the same port with
 * SO_REUSEPORT, so the kernel spreads connections across them, and adopts
 * the connections it accepts into its lws context (Debian's lws cannot share
 * a listener itself: LWS_MAX_SMP is 1). The workers form a cluster of their
 * own over ipc:// sockets, so a channel's subscribers on any worker share one
 * sequence exactly as across machines. The parent only supervises: it
 * forwards SIGTERM/SIGINT and restarts a worker that dies. */
#ifndef CHORUS_WORKERS_H
#define CHORUS_WORKERS_H

#include "config.h"

/* In the parent: forks the workers and supervises them until a signal;
 * returns the exit code. In a worker (never returns there): rewrites cfg into
 * that worker's node and returns -1 so main goes on to serve. */
int workers_run(struct config *cfg);

/* The worker's own socket (SO_REUSEPORT), bound but not yet listening, or
 * -1 on error. The worker calls listen() once it is ready to serve: the
 * kernel hands connections only to listening members of the port's group,
 * so none lands on a worker still waiting for its lease. */
int workers_listen(const struct config *cfg);

#endif
