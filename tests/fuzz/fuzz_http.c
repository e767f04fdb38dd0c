/* fuzz_http.c - libFuzzer target for chorusd's HTTP request path, in-process.
 *
 * The real node runs inside the fuzzer: every broker source but main.c,
 * started once with server_start() (single node, --event-loop poll so the
 * fuzzer drives lws_service() itself, an API key so publishes run through,
 * a loopback listener on a port the kernel picks). Each input is one TCP
 * client of that node:
 *
 *   byte 0    control: low 4 bits split the rest into two writes at
 *             (n/16) of its length (0 = one write), so any segmentation of
 *             headers and body can happen; bit 4 (0x10) shuts the write side
 *             after the last write; bit 5 (0x20) closes with a reset (RST)
 *             instead of a FIN. Printable seeds start with '@' (one write,
 *             stays open), 'P' (one write, then half-close) or 'H' (split in
 *             the middle).
 *   the rest  bytes sent as they are: one or more pipelined requests, with
 *             headers and bodies, or an upgrade followed by frames.
 *
 * After the node has had its turns at the input, while that connection is
 * still open, a fresh `GET /healthz` must be answered 200 within
 * HEALTH_DEADLINE_MS; then, once the client closed, the node must close its
 * side too. Either failure calls abort(), so libFuzzer saves the input. A
 * node spinning inside one lws_service() call never returns to us: run with
 * -timeout (run_fuzz.sh does) so libFuzzer reports that as a timeout.
 *
 * At exit the node is stopped and freed, so LeakSanitizer reports anything
 * one input left behind. */
#include "config.h"
#include "log.h"
#include "server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define API_KEY "fuzz-key"
/* Turns of the loop given to an input: enough to accept, read, answer and
 * flush a few pipelined requests; idle turns end it early. */
#define INPUT_TURNS 200
#define IDLE_TURNS 30
/* The watchdog: the node must answer a health probe, and close a client's
 * connection after the client closed, within this wall time. */
#define HEALTH_DEADLINE_MS 2000

static struct config cfg;
static struct sockaddr_in node_addr;

#define FAIL(...)                                                                   \
    do {                                                                            \
        fprintf(stderr, "fuzz_http: " __VA_ARGS__);                                 \
        fputc('\n', stderr);                                                        \
        abort();                                                                    \
    } while (0)

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One non-blocking turn of the node's loop (timeout -1: poll without waiting). */
static void turn(void)
{
    if (lws_service(rt.ctx, -1) < 0)
        FAIL("lws_service failed");
}

/* The node's accepted connections still open: its sockets are ours, so a
 * connection it never closes shows up here. With `report`, names them. */
static int node_connections(bool report)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;
    if (!d)
        FAIL("opendir /proc/self/fd: %s", strerror(errno));
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        struct sockaddr_in me, peer;
        socklen_t lme = sizeof me, lpeer = sizeof peer;
        if (e->d_name[0] == '.' || fd == dirfd(d) ||
            getsockname(fd, (struct sockaddr *)&me, &lme) < 0 || me.sin_family != AF_INET ||
            me.sin_port != node_addr.sin_port ||
            getpeername(fd, (struct sockaddr *)&peer, &lpeer) < 0)
            continue; /* not a socket, another socket, or the listener */
        n++;
        if (report) {
            struct tcp_info ti = {0};
            socklen_t lti = sizeof ti;
            getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &lti);
            fprintf(stderr, "fuzz_http:   fd %d from port %d, TCP state %u (8 = CLOSE_WAIT)\n", fd,
                    ntohs(peer.sin_port), ti.tcpi_state);
        }
    }
    closedir(d);
    return n;
}

static int connect_node(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        FAIL("socket: %s", strerror(errno));
    /* Loopback completes the handshake from the listen backlog; the node
     * accepts on its next turn. */
    while (connect(fd, (struct sockaddr *)&node_addr, sizeof node_addr) < 0) {
        if (errno == EISCONN)
            break;
        /* libFuzzer's timeout timer (SIGALRM) interrupts a blocking connect;
         * the handshake goes on, so wait for it and ask again. */
        if (errno != EINTR && errno != EALREADY && errno != EINPROGRESS)
            FAIL("connect to the node: %s", strerror(errno));
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        poll(&p, 1, 100);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Sends all of buf, giving the node turns while the socket is full. */
static void send_all(int fd, const uint8_t *buf, size_t len)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            turn();
        } else {
            return; /* the node closed on us: a valid answer to bad input */
        }
    }
}

