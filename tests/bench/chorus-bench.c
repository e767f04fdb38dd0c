/* chorus-bench.c - load generator for chorusd, the Chorus pub/sub broker.
 *
 * It speaks WebSocket (RFC 6455) and the Chorus client protocol v1 itself, over
 * raw non-blocking sockets and epoll, so one process holds thousands of
 * connections; when a run needs more descriptors than one process may open, the
 * connections are split over forked workers. Every worker owns its connections
 * and the coordinator (the first process) owns the clock of the run and the
 * arithmetic of the results. They share one anonymous mapping in which every
 * counter has exactly one writing process, so relaxed loads and stores suffice,
 * except the per-channel counters, which several workers add to atomically.
 *
 * Received messages are not parsed with a JSON library: at millions of
 * deliveries per second that would make the tool the bottleneck. A fast scan
 * picks "op", "seq", "id" and data's "t" out of each frame instead; it accepts
 * several objects per frame separated by newlines. See tests/bench/README.md. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MAX_PROCS 64
#define SUB_ID 1                        /* the id of every connection's one "sub" */
#define READ_CHUNK (256 * 1024)         /* bytes asked of one recv() */
#define MAX_MESSAGE (64u << 20)         /* larger server messages are a protocol error */
#define WBUF_LIMIT (1u << 20)           /* a publisher with this much unsent is skipped */
#define HANDSHAKE_LIMIT 16384           /* bytes of HTTP response headers accepted */
#define MAX_ATTEMPTS 3                  /* connection attempts per connect phase */
#define FD_RESERVE 32                   /* descriptors kept free in each process */
#define BENCH_SATURATED 90.0            /* % of a core: a worker this busy is the limit */
#define NAP_BELOW 256                   /* ready sockets under which a worker naps */
#define NOISY_OTHER_CPU 25.0            /* % of a core used by others: a failed step is retried */
#define MAX_SERVERS 16                  /* --server-pid processes */
#define MAX_PORTS 16                    /* --ports: nodes of a cluster */

/* ------------------------------------------------------------------------- */
/* Options                                                                   */
/* ------------------------------------------------------------------------- */

enum scenario { SC_FANOUT, SC_ROOMS, SC_IDLE, SC_TICKER };
static const char *const scenario_names[] = {"fanout", "rooms", "idle", "ticker"};

struct opts {
    enum scenario sc;
    const char *host;
    int port;                          /* with --ports: the publishers' port */
    long ports[MAX_PORTS];             /* --ports: subscriber i uses ports[i % nports] */
    int nports;
    long pub_port;                     /* --pub-port, 0 = the first of --ports */
    const char *path;
    long subs, channels, pubs, clients, rooms, conns;
    bool shared_channel;
    double rate, duration, drain, settle;
    long size;
    bool via_http;
    const char *api_key;
    bool step;
    double rate_start, rate_step, rate_max, max_p99_ms;
    double tick_ms;
    long nap_us;
    int refine, noise_retries;
    long server_pids[MAX_SERVERS];     /* --server-pid: the server's processes */
    int nservers;
    int procs, src_ips, concurrency;
    double connect_timeout, conn_timeout;
    bool realtime, quiet, allow_remote;
    char prefix[96];
    bool nchan;                        /* --proto nchan: a peer, not chorusd */
    bool deflate;                      /* --deflate: offer permessage-deflate, inflate */
    bool ticker;                       /* --ticker: data is a ticker quote, not padding */
    const char *sub_path, *pub_path, *pubsub_path;   /* nchan: URL prefixes */
    const char *msub_path;             /* nchan, ticker: multiplexed subscriber prefix */
    long per_sub;                      /* ticker: symbols per subscriber */
    double slow_pct, slow_factor;      /* ticker: share of slow readers, their slowdown */
    long slow_tick_ms, slow_rcvbuf, slow_chunk;  /* ticker: how slow readers read */
    double warmup;                     /* ticker: seconds before staleness is sampled */
};

static void usage(FILE *f)
{
    fprintf(f,
"usage: chorus-bench SCENARIO [options]\n"
"       chorus-bench free-port              print a free TCP port on 127.0.0.1\n"
"       chorus-bench wait-ready [--host H] [--port N] [--timeout S]\n"
"                                           wait until GET /healthz answers 200\n"
"\n"
"Load generator for chorusd. Prints one JSON line per run on stdout and a\n"
"progress line on stderr once a second.\n"
"\n"
"Scenarios:\n"
"  fanout   --subs subscribers (default 1000) on --channels channels (default 1);\n"
"           --pubs publisher connections (default 1) send --rate msgs/s in total\n"
"           (default 1000) for --duration seconds; every subscriber of a channel\n"
"           should receive every message of it. With --step, the rate is stepped\n"
"           up until a step loses messages or its p99 passes --max-p99-ms, and a\n"
"           final line reports the highest sustained rate.\n"
"  rooms    --clients connections (default 5000) in --rooms rooms (default 500);\n"
"           client i joins room i %% rooms and the clients themselves publish\n"
"           into their room, --rate msgs/s in total (default 5000).\n"
"  ticker   --subs subscribers (default 5000), each on --symbols-per-sub\n"
"           channels (default 20) of --channels symbols (default 500); the\n"
"           publishers send --rate ticker quotes/s (default 5000: 10/s per\n"
"           symbol) for --duration s (default 30). --slow-pct %% of the\n"
"           subscribers (default 10) are slow readers: they read from their\n"
"           socket only every --slow-tick-ms (default 100), then in\n"
"           --slow-chunk-bytes recv() calls (default 256) only until they have\n"
"           taken 1/--slow-factor (default 10) of their symbols' message rate,\n"
"           with SO_RCVBUF --slow-rcvbuf-bytes (default 4096; Linux doubles\n"
"           it, reported as slow_rcvbuf_effective_bytes; 1 gives the kernel's\n"
"           minimum; 0 leaves autotuning) so that the TCP window stays\n"
"           small; the rest waits in the kernel's buffers\n"
"           (the server's send buffer may grow to tcp_wmem's max before the\n"
"           server itself sees a backlog). Latency percentiles\n"
"           are the healthy readers'; \"ticker\" adds the slow readers'\n"
"           staleness (age of the newest value seen per symbol, sampled every\n"
"           slow tick after --warmup s), closes per group and server memory.\n"
"           With --proto nchan a subscriber opens <msub-path>A,B,... (one\n"
"           multiplexed WebSocket, --msub-path default /msub/).\n"
"  idle     --conns subscribed connections (default 10000), each on its own\n"
"           channel (or one channel with --shared-channel); waits --settle\n"
"           seconds and, with --server-pid, reports the server's memory per\n"
"           connection: (VmRSS after - VmRSS before) / connections.\n"
"\n"
"Target:\n"
"  --host ADDR            server address (default 127.0.0.1; only 127.0.0.0/8\n"
"                         unless --allow-remote)\n"
"  --port N               server port (default 8080)\n"
"  --ports P1,P2,...      fanout against the nodes of a cluster (instead of\n"
"                         --port): subscriber i connects to P(i mod n), the\n"
"                         publishers to --pub-port. Each line adds ports,\n"
"                         pub_port, \"local\" and \"remote\" (the subscribers on\n"
"                         the publishers' port and those on the others:\n"
"                         subscribers, expected, received, loss, p50/p90/p99/\n"
"                         p999/max_ms) and remote_minus_local_p99_ms. Make the\n"
"                         publishers' node the channel's owner, or every\n"
"                         publish is first forwarded to the owner\n"
"  --pub-port N           the publishers' port with --ports (default P1; need\n"
"                         not be one of them)\n"
"  --path P               WebSocket path (default /ws)\n"
"  --server-pid PID[,PID...]\n"
"                         chorusd's pid: report its CPU%% (utime+stime over the\n"
"                         run, its child processes included: --workers) and\n"
"                         memory (VmRSS, smaps_rollup: this process only).\n"
"                         Several pids (up to 16, the nodes of a cluster) are\n"
"                         summed, and server_cpu_pcts lists each one's CPU%%\n"
"  --proto chorus|nchan   what the server speaks (default chorus, protocol v1).\n"
"                         nchan: the nginx module, for comparisons: subscribers\n"
"                         open ws://HOST:PORT<sub-path><channel> and get each\n"
"                         message body raw in a text frame; publishers send\n"
"                         one body per text frame on <pub-path><channel> (a\n"
"                         WebSocket publisher, bound to channel i %% channels,\n"
"                         so --pubs >= --channels) or POST it there with\n"
"                         --publish-via http; rooms clients publish and\n"
"                         subscribe on <pubsub-path><channel>. A body is\n"
"                         data's {\"t\":...,\"p\":...}; there is no seq, so loss\n"
"                         is counted, gaps and order are not checked.\n"
"  --sub-path P --pub-path P --pubsub-path P\n"
"                         nchan URL prefixes (default /sub/, /pub/, /pubsub/)\n"
"\n"
"Load:\n"
"  --subs N --channels N --pubs N         fanout shape (see above)\n"
"  --clients N --rooms N                  rooms shape\n"
"  --conns N --shared-channel             idle shape\n"
"  --rate R               messages published per second, all publishers together\n"
"  --duration S           seconds of publishing (default 10; 5 per step)\n"
"  --size B               bytes of each message's data object, padding included\n"
"                         (default 100)\n"
"  --publish-via ws|http  publish over WebSocket (default) or POST /api/publish\n"
"                         on --pubs keep-alive HTTP connections (default 4)\n"
"  --ticker               data is a ticker quote like chorus-ticker's,\n"
"                         {\"t\":...,\"sym\":\"S123\",\"price\":187.23,\"change\":-0.41,\n"
"                         \"ts\":...} (about 90 bytes), instead of --size padding\n"
"  --deflate              offer permessage-deflate (RFC 7692, no context\n"
"                         takeover) and inflate compressed frames; bytes_in\n"
"                         then shows what compression saves on the wire\n"
"  --api-key KEY          key for POST /api/publish (X-API-Key)\n"
"  --tick-ms MS           publishers send what the rate asks for every MS\n"
"                         milliseconds, as one burst (default 1). How many\n"
"                         publishes reach the server together changes how\n"
"                         well it can batch its writes: report the tick.\n"
"  --drain S              after publishing, wait at most S seconds for missing\n"
"                         deliveries and acks (default 5)\n"
"  --settle S             idle: seconds to wait after connecting (default 5)\n"
"  --channel-prefix P     channel names are P-<index> (default bench:<scenario>-<random>)\n"
"\n"
"Step mode (fanout):\n"
"  --step                 step the rate up from --rate-start (default 100) by the\n"
"                         factor --rate-step (default 1.5) up to --rate-max\n"
"                         (default 1000000), then --refine N (default 2) bisection\n"
"                         steps between the last good and the first bad rate.\n"
"                         A step holds when nothing was lost, no seq gap or close\n"
"                         happened, the publishers kept 97%% of the rate, no\n"
"                         worker of this tool passed 90%% of a core, and\n"
"                         p99 <= --max-p99-ms (default 100). A step that fails\n"
"                         while other processes used over 25%% of a core is run\n"
"                         again, up to --noise-retries times (default 2).\n"
"\n"
"Connections:\n"
"  --procs N              worker processes (default: as few as the descriptor\n"
"                         limit allows; the soft RLIMIT_NOFILE is raised to the\n"
"                         hard limit and each process keeps 32 spare)\n"
"  --src-ips N            spread source addresses over 127.0.0.2..127.0.0.(N+1)\n"
"                         so more than ~28k connections fit (default: one\n"
"                         address per 16000 connections; 0 = let the kernel pick)\n"
"  --concurrency N        handshakes in flight at once, all workers (default 256)\n"
"  --connect-timeout S    seconds allowed for connecting everyone (default 60)\n"
"  --conn-timeout S       seconds allowed for one connection's TCP connect,\n"
"                         upgrade and subscribe (default 10)\n"
"  --clock monotonic|realtime\n"
"                         clock of the send timestamp \"t\" (default monotonic;\n"
"                         both ends run on this machine)\n"
"  --nap-us US            after a wait that found only a few ready sockets,\n"
"                         pause US microseconds so that more data gathers\n"
"                         before the next read (default 200, 0 = never). At\n"
"                         high rates this saves about a fifth of the tool's\n"
"                         CPU; it adds at most US to a measured latency.\n"
"  --quiet                no progress line\n"
"  --help                 this text\n"
"\n"
"Output fields: scenario, target, connections, published, expected, received,\n"
"loss (fraction of expected not received), deliveries_per_sec, p50/p90/p99/\n"
"p999/max_ms (publish-to-receive latency), server_cpu_pct, server_rss_kib,\n"
"mem_per_conn_bytes, local/remote (--ports) and diagnostics (gaps, dups,\n"
"closes, errors, ...).\n"
"Exit status: 0 when the run completed, 1 when it could not (no connection,\n"
"a worker died), 2 for bad options.\n");
}

static bool parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

/* Parses a comma-separated list of up to max integers in [lo, hi] into out;
 * returns how many, or -1 when val is not such a list. */
static int parse_list(const char *val, double lo, double hi, long *out, int max)
{
    char buf[512];
    if (strlen(val) >= sizeof buf)
        return -1;
    snprintf(buf, sizeof buf, "%s", val);
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        double d;
        if (n == max || !parse_num(tok, lo, hi, &d) || d != floor(d))
            return -1;
        out[n++] = (long)d;
    }
    return n ? n : -1;
}

/* Returns 0, or 2 after printing why the command line is wrong. */
static int opts_parse(struct opts *o, int argc, char **argv)
{
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 0;
    o->path = "/ws";
    o->subs = 1000;
    o->channels = 1;
    o->pubs = -1;
    o->clients = 5000;
    o->rooms = 500;
    o->conns = 10000;
    o->rate = -1;
    o->duration = -1;
    o->drain = 5;
    o->settle = 5;
    o->size = 100;
    o->rate_start = 100;
    o->rate_step = 1.5;
    o->rate_max = 1e6;
    o->max_p99_ms = 100;
    o->refine = 2;
    o->noise_retries = 2;
    o->tick_ms = 1;
    o->nap_us = 200;
    o->procs = 0;
    o->src_ips = -1;
    o->concurrency = 256;
    o->connect_timeout = 60;
    o->conn_timeout = 10;
    o->sub_path = "/sub/";
    o->pub_path = "/pub/";
    o->pubsub_path = "/pubsub/";
    o->msub_path = "/msub/";
    o->per_sub = 20;
    o->slow_pct = 10;
    o->slow_factor = 10;
    o->slow_tick_ms = 100;
    o->slow_rcvbuf = 4096;
    o->slow_chunk = 256;
    o->warmup = 2;
    bool subs_set = false, ch_set = false;

    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        exit(0);
    }
    int sc = -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(argv[1], scenario_names[i]))
            sc = i;
    if (sc < 0) {
        fprintf(stderr, "chorus-bench: unknown scenario '%s' (fanout, rooms, idle, ticker; see --help)\n", argv[1]);
        return 2;
    }
    o->sc = (enum scenario)sc;

    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        char name[64];
        if (strncmp(a, "--", 2)) {
            fprintf(stderr, "chorus-bench: unexpected argument '%s'\n", a);
            return 2;
        }
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        if (nl >= sizeof name)
            nl = sizeof name - 1;
        memcpy(name, a, nl);
        name[nl] = 0;
        if (eq)
            val = eq + 1;

        /* flags without a value */
        if (!strcmp(name, "--help")) {
            usage(stdout);
            exit(0);
        }
#define FLAG(n, field)                                                                       \
    if (!strcmp(name, n)) {                                                                  \
        o->field = true;                                                                     \
        continue;                                                                            \
    }
        FLAG("--shared-channel", shared_channel)
        FLAG("--step", step)
        FLAG("--quiet", quiet)
        FLAG("--allow-remote", allow_remote)
        FLAG("--deflate", deflate)
        FLAG("--ticker", ticker)
#undef FLAG
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "chorus-bench: %s needs a value\n", name);
                return 2;
            }
            val = argv[++i];
        }
        double d;
