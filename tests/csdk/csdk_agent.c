/* csdk_agent.c - a scriptable C SDK client for the behaviour tests.
 *
 * The test drives it through stdin, one command per line, and reads one JSON
 * event per line on stdout. Commands are read on a second thread and reach
 * the client only through the thread-safe calls (chorus_client_post and
 * chorus_client_publish_ts), so every test also exercises the threading rules.
 *
 *   sub CH | subfrom CH EPOCH SEQ | unsub CH | pub CH JSON... | history CH LIMIT
 *   pubkey CH KEY JSON... (chorus_client_publish_ex, posted) | position CH | pending | quit
 *
 * Events: {"ev":"connected"|"disconnected"|"subscribed"|"sub_failed"|"gap"|
 * "epoch"|"msg"|"ack"|"history"|"error"|"result"|"position"|"pending"|"bye",...}
 *
 * usage: csdk_agent URL [--token T] [--origin O] [--reconnect-min MS]
 *                       [--reconnect-max MS] [--max-queue N] [--no-reconnect]
 *                       [--request-timeout MS] [--ping-interval S] [--max-frame-bytes N]
 *                       [--publish-retry MS] [--no-publish-retry] */
#include <chorus/client.h>

#include <jansson.h>
#include <libwebsockets.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
/* Held by the stdin thread around each call into the client, and by main
 * while it retires the client, so no call can race chorus_client_free(). */
static pthread_mutex_t api_lock = PTHREAD_MUTEX_INITIALIZER;
static bool client_gone;
static pthread_t loop_thread;
static bool done;
static int bad_thread; /* callbacks seen off the loop thread */

