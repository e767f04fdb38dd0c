/* tcpstat.h - what the kernel knows of a connection's TCP stream: how much of
 * what we wrote the peer has acknowledged, how much we have written, how
 * much is not yet sent and what holds it back. Keep-alive uses it to tell a
 * peer that reads slowly from one that reads nothing (keepalive.c), and
 * conflation to keep a slow reader's backlog where it can reach it
 * (conflate.c). Counts are the low 32 bits: compared, not summed. */
#ifndef CHORUS_TCPSTAT_H
#define CHORUS_TCPSTAT_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>

/* Bytes of ours the peer's TCP has acknowledged; 0 when unknown. */
uint32_t tcpstat_acked(struct lws *wsi);
/* Bytes we have handed to the socket: acknowledged + still in it. */
uint32_t tcpstat_written(struct lws *wsi);
/* Bytes from the peer that this side has read from the socket: what TCP
 * received in order minus what still waits unread; 0 when unknown. */
uint32_t tcpstat_read(struct lws *wsi);
/* Bytes in the socket not yet sent; -1 when unknown. */
int tcpstat_unsent(struct lws *wsi);
/* Is what holds unsent bytes back the peer's receive window (it reads
 * slower than we write), rather than only the congestion window (a round
 * trip's wait)? true when unknown. */
bool tcpstat_peer_window_full(struct lws *wsi);

#endif