#define NUM(n, field, lo, hi, type)                                                          \
    if (!strcmp(name, n)) {                                                                  \
        if (!parse_num(val, lo, hi, &d)) {                                                   \
            fprintf(stderr, "chorus-bench: %s wants a number in [%g, %g], not '%s'\n", n,   \
                    (double)(lo), (double)(hi), val);                                        \
            return 2;                                                                        \
        }                                                                                    \
        o->field = (type)d;                                                                  \
        continue;                                                                            \
    }
        NUM("--port", port, 1, 65535, int)
        NUM("--pub-port", pub_port, 1, 65535, long)
        if (!strcmp(name, "--subs"))
            subs_set = true;
        if (!strcmp(name, "--channels"))
            ch_set = true;
        NUM("--subs", subs, 1, 1e7, long)
        NUM("--channels", channels, 1, 1e7, long)
        NUM("--pubs", pubs, 1, 1e6, long)
        NUM("--clients", clients, 1, 1e7, long)
        NUM("--rooms", rooms, 1, 1e7, long)
        NUM("--conns", conns, 1, 1e7, long)
        NUM("--rate", rate, 0.001, 1e8, double)
        NUM("--duration", duration, 0.1, 86400, double)
        NUM("--drain", drain, 0, 3600, double)
        NUM("--settle", settle, 0, 86400, double)
        NUM("--size", size, 0, 16 << 20, long)
        NUM("--rate-start", rate_start, 0.001, 1e8, double)
        NUM("--rate-step", rate_step, 1.01, 100, double)
        NUM("--rate-max", rate_max, 0.001, 1e9, double)
        NUM("--max-p99-ms", max_p99_ms, 0.001, 1e7, double)
        NUM("--refine", refine, 0, 20, int)
        NUM("--noise-retries", noise_retries, 0, 20, int)
        NUM("--tick-ms", tick_ms, 1, 1000, double)
        NUM("--nap-us", nap_us, 0, 100000, long)
        NUM("--procs", procs, 1, MAX_PROCS, int)
        NUM("--src-ips", src_ips, 0, 250, int)
        NUM("--concurrency", concurrency, 1, 1e6, int)
        NUM("--connect-timeout", connect_timeout, 0.1, 86400, double)
        NUM("--conn-timeout", conn_timeout, 0.1, 3600, double)
        NUM("--symbols-per-sub", per_sub, 1, 100, long)
        NUM("--slow-pct", slow_pct, 0, 100, double)
        NUM("--slow-factor", slow_factor, 1, 1e6, double)
        NUM("--slow-tick-ms", slow_tick_ms, 1, 10000, long)
        NUM("--slow-rcvbuf-bytes", slow_rcvbuf, 0, 1 << 24, long)
        NUM("--slow-chunk-bytes", slow_chunk, 16, READ_CHUNK, long)
        NUM("--warmup", warmup, 0, 3600, double)
#undef NUM
        if (!strcmp(name, "--host")) {
            o->host = val;
        } else if (!strcmp(name, "--ports")) {
            o->nports = parse_list(val, 1, 65535, o->ports, MAX_PORTS);
            if (o->nports < 0) {
                fprintf(stderr, "chorus-bench: --ports wants up to %d ports, comma-separated\n", MAX_PORTS);
                return 2;
            }
        } else if (!strcmp(name, "--server-pid")) {
            o->nservers = parse_list(val, 1, 1e9, o->server_pids, MAX_SERVERS);
            if (o->nservers < 0) {
                fprintf(stderr, "chorus-bench: --server-pid wants up to %d pids, comma-separated\n", MAX_SERVERS);
                return 2;
            }
        } else if (!strcmp(name, "--path")) {
            o->path = val;
        } else if (!strcmp(name, "--api-key")) {
            o->api_key = val;
        } else if (!strcmp(name, "--proto")) {
            if (!strcmp(val, "chorus"))
                o->nchan = false;
            else if (!strcmp(val, "nchan"))
                o->nchan = true;
            else {
                fprintf(stderr, "chorus-bench: --proto is chorus or nchan\n");
                return 2;
            }
        } else if (!strcmp(name, "--sub-path") || !strcmp(name, "--pub-path") ||
                   !strcmp(name, "--pubsub-path") || !strcmp(name, "--msub-path")) {
            if (val[0] != '/' || strlen(val) > 200 || strpbrk(val, " \r\n")) {
                fprintf(stderr, "chorus-bench: %s wants a URL path starting with /\n", name);
                return 2;
            }
            if (!strcmp(name, "--sub-path"))
                o->sub_path = val;
            else if (!strcmp(name, "--pub-path"))
                o->pub_path = val;
            else if (!strcmp(name, "--msub-path"))
                o->msub_path = val;
            else
                o->pubsub_path = val;
        } else if (!strcmp(name, "--channel-prefix")) {
            if (strlen(val) >= sizeof o->prefix - 16 || !*val ||
                strspn(val, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:@/-") !=
                    strlen(val)) {
                fprintf(stderr, "chorus-bench: --channel-prefix wants 1-79 bytes of [A-Za-z0-9_.:@/-]\n");
                return 2;
            }
            snprintf(o->prefix, sizeof o->prefix, "%s", val);
        } else if (!strcmp(name, "--publish-via")) {
            if (!strcmp(val, "ws"))
                o->via_http = false;
            else if (!strcmp(val, "http"))
                o->via_http = true;
            else {
                fprintf(stderr, "chorus-bench: --publish-via is ws or http\n");
                return 2;
            }
        } else if (!strcmp(name, "--clock")) {
            if (!strcmp(val, "monotonic"))
                o->realtime = false;
            else if (!strcmp(val, "realtime"))
                o->realtime = true;
            else {
                fprintf(stderr, "chorus-bench: --clock is monotonic or realtime\n");
                return 2;
            }
        } else {
            fprintf(stderr, "chorus-bench: unknown option '%s' (see --help)\n", name);
            return 2;
        }
    }

    if (o->nports && (o->sc != SC_FANOUT || o->port)) {
        fprintf(stderr, "chorus-bench: --ports is for the fanout scenario, instead of --port\n");
        return 2;
    }
    if (o->pub_port && !o->nports) {
        fprintf(stderr, "chorus-bench: --pub-port goes with --ports\n");
        return 2;
    }
    if (o->sc == SC_TICKER) {
        o->ticker = true;
        if (!subs_set)
            o->subs = 5000;
        if (!ch_set)
            o->channels = 500;
        if (o->rate < 0)
            o->rate = 5000;
        if (o->duration < 0)
            o->duration = 30;
        if (o->pubs < 0)
            o->pubs = o->nchan && !o->via_http ? o->channels : 4;
        if (o->per_sub > o->channels) {
            fprintf(stderr, "chorus-bench: --symbols-per-sub %ld is more than --channels %ld\n", o->per_sub,
                    o->channels);
            return 2;
        }
    }
    if (o->nports)
        o->port = (int)(o->pub_port ? o->pub_port : o->ports[0]);
    if (!o->port)
        o->port = 8080;
    if (o->rate < 0)
        o->rate = o->sc == SC_ROOMS ? 5000 : 1000;
    if (o->duration < 0)
        o->duration = o->step ? 5 : 10;
    if (o->pubs < 0)
        o->pubs = o->via_http ? 4 : 1;
    if (o->step && o->sc != SC_FANOUT) {
        fprintf(stderr, "chorus-bench: --step is for the fanout scenario\n");
        return 2;
    }
    if (o->nchan && (o->sc == SC_FANOUT || o->sc == SC_TICKER) && !o->via_http && o->pubs < o->channels) {
        fprintf(stderr, "chorus-bench: with --proto nchan a WebSocket publisher is bound to one channel: "
                        "--pubs %ld is less than --channels %ld\n", o->pubs, o->channels);
        return 2;
    }
    if (o->via_http && !o->api_key && !o->nchan) {
        fprintf(stderr, "chorus-bench: --publish-via http needs --api-key\n");
        return 2;
    }
    if (o->sc == SC_ROOMS && o->rooms > o->clients) {
        fprintf(stderr, "chorus-bench: --rooms %ld is more than --clients %ld\n", o->rooms, o->clients);
        return 2;
    }
    if (o->sc == SC_FANOUT && o->channels > o->subs) {
        fprintf(stderr, "chorus-bench: --channels %ld is more than --subs %ld\n", o->channels, o->subs);
        return 2;
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Clock, random numbers, latency histogram                                  */
/* ------------------------------------------------------------------------- */

static clockid_t g_stamp_clock = CLOCK_MONOTONIC;   /* clock of the "t" field */

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t stamp_ns(void)
{
    struct timespec ts;
    clock_gettime(g_stamp_clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

static inline uint32_t rng_next(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* Log-linear buckets as in HdrHistogram: values below 128 ns have their own
 * bucket, every higher power of two is split into 64 equal buckets, so a
 * bucket's width is at most 1/64 (1.6%) of its values. Values are clamped to
 * 2^41 ns (about 37 minutes). */
#define HIST_MAX_VALUE ((UINT64_C(1) << 41) - 1)
#define HIST_N (36 * 64)

static inline unsigned hist_index(uint64_t v)
{
    if (v < 128)
        return (unsigned)v;
    if (v > HIST_MAX_VALUE)
        v = HIST_MAX_VALUE;
    unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - 6;
    return (shift + 1) * 64 + (unsigned)((v >> shift) - 64);
}

/* The middle of bucket idx, in ns. */
static double hist_value(unsigned idx)
{
    if (idx < 128)
        return idx;
    unsigned shift = idx / 64 - 1;
    uint64_t low = ((uint64_t)(idx % 64) + 64) << shift;
    return (double)low + (double)(UINT64_C(1) << shift) / 2;
}

/* The q-quantile (0..1) of h in ms, or -1 when h is empty. */
static double hist_quantile_ms(const uint64_t *h, double q)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < HIST_N; i++)
        total += h[i];
    if (!total)
        return -1;
    uint64_t rank = (uint64_t)ceil(q * (double)total);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_N; i++) {
        seen += h[i];
        if (seen >= rank)
            return hist_value(i) / 1e6;
    }
    return hist_value(HIST_N - 1) / 1e6;
}

/* ------------------------------------------------------------------------- */
/* Shared memory between the coordinator and the workers                     */
/* ------------------------------------------------------------------------- */

/* Counters; each worker has its own set and is its only writer. */
#define STATS(X)                                                                             \
    X(OPEN, "open")                       /* connections open now (gauge) */                \
    X(SUBSCRIBED, "subscribed")           /* connections subscribed now (gauge) */          \
    X(CONNECTS, "connects")               /* WebSocket/HTTP connections established */      \
    X(CONNECT_RETRIES, "connect_retries") /* failed attempts that were retried */            \
    X(CONNECT_FAILED, "connect_failures") /* connections given up after MAX_ATTEMPTS */      \
    X(HANDSHAKE_FAILED, "handshake_failures") /* upgrades answered with other than 101 */  \
    X(SUB_FAILED, "sub_failures")         /* "sub" answered with err */                      \
    X(PUBLISHED, "published")             /* pub frames / HTTP requests sent */             \
    X(PUB_ACKED, "pub_acked")             /* pub acks / HTTP 200 responses */               \
    X(PUB_FAILED, "pub_failed")           /* pub err / HTTP non-200 */                      \
    X(PUB_BLOCKED, "pub_blocked_ticks")   /* ticks when no publisher could send */          \
    X(RECEIVED, "received")               /* msg objects received */                         \
    X(GAPS, "gaps")                       /* times seq jumped forward */                     \
    X(MISSING, "missing_by_seq")          /* messages skipped by those jumps */              \
    X(DUPS, "dups")                       /* msg with seq <= the last one seen */            \
    X(BEFORE_ACK, "msg_before_ack")       /* msg before the sub ack */                       \
    X(NO_STAMP, "msg_without_t")          /* msg whose data has no "t" */                    \
    X(EPOCHS, "epoch_events")             /* "epoch" events */                               \
    X(PINGS, "pings")                     /* WebSocket PINGs answered */                     \
    X(DISCONNECTS, "disconnects")         /* established connections lost */                \
    X(PROTO_ERRORS, "protocol_errors")    /* malformed frames or HTTP from the server */    \
    X(BYTES_IN, "bytes_in")               /* bytes read from sockets */                      \
    X(SLOW_RECEIVED, "slow_received")     /* ticker: msg objects the slow readers took in */ \
    X(SKIPPED, "skipped")                 /* ticker: sum of "skipped" (conflated away) */    \
    X(HEALTHY_CLOSED, "healthy_closed")   /* ticker: healthy readers that lost the server */ \
    X(SLOW_CLOSED, "slow_closed")         /* ticker: slow readers that lost the server */    \
    X(STALE_UNSEEN, "stale_unseen")       /* ticker: staleness samples of a symbol never seen */

#define ERR_CODES(X)                                                                         \
    X(bad_request) X(unknown_op) X(bad_channel) X(too_large) X(forbidden) X(not_subscribed)  \
    X(limit_reached) X(rate_limited) X(unavailable) X(other)

/* close codes counted one by one; the rest count as "other" */
#define CLOSE_CODES(X) X(1000) X(1001) X(1006) X(1008) X(1009) X(1011) X(1012) X(4008)

enum stat_id {
#define X(id, name) ST_##id,
    STATS(X)
#undef X
    NSTAT
};
static const char *const stat_names[] = {
#define X(id, name) name,
    STATS(X)
#undef X
};
enum err_code {
#define X(c) ERR_##c,
    ERR_CODES(X)
#undef X
    NERR
};
static const char *const err_names[] = {
#define X(c) #c,
    ERR_CODES(X)
#undef X
};
enum close_code {
#define X(c) CLOSE_##c,
    CLOSE_CODES(X)
#undef X
    CLOSE_other,
    NCLOSE
};
static const char *const close_names[] = {
#define X(c) #c,
    CLOSE_CODES(X)
#undef X
    "other",
};

/* --ports: subscribers on the publishers' port, and those on the others,
 * whose messages crossed from node to node. */
enum { GRP_LOCAL, GRP_REMOTE, NGRP };
static const char *const grp_names[NGRP] = {"local", "remote"};

/* One per worker, in the shared mapping; written only by that worker. */
struct wstats {
    _Atomic uint64_t c[NSTAT];
    _Atomic uint64_t err[NERR];
    _Atomic uint64_t close[NCLOSE];
    _Atomic uint64_t hist[HIST_N];
    _Atomic uint64_t lat_max;      /* ns, since the current pub_gen was seen */
    _Atomic uint64_t stale_hist[HIST_N];   /* ticker: slow readers' staleness samples, ns */
    _Atomic uint64_t stale_max;
    /* --ports only: received, subscribed (gauge), hist and lat_max per group */
    _Atomic uint64_t grp_recv[NGRP], grp_subscribed[NGRP], grp_lat_max[NGRP];
    _Atomic uint64_t grp_hist[NGRP][HIST_N];
    _Atomic int ready_gen;         /* last connect_gen fully served */
    _Atomic int pub_done_gen;      /* last pub_gen whose publishing ended */
};

/* Written only by the coordinator; generation counters are stored last, with
 * release order, so a worker that sees a new generation sees its parameters. */
struct control {
    _Atomic int quit;
    _Atomic int connect_gen;       /* bump: (re)open every closed connection */
    _Atomic int pub_gen;           /* bump: publish at rate between start and end */
    _Atomic int64_t pub_start, pub_end;   /* CLOCK_MONOTONIC ns */
    _Atomic uint64_t rate_milli;   /* messages per second x 1000, all publishers */
};

/* The shape of the run, fixed before the fork. */
struct plan {
    long nclients;     /* WebSocket clients that subscribe */
    long npubconns;    /* extra publisher connections (WebSocket or HTTP) */
    long nch;          /* channels */
    long npublishers;  /* connections that publish: npubconns, or nclients in rooms/ws */
    bool clients_publish;
    bool split;        /* --ports: figures per group (GRP_LOCAL, GRP_REMOTE) too */
    int procs;
    int src_ips;
    struct sockaddr_in addr;
};

static struct opts g_o;
static struct plan g_plan;
static struct control *g_ctl;
static struct wstats *g_ws;            /* [procs] */
static _Atomic uint64_t *g_ch_pub;     /* [nch] messages published per channel */
static _Atomic int64_t *g_ch_subs;     /* [nch] subscribers per channel now */
static _Atomic int64_t *g_ch_subs_local; /* [nch] of those, on the publishers' port */

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define STORE(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)
/* Single-writer increment: plain load and store, no locked instruction. */
#define BUMP(x, n) STORE(x, LOAD(x) + (uint64_t)(n))

static void channel_name(char *out, size_t cap, uint32_t ch)
{
    snprintf(out, cap, "%s-%" PRIu32, g_o.prefix, ch);
}

/* ticker: subscriber i takes symbols (i + k * stride) mod nch, k < per_sub,
 * stride = nch / per_sub, so that they are distinct and every symbol gets
 * the same number of subscribers. */
static uint32_t ticker_stride(void) { return (uint32_t)(g_plan.nch / g_o.per_sub); }
static uint32_t ticker_ch(uint32_t gidx, long k)
{
    return (uint32_t)((gidx + (uint64_t)k * ticker_stride()) % (uint64_t)g_plan.nch);
}
/* which k of gidx's symbols ch is, or -1 */
static long ticker_slot(uint32_t gidx, int64_t ch)
{
    if (ch < 0 || ch >= g_plan.nch)
        return -1;
    uint32_t st = ticker_stride();
    uint64_t d = ((uint64_t)ch + (uint64_t)g_plan.nch - gidx % (uint64_t)g_plan.nch) % (uint64_t)g_plan.nch;
    return d % st || d / st >= (uint64_t)g_o.per_sub ? -1 : (long)(d / st);
}
/* ticker: client i is slow when the count of slow clients up to it rises,
 * so that slow_pct % of them are slow, spread evenly */
static bool ticker_is_slow(long i)
{
    return g_o.sc == SC_TICKER && (long)((double)(i + 1) * g_o.slow_pct / 100) > (long)((double)i * g_o.slow_pct / 100);
}

/* ------------------------------------------------------------------------- */
/* SHA-1 and base64, only for Sec-WebSocket-Key / Sec-WebSocket-Accept       */
/* ------------------------------------------------------------------------- */

static inline uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const unsigned char *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20)
            f = (b & c) | (~b & d), k = 0x5A827999;
        else if (i < 40)
            f = b ^ c ^ d, k = 0x6ED9EBA1;
        else if (i < 60)
            f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
        else
            f = b ^ c ^ d, k = 0xCA62C1D6;
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d, d = c, c = rol32(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

static void sha1(const void *data, size_t len, unsigned char out[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    const unsigned char *p = data;
    size_t n = len;
    for (; n >= 64; p += 64, n -= 64)
        sha1_block(h, p);
    unsigned char tail[128] = {0};
    memcpy(tail, p, n);
    tail[n] = 0x80;
    size_t tl = n + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        tail[tl - 1 - i] = (unsigned char)(bits >> (8 * i));
    sha1_block(h, tail);
    if (tl == 128)
        sha1_block(h, tail + 64);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

static void base64(const unsigned char *in, size_t len, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0, o = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tab[v >> 18], out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63], out[o++] = tab[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = tab[v >> 18], out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = 0;
}

/* ------------------------------------------------------------------------- */
/* Connections                                                               */
/* ------------------------------------------------------------------------- */

enum conn_kind {
    K_SUB,      /* WebSocket, subscribes to its channel */
    K_SUBPUB,   /* WebSocket, subscribes to its channel and publishes into it */
    K_PUB,      /* WebSocket, publishes round-robin over all channels */
    K_HTTP      /* HTTP keep-alive, POST /api/publish round-robin over all channels */
};

enum conn_state {
    CS_CLOSED,
    CS_CONNECTING,   /* TCP connect in progress */
    CS_HANDSHAKE,    /* upgrade request sent, waiting for 101 */
    CS_OPEN,         /* WebSocket open (maybe waiting for the sub ack) / HTTP idle */
    CS_HTTP_BUSY     /* HTTP request sent, waiting for the response */
};

/* One per connection of a worker, created with the worker and never freed. */
struct conn {
    int fd;
    uint8_t kind, state, attempts;
    uint8_t grp;         /* GRP_LOCAL or GRP_REMOTE (--ports) */
    uint8_t nacks;       /* ticker: sub acks received */
    bool slow;           /* ticker: a slow reader */
    uint16_t port;       /* the server port it connects to */
    bool queued;         /* in the worker's connect queue */
    bool inflight;       /* counted in the worker's handshakes in flight */
    bool sub_pending;    /* "sub" sent, ack not yet seen */
    bool subscribed;
    bool have_seq;
    bool in_frag;        /* inside a fragmented message */
    bool got_close;      /* a close frame arrived */
    uint32_t events;     /* epoll events registered */
    uint32_t ch;         /* subscribed channel (K_SUB, K_SUBPUB) */
    uint32_t gidx;       /* global index, picks the source address */
    int64_t deadline;    /* while inflight: give up at this time */
    int64_t retry_at;    /* do not reconnect before */
    uint64_t last_seq;
    uint64_t next_id;
    size_t need;         /* bytes the current incomplete frame needs */
    unsigned char *rbuf; /* unparsed input: handshake, partial frame, HTTP */
    uint32_t rlen, rcap;
    unsigned char *wbuf; /* unsent output, wbuf[woff..wlen) */
    uint32_t woff, wlen, wcap;
    unsigned char *frag; /* fragmented message so far */
    uint32_t fraglen, fragcap;
    char key[28];        /* Sec-WebSocket-Key sent */
    double credit;       /* ticker, slow: messages it may still take in */
    uint64_t rx_msgs;    /* ticker, slow: messages taken in */
    int64_t *newest;     /* ticker, slow: [per_sub] newest "t" seen per symbol */
};

/* One per process that holds connections. */
struct worker {
    int id, ep;
    struct wstats *st;
    struct conn *conns;
    uint32_t nconns;
    uint32_t *pubs, npubs, pub_cursor;   /* indices of publishing connections */
    uint32_t *queue, qhead, qcount;      /* connections to (re)open, FIFO */
    uint32_t inflight, max_inflight;
    bool connect_mode;                   /* serving a connect_gen */
    int connect_gen, pub_gen;
    bool pub_active;
    double pub_rate;                     /* this worker's share, msgs/s */
    int64_t pub_start, pub_end;
    uint64_t pub_sent;
    uint32_t next_ch;
    uint32_t rng;
    int notes;                           /* diagnostics printed so far */
    unsigned char *gbuf;                 /* receive buffer shared by all connections */
    size_t gcap;
    unsigned char *scratch;              /* outgoing frames are built here */
    size_t scap;
    char *pad;                           /* 'x' * size */
    z_stream zi;                         /* --deflate: the inflater, reset per message */
    bool zi_ready;
    char *zbuf;                          /* an inflated message */
    size_t zcap;
    uint32_t *slow, nslow;               /* ticker: indices of slow readers */
    int64_t slow_next;                   /* ticker: time of the next slow read */
    size_t read_limit;                   /* ws_read: bytes asked of recv(), 0 = all */
    ssize_t read_n;                      /* ws_read: what recv() returned (-1: nothing) */
};

static void note(struct worker *W, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct worker *W, const char *fmt, ...)
{
    if (W->notes >= 5)
        return;
    if (++W->notes == 5) {
        fprintf(stderr, "\nchorus-bench[w%d]: (further diagnostics suppressed)\n", W->id);
        return;
    }
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    for (char *p = buf; *p; p++) /* peer text may hold newlines */
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    fprintf(stderr, "\nchorus-bench[w%d]: %s\n", W->id, buf);
}

static bool grow(unsigned char **buf, uint32_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    if (n > UINT32_MAX)
        return false;
    unsigned char *p = realloc(*buf, n);
    if (!p)
        return false;
    *buf = p;
    *cap = (uint32_t)n;
    return true;
}

/* Counts c's subscriptions in g_ch_subs: its one channel, or in the ticker
 * its symbols, healthy readers only (expected deliveries are theirs). */
static void ch_subs_add(const struct conn *c, int64_t d)
{
    if (g_o.sc != SC_TICKER) {
        atomic_fetch_add_explicit(&g_ch_subs[c->ch], d, memory_order_relaxed);
        return;
    }
    if (c->slow)
        return;
    for (long k = 0; k < g_o.per_sub; k++)
        atomic_fetch_add_explicit(&g_ch_subs[ticker_ch(c->gidx, k)], d, memory_order_relaxed);
}

static void conn_set_events(struct worker *W, struct conn *c, uint32_t ev)
{
    /* A subscribed slow reader is read only on its schedule (slow_tick), but
     * a close from the server (FIN: EPOLLRDHUP) is seen at once. */
    if (c->slow && c->subscribed)
        ev = (ev & ~(uint32_t)EPOLLIN) | EPOLLRDHUP;
    if (c->events == ev)
        return;
    struct epoll_event e = {.events = ev, .data.u32 = (uint32_t)(c - W->conns)};
    if (epoll_ctl(W->ep, EPOLL_CTL_MOD, c->fd, &e) == 0)
        c->events = ev;
}

static void queue_push(struct worker *W, struct conn *c)
{
    if (c->queued)
        return;
    c->queued = true;
    W->queue[(W->qhead + W->qcount++) % W->nconns] = (uint32_t)(c - W->conns);
}

static bool is_publisher_conn(const struct conn *c) { return c->kind == K_PUB || c->kind == K_HTTP; }

static void conn_release_inflight(struct worker *W, struct conn *c)
{
    if (c->inflight) {
        c->inflight = false;
        W->inflight--;
    }
}

/* Closes c and undoes what it counted. A connection that failed while being
 * set up is retried up to MAX_ATTEMPTS times; an established one is reopened
 * at once when it publishes, and when it subscribes only during a connect
 * phase (between steps), so that a lost subscriber shows up as loss. */
static void conn_close(struct worker *W, struct conn *c)
{
    if (c->state == CS_CLOSED)
        return;
    if (c->state >= CS_OPEN) {
        BUMP(W->st->c[ST_OPEN], -1);
        if (c->kind != K_HTTP && !LOAD(g_ctl->quit))
            BUMP(W->st->c[ST_DISCONNECTS], 1);
    }
    if (c->subscribed) {
        BUMP(W->st->c[ST_SUBSCRIBED], -1);
        ch_subs_add(c, -1);
        if (g_o.sc == SC_TICKER && !LOAD(g_ctl->quit))
            BUMP(W->st->c[c->slow ? ST_SLOW_CLOSED : ST_HEALTHY_CLOSED], 1);
        if (g_plan.split) {
            BUMP(W->st->grp_subscribed[c->grp], -1);
            if (c->grp == GRP_LOCAL)
                atomic_fetch_sub_explicit(&g_ch_subs_local[c->ch], 1, memory_order_relaxed);
        }
    }
    bool was_inflight = c->inflight;
    conn_release_inflight(W, c);
    close(c->fd);
    c->fd = -1;
    c->state = CS_CLOSED;
    c->events = 0;
    c->sub_pending = c->subscribed = c->have_seq = c->in_frag = c->got_close = false;
    c->nacks = 0;
    c->need = 0;
    free(c->rbuf), c->rbuf = NULL, c->rlen = c->rcap = 0;
    free(c->wbuf), c->wbuf = NULL, c->woff = c->wlen = c->wcap = 0;
    free(c->frag), c->frag = NULL, c->fraglen = c->fragcap = 0;
    if (LOAD(g_ctl->quit))
        return;
    if (was_inflight) {
        /* a connection attempt failed */
        if (++c->attempts < MAX_ATTEMPTS) {
            BUMP(W->st->c[ST_CONNECT_RETRIES], 1);
            c->retry_at = now_ns() + (int64_t)c->attempts * 200000000;
            queue_push(W, c);
        } else {
            BUMP(W->st->c[ST_CONNECT_FAILED], 1);
        }
    } else if (is_publisher_conn(c) || W->connect_mode) {
        c->attempts = 0;
        c->retry_at = now_ns() + 100000000;
        queue_push(W, c);
    }
}

/* Sends or queues len bytes; returns 0, or -1 when c had to be closed. */
static int conn_send(struct worker *W, struct conn *c, const void *data, size_t len)
{
    const unsigned char *p = data;
    if (c->wlen == c->woff) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                conn_close(W, c);
                return -1;
            }
            n = 0;
        }
        if ((size_t)n == len)
            return 0;
        p += n, len -= (size_t)n;
        c->woff = c->wlen = 0;
    }
    if (c->woff && c->wlen + len > c->wcap) {
        memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
        c->wlen -= c->woff;
        c->woff = 0;
    }
    if (!grow(&c->wbuf, &c->wcap, (size_t)c->wlen + len)) {
        conn_close(W, c);
        return -1;
    }
    memcpy(c->wbuf + c->wlen, p, len);
    c->wlen += (uint32_t)len;
    conn_set_events(W, c, EPOLLIN | EPOLLOUT);
    return 0;
}

