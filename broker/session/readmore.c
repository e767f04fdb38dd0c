/* readmore.c - reads a busy connection again within the same loop turn
 * (readmore.h says why).
 *
 * A connection is listed at most once per turn, when the payload it gave
 * this turn passes a quarter of the receive buffer: a read that filled the
 * buffer always holds that much unless its frames are tiny, and a client
 * that sends a message now and then never gets there, so idle and chatty
 * connections cost nothing here. At the end of the turn (before conn.c
 * writes what the turn queued, so the fan-out batches as it did with one
 * large buffer) each listed connection's socket is asked how much is
 * waiting (FIONREAD) and lws services it that many buffers' worth of
 * times, within the budget; one ioctl plus one recv per buffer per busy
 * connection and turn. The list is bounded: a connection that does not fit
 * is simply read again next turn, as lws would anyway. */
#include "readmore.h"
#include "conn.h"
#include "runtime.h"

#include <sys/ioctl.h>

#define READMORE_MAX 1024

static struct conn *listed[READMORE_MAX];
static unsigned n_listed;
static uint16_t turn = 1;      /* 0 is what a new connection holds */
static bool running;
static lws_sorted_usec_list_t timer;

static void run_cb(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    readmore_run();
}

void readmore_note(struct conn *c, size_t len)
{
    if (c->rx_turn != turn) {
        c->rx_turn = turn;
        c->rx_turn_bytes = 0;
    }
    size_t b = c->rx_turn_bytes + len;
    c->rx_turn_bytes = b > UINT16_MAX ? UINT16_MAX : (uint16_t)b;
    /* Reads made by readmore_run itself are within its budget already. */
    if (running || c->rx_more || c->rx_turn_bytes < (unsigned)rt.cfg->rx_buffer_bytes / 4 ||
        rt.cfg->rx_turn_bytes <= rt.cfg->rx_buffer_bytes || n_listed == READMORE_MAX)
        return;
    c->rx_more = true;
    listed[n_listed++] = c;
    if (n_listed == 1)
        lws_sul_schedule(rt.ctx, 0, &timer, run_cb, 1);
}

void readmore_conn_closed(struct conn *c)
{
    if (!c->rx_more)
        return;
    c->rx_more = false;
    for (unsigned i = 0; i < n_listed; i++)
        if (listed[i] == c)
            listed[i] = NULL;
}

/* lws reads rx_buffer_size plus LWS_PRE per service, never more than its
 * per-thread buffer (4096 by default, context.c). */
static size_t read_size(void)
{
    size_t n = (size_t)rt.cfg->rx_buffer_bytes + LWS_PRE;
    return n > 4096 ? 4096 : n;
}

/* Services c's socket as long as bytes wait and the budget lasts; stops when
 * the connection closes (listed[i] is cleared then) or starts closing. */
static void read_again(unsigned i)
{
    struct conn *c = listed[i];
    const size_t step = read_size();
    /* lws' own read this turn already took about one buffer. */
    size_t budget = (size_t)rt.cfg->rx_turn_bytes > step ? (size_t)rt.cfg->rx_turn_bytes - step : 0;
    int fd = (int)lws_get_socket_fd(c->wsi);

    while (budget) {
        int avail = 0;
        if (fd < 0 || ioctl(fd, FIONREAD, &avail) < 0 || avail <= 0)
            return;
        size_t want = (size_t)avail < budget ? (size_t)avail : budget;
        for (size_t k = (want + step - 1) / step; k; k--) {
            struct lws_pollfd pfd = {.fd = fd, .events = LWS_POLLIN, .revents = LWS_POLLIN};
            lws_service_fd(rt.ctx, &pfd);
            if (listed[i] != c || c->closing)
                return;
            budget = budget > step ? budget - step : 0;
        }
    }
}

void readmore_run(void)
{
    if (!n_listed || running)
        return;
    lws_sul_cancel(&timer);
    running = true;
    for (unsigned i = 0; i < n_listed; i++) {
        if (listed[i] && !listed[i]->closing)
            read_again(i);
        if (listed[i])
            listed[i]->rx_more = false;
    }
    n_listed = 0;
    running = false;
    if (++turn == 0)
        turn = 1;
}
