/* rpc.h - requests to a channel's owner and the matching of their replies;
 * internal to the cluster layer (the calls themselves are in cluster.h). */
#ifndef CHORUS_RPC_H
#define CHORUS_RPC_H

#include "config.h"

/* Registers the reply handlers, the timeout tick and the peer-down hook. */
void rpc_start(const struct config *cfg);
/* Forgets every outstanding call (their owners die with the process). */
void rpc_stop(void);

#endif