static void conn_flush(struct worker *W, struct conn *c)
{
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            conn_close(W, c);
            return;
        }
        c->woff += (uint32_t)n;
    }
    c->woff = c->wlen = 0;
    if (c->wcap > 65536)
        free(c->wbuf), c->wbuf = NULL, c->wcap = 0;
    conn_set_events(W, c, EPOLLIN);
}

static void conn_open(struct worker *W, struct conn *c, int64_t now)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        note(W, "socket(): %s", strerror(errno));
        BUMP(W->st->c[ST_CONNECT_FAILED], 1);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (c->slow && g_o.slow_rcvbuf > 0) { /* before connect(): it sets the window */
        int rb = (int)g_o.slow_rcvbuf;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rb, sizeof rb);
    }
    if (g_plan.src_ips > 0) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000002u + c->gidx % (uint32_t)g_plan.src_ips);
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0)
            note(W, "bind(127.0.0.%u): %s", 2 + c->gidx % (uint32_t)g_plan.src_ips, strerror(errno));
    }
    c->fd = fd;
    c->state = CS_CONNECTING;
    c->inflight = true;
    W->inflight++;
    c->deadline = now + (int64_t)(g_o.conn_timeout * 1e9);
    c->events = EPOLLOUT;
    struct epoll_event e = {.events = EPOLLOUT, .data.u32 = (uint32_t)(c - W->conns)};
    if (epoll_ctl(W->ep, EPOLL_CTL_ADD, fd, &e) < 0) {
        note(W, "epoll_ctl: %s", strerror(errno));
        conn_close(W, c);
        return;
    }
    struct sockaddr_in dst = g_plan.addr;
    dst.sin_port = htons(c->port);
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
        note(W, "connect(): %s", strerror(errno));
        conn_close(W, c);
    }
}

/* ------------------------------------------------------------------------- */
/* WebSocket frames                                                          */
/* ------------------------------------------------------------------------- */

/* Builds a masked client frame around the len payload bytes already placed at
 * buf + 14 and returns where the frame starts; *flen gets its length. */
static unsigned char *ws_wrap(struct worker *W, unsigned char *buf, size_t len, int opcode, size_t *flen)
{
    unsigned char *pay = buf + 14;
    size_t hl = len < 126 ? 6 : len < 65536 ? 8 : 14;
    unsigned char *h = pay - hl;
    h[0] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        h[1] = (unsigned char)(0x80 | len);
    } else if (len < 65536) {
        h[1] = 0x80 | 126;
        h[2] = (unsigned char)(len >> 8), h[3] = (unsigned char)len;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    }
    uint32_t m = rng_next(&W->rng);
    unsigned char *mk = pay - 4;
    memcpy(mk, &m, 4);
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        uint32_t v;
        memcpy(&v, pay + i, 4);
        v ^= m;
        memcpy(pay + i, &v, 4);
    }
    for (; i < len; i++)
        pay[i] ^= mk[i & 3];
    *flen = hl + len;
    return h;
}

static bool scratch_reserve(struct worker *W, size_t len)
{
    if (len + 64 <= W->scap)
        return true;
    size_t n = len + 4096;
    unsigned char *p = realloc(W->scratch, n);
    if (!p)
        return false;
    W->scratch = p;
    W->scap = n;
    return true;
}

/* Sends one masked frame of opcode with a copy of payload; 0 or -1 (closed). */
static int ws_send(struct worker *W, struct conn *c, int opcode, const void *payload, size_t len)
{
    if (!scratch_reserve(W, len + 14))
        return -1;
    memcpy(W->scratch + 14, payload, len);
    size_t flen;
    unsigned char *f = ws_wrap(W, W->scratch, len, opcode, &flen);
    return conn_send(W, c, f, flen);
}

static void ws_send_sub(struct worker *W, struct conn *c)
{
    char name[128], buf[256];
    long nsub = g_o.sc == SC_TICKER ? g_o.per_sub : 1;
    c->sub_pending = true;
    c->nacks = 0;
    for (long k = 0; k < nsub; k++) {
        channel_name(name, sizeof name, g_o.sc == SC_TICKER ? ticker_ch(c->gidx, k) : c->ch);
        int n = snprintf(buf, sizeof buf, "{\"op\":\"sub\",\"id\":%d,\"ch\":\"%s\"}", SUB_ID, name);
        if (ws_send(W, c, 0x1, buf, (size_t)n) < 0)
            return;
    }
}

/* ------------------------------------------------------------------------- */
/* Scanning server messages                                                  */
/* ------------------------------------------------------------------------- */

/* The fields of one server object that the benchmark looks at. */
struct fields {
    const char *op, *code;     /* string values, not NUL-terminated */
    size_t oplen, codelen;
    int64_t seq, id, t;        /* t: data's "t", the publisher's send time */
    int64_t c, skipped;        /* ticker: data's "c" (the symbol), "skipped" */
    bool has_seq, has_id, has_t, has_c;
};

static bool json_int(const char *v, const char *end, int64_t *out)
{
    if (v >= end)
        return false;
    bool neg = *v == '-';
    if (neg)
        v++;
    if (v >= end || *v < '0' || *v > '9')
        return false;
    int64_t x = 0;
    while (v < end && *v >= '0' && *v <= '9')
        x = x * 10 + (*v++ - '0');
    *out = neg ? -x : x;
    return true;
}

/* The closing quote of the string whose body starts at s, or NULL. */
static const char *json_str_end(const char *s, const char *end)
{
    for (;;) {
        const char *q = memchr(s, '"', (size_t)(end - s));
        if (!q)
            return NULL;
        const char *b = q; /* an odd run of backslashes escapes the quote */
        while (b > s && b[-1] == '\\')
            b--;
        if (!((q - b) & 1))
            return q;
        s = q + 1;
    }
}

/* One pass over a JSON object: every string followed by a colon is a key.
 * Only keys of the outer object count, plus "t" directly inside "data"; the
 * bytes between strings are few, and counting the brackets in them gives the
 * depth. This is not a validating parser: it reads the broker's frames, whose
 * data objects are the benchmark's own. */
