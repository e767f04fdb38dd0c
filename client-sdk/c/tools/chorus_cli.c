/* chorus_cli.c - `chorus`, the command-line client of a Chorus node.
 *
 *   chorus [options] sub CH...        one JSON line per message (the msg frame)
 *   chorus [options] pub CH DATA      publish DATA (JSON), print the ack's seq
 *   chorus [options] history CH       one JSON line per message kept
 *   chorus --api-key KEY info|channels|disconnect|unsubscribe|subscribe|broadcast ...
 *                                     the server API (PROTOCOL.md 6): one JSON line
 *
 * stdout carries only data, one JSON document per line, flushed per line;
 * notices and errors go to stderr. Exit status: 0 success, 1 server error,
 * connection failure or timeout, 2 usage error. */
#include <chorus/client.h>
#include <chorus/http.h>

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXIT_USAGE 2
#define DEFAULT_URL "ws://127.0.0.1:8080/ws"

static const char usage_text[] =
    "usage: chorus [options] sub CH... [--count N] [--since EPOCH:SEQ]\n"
    "       chorus [options] pub CH DATA [--text] [--api-key KEY]\n"
    "       chorus [options] history CH [--limit N] [--since EPOCH:SEQ]\n"
    "       chorus --api-key KEY info\n"
    "       chorus --api-key KEY channels [PREFIX]\n"
    "       chorus --api-key KEY disconnect USER [--reason TEXT]\n"
    "       chorus --api-key KEY unsubscribe USER CH [--reason TEXT]\n"
    "       chorus --api-key KEY subscribe USER CH\n"
    "       chorus --api-key KEY broadcast CH... DATA [--text]\n"
    "\n"
    "  sub      print every message of the channels as one JSON line (the msg frame)\n"
    "  pub      publish DATA, which must be JSON ('{\"a\":1}', '\"text\"', 42, true);\n"
    "           --text sends DATA as a JSON string instead; DATA '-' reads stdin;\n"
    "           prints the seq the node gave the message\n"
    "  history  print the messages the node keeps for CH, oldest first\n"
    "  info, channels, disconnect, unsubscribe, subscribe, broadcast: the server API,\n"
    "           acting on every node of the cluster; print its JSON answer on one line\n"
    "           and name on stderr the nodes that did not answer\n"
    "\n"
    "options:\n"
    "  --url URL        node WebSocket URL (default $CHORUS_URL or " DEFAULT_URL ")\n"
    "  --token TOKEN    connection token (sent as ?token=)\n"
    "  --timeout SECS   give up after SECS (pub/history default 10; sub: none).\n"
    "                   sub --count fails if the count is not reached in time\n"
    "  --count N        sub: exit 0 after N messages\n"
    "  --since E:S      sub (one channel) / history: only messages after epoch E, seq S\n"
    "  --limit N        history: at most the newest N messages\n"
    "  --api-key KEY    pub: publish through POST /api/publish instead of WebSocket;\n"
    "                   required by the server API commands (default $CHORUS_API_KEY)\n"
    "  --reason TEXT    disconnect/unsubscribe: the reason the clients are given\n"
    "  --text           pub: send DATA as a JSON string\n"
    "  --quiet          no notices on stderr (errors still)\n"
    "  --verbose        also show libwebsockets' own log\n"
    "  --help\n"
    "exit status: 0 ok, 1 server error / connection failure / timeout, 2 usage\n";

static volatile sig_atomic_t g_signalled;
static chorus_client_t *volatile g_client;

static struct {
    const char *url;
    const char *token;
    double timeout;               /* seconds; < 0 when not given */
    long long count;
    long long limit;
    const char *since;
    const char *api_key;
    const char *reason;
    bool text;
    bool quiet;
    bool verbose;
} opt = {NULL, NULL, -1, 0, 0, NULL, NULL, NULL, false, false, false};

/* The state one command run shares with its callbacks. */
struct run {
    const char *cmd;
    bool done;
    int exit_code;
    bool ever_connected;
    long long received;
    int subscribed;
    int nsubs;
};

/* Marks the command done and makes chorus_client_run() return now. */
static void finish(chorus_client_t *cl, struct run *r)
{
    r->done = true;
    chorus_client_wakeup(cl);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "chorus: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(run 'chorus --help' for usage)\n");
    return EXIT_USAGE;
}

