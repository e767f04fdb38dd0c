/* forwarder.h - `chorusd --forwarder`: the cluster's XSUB/XPUB proxy.
 *
 * Nodes connect their XPUB to the forwarder's XSUB (the cluster-bind port)
 * and their SUB to its XPUB (port + 1) instead of meshing with every peer:
 * N links instead of N^2, subscriptions still flow upstream so nodes receive
 * only what their clients follow. */
#ifndef CHORUS_FORWARDER_H
#define CHORUS_FORWARDER_H

#include "config.h"

/* Runs until SIGTERM/SIGINT; returns the process exit code. */
int forwarder_run(const struct config *cfg);

#endif