static void scan_object(const char *p, const char *end, struct fields *f)
{
    int depth = 0;
    bool in_data = false;
    memset(f, 0, sizeof *f);
    while (p < end) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (!q)
            return;
        for (; p < q; p++)
            depth += (*p == '{' || *p == '[') - (*p == '}' || *p == ']');
        const char *k = q + 1, *ke = json_str_end(k, end);
        if (!ke)
            return;
        const char *v = ke + 1;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        if (v >= end || *v != ':' || depth > 2) {
            p = v; /* a string value, or a key too deep to matter */
            continue;
        }
        v++;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        size_t kl = (size_t)(ke - k);
        const char *se;
#define KEY(lit) (kl == sizeof(lit) - 1 && !memcmp(k, lit, kl))
        if (depth == 2) {
            if (in_data && KEY("t") && !f->has_t)
                f->has_t = json_int(v, end, &f->t);
            else if (in_data && KEY("c") && !f->has_c)
                f->has_c = json_int(v, end, &f->c);
        } else if (depth == 1) {
            in_data = KEY("data");
            if (KEY("op") || KEY("code")) {
                if (v < end && *v == '"' && (se = json_str_end(v + 1, end))) {
                    if (KEY("op"))
                        f->op = v + 1, f->oplen = (size_t)(se - v - 1);
                    else
                        f->code = v + 1, f->codelen = (size_t)(se - v - 1);
                    v = se + 1;
                }
            } else if (KEY("seq")) {
                f->has_seq = json_int(v, end, &f->seq);
            } else if (KEY("id")) {
                f->has_id = json_int(v, end, &f->id);
            } else if (KEY("skipped")) {
                json_int(v, end, &f->skipped);
            }
        }
#undef KEY
        p = v;
    }
}

static void on_msg(struct worker *W, struct conn *c, const struct fields *f, int64_t now)
{
    struct wstats *s = W->st;
    if (g_o.sc == SC_TICKER) {
        if (f->skipped > 0)
            BUMP(s->c[ST_SKIPPED], f->skipped);
        if (c->slow) { /* staleness, not latency: slow_tick samples newest[] */
            BUMP(s->c[ST_SLOW_RECEIVED], 1);
            c->rx_msgs++;
            long k = f->has_c && f->has_t && c->newest ? ticker_slot(c->gidx, f->c) : -1;
            if (k >= 0 && f->t > c->newest[k])
                c->newest[k] = f->t;
            return;
        }
    }
    BUMP(s->c[ST_RECEIVED], 1);
    if (g_plan.split)
        BUMP(s->grp_recv[c->grp], 1);
    if (f->has_seq && f->seq >= 0 && g_o.sc != SC_TICKER) { /* ticker: seq is per symbol */
        uint64_t seq = (uint64_t)f->seq;
        if (!c->have_seq) {
            if (!c->subscribed)
                BUMP(s->c[ST_BEFORE_ACK], 1);
            c->have_seq = true;
            c->last_seq = seq - 1;
        }
        if (seq == c->last_seq + 1) {
            c->last_seq = seq;
        } else if (seq > c->last_seq) {
            BUMP(s->c[ST_GAPS], 1);
            BUMP(s->c[ST_MISSING], seq - c->last_seq - 1);
            c->last_seq = seq;
        } else {
            BUMP(s->c[ST_DUPS], 1);
        }
    }
    if (f->has_t) {
        int64_t lat = now - f->t;
        uint64_t v = lat > 0 ? (uint64_t)lat : 0;
        unsigned idx = hist_index(v);
        BUMP(s->hist[idx], 1);
        if (v > LOAD(s->lat_max))
            STORE(s->lat_max, v);
        if (g_plan.split) {
            BUMP(s->grp_hist[c->grp][idx], 1);
            if (v > LOAD(s->grp_lat_max[c->grp]))
                STORE(s->grp_lat_max[c->grp], v);
        }
    } else {
        BUMP(s->c[ST_NO_STAMP], 1);
    }
}

static void conn_subscribed(struct worker *W, struct conn *c)
{
    c->sub_pending = false;
    c->subscribed = true;
    BUMP(W->st->c[ST_SUBSCRIBED], 1);
    ch_subs_add(c, 1);
    if (c->slow)
        conn_set_events(W, c, c->events);
    if (g_plan.split) {
        BUMP(W->st->grp_subscribed[c->grp], 1);
        if (c->grp == GRP_LOCAL)
            atomic_fetch_add_explicit(&g_ch_subs_local[c->ch], 1, memory_order_relaxed);
    }
    conn_release_inflight(W, c);
    c->attempts = 0;
}

/* Handles one JSON object of a server text frame; -1 when c was closed. */
static int on_object(struct worker *W, struct conn *c, const char *p, const char *end, int64_t now)
{
    struct fields f;
    scan_object(p, end, &f);
    if (!f.op)
        return 0;
#define OPIS(lit) (f.oplen == sizeof(lit) - 1 && !memcmp(f.op, lit, f.oplen))
    if (OPIS("msg")) {
        on_msg(W, c, &f, now);
    } else if (OPIS("ack")) {
        if (f.has_id && f.id == SUB_ID && c->sub_pending && g_o.sc == SC_TICKER) {
            if (++c->nacks >= g_o.per_sub)
                conn_subscribed(W, c);
        } else if (f.has_id && f.id == SUB_ID && c->sub_pending) {
            if (f.has_seq && f.seq >= 0 && (!c->have_seq || (uint64_t)f.seq > c->last_seq)) {
                c->last_seq = (uint64_t)f.seq;
                c->have_seq = true;
            }
            conn_subscribed(W, c);
        } else if (f.has_id && f.id > SUB_ID) {
            BUMP(W->st->c[ST_PUB_ACKED], 1);
        }
    } else if (OPIS("err")) {
        int e = ERR_other;
        for (int i = 0; f.code && i < ERR_other; i++)
            if (strlen(err_names[i]) == f.codelen && !memcmp(f.code, err_names[i], f.codelen))
                e = i;
        BUMP(W->st->err[e], 1);
        note(W, "server error: %.*s", (int)(end - p > 300 ? 300 : end - p), p);
        if (f.has_id && f.id == SUB_ID && c->sub_pending) {
            BUMP(W->st->c[ST_SUB_FAILED], 1);
            conn_close(W, c);
            return -1;
        }
        if (f.has_id && f.id > SUB_ID)
            BUMP(W->st->c[ST_PUB_FAILED], 1);
    } else if (OPIS("epoch")) {
        BUMP(W->st->c[ST_EPOCHS], 1);
        if (f.has_seq && f.seq >= 0) {
            c->last_seq = (uint64_t)f.seq;
            c->have_seq = true;
        }
    }
#undef OPIS
    return 0;
}

/* --proto nchan: a subscriber's text message is one published body,
 * {"t":T,"p":"..."}; anything else (the channel info Nchan answers a
 * WebSocket publisher with) acknowledges a publish. */
static int on_nchan_message(struct worker *W, struct conn *c, const char *p, size_t len, int64_t now)
{
    if ((c->kind == K_SUB || c->kind == K_SUBPUB) && len > 0 && p[0] == '{') {
        struct fields f;
        memset(&f, 0, sizeof f);
        if (len > 5 && !memcmp(p, "{\"t\":", 5))
            f.has_t = json_int(p + 5, p + len, &f.t);
        const char *cf = g_o.sc == SC_TICKER ? memmem(p, len, ",\"c\":", 5) : NULL;
        if (cf)
            f.has_c = json_int(cf + 5, p + len, &f.c);
        on_msg(W, c, &f, now);
    } else if (c->kind == K_PUB) {
        BUMP(W->st->c[ST_PUB_ACKED], 1);
    }
    return 0;
}

/* A complete text message: one object, or several separated by "\n". */
static int on_message(struct worker *W, struct conn *c, const char *p, size_t len, int64_t now)
{
    if (g_o.nchan)
        return on_nchan_message(W, c, p, len, now);
    const char *end = p + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        if (on_object(W, c, p, e, now) < 0)
            return -1;
        p = nl ? nl + 1 : end;
    }
    return 0;
}

static void on_close_frame(struct worker *W, struct conn *c, const unsigned char *pay, size_t len)
{
    static const unsigned values[NCLOSE] = {
#define X(n) [CLOSE_##n] = n,
        CLOSE_CODES(X)
#undef X
    };
    unsigned code = len >= 2 ? (unsigned)pay[0] << 8 | pay[1] : 1005;
    int k = CLOSE_other;
    for (int i = 0; i < CLOSE_other; i++)
        if (values[i] == code)
            k = i;
    BUMP(W->st->close[k], 1);
    c->got_close = true;
    if (code != 1000 && code != 1001)
        note(W, "server closed a connection: %u %.*s", code, (int)(len > 2 ? len - 2 : 0), pay + 2);
    /* echo the close, then hang up */
    unsigned char echo[2] = {len >= 2 ? pay[0] : 0x03, len >= 2 ? pay[1] : 0xe8};
    ws_send(W, c, 0x8, echo, 2);
}

/* Consumes the complete frames at the start of buf. Returns bytes consumed,
 * or -1 when c was closed. */
/* --deflate: one compressed message (its 00 00 ff ff tail stripped) into
 * the worker's buffer; NULL when it is not valid DEFLATE data. */
static const char *inflate_message(struct worker *W, const unsigned char *in, size_t len, size_t *out_len)
{
    static const unsigned char tail[4] = {0, 0, 0xff, 0xff};
    if (!W->zi_ready) {
        if (inflateInit2(&W->zi, -15) != Z_OK)
            return NULL;
        W->zi_ready = true;
    } else if (inflateReset(&W->zi) != Z_OK) {
        return NULL;
    }
    size_t done = 0;
    for (int part = 0; part < 2; part++) {
        W->zi.next_in = (unsigned char *)(part ? tail : in);
        W->zi.avail_in = (uInt)(part ? 4 : len);
        for (;;) {
            if (done + 1 >= W->zcap) {
                size_t ncap = W->zcap ? W->zcap * 2 : 65536;
                if (ncap > MAX_MESSAGE + 2)
                    return NULL;
                char *n = realloc(W->zbuf, ncap);
                if (!n)
                    return NULL;
                W->zbuf = n;
                W->zcap = ncap;
            }
            W->zi.next_out = (unsigned char *)W->zbuf + done;
            W->zi.avail_out = (uInt)(W->zcap - 1 - done);
            int rc = inflate(&W->zi, Z_SYNC_FLUSH);
            done = W->zcap - 1 - W->zi.avail_out;
            if (rc == Z_BUF_ERROR || (rc == Z_OK && !W->zi.avail_in && W->zi.avail_out))
                break;
            if (rc != Z_OK)
                return NULL;
        }
    }
    W->zbuf[done] = 0;
    *out_len = done;
    return W->zbuf;
}

static long ws_consume(struct worker *W, struct conn *c, unsigned char *buf, size_t len, int64_t now)
{
    size_t off = 0;
    while (len - off >= 2) {
        unsigned char *p = buf + off;
        size_t avail = len - off;
        unsigned b0 = p[0], b1 = p[1];
        size_t hl = 2;
        uint64_t pl = b1 & 0x7f;
        if (pl == 126) {
            if (avail < 4)
                break;
            pl = (uint64_t)p[2] << 8 | p[3];
            hl = 4;
        } else if (pl == 127) {
            if (avail < 10)
                break;
            pl = 0;
            for (int i = 0; i < 8; i++)
                pl = pl << 8 | p[2 + i];
            hl = 10;
        }
        bool masked = b1 & 0x80;
        if (masked)
            hl += 4;
        int op = b0 & 0x0f;
        /* RSV1 marks a compressed message (--deflate), never fragmented by chorusd. */
        bool z = g_o.deflate && (b0 & 0x40) && (op == 1 || op == 2) && (b0 & 0x80);
        if (pl > MAX_MESSAGE || ((b0 & 0x70) && !z) || (op >= 3 && op <= 7) || op > 0xA) {
            BUMP(W->st->c[ST_PROTO_ERRORS], 1);
            note(W, "bad frame from server: byte0 0x%02x, length %" PRIu64, b0, pl);
            conn_close(W, c);
            return -1;
        }
        if (avail < hl || avail - hl < pl) {
            c->need = hl + (size_t)pl;
            break;
        }
        unsigned char *pay = p + hl;
        if (masked)
            for (uint64_t i = 0; i < pl; i++)
                pay[i] ^= p[hl - 4 + (i & 3)];
        off += hl + (size_t)pl;
        bool fin = b0 & 0x80;
        switch (op) {
        case 0x1:
        case 0x2:
            if (c->in_frag) {
                BUMP(W->st->c[ST_PROTO_ERRORS], 1);
                note(W, "new data frame inside a fragmented message");
                conn_close(W, c);
                return -1;
            }
            if (z) {
                size_t zl;
                const char *text = inflate_message(W, pay, (size_t)pl, &zl);
                if (!text) {
                    BUMP(W->st->c[ST_PROTO_ERRORS], 1);
                    note(W, "compressed frame that does not inflate");
                    conn_close(W, c);
                    return -1;
                }
                if (on_message(W, c, text, zl, now) < 0)
                    return -1;
            } else if (fin) {
                if (on_message(W, c, (const char *)pay, (size_t)pl, now) < 0)
                    return -1;
            } else {
                c->in_frag = true;
                c->fraglen = 0;
                if (!grow(&c->frag, &c->fragcap, (size_t)pl)) {
                    conn_close(W, c);
                    return -1;
                }
                memcpy(c->frag, pay, (size_t)pl);
                c->fraglen = (uint32_t)pl;
            }
            break;
        case 0x0:
            if (!c->in_frag || (uint64_t)c->fraglen + pl > MAX_MESSAGE) {
                BUMP(W->st->c[ST_PROTO_ERRORS], 1);
                note(W, "unexpected continuation frame");
                conn_close(W, c);
                return -1;
            }
            if (!grow(&c->frag, &c->fragcap, (size_t)c->fraglen + (size_t)pl)) {
                conn_close(W, c);
                return -1;
            }
            memcpy(c->frag + c->fraglen, pay, (size_t)pl);
            c->fraglen += (uint32_t)pl;
            if (fin) {
                c->in_frag = false;
                if (on_message(W, c, (const char *)c->frag, c->fraglen, now) < 0)
                    return -1;
                if (c->fragcap > 65536)
                    free(c->frag), c->frag = NULL, c->fragcap = 0;
                c->fraglen = 0;
            }
            break;
        case 0x8:
            on_close_frame(W, c, pay, (size_t)pl);
            conn_close(W, c);
            return -1;
        case 0x9:
            BUMP(W->st->c[ST_PINGS], 1);
            if (ws_send(W, c, 0xA, pay, (size_t)pl) < 0)
                return -1;
            break;
        default: /* 0xA pong */
            break;
        }
    }
    return (long)off;
}

/* Parses whatever c->rbuf holds plus (when do_recv) what the socket has. */
static void ws_read(struct worker *W, struct conn *c, bool do_recv)
{
    size_t have = c->rlen;
    size_t want = have + READ_CHUNK;
    if (c->need > want)
        want = c->need;
    if (want > W->gcap) {
        unsigned char *p = realloc(W->gbuf, want);
        if (!p) {
            conn_close(W, c);
            return;
        }
        W->gbuf = p;
        W->gcap = want;
    }
    if (have)
        memcpy(W->gbuf, c->rbuf, have);
    size_t total = have;
    W->read_n = -1;
    if (do_recv) {
        size_t room = W->gcap - have;
        if (W->read_limit && room > W->read_limit)
            room = W->read_limit;
        ssize_t n = recv(c->fd, W->gbuf + have, room, 0);
        W->read_n = n;
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            if (!c->got_close)
                BUMP(W->st->close[CLOSE_1006], 1);
            if (c->state == CS_OPEN && !LOAD(g_ctl->quit) && !c->got_close)
                note(W, "server hung up a connection without a close frame (%s)",
                     n == 0 ? "EOF" : strerror(errno));
            conn_close(W, c);
            return;
        }
        if (n < 0)
            return;
        BUMP(W->st->c[ST_BYTES_IN], n);
        total += (size_t)n;
    }
    c->need = 0;
    /* one clock reading per read: the time the application gets to see the data */
    long used = ws_consume(W, c, W->gbuf, total, stamp_ns());
    if (used < 0)
        return;
    size_t rest = total - (size_t)used;
    if (rest) {
        if (!grow(&c->rbuf, &c->rcap, rest)) {
            conn_close(W, c);
            return;
        }
        memcpy(c->rbuf, W->gbuf + used, rest);
    } else if (c->rcap > 65536) {
        free(c->rbuf), c->rbuf = NULL, c->rcap = 0;
    }
    c->rlen = (uint32_t)rest;
}

/* ------------------------------------------------------------------------- */
/* Handshakes and HTTP                                                       */
/* ------------------------------------------------------------------------- */