/* Prints one event and steals `j`. */
static void emit(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        return;
    pthread_mutex_lock(&out_lock);
    fputs(s, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    free(s);
}

static void check_thread(void)
{
    if (!pthread_equal(pthread_self(), loop_thread))
        bad_thread++;
}

/* ------------------------------------------------------------- callbacks */

static void on_connected(chorus_client_t *cl, const chorus_hello_t *h, void *user)
{
    (void)cl;
    (void)user;
    check_thread();
    emit(json_pack("{s:s, s:i, s:s, s:s}", "ev", "connected", "v", h->version, "node", h->node,
                   "client", h->client));
}

static void on_disconnected(chorus_client_t *cl, const chorus_disconnect_t *d, void *user)
{
    (void)cl;
    (void)user;
    check_thread();
    emit(json_pack("{s:s, s:b, s:i, s:s, s:i}", "ev", "disconnected", "was_connected",
                   d->was_connected, "code", d->close_code, "reason", d->reason, "retry_in_ms",
                   d->retry_in_ms));
}

static void on_error(chorus_client_t *cl, int status, const char *msg, void *user)
{
    (void)cl;
    (void)user;
    emit(json_pack("{s:s, s:s, s:s}", "ev", "error", "status", chorus_status_name(status), "msg",
                   msg));
}

static void on_sub_event(chorus_client_t *cl, const chorus_sub_event_t *ev, void *user)
{
    (void)cl;
    (void)user;
    check_thread();
    switch (ev->kind) {
    case CHORUS_SUB_SUBSCRIBED:
        emit(json_pack("{s:s, s:s, s:s, s:I, s:b, s:b}", "ev", "subscribed", "ch", ev->ch, "epoch",
                       ev->epoch, "seq", (json_int_t)ev->seq, "resumed", ev->resumed, "recovered",
                       ev->recovered));
        break;
    case CHORUS_SUB_FAILED:
        emit(json_pack("{s:s, s:s, s:s, s:s}", "ev", "sub_failed", "ch", ev->ch, "code",
                       ev->err_code, "msg", ev->err_msg));
        break;
    case CHORUS_SUB_EPOCH:
        emit(json_pack("{s:s, s:s, s:s, s:I}", "ev", "epoch", "ch", ev->ch, "epoch", ev->epoch,
                       "seq", (json_int_t)ev->seq));
        break;
    case CHORUS_SUB_GAP:
        emit(json_pack("{s:s, s:s, s:I, s:I, s:I}", "ev", "gap", "ch", ev->ch, "from",
                       (json_int_t)ev->gap_from, "to", (json_int_t)ev->gap_to, "seq",
                       (json_int_t)ev->seq));
        break;
    }
}

static void on_msg(chorus_client_t *cl, const chorus_msg_t *m, void *ud)
{
    (void)cl;
    (void)ud;
    check_thread();
    json_t *raw = json_loads(m->raw, 0, NULL);
    emit(json_pack("{s:s, s:s, s:I, s:I, s:s, s:O, s:s?, s:s?, s:b, s:I}", "ev", "msg", "ch", m->ch,
                   "seq", (json_int_t)m->seq, "ts", (json_int_t)m->ts, "epoch", m->epoch, "data",
                   m->data, "client", m->client, "user", m->user, "raw_ok",
                   raw && json_equal(raw, m->frame), "skipped", (json_int_t)m->skipped));
    json_decref(raw);
}

static void on_ack(chorus_client_t *cl, const chorus_ack_t *a, void *ud)
{
    long n = (long)(intptr_t)ud;
    (void)cl;
    check_thread();
    emit(json_pack("{s:s, s:i, s:s, s:s, s:s?, s:s?, s:s, s:I, s:b, s:s?, s:i}", "ev", "ack", "n",
                   (int)n, "ch", a->ch, "status", chorus_status_name(a->status), "code",
                   a->err_code, "msg", a->err_msg, "epoch", a->epoch, "seq", (json_int_t)a->seq,
                   "duplicate", a->duplicate, "key", a->key, "attempts", (int)a->attempts));
}

static void on_history(chorus_client_t *cl, const chorus_history_t *h, void *ud)
{
    (void)cl;
    (void)ud;
    check_thread();
    json_t *seqs = json_array(), *datas = json_array();
    for (size_t i = 0; i < h->count; i++) {
        json_array_append_new(seqs, json_integer((json_int_t)h->msgs[i].seq));
        json_array_append(datas, (json_t *)h->msgs[i].data);
    }
    emit(json_pack("{s:s, s:s, s:s, s:s, s:I, s:o, s:o}", "ev", "history", "ch", h->ch, "status",
                   chorus_status_name(h->status), "epoch", h->epoch, "seq", (json_int_t)h->seq,
                   "seqs", seqs, "msgs", datas));
}

/* -------------------------------------------------- commands (loop thread) */

struct cmd {
    char verb[16];
    char ch[300];
    char arg[64];
    unsigned long long num;
};

static void run_cmd(chorus_client_t *cl, void *ud)
{
    struct cmd *c = ud;
    int rc = CHORUS_OK;

    if (!cl) { /* cancelled: the client is going away */
        free(c);
        return;
    }
    check_thread();
    if (!strcmp(c->verb, "sub")) {
        rc = chorus_client_subscribe(cl, c->ch, on_msg, NULL);
    } else if (!strcmp(c->verb, "subfrom")) {
        rc = chorus_client_subscribe_from(cl, c->ch, c->arg, c->num, on_msg, NULL);
    } else if (!strcmp(c->verb, "unsub")) {
        rc = chorus_client_unsubscribe(cl, c->ch);
    } else if (!strcmp(c->verb, "history")) {
        chorus_history_opts_t o = {(int)c->num, NULL, 0};
        rc = chorus_client_history(cl, c->ch, &o, on_history, NULL);
    } else if (!strcmp(c->verb, "position")) {
        char epoch[CHORUS_EPOCH_MAX + 1] = "";
        uint64_t seq = 0;
        rc = chorus_client_position(cl, c->ch, epoch, &seq);
        emit(json_pack("{s:s, s:s, s:s, s:s, s:I}", "ev", "position", "ch", c->ch, "status",
                       chorus_status_name(rc), "epoch", epoch, "seq", (json_int_t)seq));
        free(c);
        return;
    } else if (!strcmp(c->verb, "pending")) {
        emit(json_pack("{s:s, s:I, s:b}", "ev", "pending", "n",
                       (json_int_t)chorus_client_pending(cl), "connected",
                       chorus_client_is_connected(cl)));
        free(c);
        return;
    } else if (!strcmp(c->verb, "quit")) {
        done = true;
        chorus_client_wakeup(cl);
        free(c);
        return;
    }
    emit(json_pack("{s:s, s:s, s:s, s:s}", "ev", "result", "cmd", c->verb, "ch", c->ch, "status",
                   chorus_status_name(rc)));
    free(c);
}

/* A publish with a key of the test's, through chorus_client_publish_ex on the loop thread. */
struct keyed_pub {
    char *ch, *key, *data;
    int n;
};

static void run_keyed_pub(chorus_client_t *cl, void *ud)
{
    struct keyed_pub *k = ud;
    if (cl) {
        check_thread();
        chorus_publish_opts_t po = {k->key};
        int rc = chorus_client_publish_ex(cl, k->ch, k->data, &po, on_ack, (void *)(intptr_t)k->n);
        if (rc != CHORUS_OK)
            emit(json_pack("{s:s, s:i, s:s, s:s}", "ev", "ack", "n", k->n, "ch", k->ch, "status",
                           chorus_status_name(rc)));
    }
    free(k->ch);
    free(k->key);
    free(k->data);
    free(k);
}

/* ------------------------------------------------------ the stdin thread */

static int post(chorus_client_t *cl, struct cmd *c)
{
    int rc = CHORUS_E_CLOSED;
    pthread_mutex_lock(&api_lock);
    if (!client_gone)
        rc = chorus_client_post(cl, run_cmd, c);
    pthread_mutex_unlock(&api_lock);
    return rc;
}

static void *read_commands(void *arg)
{
    chorus_client_t *cl = arg;
    static char line[1 << 20];
    int npub = 0;

    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!strncmp(line, "pub ", 4)) {
            char *ch = line + 4, *sp = strchr(ch, ' ');
            if (!sp)
                continue;
            *sp = '\0';
            int n = ++npub, rc = CHORUS_E_CLOSED;
            pthread_mutex_lock(&api_lock);
            if (!client_gone)
                rc = chorus_client_publish_ts(cl, ch, sp + 1, on_ack, (void *)(intptr_t)n);
            pthread_mutex_unlock(&api_lock);
            if (rc != CHORUS_OK)
                emit(json_pack("{s:s, s:i, s:s, s:s}", "ev", "ack", "n", n, "ch", ch, "status",
                               chorus_status_name(rc)));
            continue;
        }
        if (!strncmp(line, "pubkey ", 7)) {
            char *ch = line + 7, *key = strchr(ch, ' '), *data = key ? strchr(key + 1, ' ') : NULL;
            struct keyed_pub *k;
            if (!data || !(k = calloc(1, sizeof *k)))
                continue;
            *key++ = '\0';
            *data++ = '\0';
            k->ch = strdup(ch);
            k->key = strdup(key);
            k->data = strdup(data);
            k->n = ++npub;
            int rc = CHORUS_E_CLOSED;
            pthread_mutex_lock(&api_lock);
            if (!client_gone)
                rc = chorus_client_post(cl, run_keyed_pub, k);
            pthread_mutex_unlock(&api_lock);
            if (rc != CHORUS_OK)
                run_keyed_pub(NULL, k);
            continue;
        }
        struct cmd *c = calloc(1, sizeof *c);
        if (!c)
            break;
        if (sscanf(line, "%15s %299s %63s %llu", c->verb, c->ch, c->arg, &c->num) < 1) {
            free(c);
            continue;
        }
        if (!strcmp(c->verb, "history"))
            c->num = strtoull(c->arg, NULL, 10);
        if (post(cl, c) != CHORUS_OK)
            free(c);
    }
    struct cmd *q = calloc(1, sizeof *q);
    if (q) {
        strcpy(q->verb, "quit");
        if (post(cl, q) != CHORUS_OK)
            free(q);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    chorus_client_opts_t o;
    pthread_t reader;

    if (argc < 2) {
        fprintf(stderr, "usage: csdk_agent URL [options]\n");
        return 2;
    }
    memset(&o, 0, sizeof o);
    o.url = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-reconnect")) {
            o.no_reconnect = true;
            continue;
        }
        if (!strcmp(a, "--no-publish-retry")) {
            o.no_publish_retry = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "csdk_agent: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--token"))
            o.token = v;
        else if (!strcmp(a, "--origin"))
            o.origin = v;
        else if (!strcmp(a, "--reconnect-min"))
            o.reconnect_min_ms = (unsigned)atoi(v);
        else if (!strcmp(a, "--reconnect-max"))
            o.reconnect_max_ms = (unsigned)atoi(v);
        else if (!strcmp(a, "--max-queue"))
            o.max_queue = (unsigned)atoi(v);
        else if (!strcmp(a, "--request-timeout"))
            o.request_timeout_ms = (unsigned)atoi(v);
        else if (!strcmp(a, "--ping-interval"))
            o.ping_interval_s = (unsigned)atoi(v);
        else if (!strcmp(a, "--max-frame-bytes"))
            o.max_frame_bytes = (size_t)atol(v);
        else if (!strcmp(a, "--publish-retry"))
            o.publish_retry_ms = (unsigned)atoi(v);
        else {
            fprintf(stderr, "csdk_agent: unknown option %s\n", a);
            return 2;
        }
    }
    o.on_connected = on_connected;
    o.on_disconnected = on_disconnected;
    o.on_error = on_error;
    o.on_sub_event = on_sub_event;

    lws_set_log_level(LLL_ERR, NULL);
    loop_thread = pthread_self();
    chorus_client_t *cl = chorus_client_new(&o);
    if (!cl) {
        fprintf(stderr, "csdk_agent: chorus_client_new failed\n");
        return 2;
    }
    if (pthread_create(&reader, NULL, read_commands, cl) != 0)
        return 1;
    pthread_detach(reader); /* it may sit in fgets() when we leave */

    while (!done) {
        int rc = chorus_client_run(cl, 1000);
        if (rc == CHORUS_E_DISCONNECTED) {
            /* no_reconnect: keep serving the inbox so commands get answers */
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    emit(json_pack("{s:s, s:i}", "ev", "bye", "bad_thread", bad_thread));
    pthread_mutex_lock(&api_lock);
    client_gone = true;
    pthread_mutex_unlock(&api_lock);
    chorus_client_free(cl);
    return bad_thread ? 1 : 0;
}
