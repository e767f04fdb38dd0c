/* tcpstat.h - what the kernel knows of a connection's TCP stream: how much of
 * what we wrote the peer has acknowledged, and how much we have written.
 * Keep-alive uses it to tell a peer that reads slowly from one that reads
 * nothing (keepalive.c). Counts are the low 32 bits: compared, not summed. */
#ifndef CHORUS_TCPSTAT_H
#define CHORUS_TCPSTAT_H

#include <libwebsockets.h>
#include <stdint.h>

/* Bytes of ours the peer's TCP has acknowledged; 0 when unknown. */
uint32_t tcpstat_acked(struct lws *wsi);
/* Bytes we have handed to the socket: acknowledged + still in it. */
uint32_t tcpstat_written(struct lws *wsi);

#endif