static void on_connected(struct worker *W, struct conn *c)
{
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
        note(W, "connect to %s:%d: %s", g_o.host, c->port, strerror(err ? err : errno));
        conn_close(W, c);
        return;
    }
    conn_set_events(W, c, EPOLLIN);
    if (c->kind == K_HTTP) {
        c->state = CS_OPEN;
        BUMP(W->st->c[ST_OPEN], 1);
        BUMP(W->st->c[ST_CONNECTS], 1);
        conn_release_inflight(W, c);
        c->attempts = 0;
        return;
    }
    unsigned char raw[16];
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = rng_next(&W->rng);
        memcpy(raw + i, &r, 4);
    }
    base64(raw, 16, c->key);
    char req[8192], path[6144];
    if (g_o.nchan && g_o.sc == SC_TICKER && c->kind == K_SUB) { /* one multiplexed URL: A,B,C */
        size_t pl = (size_t)snprintf(path, sizeof path, "%s", g_o.msub_path);
        for (long k = 0; k < g_o.per_sub && pl < sizeof path; k++) {
            char name[128];
            channel_name(name, sizeof name, ticker_ch(c->gidx, k));
            pl += (size_t)snprintf(path + pl, sizeof path - pl, "%s%s", k ? "," : "", name);
        }
    } else if (g_o.nchan) { /* one URL per channel */
        char name[128];
        channel_name(name, sizeof name, c->ch);
        snprintf(path, sizeof path, "%s%s",
                 c->kind == K_SUB ? g_o.sub_path : c->kind == K_SUBPUB ? g_o.pubsub_path : g_o.pub_path, name);
    } else {
        snprintf(path, sizeof path, "%s", g_o.path);
    }
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s"
                     "User-Agent: chorus-bench\r\n\r\n",
                     path, g_o.host, c->port, c->key,
                     g_o.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                   "client_no_context_takeover; server_no_context_takeover\r\n"
                                 : "");
    c->state = CS_HANDSHAKE;
    conn_send(W, c, req, (size_t)n);
}

/* Finds header name (lower case, with ':') in the NUL-terminated header block
 * hdr and copies its trimmed value into out. */
static bool http_header(const char *hdr, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *l = strstr(hdr, "\r\n"); l; l = strstr(l + 2, "\r\n")) {
        const char *h = l + 2;
        if (!strncasecmp(h, name, nl)) {
            h += nl;
            while (*h == ' ' || *h == '\t')
                h++;
            size_t i = 0;
            while (h[i] && h[i] != '\r' && i + 1 < cap) {
                out[i] = h[i];
                i++;
            }
            while (i && (out[i - 1] == ' ' || out[i - 1] == '\t'))
                i--;
            out[i] = 0;
            return true;
        }
    }
    return false;
}

static void hs_read(struct worker *W, struct conn *c)
{
    if (!grow(&c->rbuf, &c->rcap, (size_t)c->rlen + 4097)) {
        conn_close(W, c);
        return;
    }
    ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen - 1, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        note(W, "server hung up during the upgrade (%s)", n == 0 ? "EOF" : strerror(errno));
        BUMP(W->st->c[ST_HANDSHAKE_FAILED], 1);
        conn_close(W, c);
        return;
    }
    if (n < 0)
        return;
    BUMP(W->st->c[ST_BYTES_IN], n);
    c->rlen += (uint32_t)n;
    c->rbuf[c->rlen] = 0;
    unsigned char *e = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (!e) {
        if (c->rlen > HANDSHAKE_LIMIT) {
            BUMP(W->st->c[ST_HANDSHAKE_FAILED], 1);
            conn_close(W, c);
        }
        return;
    }
    size_t hlen = (size_t)(e - c->rbuf) + 4;
    e[2] = 0; /* headers end with their last "\r\n" */
    const char *hdr = (const char *)c->rbuf;
    char accept[64], want[32];
    bool ok = !strncmp(hdr, "HTTP/1.1 101", 12);
    if (ok) {
        char kg[64];
        unsigned char dig[20];
        int kl = snprintf(kg, sizeof kg, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", c->key);
        sha1(kg, (size_t)kl, dig);
        base64(dig, 20, want);
        if (!http_header(hdr, "sec-websocket-accept:", accept, sizeof accept) || strcmp(accept, want)) {
            note(W, "bad Sec-WebSocket-Accept from server");
            ok = false;
        }
    } else {
        const char *eol = strstr(hdr, "\r\n");
        note(W, "upgrade refused: %.*s", (int)(eol ? eol - hdr : 80), hdr);
    }
    if (!ok) {
        BUMP(W->st->c[ST_HANDSHAKE_FAILED], 1);
        conn_close(W, c);
        return;
    }
    size_t rest = c->rlen - hlen;
    memmove(c->rbuf, c->rbuf + hlen, rest);
    c->rlen = (uint32_t)rest;
    c->state = CS_OPEN;
    BUMP(W->st->c[ST_OPEN], 1);
    BUMP(W->st->c[ST_CONNECTS], 1);
    if (c->kind == K_PUB) {
        conn_release_inflight(W, c);
        c->attempts = 0;
    } else if (g_o.nchan) {
        conn_subscribed(W, c); /* the upgrade is the subscription */
    } else {
        ws_send_sub(W, c);
        if (c->state != CS_OPEN)
            return;
    }
    if (rest)
        ws_read(W, c, false);
}

/* Reads and handles HTTP responses to POST /api/publish. */
static void http_read(struct worker *W, struct conn *c)
{
    if (!grow(&c->rbuf, &c->rcap, (size_t)c->rlen + 4097)) {
        conn_close(W, c);
        return;
    }
    ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen - 1, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        if (c->state == CS_HTTP_BUSY) {
            BUMP(W->st->c[ST_PUB_FAILED], 1);
            note(W, "server hung up an HTTP connection with a request outstanding");
        }
        conn_close(W, c);
        return;
    }
    if (n < 0)
        return;
    BUMP(W->st->c[ST_BYTES_IN], n);
    c->rlen += (uint32_t)n;
    for (;;) {
        c->rbuf[c->rlen] = 0;
        unsigned char *e = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
        if (!e) {
            if (c->rlen > HANDSHAKE_LIMIT)
                goto bad;
            return;
        }
        size_t hlen = (size_t)(e - c->rbuf) + 4;
        char hdr[HANDSHAKE_LIMIT + 8];
        if (hlen - 2 >= sizeof hdr)
            goto bad;
        memcpy(hdr, c->rbuf, hlen - 2); /* up to and with the last header's "\r\n" */
        hdr[hlen - 2] = 0;
        char v[64];
        int status = 0;
        if (sscanf(hdr, "HTTP/1.%*d %d", &status) != 1)
            goto bad;
        size_t body;
        bool closing = http_header(hdr, "connection:", v, sizeof v) && !strcasecmp(v, "close");
        if (http_header(hdr, "content-length:", v, sizeof v)) {
            body = strtoul(v, NULL, 10);
            if (hlen + body > 1u << 20)
                goto bad;
            if (c->rlen < hlen + body)
                return;
        } else if (http_header(hdr, "transfer-encoding:", v, sizeof v) && strcasestr(v, "chunked")) {
            unsigned char *b = c->rbuf + hlen;
            size_t bl = c->rlen - hlen;
            unsigned char *z = NULL;
            if (bl >= 5 && !memcmp(b, "0\r\n\r\n", 5))
                z = b;
            else if (bl >= 7) {
                z = memmem(b, bl, "\r\n0\r\n\r\n", 7);
                if (z)
                    z += 2;
            }
            if (!z) {
                if (bl > 1u << 20)
                    goto bad;
                return;
            }
            body = (size_t)(z + 5 - b);
        } else {
            body = 0;
            closing = true;
        }
        if (status == 200 || (g_o.nchan && status >= 200 && status < 300)) {
            BUMP(W->st->c[ST_PUB_ACKED], 1);
        } else {
            BUMP(W->st->c[ST_PUB_FAILED], 1);
            note(W, "POST %s answered %d: %.*s", g_o.nchan ? g_o.pub_path : "/api/publish", status, (int)(body > 200 ? 200 : body),
                 (const char *)c->rbuf + hlen);
        }
        memmove(c->rbuf, c->rbuf + hlen + body, c->rlen - hlen - body);
        c->rlen -= (uint32_t)(hlen + body);
        c->state = CS_OPEN;
        if (closing) {
            conn_close(W, c);
            return;
        }
        if (!c->rlen)
            return;
    }
bad:
    BUMP(W->st->c[ST_PROTO_ERRORS], 1);
    note(W, "malformed HTTP response from server");
    conn_close(W, c);
}

/* ------------------------------------------------------------------------- */
/* Publishing                                                                */
/* ------------------------------------------------------------------------- */

static bool can_publish(const struct conn *c)
{
    if (c->kind == K_HTTP)
        return c->state == CS_OPEN && c->wlen == c->woff;
    return c->state == CS_OPEN && !c->sub_pending && c->wlen - c->woff < WBUF_LIMIT;
}

/* Sends one message on c into channel ch. Returns 0, or -1 when c was closed. */
static int publish_one(struct worker *W, struct conn *c, uint32_t ch)
{
    char name[128];
    channel_name(name, sizeof name, ch);
    if (!scratch_reserve(W, (size_t)g_o.size + 1024))
        return -1;
    char *out = (char *)W->scratch + 14 + 512; /* room for HTTP headers in front */
    int64_t t = stamp_ns();
    char tbuf[32];
    int tl = snprintf(tbuf, sizeof tbuf, "%" PRId64, t);
    long pad = g_o.size - 13 - tl;
    if (pad < 0)
        pad = 0;
    int n;
    if (g_o.ticker) {
        /* A quote as chorus-ticker publishes one, with "t" for the latency;
         * the ticker scenario adds "c", the symbol's channel index. */
        uint32_t r = rng_next(&W->rng);
        char data[256], cfield[24] = "";
        if (g_o.sc == SC_TICKER)
            snprintf(cfield, sizeof cfield, "\"c\":%" PRIu32 ",", ch);
        snprintf(data, sizeof data,
                 "{\"t\":%s,%s\"sym\":\"S%03u\",\"price\":%u.%02u,\"change\":%s%u.%02u,\"ts\":%" PRId64 "}",
                 tbuf, cfield, g_o.sc == SC_TICKER ? ch % 1000 : r % 500, 20 + (r >> 9) % 400, (r >> 3) % 100,
                 (r & 4) ? "-" : "", (r >> 17) % 5, (r >> 20) % 100, t / 1000000);
        if (g_o.nchan) { /* the body is data itself */
            n = snprintf(out, 512, "%s", data);
        } else {
            const char *head = c->kind == K_HTTP ? "" : "\"op\":\"pub\",";
            char id[32] = "";
            if (c->kind != K_HTTP)
                snprintf(id, sizeof id, "\"id\":%" PRIu64 ",", ++c->next_id + SUB_ID);
            n = snprintf(out, 512, "{%s%s\"ch\":\"%s\",\"data\":%s}", head, id, name, data);
        }
        goto built;
    }
    if (g_o.nchan) /* the body is data itself */
        n = snprintf(out, 256, "{\"t\":%s,\"p\":\"", tbuf);
    else if (c->kind == K_HTTP)
        n = snprintf(out, 256, "{\"ch\":\"%s\",\"data\":{\"t\":%s,\"p\":\"", name, tbuf);
    else
        n = snprintf(out, 256, "{\"op\":\"pub\",\"id\":%" PRIu64 ",\"ch\":\"%s\",\"data\":{\"t\":%s,\"p\":\"",
                     ++c->next_id + SUB_ID, name, tbuf);
    memcpy(out + n, W->pad, (size_t)pad);
    n += (int)pad;
    size_t closing = g_o.nchan ? 2 : 3;
    memcpy(out + n, "\"}}", closing);
    n += (int)closing;
built:;
    size_t len = (size_t)n;
    int rc;
    if (c->kind == K_HTTP) {
        char hdr[512];
        int hl = g_o.nchan ? snprintf(hdr, sizeof hdr,
                                      "POST %s%s HTTP/1.1\r\nHost: %s:%d\r\n"
                                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                                      g_o.pub_path, name, g_o.host, c->port, len)
                           : snprintf(hdr, sizeof hdr,
                                      "POST /api/publish HTTP/1.1\r\nHost: %s:%d\r\nX-API-Key: %s\r\n"
                                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                                      g_o.host, c->port, g_o.api_key, len);
        if (hl <= 0 || hl >= 512)
            return -1;
        memcpy(out - hl, hdr, (size_t)hl);
        c->state = CS_HTTP_BUSY;
        rc = conn_send(W, c, out - hl, len + (size_t)hl);
    } else {
        memmove(W->scratch + 14, out, len);
        size_t flen;
        unsigned char *f = ws_wrap(W, W->scratch, len, 0x1, &flen);
        rc = conn_send(W, c, f, flen);
    }
    if (rc < 0)
        return -1;
    BUMP(W->st->c[ST_PUBLISHED], 1);
    if (g_o.nchan && c->kind == K_SUBPUB) /* Nchan answers nothing on a pubsub socket */
        BUMP(W->st->c[ST_PUB_ACKED], 1);
    atomic_fetch_add_explicit(&g_ch_pub[ch], 1, memory_order_relaxed);
    return 0;
}

/* The next connection able to publish, round-robin, or NULL. */
static struct conn *next_publisher(struct worker *W)
{
    for (uint32_t i = 0; i < W->npubs; i++) {
        struct conn *c = &W->conns[W->pubs[W->pub_cursor]];
        W->pub_cursor = (W->pub_cursor + 1) % W->npubs;
        if (can_publish(c))
            return c;
    }
    return NULL;
}

/* Publishes what the schedule asks for by now. Returns true while publishing. */
static bool worker_publish(struct worker *W, int64_t now)
{
    int gen = atomic_load_explicit(&g_ctl->pub_gen, memory_order_acquire);
    if (gen != W->pub_gen) {
        W->pub_gen = gen;
        W->pub_start = LOAD(g_ctl->pub_start);
        W->pub_end = LOAD(g_ctl->pub_end);
        double rate = (double)LOAD(g_ctl->rate_milli) / 1000.0;
        W->pub_rate = g_plan.npublishers ? rate * W->npubs / (double)g_plan.npublishers : 0;
        W->pub_sent = 0;
        W->pub_active = true;
        STORE(W->st->lat_max, 0);
        for (int g = 0; g < NGRP; g++)
            STORE(W->st->grp_lat_max[g], 0);
    }
    if (!W->pub_active)
        return false;
    if (now < W->pub_start)
        return true;
    /* the schedule advances in whole ticks; the last one ends at pub_end */
    int64_t tick = (int64_t)(g_o.tick_ms * 1e6);
    int64_t el = now < W->pub_end ? (now - W->pub_start) / tick * tick : W->pub_end - W->pub_start;
    uint64_t target = (uint64_t)(W->pub_rate * (double)el / 1e9);
    while (W->pub_sent < target) {
        struct conn *c = next_publisher(W);
        if (!c) {
            BUMP(W->st->c[ST_PUB_BLOCKED], 1);
            break;
        }
        uint32_t ch = c->kind == K_SUBPUB || (g_o.nchan && c->kind == K_PUB) ? c->ch
                                                                              : W->next_ch++ % (uint32_t)g_plan.nch;
        if (publish_one(W, c, ch) == 0)
            W->pub_sent++;
    }
    if (now >= W->pub_end) {
        W->pub_active = false;
        atomic_store_explicit(&W->st->pub_done_gen, gen, memory_order_release);
    }
    return W->pub_active;
}

/* ------------------------------------------------------------------------- */
/* Worker                                                                    */
/* ------------------------------------------------------------------------- */

static void worker_connect(struct worker *W, int64_t now)
{
    int gen = atomic_load_explicit(&g_ctl->connect_gen, memory_order_acquire);
    if (gen != W->connect_gen) {
        W->connect_gen = gen;
        W->connect_mode = true;
        for (uint32_t i = 0; i < W->nconns; i++) {
            struct conn *c = &W->conns[i];
            if (c->state == CS_CLOSED) {
                c->attempts = 0;
                c->retry_at = 0;
                queue_push(W, c);
            }
        }
    }
    while (W->qcount && W->inflight < W->max_inflight) {
        struct conn *c = &W->conns[W->queue[W->qhead]];
        if (c->retry_at > now)
            break;
        W->qhead = (W->qhead + 1) % W->nconns;
        W->qcount--;
        c->queued = false;
        if (c->state == CS_CLOSED)
            conn_open(W, c, now);
    }
    if (W->inflight) {
        static int64_t last;
        if (now - last > 100000000) {
            last = now;
            for (uint32_t i = 0; i < W->nconns; i++) {
                struct conn *c = &W->conns[i];
                if (c->inflight && now > c->deadline) {
                    note(W, "connection %u timed out in state %d", c->gidx, c->state);
                    conn_close(W, c);
                }
            }
        }
    }
    if (W->connect_mode && !W->inflight && !W->qcount) {
        W->connect_mode = false;
        atomic_store_explicit(&W->st->ready_gen, gen, memory_order_release);
    }
}

