/* csdk_unit.c - C SDK behaviour that needs no broker: argument checks, the
 * bounded queue, callback guarantees, backoff bounds, the run loop's timing
 * and the thread-safe calls. Connection attempts go to a loopback port that
 * nothing listens on. Exits non-zero when a check fails; prints
 * "N passed, N failed" last. */
#include <chorus/client.h>
#include <chorus/http.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int failures, checks_failed_in_test;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "  FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond);        \
            checks_failed_in_test++;                                                   \
        }                                                                              \
    } while (0)
#define CHECK_EQ(a, b)                                                                 \
    do {                                                                               \
        long long a_ = (long long)(a), b_ = (long long)(b);                            \
        if (a_ != b_) {                                                                \
            fprintf(stderr, "  FAILED %s:%d: %s == %s (%lld != %lld)\n", __FILE__,     \
                    __LINE__, #a, #b, a_, b_);                                         \
            checks_failed_in_test++;                                                   \
        }                                                                              \
    } while (0)

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A loopback URL whose port refuses connections: bound, never listened on. */
static int dead_fd = -1;
static char dead_url[64];

static void make_dead_url(void)
{
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    dead_fd = socket(AF_INET, SOCK_STREAM, 0);
    bind(dead_fd, (struct sockaddr *)&a, sizeof a);
    getsockname(dead_fd, (struct sockaddr *)&a, &al);
    snprintf(dead_url, sizeof dead_url, "ws://127.0.0.1:%d/ws", ntohs(a.sin_port));
}

static chorus_client_t *client(chorus_client_opts_t *o)
{
    o->url = o->url ? o->url : dead_url;
    return chorus_client_new(o);
}

/* ------------------------------------------------------------ recorders */

struct acks {
    int calls;
    int last_status;
    int statuses[64];
    char keys[8][CHORUS_KEY_MAX + 1]; /* the first acks' keys ("" for none) */
};

static void record_ack(chorus_client_t *cl, const chorus_ack_t *a, void *ud)
{
    struct acks *r = ud;
    (void)cl;
    if (r->calls < 64)
        r->statuses[r->calls] = a->status;
    if (r->calls < 8)
        snprintf(r->keys[r->calls], sizeof r->keys[0], "%s", a->key ? a->key : "");
    r->calls++;
    r->last_status = a->status;
}

static void ignore_msg(chorus_client_t *cl, const chorus_msg_t *m, void *ud)
{
    (void)cl;
    (void)m;
    (void)ud;
}

struct discs {
    int calls;
    int retry[32];
    bool was_connected;
    chorus_client_t *free_me;
};

static void record_disc(chorus_client_t *cl, const chorus_disconnect_t *d, void *user)
{
    struct discs *r = user;
    if (r->calls < 32)
        r->retry[r->calls] = d->retry_in_ms;
    r->calls++;
    r->was_connected |= d->was_connected;
    if (r->free_me == cl)
        chorus_client_free(cl); /* deferred until chorus_client_run() returns */
}

/* ---------------------------------------------------------------- tests */

static void test_status_names_follow_the_protocol_table(void)
{
    CHECK(!strcmp(chorus_status_name(CHORUS_OK), "ok"));
    CHECK(!strcmp(chorus_status_name(CHORUS_E_BAD_REQUEST), "bad_request"));
    CHECK(!strcmp(chorus_status_name(CHORUS_E_BAD_CHANNEL), "bad_channel"));
    CHECK(!strcmp(chorus_status_name(CHORUS_E_TOO_LARGE), "too_large"));
    CHECK(!strcmp(chorus_status_name(CHORUS_E_NOT_SUBSCRIBED), "not_subscribed"));
    CHECK(!strcmp(chorus_status_name(CHORUS_E_UNAVAILABLE), "unavailable"));
    CHECK(!strcmp(chorus_status_name(CHORUS_E_UNAUTHORIZED), "unauthorized"));
    CHECK(!strcmp(chorus_status_name(CHORUS_E_METHOD_NOT_ALLOWED), "method_not_allowed"));
    CHECK(!strcmp(chorus_status_name(CHORUS_E_QUEUE_FULL), "queue_full"));
    CHECK(!strcmp(chorus_status_name(CHORUS_E_DISCONNECTED), "disconnected"));
    CHECK(!strcmp(chorus_status_name(12345), "unknown"));
    for (int s = CHORUS_E_BAD_URL; s <= CHORUS_E_SERVER; s++)
        CHECK(chorus_strerror(s) && *chorus_strerror(s) && strcmp(chorus_strerror(s), "unknown status"));
}

static void test_new_rejects_bad_urls(void)
{
    const char *bad[] = {NULL, "", "127.0.0.1:80", "ftp://h/", "ws://", "ws://:80/ws",
                         "ws://h:0/ws", "ws://h:65536/ws", "ws://h:x/ws", "ws://u@h/ws",
                         "ws://[::1/ws"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        chorus_client_opts_t o;
        memset(&o, 0, sizeof o);
        o.url = bad[i] ? bad[i] : NULL;
        chorus_client_t *cl = bad[i] ? chorus_client_new(&o) : chorus_client_new(NULL);
        if (cl)
            fprintf(stderr, "  accepted bad URL '%s'\n", bad[i] ? bad[i] : "(null opts)");
        CHECK(cl == NULL);
        chorus_client_free(cl);
    }
    const char *good[] = {"ws://127.0.0.1:1/ws", "wss://example.com/ws", "ws://[::1]:8080/ws",
                          "http://localhost:8080", "ws://h/ws?x=1"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        chorus_client_opts_t o;
        memset(&o, 0, sizeof o);
        o.url = good[i];
        o.token = "a b&c";
        chorus_client_t *cl = chorus_client_new(&o);
        if (!cl)
            fprintf(stderr, "  refused good URL '%s'\n", good[i]);
        CHECK(cl != NULL);
        chorus_client_free(cl);
    }
}

static void test_requests_are_checked_before_they_are_queued(void)
{
    chorus_client_opts_t o;
    memset(&o, 0, sizeof o);
    o.max_frame_bytes = 200;
    chorus_client_t *cl = client(&o);
    struct acks a = {0};
    char big[400];

    CHECK(cl != NULL);
    CHECK_EQ(chorus_client_publish(cl, "bad channel", "1", record_ack, &a), CHORUS_E_BAD_CHANNEL);
    CHECK_EQ(chorus_client_publish(cl, "", "1", record_ack, &a), CHORUS_E_BAD_CHANNEL);
    CHECK_EQ(chorus_client_publish(cl, NULL, "1", record_ack, &a), CHORUS_E_BAD_CHANNEL);
    CHECK_EQ(chorus_client_publish(cl, "room:a", "{\"a\":", record_ack, &a), CHORUS_E_BAD_JSON);
    CHECK_EQ(chorus_client_publish(cl, "room:a", "hello", record_ack, &a), CHORUS_E_BAD_JSON);
    CHECK_EQ(chorus_client_publish(cl, "room:a", "1 2", record_ack, &a), CHORUS_E_BAD_JSON);
    CHECK_EQ(chorus_client_publish(cl, "room:a", "{\"a\":1,\"a\":2}", record_ack, &a),
             CHORUS_E_BAD_JSON);
    memset(big, 'x', sizeof big);
    big[0] = '"';
    big[sizeof big - 2] = '"';
    big[sizeof big - 1] = '\0';
    CHECK_EQ(chorus_client_publish(cl, "room:a", big, record_ack, &a), CHORUS_E_TOO_LARGE);
    CHECK_EQ(chorus_client_publish(cl, "room:a", NULL, record_ack, &a), CHORUS_E_INVALID);
    CHECK_EQ(chorus_client_publish(NULL, "room:a", "1", record_ack, &a), CHORUS_E_INVALID);
    CHECK_EQ(chorus_client_publish_ts(cl, "bad channel", "1", record_ack, &a), CHORUS_E_BAD_CHANNEL);
    CHECK_EQ(chorus_client_publish_ts(cl, "room:a", "nope", record_ack, &a), CHORUS_E_BAD_JSON);
    CHECK_EQ(chorus_client_history(cl, "bad channel", NULL, NULL, NULL), CHORUS_E_INVALID);
    CHECK_EQ(chorus_client_subscribe(cl, "room:a", NULL, NULL), CHORUS_E_INVALID);
    CHECK_EQ(chorus_client_subscribe(cl, "x y", ignore_msg, NULL), CHORUS_E_BAD_CHANNEL);
    CHECK_EQ(chorus_client_unsubscribe(cl, "room:none"), CHORUS_E_NOT_SUBSCRIBED);
    CHECK_EQ(chorus_client_pending(cl), 0);
    /* A call that returned an error never calls its callback. */
    CHECK_EQ(a.calls, 0);
    chorus_client_free(cl);
    CHECK_EQ(a.calls, 0);
}

static bool url_safe(const char *s)
{
    return *s && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
                     strlen(s);
}

static void test_publishes_carry_keys_and_bad_keys_are_refused(void)
{
    chorus_client_opts_t o;
    memset(&o, 0, sizeof o);
    chorus_client_t *cl = client(&o), *cl2 = client(&o);
    struct acks a = {0}, b = {0};
    char k64[65], k65[66];

    memset(k64, 'k', 64);
    k64[64] = '\0';
    memset(k65, 'k', 65);
    k65[65] = '\0';
    chorus_publish_opts_t empty = {""}, too_long = {k65}, not_utf8 = {"ab\xff"}, max = {k64};
    CHECK_EQ(chorus_client_publish_ex(cl, "room:k", "1", &empty, record_ack, &a), CHORUS_E_INVALID);
    CHECK_EQ(chorus_client_publish_ex(cl, "room:k", "1", &too_long, record_ack, &a), CHORUS_E_INVALID);
    CHECK_EQ(chorus_client_publish_ex(cl, "room:k", "1", &not_utf8, record_ack, &a), CHORUS_E_INVALID);
    CHECK_EQ(chorus_client_publish_ex(cl, "bad ch", "1", &max, record_ack, &a), CHORUS_E_BAD_CHANNEL);
    CHECK_EQ(chorus_client_pending(cl), 0);
    CHECK_EQ(a.calls, 0);

    /* Queued while the node is unreachable; free completes them, keys and all. */
    CHECK_EQ(chorus_client_publish_ex(cl, "room:k", "1", &max, record_ack, &a), CHORUS_OK);
    CHECK_EQ(chorus_client_publish(cl, "room:k", "2", record_ack, &a), CHORUS_OK);
    CHECK_EQ(chorus_client_publish_ex(cl, "room:k", "3", NULL, record_ack, &a), CHORUS_OK);
    CHECK_EQ(chorus_client_publish(cl2, "room:k", "1", record_ack, &b), CHORUS_OK);
    chorus_client_free(cl);
    chorus_client_free(cl2);
    CHECK_EQ(a.calls, 3);
    CHECK_EQ(a.statuses[0], CHORUS_E_CLOSED);
    CHECK(!strcmp(a.keys[0], k64));
    CHECK(url_safe(a.keys[1]) && strlen(a.keys[1]) >= 16);
    CHECK(url_safe(a.keys[2]) && strcmp(a.keys[1], a.keys[2]) != 0);
    CHECK(url_safe(b.keys[0]) && strcmp(a.keys[1], b.keys[0]) != 0); /* per-client randomness */

    /* Without retries the SDK adds no key of its own. */
    struct acks c = {0};
    memset(&o, 0, sizeof o);
    o.no_publish_retry = true;
    cl = client(&o);
    CHECK_EQ(chorus_client_publish(cl, "room:k", "1", record_ack, &c), CHORUS_OK);
    chorus_client_free(cl);
    CHECK_EQ(c.calls, 1);
    CHECK(!strcmp(c.keys[0], ""));
}

static void test_subscriptions_are_unique_and_positions_start_unknown(void)
{
    chorus_client_opts_t o;
    memset(&o, 0, sizeof o);
    chorus_client_t *cl = client(&o);
    char epoch[CHORUS_EPOCH_MAX + 1];
    uint64_t seq;

    CHECK_EQ(chorus_client_subscribe(cl, "room:a", ignore_msg, NULL), CHORUS_OK);
    CHECK_EQ(chorus_client_subscribe(cl, "room:a", ignore_msg, NULL), CHORUS_E_EXISTS);
    CHECK_EQ(chorus_client_position(cl, "room:a", epoch, &seq), CHORUS_E_UNAVAILABLE);
    CHECK_EQ(chorus_client_subscribe_from(cl, "room:b", "ep-1", 41, ignore_msg, NULL), CHORUS_OK);
    CHECK_EQ(chorus_client_position(cl, "room:b", epoch, &seq), CHORUS_OK);
    CHECK(!strcmp(epoch, "ep-1"));
    CHECK_EQ(seq, 41);
    CHECK_EQ(chorus_client_unsubscribe(cl, "room:a"), CHORUS_OK);
    CHECK_EQ(chorus_client_unsubscribe(cl, "room:a"), CHORUS_E_NOT_SUBSCRIBED);
    CHECK_EQ(chorus_client_position(cl, "room:a", epoch, &seq), CHORUS_E_NOT_SUBSCRIBED);
    CHECK_EQ(chorus_client_subscribe(cl, "room:a", ignore_msg, NULL), CHORUS_OK);
    chorus_client_free(cl);
}

static void test_the_outbound_queue_is_bounded_and_free_completes_it(void)
{
    chorus_client_opts_t o;
    struct acks a = {0}, h = {0};
    memset(&o, 0, sizeof o);
    o.max_queue = 3;
    chorus_client_t *cl = client(&o);

    for (int i = 0; i < 3; i++)
        CHECK_EQ(chorus_client_publish(cl, "room:q", "{\"i\":1}", record_ack, &a), CHORUS_OK);
    CHECK_EQ(chorus_client_publish(cl, "room:q", "4", record_ack, &a), CHORUS_E_QUEUE_FULL);
    CHECK_EQ(chorus_client_pending(cl), 3);
    chorus_client_free(cl);
    CHECK_EQ(a.calls, 3);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(a.statuses[i], CHORUS_E_CLOSED);

    /* The byte bound too. */
    memset(&o, 0, sizeof o);
    o.max_queue_bytes = 150;
    cl = client(&o);
    CHECK_EQ(chorus_client_publish(cl, "room:q", "\"0123456789012345678901234567890123456789\"",
                                   record_ack, &h), CHORUS_OK);
    CHECK_EQ(chorus_client_publish(cl, "room:q", "\"0123456789012345678901234567890123456789\"",
                                   record_ack, &h), CHORUS_E_QUEUE_FULL);
    chorus_client_free(cl);
    CHECK_EQ(h.calls, 1);
}

static void test_without_reconnect_a_failed_connection_fails_everything(void)
{
    chorus_client_opts_t o;
    struct acks a = {0};
    struct discs d = {0};
    memset(&o, 0, sizeof o);
    o.no_reconnect = true;
    o.user = &d;
    o.on_disconnected = record_disc;
    chorus_client_t *cl = client(&o);

    CHECK_EQ(chorus_client_publish(cl, "room:x", "1", record_ack, &a), CHORUS_OK);
    double t0 = now_ms();
    int rc = CHORUS_OK;
    while (rc == CHORUS_OK && now_ms() - t0 < 5000)
        rc = chorus_client_run(cl, 100);
    CHECK_EQ(rc, CHORUS_E_DISCONNECTED);
    CHECK_EQ(d.calls, 1);
    CHECK_EQ(d.retry[0], -1);
    CHECK(!d.was_connected);
    CHECK_EQ(a.calls, 1);
    CHECK_EQ(a.last_status, CHORUS_E_DISCONNECTED);
    CHECK_EQ(chorus_client_publish(cl, "room:x", "1", record_ack, &a), CHORUS_E_DISCONNECTED);
    CHECK_EQ(chorus_client_run(cl, 100), CHORUS_E_DISCONNECTED);
    CHECK_EQ(chorus_client_pending(cl), 0);
    chorus_client_free(cl);
    CHECK_EQ(a.calls, 1);
}

static void test_reconnect_delays_grow_exponentially_with_bounded_jitter(void)
{
    chorus_client_opts_t o;
    struct discs d = {0};
    memset(&o, 0, sizeof o);
    o.reconnect_min_ms = 40;
    o.reconnect_max_ms = 160;
    o.user = &d;
    o.on_disconnected = record_disc;
    chorus_client_t *cl = client(&o);

    double t0 = now_ms();
    while (d.calls < 6 && now_ms() - t0 < 5000)
        chorus_client_run(cl, 100);
    CHECK(d.calls >= 6);
    /* attempt k waits uniform in [c/2, c] with c = min(40 * 2^k, 160) */
    const int cap[] = {40, 80, 160, 160, 160, 160};
    for (int k = 0; k < 6 && k < d.calls; k++) {
        if (d.retry[k] < cap[k] / 2 || d.retry[k] > cap[k])
            fprintf(stderr, "  attempt %d: retry %d ms outside [%d, %d]\n", k, d.retry[k],
                    cap[k] / 2, cap[k]);
        CHECK(d.retry[k] >= cap[k] / 2 && d.retry[k] <= cap[k]);
    }
    chorus_client_free(cl);
}

static void test_run_honours_its_timeout(void)
{
    chorus_client_opts_t o;
    memset(&o, 0, sizeof o);
    o.reconnect_min_ms = 60000; /* stay quiet after the first failure */
    o.reconnect_max_ms = 60000;
    chorus_client_t *cl = client(&o);

    double t0 = now_ms();
    CHECK_EQ(chorus_client_run(cl, 0), CHORUS_OK);
    CHECK(now_ms() - t0 < 100);
    t0 = now_ms();
    CHECK_EQ(chorus_client_run(cl, 300), CHORUS_OK);
    double took = now_ms() - t0;
    if (took < 290 || took > 1500)
        fprintf(stderr, "  run(300) took %.0f ms\n", took);
    CHECK(took >= 290 && took < 1500);
    chorus_client_free(cl);
}

struct thread_arg {
    chorus_client_t *cl;
    int publishes_ok;
    int posts_ok;
};

static void *other_thread(void *p)
{
    struct thread_arg *t = p;
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    for (int i = 0; i < 5; i++)
        if (chorus_client_publish_ts(t->cl, "room:ts", "{\"from\":\"thread\"}", record_ack,
                                     chorus_client_user(t->cl)) == CHORUS_OK)
            t->publishes_ok++;
    nanosleep(&ts, NULL);
    chorus_client_wakeup(t->cl);
    return NULL;
}

struct task_seen {
    pthread_t loop;
    int ran_on_loop, ran_elsewhere, cancelled;
};

static void task(chorus_client_t *cl, void *ud)
{
    struct task_seen *s = ud;
    if (!cl)
        s->cancelled++;
    else if (pthread_equal(pthread_self(), s->loop))
        s->ran_on_loop++;
    else
        s->ran_elsewhere++;
}

static void test_other_threads_publish_post_and_wake_the_loop(void)
{
    chorus_client_opts_t o;
    struct acks a = {0};
    struct task_seen seen = {pthread_self(), 0, 0, 0};
    pthread_t th;
    memset(&o, 0, sizeof o);
    o.reconnect_min_ms = 60000;
    o.reconnect_max_ms = 60000;
    o.user = &a;
    chorus_client_t *cl = client(&o);
    struct thread_arg t = {cl, 0, 0};

    CHECK_EQ(chorus_client_post(cl, task, &seen), CHORUS_OK);
    pthread_create(&th, NULL, other_thread, &t);
    double t0 = now_ms();
    int rc = chorus_client_run(cl, -1); /* only the wakeup ends this */
    double took = now_ms() - t0;
    pthread_join(th, NULL);
    CHECK_EQ(rc, CHORUS_OK);
    CHECK(took < 5000);
    CHECK_EQ(t.publishes_ok, 5);
    CHECK_EQ(seen.ran_on_loop, 1);
    CHECK_EQ(seen.ran_elsewhere, 0);
    /* The publishes wait in the queue (nothing to connect to). */
    CHECK_EQ(chorus_client_pending(cl), 5);
    /* A wakeup before run makes the next run return promptly. */
    chorus_client_wakeup(cl);
    t0 = now_ms();
    CHECK_EQ(chorus_client_run(cl, 5000), CHORUS_OK);
    CHECK(now_ms() - t0 < 1000);
    /* Tasks still in the inbox at free are cancelled, not lost. */
    CHECK_EQ(chorus_client_post(cl, task, &seen), CHORUS_OK);
    CHECK_EQ(chorus_client_publish_ts(cl, "room:ts", "1", record_ack, &a), CHORUS_OK);
    chorus_client_free(cl);
    CHECK_EQ(seen.cancelled, 1);
    CHECK_EQ(a.calls, 6);
    for (int i = 0; i < 6; i++)
        CHECK_EQ(a.statuses[i], CHORUS_E_CLOSED);
}

static void test_the_inbox_is_bounded(void)
{
    chorus_client_opts_t o;
    struct task_seen seen = {pthread_self(), 0, 0, 0};
    memset(&o, 0, sizeof o);
    o.max_queue = 2;
    chorus_client_t *cl = client(&o);
    CHECK_EQ(chorus_client_post(cl, task, &seen), CHORUS_OK);
    CHECK_EQ(chorus_client_publish_ts(cl, "room:a", "1", NULL, NULL), CHORUS_OK);
    CHECK_EQ(chorus_client_post(cl, task, &seen), CHORUS_E_QUEUE_FULL);
    CHECK_EQ(chorus_client_publish_ts(cl, "room:a", "1", NULL, NULL), CHORUS_E_QUEUE_FULL);
    chorus_client_free(cl);
    CHECK_EQ(seen.cancelled, 1);
}

static void test_free_from_a_callback_is_deferred_until_run_returns(void)
{
    chorus_client_opts_t o;
    struct discs d = {0};
    struct acks a = {0};
    memset(&o, 0, sizeof o);
    o.user = &d;
    o.on_disconnected = record_disc;
    chorus_client_t *cl = client(&o);
    d.free_me = cl;
    CHECK_EQ(chorus_client_publish(cl, "room:f", "1", record_ack, &a), CHORUS_OK);
    int rc = CHORUS_OK;
    double t0 = now_ms();
    while (rc == CHORUS_OK && now_ms() - t0 < 5000)
        rc = chorus_client_run(cl, 100);
    CHECK_EQ(rc, CHORUS_E_CLOSED); /* cl is gone now */
    CHECK_EQ(d.calls, 1);
    CHECK_EQ(a.calls, 1);
    CHECK_EQ(a.last_status, CHORUS_E_CLOSED);
}

static void test_http_helper_reports_connection_failures(void)
{
    chorus_http_result_t res;
    chorus_http_t *tls = chorus_http_new("wss://h/ws", "k"); /* https through libcurl */
    CHECK(tls != NULL);
    chorus_http_free(tls);
    CHECK(chorus_http_new(dead_url, "") == NULL);
    CHECK(chorus_http_new(dead_url, "a\r\nb") == NULL);
    chorus_http_t *h = chorus_http_new(dead_url, "key");
    CHECK(h != NULL);
    CHECK_EQ(chorus_http_publish(h, "bad ch", "1", 1000, &res), CHORUS_E_BAD_CHANNEL);
    CHECK_EQ(chorus_http_publish(h, "room:a", "{", 1000, &res), CHORUS_E_BAD_JSON);
    CHECK_EQ(chorus_http_publish(h, "room:a", "1", 1000, &res), CHORUS_E_CONNECT);
    CHECK(!strcmp(res.err_code, "connect_failed"));
    CHECK_EQ(res.http_status, 0);
    chorus_http_free(h);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
#define T(f) {#f, f}
        T(test_status_names_follow_the_protocol_table),
        T(test_new_rejects_bad_urls),
        T(test_requests_are_checked_before_they_are_queued),
        T(test_publishes_carry_keys_and_bad_keys_are_refused),
        T(test_subscriptions_are_unique_and_positions_start_unknown),
        T(test_the_outbound_queue_is_bounded_and_free_completes_it),
        T(test_without_reconnect_a_failed_connection_fails_everything),
        T(test_reconnect_delays_grow_exponentially_with_bounded_jitter),
        T(test_run_honours_its_timeout),
        T(test_other_threads_publish_post_and_wake_the_loop),
        T(test_the_inbox_is_bounded),
        T(test_free_from_a_callback_is_deferred_until_run_returns),
        T(test_http_helper_reports_connection_failures),
#undef T
    };
    int passed = 0;

    lws_set_log_level(0, NULL);
    make_dead_url();
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        checks_failed_in_test = 0;
        tests[i].fn();
        /* names read as sentences: test_the_inbox_is_bounded -> "the inbox is bounded" */
        char name[128];
        snprintf(name, sizeof name, "%s", tests[i].name + 5);
        for (char *p = name; *p; p++)
            if (*p == '_')
                *p = ' ';
        printf("%s: %s\n", checks_failed_in_test ? "FAIL" : "ok  ", name);
        if (checks_failed_in_test)
            failures++;
        else
            passed++;
    }
    close(dead_fd);
    printf("%d passed, %d failed\n", passed, failures);
    return failures ? 1 : 0;
}