static void on_signal(int sig)
{
    (void)sig;
    g_signalled = 1;
    if (g_client)
        chorus_client_wakeup(g_client);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void notice(const char *fmt, const char *a, const char *b)
{
    if (opt.quiet)
        return;
    fprintf(stderr, "chorus: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
}

/* Writes one JSON line to stdout; false when stdout is gone (EPIPE). */
static bool print_line(const char *raw, size_t len, const struct json_t *frame)
{
    char *re = NULL;
    if (memchr(raw, '\n', len) || memchr(raw, '\r', len) || !len) {
        re = json_dumps(frame, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!re)
            return true;
        raw = re;
        len = strlen(re);
    }
    fwrite(raw, 1, len, stdout);
    fputc('\n', stdout);
    free(re);
    return fflush(stdout) == 0 && !ferror(stdout);
}

/* "EPOCH:SEQ", split at the last ':' (the epoch is opaque). */
static bool parse_since(const char *s, char *epoch, size_t cap, uint64_t *seq)
{
    const char *c = strrchr(s, ':');
    char *end;
    if (!c || c == s || (size_t)(c - s) >= cap || !c[1])
        return false;
    errno = 0;
    unsigned long long v = strtoull(c + 1, &end, 10);
    if (*end || errno || c[1] == '-')
        return false;
    memcpy(epoch, s, (size_t)(c - s));
    epoch[c - s] = '\0';
    *seq = v;
    return true;
}

/* ------------------------------------------------------------ callbacks */

static void on_connected(chorus_client_t *cl, const chorus_hello_t *h, void *user)
{
    struct run *r = user;
    (void)cl;
    r->ever_connected = true;
    if (opt.verbose)
        notice("connected to node %s as client %s", h->node, h->client);
}

static void on_disconnected(chorus_client_t *cl, const chorus_disconnect_t *d, void *user)
{
    struct run *r = user;
    (void)cl;
    if (!r->ever_connected) {
        fprintf(stderr, "chorus: error: cannot connect to %s: %s\n", opt.url, d->reason);
        r->exit_code = 1;
        finish(cl, r);
        return;
    }
    if (d->retry_in_ms < 0) {
        if (!r->done) {
            fprintf(stderr, "chorus: error: disconnected: %s\n", d->reason);
            r->exit_code = 1;
            finish(cl, r);
        }
        return;
    }
    if (!opt.quiet)
        fprintf(stderr, "chorus: disconnected (%s); reconnecting in %d ms\n", d->reason,
                d->retry_in_ms);
}

static void on_error(chorus_client_t *cl, int status, const char *msg, void *user)
{
    (void)cl;
    (void)user;
    (void)status;
    if (!opt.quiet)
        fprintf(stderr, "chorus: warning: %s\n", msg);
}

static void on_sub_event(chorus_client_t *cl, const chorus_sub_event_t *ev, void *user)
{
    struct run *r = user;
    char pos[128];
    (void)cl;
    switch (ev->kind) {
    case CHORUS_SUB_SUBSCRIBED:
        snprintf(pos, sizeof pos, "epoch %s, seq %llu", ev->epoch, (unsigned long long)ev->seq);
        if (!ev->resumed)
            notice("subscribed to %s (%s)", ev->ch, pos);
        else if (ev->recovered)
            notice("resubscribed to %s, missed messages follow (%s)", ev->ch, pos);
        else
            notice("resubscribed to %s; messages may have been lost (%s)", ev->ch, pos);
        r->subscribed++;
        break;
    case CHORUS_SUB_FAILED:
        fprintf(stderr, "chorus: error: cannot subscribe to %s: %s: %s\n", ev->ch, ev->err_code,
                ev->err_msg);
        r->exit_code = 1;
        finish(cl, r);
        break;
    case CHORUS_SUB_EPOCH:
        snprintf(pos, sizeof pos, "%s", ev->epoch);
        notice("channel %s started a new epoch %s", ev->ch, pos);
        break;
    case CHORUS_SUB_GAP:
        if (!opt.quiet)
            fprintf(stderr, "chorus: warning: %s: messages %llu to %llu were lost\n", ev->ch,
                    (unsigned long long)ev->gap_from, (unsigned long long)ev->gap_to);
        break;
    }
}

static void on_msg(chorus_client_t *cl, const chorus_msg_t *m, void *ud)
{
    struct run *r = ud;
    (void)cl;
    if (r->done)
        return;
    if (!print_line(m->raw, m->raw_len, m->frame)) {
        finish(cl, r); /* stdout closed (e.g. | head): a normal end */
        return;
    }
    if (opt.count && ++r->received >= opt.count)
        finish(cl, r);
}

static void on_ack(chorus_client_t *cl, const chorus_ack_t *a, void *ud)
{
    struct run *r = ud;
    (void)cl;
    if (r->done)
        return; /* already reported (the connection failed) */
    if (a->status == CHORUS_OK) {
        printf("%llu\n", (unsigned long long)a->seq);
        fflush(stdout);
        if (opt.verbose)
            fprintf(stderr, "chorus: published to %s (epoch %s, seq %llu)\n", a->ch, a->epoch,
                    (unsigned long long)a->seq);
        r->exit_code = 0;
    } else {
        fprintf(stderr, "chorus: error: %s: %s\n", a->err_code, a->err_msg);
        r->exit_code = 1;
    }
    finish(cl, r);
}

static void on_history(chorus_client_t *cl, const chorus_history_t *h, void *ud)
{
    struct run *r = ud;
    (void)cl;
    if (r->done)
        return; /* already reported (the connection failed) */
    finish(cl, r);
    if (h->status != CHORUS_OK) {
        fprintf(stderr, "chorus: error: %s: %s\n", h->err_code, h->err_msg);
        r->exit_code = 1;
        return;
    }
    for (size_t i = 0; i < h->count; i++)
        if (!print_line(h->msgs[i].raw, h->msgs[i].raw_len, h->msgs[i].frame))
            break;
    if (opt.verbose)
        fprintf(stderr, "chorus: %zu messages (channel epoch %s, seq %llu)\n", h->count, h->epoch,
                (unsigned long long)h->seq);
    r->exit_code = 0;
}

/* ------------------------------------------------------------- commands */

static chorus_client_t *open_client(struct run *r, bool reconnect)
{
    chorus_client_opts_t o;
    memset(&o, 0, sizeof o);
    o.url = opt.url;
    o.token = opt.token;
    o.no_reconnect = !reconnect;
    o.reconnect_max_ms = 5000;
    o.user = r;
    o.on_connected = on_connected;
    o.on_disconnected = on_disconnected;
    o.on_error = on_error;
    o.on_sub_event = on_sub_event;
    chorus_client_t *cl = chorus_client_new(&o);
    if (!cl)
        fprintf(stderr, "chorus: error: bad URL '%s' (expected ws://host:port/ws)\n", opt.url);
    g_client = cl;
    return cl;
}

/* Runs the client until the command is done, a signal, or the timeout. */
static int drive(chorus_client_t *cl, struct run *r, double timeout)
{
    double deadline = timeout >= 0 ? now_s() + timeout : 0;
    while (!r->done && !g_signalled) {
        int slice = 1000;
        if (timeout >= 0) {
            double left = deadline - now_s();
            if (left <= 0) {
                if (!strcmp(r->cmd, "sub") && !opt.count)
                    return 0; /* a bounded tail: not an error */
                if (!strcmp(r->cmd, "sub"))
                    fprintf(stderr, "chorus: error: timeout: received %lld of %lld messages\n",
                            r->received, opt.count);
                else
                    fprintf(stderr, "chorus: error: timeout: no %s reply within %g s\n", r->cmd,
                            timeout);
                return 1;
            }
            if (left * 1000 < slice)
                slice = (int)ceil(left * 1000);
        }
        int rc = chorus_client_run(cl, slice);
        if (rc == CHORUS_E_DISCONNECTED && !r->done)
            return 1; /* reported by on_disconnected */
    }
    return g_signalled && !r->done ? 0 : r->exit_code;
}

static int cmd_sub(char **chans, int n)
{
    struct run r = {"sub", false, 0, false, 0, 0, n};
    char epoch[CHORUS_EPOCH_MAX + 1];
    uint64_t seq = 0;
    int rc = 0;

    if (n < 1)
        return usage_error("sub needs at least one channel%s", "");
    if (opt.since && n != 1)
        return usage_error("--since works with exactly one channel%s", "");
    if (opt.since && !parse_since(opt.since, epoch, sizeof epoch, &seq))
        return usage_error("--since must be EPOCH:SEQ, not '%s'", opt.since);
    chorus_client_t *cl = open_client(&r, true);
    if (!cl)
        return EXIT_USAGE;
    for (int i = 0; i < n; i++) {
        int st = opt.since ? chorus_client_subscribe_from(cl, chans[i], epoch, seq, on_msg, &r)
                           : chorus_client_subscribe(cl, chans[i], on_msg, &r);
        if (st == CHORUS_E_EXISTS)
            continue;
        if (st != CHORUS_OK) {
            fprintf(stderr, "chorus: error: cannot subscribe to '%s': %s\n", chans[i],
                    chorus_strerror(st));
            rc = st == CHORUS_E_BAD_CHANNEL ? EXIT_USAGE : 1;
            goto out;
        }
    }
    rc = drive(cl, &r, opt.timeout);
out:
    g_client = NULL;
    chorus_client_free(cl);
    return rc;
}

static char *read_stdin(void)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len - 1, stdin)) > 0) {
        len += n;
        if (len + 1 == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (buf)
        buf[len] = '\0';
    return buf;
}

static int cmd_pub(char **args, int n)
{
    struct run r = {"pub", false, 1, false, 0, 0, 0};
    char *stdin_data = NULL, *data = NULL;
    json_error_t jerr;
    json_t *j;
    int rc;

    if (n != 2)
        return usage_error("pub needs a channel and DATA%s", "");
    const char *ch = args[0], *arg = args[1];
    if (!strcmp(arg, "-")) {
        stdin_data = read_stdin();
        if (!stdin_data) {
            fprintf(stderr, "chorus: error: cannot read stdin\n");
            return 1;
        }
        arg = stdin_data;
    }
    if (opt.text) {
        json_t *s = json_string(arg);
        data = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
        json_decref(s);
        if (!data) {
            free(stdin_data);
            return usage_error("--text DATA must be UTF-8%s", "");
        }
    } else {
        j = json_loads(arg, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
        if (!j) {
            fprintf(stderr,
                    "chorus: DATA is not JSON (%s); to send text, quote it as a JSON string "
                    "('\"hello\"') or use --text\n(run 'chorus --help' for usage)\n",
                    jerr.text);
            free(stdin_data);
            return EXIT_USAGE;
        }
        json_decref(j);
        data = strdup(arg);
    }
    free(stdin_data);
    if (!data)
        return 1;

    double timeout = opt.timeout >= 0 ? opt.timeout : 10;
    if (opt.api_key) {
        chorus_http_result_t res;
        chorus_http_t *h = chorus_http_new(opt.url, opt.api_key);
        if (!h) {
            free(data);
            return usage_error("bad URL '%s' for the HTTP API", opt.url);
        }
        chorus_http_publish(h, ch, data, (int)(timeout * 1000), &res);
        chorus_http_free(h);
        free(data);
        if (res.status == CHORUS_OK) {
            printf("%llu\n", (unsigned long long)res.seq);
            return fflush(stdout) == 0 ? 0 : 1;
        }
        fprintf(stderr, "chorus: error: %s: %s\n", res.err_code, res.err_msg);
        return res.status == CHORUS_E_BAD_CHANNEL && res.http_status == 0 ? EXIT_USAGE : 1;
    }

    chorus_client_t *cl = open_client(&r, false);
    if (!cl) {
        free(data);
        return EXIT_USAGE;
    }
    rc = chorus_client_publish(cl, ch, data, on_ack, &r);
    free(data);
    if (rc != CHORUS_OK) {
        fprintf(stderr, "chorus: error: %s: %s\n", chorus_status_name(rc), chorus_strerror(rc));
        rc = rc == CHORUS_E_BAD_CHANNEL ? EXIT_USAGE : 1;
    } else {
        rc = drive(cl, &r, timeout);
        if (g_signalled && !r.done)
            rc = 1;
    }
    g_client = NULL;
    chorus_client_free(cl);
    return rc;
}

static int cmd_history(char **args, int n)
{
    struct run r = {"history", false, 1, false, 0, 0, 0};
    chorus_history_opts_t ho;
    char epoch[CHORUS_EPOCH_MAX + 1];
    int rc;

    if (n != 1)
        return usage_error("history needs exactly one channel%s", "");
    memset(&ho, 0, sizeof ho);
    if (opt.limit < 0 || opt.limit > 1000000000)
        return usage_error("--limit must be a non-negative number%s", "");
    ho.limit = (int)opt.limit;
    if (opt.since) {
        if (!parse_since(opt.since, epoch, sizeof epoch, &ho.since_seq))
            return usage_error("--since must be EPOCH:SEQ, not '%s'", opt.since);
        ho.since_epoch = epoch;
    }
    chorus_client_t *cl = open_client(&r, false);
    if (!cl)
        return EXIT_USAGE;
    rc = chorus_client_history(cl, args[0], &ho, on_history, &r);
    if (rc != CHORUS_OK) {
        fprintf(stderr, "chorus: error: %s: %s\n", chorus_status_name(rc), chorus_strerror(rc));
        rc = rc == CHORUS_E_BAD_CHANNEL ? EXIT_USAGE : 1;
    } else {
        rc = drive(cl, &r, opt.timeout >= 0 ? opt.timeout : 10);
        if (g_signalled && !r.done)
            rc = 1;
    }
    g_client = NULL;
    chorus_client_free(cl);
    return rc;
}

/* ------------------------------------------------------------ server API */

/* One server API call; prints the answer on one line. */
static int admin_call(const char *method, const char *path, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
    chorus_http_t *h = chorus_http_new(opt.url, opt.api_key);
    if (!h) {
        free(text);
        return usage_error("bad URL '%s' for the HTTP API", opt.url);
    }
    chorus_http_result_t res;
    char *answer = NULL;
    double timeout = opt.timeout >= 0 ? opt.timeout : 10;
    chorus_http_call(h, method, path, text, (int)(timeout * 1000), &res, &answer);
    chorus_http_free(h);
    free(text);
    if (res.status != CHORUS_OK) {
        fprintf(stderr, "chorus: error: %s: %s\n", res.err_code, res.err_msg);
        return 1;
    }
    json_t *j = json_loads(answer, 0, NULL);
    json_t *missing = json_object_get(j, "missing");
    if (json_array_size(missing) && !opt.quiet) {
        char *m = json_dumps(missing, JSON_COMPACT);
        fprintf(stderr, "chorus: these nodes did not answer: %s\n", m ? m : "?");
        free(m);
    }
    json_decref(j);
    printf("%s\n", answer);
    free(answer);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* Percent-encodes s for a query string. */
static void url_encode(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *s && n + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            strchr("-_.~:/@", c)) {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    out[n] = '\0';
}

static int cmd_admin(const char *cmd, char **args, int n)
{
    if (!opt.api_key || !*opt.api_key)
        return usage_error("%s needs --api-key KEY (or $CHORUS_API_KEY)", cmd);
    if (!strcmp(cmd, "info")) {
        if (n)
            return usage_error("info takes no arguments%s", "");
        return admin_call("GET", "/api/info", NULL);
    }
    if (!strcmp(cmd, "channels")) {
        char path[1024] = "/api/channels", enc[900];
        if (n > 1)
            return usage_error("channels takes at most one PREFIX%s", "");
        if (n) {
            url_encode(args[0], enc, sizeof enc);
            snprintf(path, sizeof path, "/api/channels?prefix=%s", enc);
        }
        return admin_call("GET", path, NULL);
    }
    if (!strcmp(cmd, "broadcast")) {
        if (n < 2)
            return usage_error("broadcast needs CH... DATA%s", "");
        json_t *data = opt.text ? json_string(args[n - 1])
                                : json_loads(args[n - 1], JSON_DECODE_ANY, NULL);
        if (!data)
            return usage_error("DATA is not JSON: '%s' (use --text for a string)", args[n - 1]);
        json_t *chs = json_array();
        for (int i = 0; i < n - 1; i++)
            json_array_append_new(chs, json_string(args[i]));
        return admin_call("POST", "/api/broadcast",
                          json_pack("{s:o, s:o}", "channels", chs, "data", data));
    }
    bool disconnect = !strcmp(cmd, "disconnect");
    if (n != (disconnect ? 1 : 2))
        return usage_error(disconnect ? "%s needs USER" : "%s needs USER CH", cmd);
    json_t *body = json_pack("{s:s}", "user", args[0]);
    if (!disconnect)
        json_object_set_new(body, "ch", json_string(args[1]));
    if (opt.reason)
        json_object_set_new(body, "reason", json_string(opt.reason));
    char path[32];
    snprintf(path, sizeof path, "/api/%s", cmd);
    return admin_call("POST", path, body);
}

static bool parse_count(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end || errno || v < 0 || end == s)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    enum { O_URL = 1, O_TOKEN, O_TIMEOUT, O_COUNT, O_LIMIT, O_SINCE, O_API_KEY, O_TEXT, O_QUIET,
           O_VERBOSE, O_HELP, O_REASON };
    static const struct option longopts[] = {
        {"url", required_argument, NULL, O_URL},
        {"token", required_argument, NULL, O_TOKEN},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"count", required_argument, NULL, O_COUNT},
        {"limit", required_argument, NULL, O_LIMIT},
        {"since", required_argument, NULL, O_SINCE},
        {"api-key", required_argument, NULL, O_API_KEY},
        {"reason", required_argument, NULL, O_REASON},
        {"text", no_argument, NULL, O_TEXT},
        {"quiet", no_argument, NULL, O_QUIET},
        {"verbose", no_argument, NULL, O_VERBOSE},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0}
    };
    int c;
    char *end;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_URL: opt.url = optarg; break;
        case O_TOKEN: opt.token = optarg; break;
        case O_TIMEOUT:
            opt.timeout = strtod(optarg, &end);
            if (*end || end == optarg || !(opt.timeout >= 0) || opt.timeout > 1e6)
                return usage_error("--timeout must be a number of seconds, not '%s'", optarg);
            break;
        case O_COUNT:
            if (!parse_count(optarg, &opt.count))
                return usage_error("--count must be a non-negative integer, not '%s'", optarg);
            break;
        case O_LIMIT:
            if (!parse_count(optarg, &opt.limit))
                return usage_error("--limit must be a non-negative integer, not '%s'", optarg);
            break;
        case O_SINCE: opt.since = optarg; break;
        case O_API_KEY: opt.api_key = optarg; break;
        case O_REASON: opt.reason = optarg; break;
        case O_TEXT: opt.text = true; break;
        case O_QUIET: opt.quiet = true; break;
        case O_VERBOSE: opt.verbose = true; break;
        case O_HELP:
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            if (optopt)
                return usage_error("unknown or incomplete option '-%c'", (char[]){(char)optopt, 0});
            return usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (!opt.url)
        opt.url = getenv("CHORUS_URL") && *getenv("CHORUS_URL") ? getenv("CHORUS_URL") : DEFAULT_URL;
    if (optind >= argc)
        return usage_error("missing command (sub, pub, history or a server API command)%s", "");

    /* lws logs to stderr by itself; keep it for --verbose. */
    lws_set_log_level(opt.verbose ? LLL_ERR | LLL_WARN | LLL_NOTICE : 0, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    const char *cmd = argv[optind];
    char **rest = argv + optind + 1;
    int nrest = argc - optind - 1;
    if (strcmp(cmd, "sub") && (opt.count))
        return usage_error("--count is for sub%s", "");
    static const char *const admin_cmds[] = {"info", "channels", "disconnect", "unsubscribe",
                                              "subscribe", "broadcast"};
    for (size_t i = 0; i < sizeof admin_cmds / sizeof admin_cmds[0]; i++)
        if (!strcmp(cmd, admin_cmds[i])) {
            if (!opt.api_key && getenv("CHORUS_API_KEY"))
                opt.api_key = getenv("CHORUS_API_KEY");
            if (opt.text && strcmp(cmd, "broadcast"))
                return usage_error("--text is for pub and broadcast%s", "");
            return cmd_admin(cmd, rest, nrest);
        }
    if (opt.reason)
        return usage_error("--reason is for disconnect and unsubscribe%s", "");
    if (strcmp(cmd, "pub") && (opt.api_key || opt.text))
        return usage_error("--api-key and --text are for pub%s", "");
    if (!strcmp(cmd, "sub"))
        return cmd_sub(rest, nrest);
    if (!strcmp(cmd, "pub"))
        return cmd_pub(rest, nrest);
    if (!strcmp(cmd, "history"))
        return cmd_history(rest, nrest);
    return usage_error("unknown command '%s' (sub, pub, history, info, channels, disconnect, "
                       "unsubscribe, subscribe or broadcast)", cmd);
}