/* ticker: the slow readers' turn, every --slow-tick-ms. First a staleness
 * sample: for each of a reader's symbols, the age of the newest value it has
 * taken in (since publishing began, when it has none yet). Then it reads in
 * --slow-chunk-bytes recv() calls until it has taken in its share of
 * messages: its symbols' rate / --slow-factor. The rest stays in its socket
 * buffer (SO_RCVBUF --slow-rcvbuf-bytes), then in the server's. */
static void slow_tick(struct worker *W, int64_t now)
{
    double tick_s = (double)g_o.slow_tick_ms / 1000;
    double per_tick = (double)g_o.per_sub * g_o.rate / (double)g_plan.nch / g_o.slow_factor * tick_s;
    bool sample = W->pub_active && now >= W->pub_start + (int64_t)(g_o.warmup * 1e9) && now < W->pub_end;
    int64_t st = stamp_ns();
    for (uint32_t i = 0; i < W->nslow; i++) {
        struct conn *c = &W->conns[W->slow[i]];
        if (c->state != CS_OPEN || !c->subscribed)
            continue;
        for (long k = 0; sample && k < g_o.per_sub; k++) {
            int64_t age;
            if (c->newest[k] == 0) {
                BUMP(W->st->c[ST_STALE_UNSEEN], 1);
                age = now - W->pub_start;
            } else {
                age = st - c->newest[k];
            }
            uint64_t v = age > 0 ? (uint64_t)age : 0;
            BUMP(W->st->stale_hist[hist_index(v)], 1);
            if (v > LOAD(W->st->stale_max))
                STORE(W->st->stale_max, v);
        }
        /* an allowance unused for want of messages is not saved up */
        c->credit += per_tick;
        if (c->credit > 2 * per_tick + 1)
            c->credit = 2 * per_tick + 1;
        W->read_limit = (size_t)g_o.slow_chunk;
        for (int guard = 0; guard < 100000 && c->credit >= 1 && c->state == CS_OPEN; guard++) {
            uint64_t before = c->rx_msgs;
            ws_read(W, c, true);
            c->credit -= (double)(c->rx_msgs - before);
            if (W->read_n <= 0)
                break;
        }
        W->read_limit = 0;
    }
}

static void worker_event(struct worker *W, struct conn *c, uint32_t ev)
{
    if (c->state == CS_CONNECTING) {
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            on_connected(W, c);
        return;
    }
    if (ev & EPOLLOUT) {
        conn_flush(W, c);
        if (c->state == CS_CLOSED)
            return;
    }
    if (c->slow && c->subscribed && (ev & (EPOLLRDHUP | EPOLLERR | EPOLLHUP))) {
        /* the server closed a slow reader: read up to its close now */
        for (int guard = 0; guard < 1000 && c->state == CS_OPEN; guard++) {
            ws_read(W, c, true);
            if (W->read_n <= 0)
                break;
        }
        return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        if (c->state == CS_HANDSHAKE)
            hs_read(W, c);
        else if (c->kind == K_HTTP)
            http_read(W, c);
        else
            ws_read(W, c, true);
    }
}

static void worker_main(int id, pid_t parent)
{
    struct worker w = {.id = id}, *W = &w;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    W->st = &g_ws[id];
    W->rng = (uint32_t)(now_ns() ^ ((uint64_t)getpid() << 16)) | 1;
    int P = g_plan.procs;

    /* my share: clients i with i % P == id, then publisher connections j likewise */
    uint32_t nc = 0, np = 0;
    for (long i = id; i < g_plan.nclients; i += P)
        nc++;
    for (long j = id; j < g_plan.npubconns; j += P)
        np++;
    W->nconns = nc + np;
    W->conns = calloc(W->nconns ? W->nconns : 1, sizeof *W->conns);
    W->queue = calloc(W->nconns ? W->nconns : 1, sizeof *W->queue);
    W->pubs = calloc(W->nconns ? W->nconns : 1, sizeof *W->pubs);
    W->gcap = READ_CHUNK * 2;
    W->gbuf = malloc(W->gcap);
    W->scap = (size_t)g_o.size + 4096;
    W->scratch = malloc(W->scap);
    W->pad = malloc((size_t)g_o.size + 1);
    W->ep = epoll_create1(EPOLL_CLOEXEC);
    if (!W->conns || !W->queue || !W->pubs || !W->gbuf || !W->scratch || !W->pad || W->ep < 0) {
        fprintf(stderr, "chorus-bench[w%d]: out of memory\n", id);
        _exit(1);
    }
    memset(W->pad, 'x', (size_t)g_o.size);
    W->max_inflight = (uint32_t)(g_o.concurrency / P > 0 ? g_o.concurrency / P : 1);
    uint32_t k = 0;
    for (long i = id; i < g_plan.nclients; i += P, k++) {
        struct conn *c = &W->conns[k];
        c->fd = -1;
        c->gidx = (uint32_t)i;
        c->ch = (uint32_t)(i % g_plan.nch);
        c->port = (uint16_t)(g_o.nports ? g_o.ports[i % g_o.nports] : g_o.port);
        c->grp = c->port == g_o.port ? GRP_LOCAL : GRP_REMOTE;
        c->kind = g_plan.clients_publish ? K_SUBPUB : K_SUB;
        if (c->kind == K_SUBPUB)
            W->pubs[W->npubs++] = k;
        if (ticker_is_slow(i)) {
            c->slow = true;
            c->newest = calloc((size_t)g_o.per_sub, sizeof *c->newest);
            if (!W->slow)
                W->slow = calloc(nc, sizeof *W->slow);
            if (!c->newest || !W->slow) {
                fprintf(stderr, "chorus-bench[w%d]: out of memory\n", id);
                _exit(1);
            }
            W->slow[W->nslow++] = k;
        }
    }
    for (long j = id; j < g_plan.npubconns; j += P, k++) {
        struct conn *c = &W->conns[k];
        c->fd = -1;
        c->gidx = (uint32_t)(g_plan.nclients + j);
        c->port = (uint16_t)g_o.port;
        c->kind = g_o.via_http ? K_HTTP : K_PUB;
        c->ch = (uint32_t)(j % g_plan.nch); /* nchan: a WebSocket publisher's one channel */
        W->pubs[W->npubs++] = k;
    }
    W->next_ch = (uint32_t)id;

    struct epoll_event evs[1024];
    int n = 0;
    int64_t parent_checked = 0;
    while (!LOAD(g_ctl->quit)) {
        int64_t now = now_ns();
        worker_connect(W, now);
        bool publishing = worker_publish(W, now);
        if (W->nslow && now >= W->slow_next) {
            W->slow_next = now + g_o.slow_tick_ms * 1000000;
            slow_tick(W, now);
        }
        int timeout = publishing || W->qcount ? 1 : W->inflight ? 10 : 20;
        /* Waking up for every socket the server writes costs more than the
         * reads themselves (a context switch per one or two messages). When
         * the last wait found only a few ready sockets, pause briefly so the
         * next one finds many; when nothing was ready, block as usual. */
        if (n > 0 && n < NAP_BELOW && g_o.nap_us > 0) {
            struct timespec nap = {0, g_o.nap_us * 1000};
            nanosleep(&nap, NULL);
            timeout = 0;
        } else if (n > 0) {
            timeout = 0;
        }
        n = epoll_wait(W->ep, evs, 1024, timeout);
        for (int i = 0; i < n; i++)
            worker_event(W, &W->conns[evs[i].data.u32], evs[i].events);
        if (now - parent_checked > 200000000) {
            parent_checked = now;
            if (getppid() != parent)
                break;
        }
    }
    for (uint32_t i = 0; i < W->nconns; i++)
        if (W->conns[i].fd >= 0)
            close(W->conns[i].fd);
    _exit(0);
}

/* ------------------------------------------------------------------------- */
/* Reading the server from /proc                                             */
/* ------------------------------------------------------------------------- */

/* utime + stime of pid in clock ticks, or -1; *ppid gets its parent. */
static long long proc_stat_ticks(long pid, long *ppid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long ut, st;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", ppid, &ut, &st) != 3)
        return -1;
    return (long long)(ut + st);
}

/* utime + stime of pid and its children in clock ticks, or -1 when pid is
 * gone. A server that forks workers (chorusd --workers, nginx) does its work
 * in the children, whose time reaches the parent's stat only once reaped. */
static long long proc_cpu_ticks(long pid)
{
    long ppid;
    long long total = proc_stat_ticks(pid, &ppid);
    if (total < 0)
        return -1;
    DIR *d = opendir("/proc");
    if (!d)
        return total;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long child = strtol(e->d_name, &end, 10);
        if (*end || child <= 0 || child == pid)
            continue;
        long long t = proc_stat_ticks(child, &ppid);
        if (t > 0 && ppid == pid)
            total += t;
    }
    closedir(d);
    return total;
}

