/* peers.h - finding the other nodes: each --peer tcp://HOST:PORT is
 * resolved again every peer_resolve_interval (every peer_resolve_fast_ms
 * while a peer is down or not heard yet), and the SUB socket follows
 * exactly the addresses it resolves to now (IPv4, or IPv6 for a name with
 * no IPv4 address; at most peer_max_addresses per name, with a warning), so
 * a Kubernetes headless service's pods come and go by themselves. ipc://
 * peers (--workers) are connected once. Internal to the cluster layer. */
#ifndef CHORUS_PEERS_H
#define CHORUS_PEERS_H

#include <stdint.h>

#include "config.h"

/* Connects the configured peers; -1 (logged) when one is not tcp://HOST:PORT
 * or ipc://. Registers the re-resolve tick. */
int peers_start(const struct config *cfg);
/* Resolves every peer name now; the tick keeps it current afterwards. */
void peers_resolve_now(int64_t now_ms);
/* How many peers are given by name (for the start log line). */
int peers_count(void);
void peers_stop(void);

#endif
