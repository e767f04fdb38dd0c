/* ticker_feed.c - `chorus-ticker`: publishes a synthetic random-walk price
 * stream, one channel per symbol (`ticker:<SYM>`), as a backend would.
 *
 *   chorus-ticker [--url URL] [--symbols AAPL,MSFT,GOOG] [--rate 10]
 *                 [--count N] [--api-key KEY] [--seed N] [--quiet]
 *
 * Each message is {"sym":"AAPL","price":187.23,"change":-0.41,"ts":1795000000123}:
 * `price` moves by a small log-normal step per tick, `change` is the
 * difference from the first price of the run (like a day change), `ts` is the
 * wall clock in ms. `--rate` is messages per second per symbol; `--count`
 * stops after N messages in total (all symbols), otherwise it runs until
 * SIGINT/SIGTERM. Over WebSocket it keeps publishing through reconnects (the
 * SDK queues up to max_queue messages; beyond that ticks are dropped and
 * counted). With --api-key it publishes through POST /api/publish instead,
 * which works even where a namespace forbids client publishing.
 *
 * What it shows of the SDK: chorus_client_run() driven by the program's own
 * timing loop, a signal handler waking the loop with chorus_client_wakeup(),
 * publish acks, and flushing with chorus_client_pending() before exiting. */
#include <chorus/client.h>
#include <chorus/http.h>

#include <errno.h>
#include <getopt.h>
#include <libwebsockets.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define MAX_SYMBOLS 64
#define FLUSH_TIMEOUT_MS 5000

struct symbol {
    char name[32];
    char channel[48];
    double open;                  /* first price of the run */
    double price;
};

struct feed {
    struct symbol sym[MAX_SYMBOLS];
    int nsym;
    uint64_t rng;
    long long published, acked, failed, dropped;
    bool quiet;
};

static volatile sig_atomic_t g_stop;
static chorus_client_t *volatile g_client;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
    if (g_client)
        chorus_client_wakeup(g_client);
}

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double uniform(struct feed *f)
{
    uint64_t x = f->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    f->rng = x;
    return ((x * 0x2545f4914f6cdd1dull) >> 11) * (1.0 / 9007199254740992.0);
}

static double gaussian(struct feed *f)
{
    double u = uniform(f), v = uniform(f);
    if (u < 1e-300)
        u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

static double cents(double x)
{
    return round(x * 100.0) / 100.0;
}

/* Splits "AAPL,MSFT" into symbols with a start price derived from the name,
 * so every run of a symbol starts from the same place. */
static int parse_symbols(struct feed *f, const char *list)
{
    char *copy = strdup(list), *save = NULL;
    if (!copy)
        return -1;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!*t)
            continue;
        if (f->nsym == MAX_SYMBOLS || strlen(t) >= sizeof f->sym[0].name) {
            fprintf(stderr, "chorus-ticker: too many symbols or symbol too long: '%s'\n", t);
            free(copy);
            return -1;
        }
        for (const char *c = t; *c; c++) {
            if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
                  *c == '.' || *c == '_' || *c == '-')) {
                fprintf(stderr, "chorus-ticker: symbol '%s' may only hold [A-Za-z0-9._-]\n", t);
                free(copy);
                return -1;
            }
        }
        struct symbol *s = &f->sym[f->nsym++];
        uint32_t h = 2166136261u;
        for (const char *c = t; *c; c++)
            h = (h ^ (unsigned char)*c) * 16777619u;
        snprintf(s->name, sizeof s->name, "%s", t);
        snprintf(s->channel, sizeof s->channel, "ticker:%s", t);
        s->open = s->price = cents(20.0 + (h % 48000) / 100.0);
    }
    free(copy);
    if (!f->nsym) {
        fprintf(stderr, "chorus-ticker: --symbols is empty\n");
        return -1;
    }
    return 0;
}

