/* keepalive.h - WebSocket PINGs to every connection and hangups of those that
 * stop answering, on one timing wheel.
 *
 * A connection is PINGed ping_interval after its last PONG (its first PING
 * comes one to two intervals after it opened, at random, so connections
 * opened together are not PINGed together) and dropped when no PONG follows
 * within ping_timeout. Only a PONG counts as proof of life: it shows the
 * client reads what it is sent, which application frames do not. */
#ifndef CHORUS_KEEPALIVE_H
#define CHORUS_KEEPALIVE_H

#include <libwebsockets.h>
#include <stdint.h>

struct conn;

/* A connection's place on the wheel; zeroed with the connection. */
struct conn_keepalive {
    lws_dll2_t slot;           /* in the list of the slot it is due in; detached: none */
    uint32_t seen;             /* time of its last PONG (or of its opening); while a
                                * PING is out, the peer's bytes acked (keepalive.c) */
    uint32_t ping_at;          /* when the unanswered PING went out; 0: none */
};

/* Starts the wheel's timer (rt.ctx and rt.cfg must be set). */
int keepalive_start(void);
/* Cancels the timer; call before the lws context is destroyed. */
void keepalive_stop(void);
/* Frees the wheel; call after every connection closed. */
void keepalive_free(void);

void keepalive_conn_open(struct conn *c);
void keepalive_conn_pong(struct conn *c);
void keepalive_conn_closed(struct conn *c);

#endif