/* Reads what the node sent; returns bytes read, 0 if none yet, -1 at EOF or error. */
static ssize_t drain(int fd, char *buf, size_t cap)
{
    ssize_t n = recv(fd, buf, cap, MSG_DONTWAIT);
    if (n > 0)
        return n;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    return -1;
}

/* The watchdog probe: GET /healthz on a new connection, answered 200 with a
 * complete body before the deadline. */
static void check_health(void)
{
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: fuzz\r\n\r\n";
    char resp[4096];
    size_t got = 0;
    int fd = connect_node();
    send_all(fd, (const uint8_t *)req, sizeof req - 1);
    int64_t deadline = now_ms() + HEALTH_DEADLINE_MS;
    for (;;) {
        turn();
        ssize_t n = drain(fd, resp + got, sizeof resp - 1 - got);
        if (n < 0)
            FAIL("/healthz: the node closed the probe after %zu bytes", got);
        got += (size_t)n;
        resp[got] = '\0';
        const char *body = strstr(resp, "\r\n\r\n");
        const char *cl = strcasestr(resp, "\r\ncontent-length:");
        if (body && cl && cl < body && got - (size_t)(body + 4 - resp) >= strtoul(cl + 17, NULL, 10))
            break;
        if (got == sizeof resp - 1)
            FAIL("/healthz: no complete answer in %zu bytes", got);
        if (now_ms() > deadline)
            FAIL("/healthz: no complete answer within %d ms (got %zu bytes): the node hangs",
                 HEALTH_DEADLINE_MS, got);
    }
    if (strncmp(resp, "HTTP/1.1 200 ", 13) != 0 || !strstr(resp, "\"status\":\"ok\""))
        FAIL("/healthz: unexpected answer:\n%s", resp);
    close(fd);
}

/* Every connection the client closed must be closed by the node too. */
static void check_closed(void)
{
    int64_t deadline = now_ms() + HEALTH_DEADLINE_MS;
    while (node_connections(false)) {
        if (now_ms() > deadline) {
            fprintf(stderr, "fuzz_http: %d connections still open on the node's side:\n",
                    node_connections(true));
            FAIL("the node kept a connection the client had closed");
        }
        turn();
    }
}

static void stop_node(void)
{
    server_stop();
    config_free(&cfg);
}

static void start_node(void)
{
    char *argv[] = {"fuzz_http",   "--bind",      "127.0.0.1", "--port",        "1",
                    "--event-loop", "poll",       "--api-key", API_KEY,         "--log-level",
                    "error",        "--workers",  "1",         "--history-ttl", "1",
                    /* The fuzzer's own address is a proxy: forwarding headers
                     * and PROXY lines reach clientip.c on every upgrade. */
                    "--trusted-proxy", "127.0.0.0/8", "--max-conns-per-ip", "1000",
                    NULL};
    /* Flags win over the environment; a config file could still add a cluster. */
    unsetenv("CHORUS_CONFIG");
    if (config_load(&cfg, (int)(sizeof argv / sizeof argv[0]) - 1, argv) != 0)
        FAIL("config_load failed");
    cfg.port = 0; /* below the flag's range on purpose: the kernel picks a free port */
    log_set_level((enum log_level)log_level_parse(cfg.log_level));
    log_install_lws(log_get_level());
    lws_set_log_level(0, NULL); /* lws' complaints about fuzzed input are noise */
    if (server_start(&cfg) < 0)
        FAIL("server_start failed");
    int port = lws_get_vhost_listen_port(rt.vh);
    if (port <= 0)
        FAIL("the node has no listening port");
    node_addr.sin_family = AF_INET;
    node_addr.sin_port = htons((uint16_t)port);
    node_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    atexit(stop_node);
    check_health();
    check_closed();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!rt.ctx)
        start_node();
    if (size == 0)
        return 0;
    uint8_t ctl = data[0];
    data++;
    size--;
    size_t split = size * (ctl & 0x0f) / 16;
    bool half_close = ctl & 0x10, reset = ctl & 0x20;

    int fd = connect_node();
    char buf[16384];
    if (split) {
        send_all(fd, data, split);
        /* Let the node read the first part on its own. */
        for (int i = 0; i < 4; i++) {
            turn();
            drain(fd, buf, sizeof buf);
        }
    }
    send_all(fd, data + split, size - split);
    if (half_close)
        shutdown(fd, SHUT_WR);

    for (int i = 0, idle = 0; i < INPUT_TURNS && idle < IDLE_TURNS; i++) {
        turn();
        ssize_t n = drain(fd, buf, sizeof buf);
        if (n < 0)
            break;
        idle = n ? 0 : idle + 1;
    }

    /* The connection is still open: the node must serve others meanwhile. */
    check_health();
    if (reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(fd);
    check_closed();
    return 0;
}