/* Advances one symbol and renders its message. */
static void tick(struct feed *f, struct symbol *s, char *out, size_t cap)
{
    s->price = cents(s->price * exp(0.002 * gaussian(f)));
    if (s->price < 0.01)
        s->price = 0.01;
    snprintf(out, cap, "{\"sym\":\"%s\",\"price\":%.2f,\"change\":%.2f,\"ts\":%lld}", s->name,
             s->price, cents(s->price - s->open), (long long)wall_ms());
}

/* ---------------------------------------------------------- WebSocket mode */

static void on_ack(chorus_client_t *cl, const chorus_ack_t *a, void *ud)
{
    struct feed *f = chorus_client_user(cl);
    (void)ud;
    if (a->status == CHORUS_OK) {
        f->acked++;
    } else {
        f->failed++;
        if (!f->quiet)
            fprintf(stderr, "chorus-ticker: publish to %s failed: %s: %s\n", a->ch, a->err_code,
                    a->err_msg);
    }
}

static void on_connected(chorus_client_t *cl, const chorus_hello_t *h, void *user)
{
    struct feed *f = user;
    (void)cl;
    if (!f->quiet)
        fprintf(stderr, "chorus-ticker: connected to node %s\n", h->node);
}

static void on_disconnected(chorus_client_t *cl, const chorus_disconnect_t *d, void *user)
{
    struct feed *f = user;
    (void)cl;
    if (!f->quiet)
        fprintf(stderr, "chorus-ticker: %s: %s; retrying in %d ms\n",
                d->was_connected ? "disconnected" : "cannot connect", d->reason, d->retry_in_ms);
}

static int run_ws(struct feed *f, const char *url, double rate, long long count)
{
    chorus_client_opts_t o;
    char data[256];
    double interval = 1.0 / rate, next = mono_s();

    memset(&o, 0, sizeof o);
    o.url = url;
    o.user = f;
    o.reconnect_max_ms = 5000;
    o.on_connected = on_connected;
    o.on_disconnected = on_disconnected;
    chorus_client_t *cl = chorus_client_new(&o);
    if (!cl) {
        fprintf(stderr, "chorus-ticker: bad URL '%s'\n", url);
        return 2;
    }
    g_client = cl;

    while (!g_stop && (!count || f->published + f->dropped < count)) {
        double now = mono_s();
        if (now < next) {
            chorus_client_run(cl, (int)ceil((next - now) * 1000));
            continue;
        }
        for (int i = 0; i < f->nsym && (!count || f->published + f->dropped < count); i++) {
            tick(f, &f->sym[i], data, sizeof data);
            int rc = chorus_client_publish(cl, f->sym[i].channel, data, on_ack, NULL);
            if (rc == CHORUS_OK) {
                f->published++;
            } else {
                if (!f->dropped && !f->quiet)
                    fprintf(stderr, "chorus-ticker: dropping ticks: %s\n", chorus_strerror(rc));
                f->dropped++;
            }
        }
        next += interval;
        if (next < now - 1.0)
            next = now; /* fell far behind (e.g. suspended): do not burst to catch up */
    }

    /* Flush: wait for the acks of what was published, bounded. */
    double give_up = mono_s() + FLUSH_TIMEOUT_MS / 1000.0;
    while (chorus_client_pending(cl) && mono_s() < give_up)
        chorus_client_run(cl, 100);
    g_client = NULL;
    chorus_client_free(cl); /* fails what is still pending with CHORUS_E_CLOSED */
    if (!f->quiet || f->failed || f->dropped)
        fprintf(stderr, "chorus-ticker: published %lld, acked %lld, failed %lld, dropped %lld\n",
                f->published, f->acked, f->failed, f->dropped);
    return f->failed || f->dropped ? 1 : 0;
}

/* --------------------------------------------------------------- HTTP mode */

