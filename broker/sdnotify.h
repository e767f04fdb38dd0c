/* sdnotify.h - systemd's Type=notify (deploy/systemd/chorusd.service): tell
 * the service manager when this node is ready and when it begins to stop.
 *
 * READY=1 goes once, when the node would first answer /healthz with 200 (it
 * listens and, in a cluster, has joined: cluster_ready()), or for the
 * forwarder once it has bound; STOPPING=1 when SIGTERM starts the drain. Without $NOTIFY_SOCKET (not run by systemd) or
 * when built without libsystemd, every call does nothing. */
#ifndef CHORUS_SDNOTIFY_H
#define CHORUS_SDNOTIFY_H

/* Watches for readiness from the event loop; call once the loop exists. */
void sdnotify_start(void);
/* READY=1 at once: the forwarder (--forwarder) is ready once it has bound. */
void sdnotify_ready_now(void);
void sdnotify_stopping(void);
/* Stops the readiness watch (before the lws context is destroyed). */
void sdnotify_stop(void);

#endif