/* The value in kB of "key:" in /proc/pid/file, or -1. */
static long proc_kib(long pid, const char *file, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/%s", pid, file);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t kl = strlen(key);
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            v = strtol(line + kl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* proc_kib() summed over the --server-pid processes: a cluster's servers
 * count as one. -1 when there are none or one cannot be read. */
static long servers_kib(const char *file, const char *key)
{
    long sum = 0;
    for (int i = 0; i < g_o.nservers; i++) {
        long v = proc_kib(g_o.server_pids[i], file, key);
        if (v < 0)
            return -1;
        sum += v;
    }
    return g_o.nservers ? sum : -1;
}

/* Busy and total clock ticks of all CPUs together, from /proc/stat. */
static void host_cpu_ticks(long long *busy, long long *total)
{
    unsigned long long v[8] = {0};
    *busy = *total = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return;
    /* cpu user nice system idle iowait irq softirq steal */
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                   &v[6], &v[7]);
    fclose(f);
    if (n < 4)
        return;
    *busy = (long long)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
    *total = *busy + (long long)(v[3] + v[4]);
}

/* ------------------------------------------------------------------------- */
/* Coordinator                                                               */
/* ------------------------------------------------------------------------- */

static volatile sig_atomic_t g_stop;
static pid_t g_pids[MAX_PROCS];
static int64_t g_progress_at;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* A consistent enough sum of every worker's counters. */
struct snap {
    uint64_t c[NSTAT], err[NERR], close[NCLOSE];
    uint64_t hist[HIST_N];
    uint64_t lat_max;
    uint64_t grp_recv[NGRP], grp_sub[NGRP], grp_lat_max[NGRP];   /* --ports */
    uint64_t grp_hist[NGRP][HIST_N];
    long long server_ticks, bench_ticks;  /* server_ticks: all --server-pid together */
    long long server_ticks_each[MAX_SERVERS];
    long long worker_ticks[MAX_PROCS];
    long long host_busy, host_total;      /* /proc/stat, all CPUs */
    int64_t t;
};

static void snap_take(struct snap *s)
{
    memset(s, 0, sizeof *s);
    for (int w = 0; w < g_plan.procs; w++) {
        struct wstats *ws = &g_ws[w];
        for (int i = 0; i < NSTAT; i++)
            s->c[i] += LOAD(ws->c[i]);
        for (int i = 0; i < NERR; i++)
            s->err[i] += LOAD(ws->err[i]);
        for (int i = 0; i < NCLOSE; i++)
            s->close[i] += LOAD(ws->close[i]);
        for (int i = 0; i < HIST_N; i++)
            s->hist[i] += LOAD(ws->hist[i]);
        uint64_t m = LOAD(ws->lat_max);
        if (m > s->lat_max)
            s->lat_max = m;
        for (int g = 0; g < NGRP && g_plan.split; g++) {
            s->grp_recv[g] += LOAD(ws->grp_recv[g]);
            s->grp_sub[g] += LOAD(ws->grp_subscribed[g]);
            for (int i = 0; i < HIST_N; i++)
                s->grp_hist[g][i] += LOAD(ws->grp_hist[g][i]);
            m = LOAD(ws->grp_lat_max[g]);
            if (m > s->grp_lat_max[g])
                s->grp_lat_max[g] = m;
        }
    }
    s->t = now_ns();
    s->server_ticks = g_o.nservers ? 0 : -1;
    for (int i = 0; i < g_o.nservers; i++) {
        long long t = proc_cpu_ticks(g_o.server_pids[i]);
        s->server_ticks_each[i] = t;
        s->server_ticks = t < 0 || s->server_ticks < 0 ? -1 : s->server_ticks + t;
    }
    s->bench_ticks = 0;
    for (int w = 0; w < g_plan.procs; w++) {
        long ppid;
        long long t = proc_stat_ticks(g_pids[w], &ppid);
        s->worker_ticks[w] = t;
        if (t >= 0)
            s->bench_ticks += t;
    }
    host_cpu_ticks(&s->host_busy, &s->host_total);
}

/* Latency figures of one group of subscribers (--ports). */
struct grp_result {
    uint64_t expected;
    double p50, p90, p99, p999, max_ms;   /* -1 when nothing was received */
};

/* Figures of one measured interval (a run or a step). */
struct result {
    const char *scenario;
    int step;                  /* 0: not a step */
    double rate, duration;
    double window;             /* publish start to the last delivery seen, s */
    uint64_t expected;
    struct snap d;             /* counters: difference over the interval */
    double p50, p90, p99, p999, max_ms;   /* -1 when nothing was received */
    double server_cpu, bench_cpu;         /* -1 when unknown */
    double server_cpu_each[MAX_SERVERS];  /* per --server-pid, when several */
    double bench_worker_max_cpu;          /* the busiest worker */
    double host_cpu, other_cpu;           /* whole machine; everything else */
    double wall;
    long rss_kib;
    double mem_per_conn;       /* -1 when not measured */
    uint64_t connections, subscribed;
    struct grp_result grp[NGRP];          /* --ports */
    bool interrupted;
};

static bool worker_died(void)
{
    int status;
    pid_t p = waitpid(-1, &status, WNOHANG);
    if (p > 0) {
        for (int w = 0; w < g_plan.procs; w++)
            if (g_pids[w] == p) {
                fprintf(stderr, "\nchorus-bench: worker %d (pid %d) exited unexpectedly (status 0x%x)\n",
                        w, (int)p, status);
                g_pids[w] = -1;
            }
        return true;
    }
    return false;
}

static void fmt_count(char *out, size_t cap, double v)
{
    if (v >= 1e6)
        snprintf(out, cap, "%.2fM", v / 1e6);
    else if (v >= 1e4)
        snprintf(out, cap, "%.1fk", v / 1e3);
    else
        snprintf(out, cap, "%.0f", v);
}

static void progress(const char *phase, const struct snap *base, double step_rate, bool force)
{
    int64_t now = now_ns();
    if (g_o.quiet || (!force && now - g_progress_at < 1000000000))
        return;
    bool first = !g_progress_at;
    g_progress_at = now;
    static struct snap prev, cur;
    static uint64_t h[HIST_N];
    snap_take(&cur);
    if (first && base)
        prev = *base;
    double dt = (double)(cur.t - prev.t) / 1e9;
    if (dt <= 0)
        dt = 1;
    const char *cr = isatty(2) ? "\r\033[K" : "\r";
    char pub[32], recv[32], rr[32];
    if (base) {
        for (int i = 0; i < HIST_N; i++)
            h[i] = cur.hist[i] - base->hist[i];
        double p99 = hist_quantile_ms(h, 0.99);
        char p99s[32] = "-";
        if (p99 >= 0)
            snprintf(p99s, sizeof p99s, "%.2f", p99);
        fmt_count(pub, sizeof pub, (double)(cur.c[ST_PUBLISHED] - base->c[ST_PUBLISHED]));
        fmt_count(recv, sizeof recv, (double)(cur.c[ST_RECEIVED] - base->c[ST_RECEIVED]));
        fmt_count(rr, sizeof rr, (double)(cur.c[ST_RECEIVED] - prev.c[ST_RECEIVED]) / dt);
        fprintf(stderr, "%s%s rate %.0f/s | open %" PRIu64 " subs %" PRIu64 " | pub %s | recv %s (%s/s) | p99 %s ms | gaps %" PRIu64,
                cr, phase, step_rate, cur.c[ST_OPEN], cur.c[ST_SUBSCRIBED], pub, recv, rr, p99s,
                cur.c[ST_GAPS] - base->c[ST_GAPS]);
    } else {
        fprintf(stderr, "%s%s | open %" PRIu64 " subscribed %" PRIu64 " | retries %" PRIu64 " failed %" PRIu64,
                cr, phase, cur.c[ST_OPEN], cur.c[ST_SUBSCRIBED], cur.c[ST_CONNECT_RETRIES],
                cur.c[ST_CONNECT_FAILED]);
        if (g_o.nservers)
            fprintf(stderr, " | server rss %ld KiB", servers_kib("status", "VmRSS"));
    }
    fflush(stderr);
    prev = cur;
}

static void progress_end(void)
{
    if (!g_o.quiet && g_progress_at)
        fputc('\n', stderr);
    g_progress_at = 0;
}

/* Asks every worker to (re)open its closed connections and waits until they
 * have. Returns false when that took longer than --connect-timeout. */
static bool run_connect(void)
{
    int gen = LOAD(g_ctl->connect_gen) + 1;
    atomic_store_explicit(&g_ctl->connect_gen, gen, memory_order_release);
    int64_t deadline = now_ns() + (int64_t)(g_o.connect_timeout * 1e9);
    for (;;) {
        int ready = 0;
        for (int w = 0; w < g_plan.procs; w++)
            ready += atomic_load_explicit(&g_ws[w].ready_gen, memory_order_acquire) == gen;
        if (ready == g_plan.procs)
            break;
        if (g_stop || worker_died() || now_ns() > deadline) {
            progress_end();
            if (!g_stop)
                fprintf(stderr, "chorus-bench: connecting did not finish within %.0f s\n", g_o.connect_timeout);
            return false;
        }
        char phase[64];
        snprintf(phase, sizeof phase, "connect %ld", g_plan.nclients + g_plan.npubconns);
        progress(phase, NULL, 0, false);
        sleep_ms(10);
    }
    return true;
}

static void snap_diff(struct snap *d, const struct snap *a, const struct snap *b)
{
    for (int i = 0; i < NSTAT; i++)
        d->c[i] = b->c[i] - a->c[i];
    d->c[ST_OPEN] = b->c[ST_OPEN];
    d->c[ST_SUBSCRIBED] = b->c[ST_SUBSCRIBED];
    for (int i = 0; i < NERR; i++)
        d->err[i] = b->err[i] - a->err[i];
    for (int i = 0; i < NCLOSE; i++)
        d->close[i] = b->close[i] - a->close[i];
    for (int i = 0; i < HIST_N; i++)
        d->hist[i] = b->hist[i] - a->hist[i];
    d->lat_max = b->lat_max;
    for (int g = 0; g < NGRP; g++) {
        d->grp_recv[g] = b->grp_recv[g] - a->grp_recv[g];
        d->grp_sub[g] = b->grp_sub[g];
        for (int i = 0; i < HIST_N; i++)
            d->grp_hist[g][i] = b->grp_hist[g][i] - a->grp_hist[g][i];
        d->grp_lat_max[g] = b->grp_lat_max[g];
    }
}

static void result_finish(struct result *r, const struct snap *a, const struct snap *b)
{
    snap_diff(&r->d, a, b);
    r->wall = (double)(b->t - a->t) / 1e9;
    r->p50 = hist_quantile_ms(r->d.hist, 0.50);
    r->p90 = hist_quantile_ms(r->d.hist, 0.90);
    r->p99 = hist_quantile_ms(r->d.hist, 0.99);
    r->p999 = hist_quantile_ms(r->d.hist, 0.999);
    r->max_ms = r->p50 < 0 ? -1 : (double)r->d.lat_max / 1e6;
    for (int g = 0; g < NGRP; g++) {
        struct grp_result *gr = &r->grp[g];
        gr->p50 = hist_quantile_ms(r->d.grp_hist[g], 0.50);
        gr->p90 = hist_quantile_ms(r->d.grp_hist[g], 0.90);
        gr->p99 = hist_quantile_ms(r->d.grp_hist[g], 0.99);
        gr->p999 = hist_quantile_ms(r->d.grp_hist[g], 0.999);
        gr->max_ms = gr->p50 < 0 ? -1 : (double)r->d.grp_lat_max[g] / 1e6;
    }
    long hz = sysconf(_SC_CLK_TCK);
    r->server_cpu = a->server_ticks >= 0 && b->server_ticks >= 0 && r->wall > 0
                        ? 100.0 * (double)(b->server_ticks - a->server_ticks) / (double)hz / r->wall
                        : -1;
    for (int i = 0; i < g_o.nservers; i++) {
        double ticks = (double)(b->server_ticks_each[i] - a->server_ticks_each[i]);
        r->server_cpu_each[i] = r->server_cpu >= 0 ? 100.0 * ticks / (double)hz / r->wall : -1;
    }
    r->bench_cpu = r->wall > 0 ? 100.0 * (double)(b->bench_ticks - a->bench_ticks) / (double)hz / r->wall : -1;
    r->bench_worker_max_cpu = -1;
    for (int w = 0; w < g_plan.procs && r->wall > 0; w++) {
        double c = 100.0 * (double)(b->worker_ticks[w] - a->worker_ticks[w]) / (double)hz / r->wall;
        if (a->worker_ticks[w] >= 0 && b->worker_ticks[w] >= 0 && c > r->bench_worker_max_cpu)
            r->bench_worker_max_cpu = c;
    }
    r->host_cpu = r->wall > 0 && b->host_total > a->host_total
                      ? 100.0 * (double)(b->host_busy - a->host_busy) / (double)hz / r->wall
                      : -1;
    r->other_cpu = -1;
    if (r->host_cpu >= 0 && r->bench_cpu >= 0) {
        r->other_cpu = r->host_cpu - r->bench_cpu - (r->server_cpu > 0 ? r->server_cpu : 0);
        if (r->other_cpu < 0)
            r->other_cpu = 0;
    }
    r->rss_kib = servers_kib("status", "VmRSS");
    r->connections = b->c[ST_OPEN];
    r->subscribed = b->c[ST_SUBSCRIBED];
}

static double result_loss(const struct result *r)
{
    if (!r->expected)
        return 0;
    if (r->d.c[ST_RECEIVED] >= r->expected)
        return 0;
    return (double)(r->expected - r->d.c[ST_RECEIVED]) / (double)r->expected;
}

static void json_num(const char *key, double v, const char *fmt)
{
    if (v < 0 || !isfinite(v))
        printf(",\"%s\":null", key);
    else
        printf(fmt, key, v);
}

/* --ports: the ports, and latency and loss per group of subscribers, so that
 * one run shows what the node-to-node hop adds (remote against local). */
static void groups_print(const struct result *r)
{
    printf(",\"ports\":[");
    for (int i = 0; i < g_o.nports; i++)
        printf("%s%ld", i ? "," : "", g_o.ports[i]);
    printf("],\"pub_port\":%d", g_o.port);
    for (int g = 0; g < NGRP; g++) {
        const struct grp_result *gr = &r->grp[g];
        uint64_t recv = r->d.grp_recv[g];
        printf(",\"%s\":{\"subscribers\":%" PRIu64 ",\"expected\":%" PRIu64 ",\"received\":%" PRIu64, grp_names[g],
               r->d.grp_sub[g], gr->expected, recv);
        double loss = gr->expected > recv ? (double)(gr->expected - recv) / (double)gr->expected : 0;
        printf(loss > 0 ? ",\"loss\":%.6g" : ",\"loss\":%.0f", loss);
        json_num("p50_ms", gr->p50, ",\"%s\":%.3f");
        json_num("p90_ms", gr->p90, ",\"%s\":%.3f");
        json_num("p99_ms", gr->p99, ",\"%s\":%.3f");
        json_num("p999_ms", gr->p999, ",\"%s\":%.3f");
        json_num("max_ms", gr->max_ms, ",\"%s\":%.3f");
        printf("}");
    }
    const struct grp_result *l = &r->grp[GRP_LOCAL], *m = &r->grp[GRP_REMOTE];
    if (l->p99 >= 0 && m->p99 >= 0) /* may be negative: not json_num() */
        printf(",\"remote_minus_local_p99_ms\":%.3f", m->p99 - l->p99);
    else
        printf(",\"remote_minus_local_p99_ms\":null");
}

/* Prints r as one JSON line; extra (may be NULL) is appended verbatim. */
static void result_print(const struct result *r, const char *extra)
{
    char target[300];
    snprintf(target, sizeof target, "ws://%s:%d%s", g_o.host, g_o.port, g_o.path);
    if (g_o.nchan)
        snprintf(target, sizeof target, "ws://%s:%d%s*", g_o.host, g_o.port, g_o.sub_path);
    printf("{\"scenario\":\"%s\",\"target\":\"%s\"", r->scenario, target);
    if (g_o.nchan)
        printf(",\"proto\":\"nchan\"");
    if (r->step)
        printf(",\"step\":%d", r->step);
    printf(",\"connections\":%" PRIu64 ",\"subscribed\":%" PRIu64, r->connections, r->subscribed);
    printf(",\"channels\":%ld,\"publishers\":%ld,\"publish_via\":\"%s\",\"size\":%ld,\"procs\":%d",
           g_plan.nch, g_plan.npublishers, g_o.via_http ? "http" : "ws", g_o.size, g_plan.procs);
    printf(",\"rate_target\":%.3f,\"duration_s\":%.3f", r->rate, r->duration);
    double achieved = r->duration > 0 ? (double)r->d.c[ST_PUBLISHED] / r->duration : 0;
    printf(",\"rate_achieved\":%.3f", achieved);
    printf(",\"published\":%" PRIu64 ",\"expected\":%" PRIu64 ",\"received\":%" PRIu64, r->d.c[ST_PUBLISHED],
           r->expected, r->d.c[ST_RECEIVED]);
    double loss = result_loss(r);
    printf(loss > 0 ? ",\"loss\":%.6g" : ",\"loss\":%.0f", loss);
    /* deliveries over the time they took to arrive: a server that falls
     * behind and catches up during the drain does not look faster than it is */
    double window = r->window > r->duration ? r->window : r->duration;
    printf(",\"deliveries_per_sec\":%.1f", window > 0 ? (double)r->d.c[ST_RECEIVED] / window : 0);
    json_num("delivery_window_s", window, ",\"%s\":%.3f");
    json_num("p50_ms", r->p50, ",\"%s\":%.3f");
    json_num("p90_ms", r->p90, ",\"%s\":%.3f");
    json_num("p99_ms", r->p99, ",\"%s\":%.3f");
    json_num("p999_ms", r->p999, ",\"%s\":%.3f");
    json_num("max_ms", r->max_ms, ",\"%s\":%.3f");
    json_num("server_cpu_pct", r->server_cpu, ",\"%s\":%.1f");
    if (g_o.nservers > 1 && r->server_cpu >= 0) { /* which of several servers did the work */
        printf(",\"server_cpu_pcts\":[");
        for (int i = 0; i < g_o.nservers; i++)
            printf("%s%.1f", i ? "," : "", r->server_cpu_each[i]);
        printf("]");
    }
    json_num("server_rss_kib", (double)r->rss_kib, ",\"%s\":%.0f");
    json_num("mem_per_conn_bytes", r->mem_per_conn, ",\"%s\":%.0f");
    json_num("bench_cpu_pct", r->bench_cpu, ",\"%s\":%.1f");
    printf(",\"bench_saturated\":%s", r->bench_worker_max_cpu >= BENCH_SATURATED ? "true" : "false");
    json_num("host_cpu_pct", r->host_cpu, ",\"%s\":%.1f");
    json_num("other_cpu_pct", r->other_cpu, ",\"%s\":%.1f");
    printf(",\"tick_ms\":%g,\"nap_us\":%ld", g_o.tick_ms, g_o.nap_us);
    json_num("wall_s", r->wall, ",\"%s\":%.3f");
    for (int i = ST_CONNECT_RETRIES; i < NSTAT; i++) {
        if (i == ST_PUBLISHED || i == ST_RECEIVED)
            continue;
        printf(",\"%s\":%" PRIu64, stat_names[i], r->d.c[i]);
    }
    printf(",\"closes\":{");
    for (int i = 0, n = 0; i < NCLOSE; i++)
        if (r->d.close[i])
            printf("%s\"%s\":%" PRIu64, n++ ? "," : "", close_names[i], r->d.close[i]);
    printf("},\"errors\":{");
    for (int i = 0, n = 0; i < NERR; i++)
        if (r->d.err[i])
            printf("%s\"%s\":%" PRIu64, n++ ? "," : "", err_names[i], r->d.err[i]);
    printf("}");
    if (g_plan.split)
        groups_print(r);
    if (r->interrupted)
        printf(",\"interrupted\":true");
    if (extra)
        printf("%s", extra);
    printf("}\n");
    fflush(stdout);
}

/* Sum over channels of (messages published since base) x (subscribers at the
 * start); subs0 is g_ch_subs or, for the local group, g_ch_subs_local then. */
static uint64_t expected_deliveries(const uint64_t *pub0, const int64_t *subs0)
{
    uint64_t e = 0;
    for (long ch = 0; ch < g_plan.nch; ch++) {
        uint64_t p = LOAD(g_ch_pub[ch]) - pub0[ch];
        if (subs0[ch] > 0)
            e += p * (uint64_t)subs0[ch];
    }
    return e;
}

/* Publishes at rate for duration seconds, waits for the deliveries, fills r. */
static void run_publish(struct result *r, double rate, double duration, int step)
{
    static uint64_t *pub0;
    static int64_t *subs0, *subs0_local;
    if (!pub0) {
        pub0 = calloc((size_t)g_plan.nch, sizeof *pub0);
        subs0 = calloc((size_t)g_plan.nch, sizeof *subs0);
        subs0_local = calloc((size_t)g_plan.nch, sizeof *subs0_local);
        if (!pub0 || !subs0 || !subs0_local) {
            fprintf(stderr, "chorus-bench: out of memory\n");
            exit(1);
        }
    }
    memset(r, 0, sizeof *r);
    r->scenario = scenario_names[g_o.sc];
    r->step = step;
    r->rate = rate;
    r->mem_per_conn = -1;
    for (long ch = 0; ch < g_plan.nch; ch++) {
        pub0[ch] = LOAD(g_ch_pub[ch]);
        subs0[ch] = LOAD(g_ch_subs[ch]);
        subs0_local[ch] = LOAD(g_ch_subs_local[ch]);
    }
    struct snap a, b;
    int gen = LOAD(g_ctl->pub_gen) + 1;
    int64_t start = now_ns() + 100000000; /* every worker sees the new generation first */
    int64_t end = start + (int64_t)(duration * 1e9);
    STORE(g_ctl->pub_start, start);
    STORE(g_ctl->pub_end, end);
    STORE(g_ctl->rate_milli, (uint64_t)(rate * 1000));
    snap_take(&a);
    atomic_store_explicit(&g_ctl->pub_gen, gen, memory_order_release);

    char phase[64];
    snprintf(phase, sizeof phase, step ? "step %d" : "publish", step);
    /* publishing: until every worker says it is done, bounded */
    for (;;) {
        int done = 0;
        for (int w = 0; w < g_plan.procs; w++)
            done += atomic_load_explicit(&g_ws[w].pub_done_gen, memory_order_acquire) == gen;
        if (done == g_plan.procs)
            break;
        if (g_stop || worker_died() || now_ns() > end + 5000000000LL) {
            r->interrupted = true;
            break;
        }
        progress(phase, &a, rate, false);
        sleep_ms(5);
    }
    int64_t pub_ended = now_ns();
    r->duration = (double)((pub_ended < end ? pub_ended : end) - start) / 1e9;
    if (r->duration < 0)
        r->duration = 0;
    /* draining: until everything expected arrived and every publish was answered */
    snprintf(phase, sizeof phase, step ? "step %d drain" : "drain", step);
    int64_t drain_end = now_ns() + (int64_t)(g_o.drain * 1e9);
    int64_t last_change = pub_ended;
    uint64_t last_recv = UINT64_MAX;
    for (;;) {
        uint64_t exp = expected_deliveries(pub0, subs0);
        uint64_t recv = 0, pub = 0, answered = 0;
        for (int w = 0; w < g_plan.procs; w++) {
            recv += LOAD(g_ws[w].c[ST_RECEIVED]);
            pub += LOAD(g_ws[w].c[ST_PUBLISHED]);
            answered += LOAD(g_ws[w].c[ST_PUB_ACKED]) + LOAD(g_ws[w].c[ST_PUB_FAILED]);
        }
        recv -= a.c[ST_RECEIVED];
        pub -= a.c[ST_PUBLISHED];
        answered -= a.c[ST_PUB_ACKED] + a.c[ST_PUB_FAILED];
        if (recv != last_recv) {
            last_recv = recv;
            last_change = now_ns();
        }
        if (recv >= exp && answered >= pub)
            break;
        if (g_stop || worker_died() || now_ns() > drain_end)
            break;
        progress(phase, &a, rate, false);
        sleep_ms(5);
    }
    sleep_ms(20); /* let a duplicate or a late close show up */
    snap_take(&b);
    progress(phase, &a, rate, true);
    progress_end();
    r->expected = expected_deliveries(pub0, subs0);
    r->grp[GRP_LOCAL].expected = expected_deliveries(pub0, subs0_local);
    r->grp[GRP_REMOTE].expected = r->expected - r->grp[GRP_LOCAL].expected;
    r->window = (double)((last_change > end ? last_change : end) - start) / 1e9;
    if (r->window > (double)(pub_ended - start) / 1e9 + g_o.drain + 1 || r->window <= 0)
        r->window = r->duration;
    result_finish(r, &a, &b);
    if (g_stop)
        r->interrupted = true;
}

/* A step holds when it lost nothing and met the latency bound. */
static const char *step_failure(const struct result *r)
{
    if (r->interrupted)
        return "interrupted";
    if (result_loss(r) > 0 || r->d.c[ST_GAPS] || r->d.c[ST_DUPS])
        return "loss";
    for (int i = 0; i < NCLOSE; i++)
        if (r->d.close[i])
            return "closes";
    if (r->d.c[ST_PUB_FAILED])
        return "publish_errors";
    /* the schedule sends whole messages: one short is rounding, not lag */
    if ((double)r->d.c[ST_PUBLISHED] + 1 < 0.97 * r->rate * r->duration)
        return "publishers_fell_behind";
    if (r->bench_worker_max_cpu >= BENCH_SATURATED)
        return "bench_saturated";
    if (r->p99 > g_o.max_p99_ms)
        return "p99";
    return NULL;
}

/* Runs one step at rate and prints its line. A step that fails while other
 * processes took a good share of the CPU is run again, up to --noise-retries
 * times: on a shared machine that failure says little about the server.
 * Returns why the step failed, or NULL when it held. */
static const char *run_step(struct result *r, double rate, int *step)
{
    const char *why = NULL;
    for (int attempt = 0; attempt <= g_o.noise_retries && !g_stop; attempt++) {
        if (*step && !run_connect()) /* reopens what a failed step lost */
            return "connect";
        run_publish(r, rate, g_o.duration, ++*step);
        why = step_failure(r);
        bool noisy = why && r->other_cpu >= NOISY_OTHER_CPU;
        char extra[200];
        snprintf(extra, sizeof extra, ",\"held\":%s%s%s%s%s", why ? "false" : "true",
                 why ? ",\"fail_reason\":\"" : "", why ? why : "", why ? "\"" : "",
                 noisy && attempt < g_o.noise_retries ? ",\"noisy_retry\":true" : "");
        r->scenario = "fanout-step";
        result_print(r, extra);
        if (!noisy)
            break;
    }
    return why;
}

static int run_step_mode(void)
{
    struct result best = {0}, cur, bad = {0};
    bool have_best = false, have_bad = false;
    const char *bad_why = NULL;
    int step = 0;
    double rate = g_o.rate_start;
    while (!g_stop) {
        const char *why = run_step(&cur, rate, &step);
        if (why) {
            bad = cur, have_bad = true, bad_why = why;
            break;
        }
        best = cur, have_best = true;
        if (rate >= g_o.rate_max)
            break;
        rate *= g_o.rate_step;
        if (rate > g_o.rate_max)
            rate = g_o.rate_max;
    }
    for (int i = 0; i < g_o.refine && have_best && have_bad && !g_stop; i++) {
        double mid = sqrt(best.rate * bad.rate);
        if (mid / best.rate < 1.02)
            break;
        const char *why = run_step(&cur, mid, &step);
        if (why)
            bad = cur, bad_why = why;
        else
            best = cur;
    }
    char extra[400];
    snprintf(extra, sizeof extra, ",\"final\":true,\"steps\":%d,\"sustained_rate\":%.3f", step,
             have_best ? best.rate : 0.0);
    size_t l = strlen(extra);
    if (have_bad)
        snprintf(extra + l, sizeof extra - l, ",\"first_failing_rate\":%.3f,\"fail_reason\":\"%s\"", bad.rate,
                 bad_why);
    else
        snprintf(extra + l, sizeof extra - l, ",\"first_failing_rate\":null,\"fail_reason\":\"%s\"",
                 g_stop ? "interrupted" : "rate_max_reached");
    if (!have_best) {
        best = have_bad ? bad : best;
        best.rate = 0;
    }
    best.scenario = "fanout-step";
    best.step = 0;
    result_print(&best, extra);
    return have_best ? 0 : 1;
}

static int run_idle(long rss_before, long anon_before)
{
    struct snap a, b;
    snap_take(&a);
    int64_t end = now_ns() + (int64_t)(g_o.settle * 1e9);
    while (now_ns() < end && !g_stop && !worker_died()) {
        progress("settle", NULL, 0, false);
        sleep_ms(20);
    }
    progress("settle", NULL, 0, true);
    progress_end();
    snap_take(&b);
    struct result r = {0};
    r.scenario = "idle";
    r.mem_per_conn = -1;
    r.interrupted = g_stop;
    result_finish(&r, &a, &b);
    char extra[600] = "";
    if (g_o.nservers) {
        long rss = servers_kib("status", "VmRSS");
        long anon = servers_kib("smaps_rollup", "Anonymous");
        long pss = servers_kib("smaps_rollup", "Pss");
        long pdirty = servers_kib("smaps_rollup", "Private_Dirty");
        r.rss_kib = rss;
        uint64_t n = r.subscribed ? r.subscribed : 1;
        if (rss >= 0 && rss_before >= 0)
            r.mem_per_conn = (double)(rss - rss_before) * 1024.0 / (double)n;
        snprintf(extra, sizeof extra,
                 ",\"server_rss_before_kib\":%ld,\"server_anon_before_kib\":%ld,\"server_anon_kib\":%ld"
                 ",\"anon_per_conn_bytes\":%.0f,\"server_pss_kib\":%ld,\"server_private_dirty_kib\":%ld"
                 ",\"settle_s\":%.1f",
                 rss_before, anon_before, anon,
                 anon >= 0 && anon_before >= 0 ? (double)(anon - anon_before) * 1024.0 / (double)n : -1.0, pss,
                 pdirty, g_o.settle);
    }
    r.duration = 0;
    result_print(&r, extra);
    return r.subscribed ? 0 : 1;
}

/* ------------------------------------------------------------------------- */
/* Subcommands for scripts                                                   */
/* ------------------------------------------------------------------------- */

/* ticker: what the kernel makes of a slow reader's SO_RCVBUF request (Linux
 * doubles it, with a floor): the reader's own buffer, part of its staleness
 * (every 4 KB it holds is about a second at a tenth of the ticker's rate). */
static long slow_rcvbuf_effective(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), rb = (int)g_o.slow_rcvbuf, got = -1;
    socklen_t len = sizeof got;
    if (fd < 0)
        return -1;
    if (rb > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rb, sizeof rb);
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &len) < 0)
        got = -1;
    close(fd);
    return got;
}