static void sleep_until(double t)
{
    double left = t - mono_s();
    if (left <= 0)
        return;
    struct timespec ts = {(time_t)left, (long)((left - (time_t)left) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !g_stop)
        ;
}

static int run_http(struct feed *f, const char *url, const char *key, double rate, long long count)
{
    chorus_http_result_t res;
    char data[256];
    double interval = 1.0 / rate, next = mono_s();
    chorus_http_t *h = chorus_http_new(url, key);

    if (!h) {
        fprintf(stderr, "chorus-ticker: bad URL '%s' for the HTTP API\n", url);
        return 2;
    }
    while (!g_stop && (!count || f->published < count)) {
        sleep_until(next);
        if (g_stop)
            break;
        for (int i = 0; i < f->nsym && (!count || f->published < count) && !g_stop; i++) {
            tick(f, &f->sym[i], data, sizeof data);
            f->published++;
            if (chorus_http_publish(h, f->sym[i].channel, data, 5000, &res) == CHORUS_OK) {
                f->acked++;
            } else {
                f->failed++;
                if (!f->quiet)
                    fprintf(stderr, "chorus-ticker: publish to %s failed: %s: %s\n",
                            f->sym[i].channel, res.err_code, res.err_msg);
                if (res.status == CHORUS_E_UNAUTHORIZED || res.status == CHORUS_E_FORBIDDEN)
                    g_stop = 1; /* will not get better */
            }
        }
        next += interval;
        if (next < mono_s() - 1.0)
            next = mono_s();
    }
    chorus_http_free(h);
    if (!f->quiet || f->failed)
        fprintf(stderr, "chorus-ticker: published %lld, acked %lld, failed %lld (HTTP)\n",
                f->published, f->acked, f->failed);
    return f->failed ? 1 : 0;
}

/* --------------------------------------------------------------------- main */

static void usage(FILE *out)
{
    fputs("usage: chorus-ticker [--url URL] [--symbols A,B,C] [--rate N] [--count N]\n"
          "                     [--api-key KEY] [--seed N] [--quiet]\n"
          "  --url URL       node URL (default ws://127.0.0.1:8080/ws)\n"
          "  --symbols LIST  comma-separated symbols (default AAPL,MSFT,GOOG)\n"
          "  --rate N        messages per second per symbol (default 10)\n"
          "  --count N       stop after N messages in total (default: until SIGINT/SIGTERM)\n"
          "  --api-key KEY   publish through POST /api/publish instead of WebSocket\n"
          "  --seed N        random seed (default: time)\n"
          "  --quiet         only errors on stderr\n"
          "publishes {\"sym\",\"price\",\"change\",\"ts\"} to ticker:<SYM>\n",
          out);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"url", required_argument, NULL, 'u'},
        {"symbols", required_argument, NULL, 's'},
        {"rate", required_argument, NULL, 'r'},
        {"count", required_argument, NULL, 'c'},
        {"api-key", required_argument, NULL, 'k'},
        {"seed", required_argument, NULL, 'S'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}
    };
    static struct feed f;
    const char *url = "ws://127.0.0.1:8080/ws", *symbols = "AAPL,MSFT,GOOG", *key = NULL;
    double rate = 10;
    long long count = 0;
    uint64_t seed = (uint64_t)wall_ms() * 2654435761u;
    char *end;
    int c;

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'u': url = optarg; break;
        case 's': symbols = optarg; break;
        case 'r':
            rate = strtod(optarg, &end);
            if (*end || end == optarg || !(rate > 0) || rate > 10000) {
                fprintf(stderr, "chorus-ticker: --rate must be in (0, 10000]\n");
                return 2;
            }
            break;
        case 'c':
            count = strtoll(optarg, &end, 10);
            if (*end || end == optarg || count < 0) {
                fprintf(stderr, "chorus-ticker: --count must be a non-negative integer\n");
                return 2;
            }
            break;
        case 'k': key = optarg; break;
        case 'S': seed = strtoull(optarg, NULL, 10); break;
        case 'q': f.quiet = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (parse_symbols(&f, symbols) < 0)
        return 2;
    f.rng = seed ? seed : 1;

    lws_set_log_level(0, NULL); /* the SDK's callbacks report what matters */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    return key ? run_http(&f, url, key, rate, count) : run_ws(&f, url, rate, count);
}
