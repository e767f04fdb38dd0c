/* keepalive.c - PINGs and dead-peer hangups on a timing wheel.
 *
 * lws' own idle policy keeps one timer per connection in a single sorted
 * list and re-inserts it at every PONG by walking that list from its head:
 * O(connections) per PONG, so the total grows with the square of the
 * connections (docs/benchmarks.md, the rooms scenario). Here a
 * connection waits in the wheel slot of the moment it next needs looking at;
 * one timer visits the slots as they come due, so a PING, a PONG and a hangup
 * each cost O(1) whatever the number of connections.
 *
 * A PING waits behind whatever is queued for the connection, in chorusd and
 * in the kernel: a slow reader (a conflating one, PROTOCOL.md 5.1) may take
 * longer than ping_timeout just to be sent it. So the wait is counted from
 * when the peer's TCP acknowledged the PING: while it has not, a PING
 * unanswered after ping_timeout drops the connection only if the peer also
 * acknowledged nothing of ours meanwhile (it reads nothing); one
 * acknowledged during the wait gets one more ping_timeout. A peer that
 * reads but never answers is still dropped, after at most twice the
 * timeout. */
#include "keepalive.h"
#include "conn.h"
#include "frame.h"
#include "log.h"
#include "metrics.h"
#include "runtime.h"

#include "tcpstat.h"

#include <stdlib.h>

#define TICK_US (250 * LWS_US_PER_MS) /* the wheel's resolution */
#define TICKS_PER_SEC 4

static struct {
    lws_dll2_owner_t *slots;
    uint32_t nslots;
    uint32_t interval, timeout; /* in ticks */
    uint32_t done;              /* the last tick whose slot was visited */
    lws_usec_t t0;
    uint64_t seed;
    struct frame *ping;         /* the one PING frame every queue shares */
    lws_sorted_usec_list_t timer;
} ka;

/* Ticks since start, from 1: a ping_at of 0 means "no PING pending". */
static uint32_t now_ticks(void) { return (uint32_t)((lws_now_usecs() - ka.t0) / TICK_US) + 1; }

static void link_at(struct conn *c, uint32_t due)
{
    lws_dll2_add_head(&c->ka.slot, &ka.slots[due % ka.nslots]);
}

/* Does what c needs at time now and puts it where it is next due. Visiting
 * a connection early (a slot is reused every lap of the wheel) only puts it
 * back, so the wheel may be shorter than the longest wait. */
static void visit(struct conn *c, uint32_t now)
{
    if (c->closing)
        return; /* its close is under way, bounded by conn_close_with() */
    if (c->ka.ping_at) {
        if (now - c->ka.ping_at >= ka.timeout) {
            /* While a PING is out, `seen` holds bytes_acked as it was when
             * this wait began: past ping_end, the PING had reached the peer. */
            uint32_t acked = tcpstat_acked(c->wsi);
            bool reached = c->ping_end && (int32_t)(c->ka.seen - c->ping_end) >= 0;
            if (!reached && acked != c->ka.seen) {
                c->ka.seen = acked;
                c->ka.ping_at = now;
                metrics.ping_extensions++;
                link_at(c, now + ka.timeout);
                return;
            }
            metrics.ping_timeouts++;
            log_info("event=ping_timeout client=%s", c->id);
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            return;
        }
        link_at(c, c->ka.ping_at + ka.timeout);
        return;
    }
    uint32_t due = c->ka.seen + ka.interval;
    if ((int32_t)(now - due) < 0) {
        link_at(c, due);
        return;
    }
    c->ka.ping_at = now;
    c->ka.seen = tcpstat_acked(c->wsi);
    c->ping_end = 0;
    metrics.pings_sent++;
    conn_enqueue(c, ka.ping);
    link_at(c, now + ka.timeout);
}

static void tick(lws_sorted_usec_list_t *sul)
{
    uint32_t now = now_ticks();
    /* After a stall longer than a lap, one lap still visits everyone. */
    if (now - ka.done > ka.nslots)
        ka.done = now - ka.nslots;
    while (ka.done != now) {
        /* Take the slot's list whole: a visit may link a connection into
         * this same slot again, for its next lap. */
        lws_dll2_owner_t *slot = &ka.slots[++ka.done % ka.nslots], due = *slot;
        lws_dll2_owner_clear(slot);
        while (due.head) {
            struct conn *c = lws_container_of(due.head, struct conn, ka.slot);
            due.head = due.head->next;
            lws_dll2_clear(&c->ka.slot);
            visit(c, now);
        }
    }
    lws_sul_schedule(rt.ctx, 0, sul, tick, TICK_US);
}

int keepalive_start(void)
{
    ka.interval = (uint32_t)rt.cfg->ping_interval * TICKS_PER_SEC;
    ka.timeout = (uint32_t)rt.cfg->ping_timeout * TICKS_PER_SEC;
    ka.nslots = ka.interval + ka.timeout + 2;
    ka.slots = calloc(ka.nslots, sizeof *ka.slots);
    /* With a payload: lws hands a PONG to the callback only when it has one. */
    ka.ping = frame_from("k", 1);
    if (!ka.slots || !ka.ping) {
        keepalive_free();
        return -1;
    }
    ka.ping->opcode = FRAME_OP_PING;
    ka.t0 = lws_now_usecs();
    ka.seed = (uint64_t)ka.t0;
    ka.done = now_ticks();
    lws_sul_schedule(rt.ctx, 0, &ka.timer, tick, TICK_US);
    return 0;
}

void keepalive_stop(void) { lws_sul_cancel(&ka.timer); }

void keepalive_free(void)
{
    free(ka.slots);
    ka.slots = NULL;
    frame_unref(ka.ping);
    ka.ping = NULL;
}

void keepalive_conn_open(struct conn *c)
{
    if (!ka.slots)
        return;
    /* The first PING comes at a random moment within the first interval:
     * that spreads the PINGs of connections opened together over a whole
     * interval, and never leaves a new connection silent for longer than
     * one interval (a proxy's idle timeout above ping_interval holds it,
     * docs/deploy.md). "Last seen" is put that far in the past; the tick
     * counter wraps like every other time on the wheel. */
    ka.seed = ka.seed * 6364136223846793005ull + 1442695040888963407ull;
    c->ka.seen = now_ticks() - (uint32_t)((ka.seed >> 33) % ka.interval);
    c->ka.ping_at = 0;
    link_at(c, c->ka.seen + ka.interval);
}

void keepalive_conn_pong(struct conn *c)
{
    c->ka.seen = now_ticks();
    c->ka.ping_at = 0;
    if (ka.slots && !lws_dll2_is_detached(&c->ka.slot)) { /* detached: closing */
        lws_dll2_remove(&c->ka.slot);
        link_at(c, c->ka.seen + ka.interval);
    }
}

void keepalive_conn_closed(struct conn *c)
{
    if (ka.slots)
        lws_dll2_remove(&c->ka.slot);
}