/* ticker: one run; the line adds "ticker", the slow readers' figures. */
static int run_ticker(void)
{
    long rss0 = servers_kib("status", "VmRSS");
    struct result r;
    run_publish(&r, g_o.rate, g_o.duration, 0);
    static uint64_t h[HIST_N];
    uint64_t smax = 0, samples = 0;
    for (int w = 0; w < g_plan.procs; w++) {
        for (int i = 0; i < HIST_N; i++) {
            h[i] += LOAD(g_ws[w].stale_hist[i]);
            samples += LOAD(g_ws[w].stale_hist[i]);
        }
        if (LOAD(g_ws[w].stale_max) > smax)
            smax = LOAD(g_ws[w].stale_max);
    }
    long nslow = 0;
    for (long i = 0; i < g_plan.nclients; i++)
        nslow += ticker_is_slow(i);
    char extra[1024];
    int n = snprintf(extra, sizeof extra,
                     ",\"ticker\":{\"subscribers\":%ld,\"symbols_per_sub\":%ld,\"slow_readers\":%ld,"
                     "\"slow_factor\":%g,\"slow_tick_ms\":%ld,\"slow_chunk_bytes\":%ld,\"slow_rcvbuf_bytes\":%ld,"
                     "\"slow_rcvbuf_effective_bytes\":%ld,"
                     "\"healthy_closed\":%" PRIu64 ",\"slow_closed\":%" PRIu64 ",\"slow_received\":%" PRIu64
                     ",\"skipped\":%" PRIu64 ",\"stale_samples\":%" PRIu64 ",\"stale_unseen\":%" PRIu64,
                     g_plan.nclients, g_o.per_sub, nslow, g_o.slow_factor, g_o.slow_tick_ms, g_o.slow_chunk,
                     g_o.slow_rcvbuf, slow_rcvbuf_effective(), r.d.c[ST_HEALTHY_CLOSED], r.d.c[ST_SLOW_CLOSED], r.d.c[ST_SLOW_RECEIVED],
                     r.d.c[ST_SKIPPED], samples, r.d.c[ST_STALE_UNSEEN]);
    double q[3] = {hist_quantile_ms(h, 0.5), hist_quantile_ms(h, 0.99), samples ? (double)smax / 1e6 : -1};
    const char *qn[3] = {"staleness_p50_ms", "staleness_p99_ms", "staleness_max_ms"};
    for (int i = 0; i < 3; i++)
        n += q[i] < 0 ? snprintf(extra + n, sizeof extra - (size_t)n, ",\"%s\":null", qn[i])
                      : snprintf(extra + n, sizeof extra - (size_t)n, ",\"%s\":%.1f", qn[i], q[i]);
    long peak = servers_kib("status", "VmHWM");
    n += snprintf(extra + n, sizeof extra - (size_t)n, ",\"server_rss_start_kib\":%ld,\"server_rss_peak_kib\":%ld}",
                  rss0, peak);
    result_print(&r, extra);
    return 0;
}

static int cmd_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
        perror("chorus-bench free-port");
        return 1;
    }
    printf("%d\n", ntohs(a.sin_port));
    close(fd);
    return 0;
}

static int cmd_wait_ready(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 8080;
    double timeout = 10;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--host"))
            host = argv[i + 1];
        else if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--timeout"))
            timeout = atof(argv[i + 1]);
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "chorus-bench wait-ready: --host must be an IPv4 address\n");
        return 2;
    }
    int64_t deadline = now_ns() + (int64_t)(timeout * 1e9);
    do {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct timeval tv = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        char buf[256];
        int n = snprintf(buf, sizeof buf, "GET /healthz HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n", host,
                         port);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
            send(fd, buf, (size_t)n, MSG_NOSIGNAL) == n) {
            ssize_t r = recv(fd, buf, sizeof buf - 1, 0);
            if (r > 12) {
                buf[r] = 0;
                if (!strncmp(buf, "HTTP/1.1 200", 12) || !strncmp(buf, "HTTP/1.0 200", 12)) {
                    close(fd);
                    return 0;
                }
            }
        }
        if (fd >= 0)
            close(fd);
        sleep_ms(100);
    } while (now_ns() < deadline);
    fprintf(stderr, "chorus-bench wait-ready: %s:%d/healthz did not answer 200 within %.1f s\n", host, port,
            timeout);
    return 1;
}

/* ------------------------------------------------------------------------- */
/* main                                                                      */
/* ------------------------------------------------------------------------- */

static int plan_make(struct plan *p)
{
    memset(p, 0, sizeof *p);
    switch (g_o.sc) {
    case SC_FANOUT:
        p->nclients = g_o.subs;
        p->nch = g_o.channels;
        p->npubconns = g_o.pubs;
        break;
    case SC_ROOMS:
        p->nclients = g_o.clients;
        p->nch = g_o.rooms;
        p->clients_publish = !g_o.via_http;
        p->npubconns = g_o.via_http ? g_o.pubs : 0;
        break;
    case SC_TICKER:
        p->nclients = g_o.subs;
        p->nch = g_o.channels;
        p->npubconns = g_o.pubs;
        break;
    case SC_IDLE:
        p->nclients = g_o.conns;
        p->nch = g_o.shared_channel ? 1 : g_o.conns;
        p->npubconns = 0;
        break;
    }
    p->npublishers = p->clients_publish ? p->nclients : p->npubconns;
    p->split = g_o.nports > 0;

    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(g_o.host, NULL, &hints, &ai) || !ai) {
        fprintf(stderr, "chorus-bench: cannot resolve '%s' to an IPv4 address\n", g_o.host);
        return 2;
    }
    memcpy(&p->addr, ai->ai_addr, sizeof p->addr);
    freeaddrinfo(ai);
    p->addr.sin_port = htons((uint16_t)g_o.port);
    bool loopback = (ntohl(p->addr.sin_addr.s_addr) >> 24) == 127;
    if (!loopback && !g_o.allow_remote) {
        fprintf(stderr, "chorus-bench: %s is not in 127.0.0.0/8; pass --allow-remote to load another host\n",
                g_o.host);
        return 2;
    }

    /* descriptors: raise the soft limit as far as allowed, then split */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    long cap = (long)rl.rlim_cur - FD_RESERVE;
    if (cap < 16)
        cap = 16;
    long total = p->nclients + p->npubconns;
    int procs = (int)((total + cap - 1) / cap);
    if (procs < g_o.procs)
        procs = g_o.procs;
    if (procs < 1)
        procs = 1;
    if (procs > MAX_PROCS) {
        fprintf(stderr, "chorus-bench: %ld connections need more than %d processes of %ld descriptors\n", total,
                MAX_PROCS, cap);
        return 2;
    }
    p->procs = procs;
    if (g_o.src_ips >= 0)
        p->src_ips = g_o.src_ips;
    else
        p->src_ips = (int)((total + 15999) / 16000);
    if (!loopback)
        p->src_ips = 0;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "free-port"))
        return cmd_free_port();
    if (argc >= 2 && !strcmp(argv[1], "wait-ready"))
        return cmd_wait_ready(argc, argv);
    int rc = opts_parse(&g_o, argc, argv);
    if (rc)
        return rc;
    g_stamp_clock = g_o.realtime ? CLOCK_REALTIME : CLOCK_MONOTONIC;
    if (!g_o.prefix[0]) {
        uint32_t r = (uint32_t)(now_ns() ^ (uint64_t)getpid() << 20);
        snprintf(g_o.prefix, sizeof g_o.prefix, "bench:%s-%08x", scenario_names[g_o.sc], rng_next(&r));
    }
    if ((rc = plan_make(&g_plan)))
        return rc;

    size_t sz = sizeof(struct control) + (size_t)g_plan.procs * sizeof(struct wstats) +
                (size_t)g_plan.nch * (sizeof(_Atomic uint64_t) + 2 * sizeof(_Atomic int64_t)) + 64;
    void *mem = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("chorus-bench: mmap");
        return 1;
    }
    g_ctl = mem;
    g_ws = (struct wstats *)((char *)mem + ((sizeof(struct control) + 63) & ~(size_t)63));
    g_ch_pub = (_Atomic uint64_t *)(g_ws + g_plan.procs);
    g_ch_subs = (_Atomic int64_t *)(g_ch_pub + g_plan.nch);
    g_ch_subs_local = g_ch_subs + g_plan.nch;

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    long rss_before = -1, anon_before = -1;
    if (g_o.nservers) {
        rss_before = servers_kib("status", "VmRSS");
        anon_before = servers_kib("smaps_rollup", "Anonymous");
        if (rss_before < 0)
            fprintf(stderr, "chorus-bench: cannot read /proc/PID/status of every --server-pid; no server figures\n");
    }

    fflush(NULL);
    pid_t self = getpid();
    for (int w = 0; w < g_plan.procs; w++) {
        pid_t p = fork();
        if (p < 0) {
            perror("chorus-bench: fork");
            STORE(g_ctl->quit, 1);
            return 1;
        }
        if (p == 0)
            worker_main(w, self);
        g_pids[w] = p;
    }

    rc = 0;
    if (!run_connect() && g_stop)
        rc = 1;
    struct snap s;
    snap_take(&s);
    progress_end();
    if (!s.c[ST_SUBSCRIBED] && !g_stop) {
        fprintf(stderr, "chorus-bench: no connection could subscribe to ws://%s:%d%s\n", g_o.host, g_o.port,
                g_o.path);
        rc = 1;
    }
    if (!rc) {
        if (s.c[ST_SUBSCRIBED] < (uint64_t)g_plan.nclients)
            fprintf(stderr, "chorus-bench: only %" PRIu64 " of %ld clients subscribed; measuring those\n",
                    s.c[ST_SUBSCRIBED], g_plan.nclients);
        if (g_o.sc == SC_IDLE) {
            rc = run_idle(rss_before, anon_before);
        } else if (g_o.sc == SC_TICKER) {
            rc = run_ticker();
        } else if (g_o.step) {
            rc = run_step_mode();
        } else {
            struct result r;
            run_publish(&r, g_o.rate, g_o.duration, 0);
            result_print(&r, NULL);
        }
    } else {
        struct result r = {0};
        static struct snap z;
        z.t = s.t;
        z.server_ticks = -1;
        r.scenario = scenario_names[g_o.sc];
        r.mem_per_conn = -1;
        result_finish(&r, &z, &s);
        result_print(&r, ",\"error\":\"could not connect\"");
    }

    STORE(g_ctl->quit, 1);
    int64_t deadline = now_ns() + 5000000000LL;
    for (int w = 0; w < g_plan.procs; w++) {
        if (g_pids[w] <= 0)
            continue;
        while (waitpid(g_pids[w], NULL, WNOHANG) == 0) {
            if (now_ns() > deadline) {
                kill(g_pids[w], SIGKILL);
                waitpid(g_pids[w], NULL, 0);
                break;
            }
            sleep_ms(10);
        }
    }
    return rc;
}
