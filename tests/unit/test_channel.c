/* test_channel.c - the channel registry: subscriptions on both sides,
 * sequencing, history, recovery and fan-out by reference.
 *
 * Only the channel layer and the layers below it are linked: this file
 * registers its own delivery hook (channel_set_deliver, the seam the session
 * layer fills with conn_enqueue in chorusd) and records every (connection,
 * frame) pair it is given. Each test ends in teardown(), which unsubscribes everything,
 * frees the registry and checks that no frame, channel or subscription is
 * left (frame_live and the metrics gauges back at zero). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "channel.h"
#include "config.h"
#include "frame.h"
#include "metrics.h"

/* The test's own connection: an id and the connection side of the index. */
struct conn {
    int id;
    struct sub_list subs;
};

#define NCONNS 8
static struct conn conns[NCONNS];

/* ------------------------------------------------------- the link seam */

struct delivery {
    struct conn *c;
    struct frame *f;     /* one reference, as a real queue would hold */
};

#define MAX_DELIVERIES 4096
static struct delivery deliveries[MAX_DELIVERIES];
static size_t n_deliveries;

static void record_delivery(struct sub *s, struct frame *f)
{
    struct conn *c = s->conn;
    if (n_deliveries == MAX_DELIVERIES)
        fail_msg("more than %d deliveries", MAX_DELIVERIES);
    deliveries[n_deliveries++] = (struct delivery){c, frame_ref(f)};
}

static void deliveries_release(void)
{
    for (size_t i = 0; i < n_deliveries; i++)
        frame_unref(deliveries[i].f);
    n_deliveries = 0;
}

/* ------------------------------------------------------------- fixture */

/* Default namespace: 4 messages for 10 s, NKEYS keys for 60 s. "nohist":
 * no history and no keys at all. "forever": 3 messages and NKEYS keys with
 * no age limit. */
#define NKEYS 16
static struct ns_opts namespaces[2];
static struct config cfg;

#define T0 1795000000000LL /* an arbitrary "now" in ms */

static int setup(void **state)
{
    (void)state;
    memset(&cfg, 0, sizeof cfg);
    cfg.default_ns = (struct ns_opts){.name = "", .history_size = 4, .history_ttl = 10,
                                      .client_publish = true, .idempotency_window = 60,
                                      .idempotency_keys = NKEYS};
    namespaces[0] = (struct ns_opts){.name = "nohist", .history_size = 0, .history_ttl = 10};
    namespaces[1] = (struct ns_opts){.name = "forever", .history_size = 3, .history_ttl = 0,
                                     .idempotency_keys = NKEYS};
    cfg.namespaces = namespaces;
    cfg.n_namespaces = 2;
    for (int i = 0; i < NCONNS; i++)
        conns[i] = (struct conn){.id = i};
    memset(&metrics, 0, sizeof metrics);
    frame_live = 0;
    n_deliveries = 0;
    channel_registry_init(&cfg);
    channel_set_deliver(record_delivery);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < NCONNS; i++) {
        channel_unsubscribe_all(&conns[i].subs);
        assert_null(conns[i].subs.head);
        assert_int_equal(conns[i].subs.n, 0);
    }
    assert_int_equal(metrics.subscriptions, 0);
    channel_registry_free();
    assert_int_equal(channel_count(), 0);
    assert_int_equal(metrics.channels, 0);
    deliveries_release();
    assert_int_equal(frame_live, 0);
    return 0;
}

/* ------------------------------------------------------------- helpers */

static struct channel *get(const char *name)
{
    struct channel *ch = channel_get(name, strlen(name));
    assert_non_null(ch);
    return ch;
}

static struct channel *find(const char *name)
{
    return channel_find(name, strlen(name));
}

static struct sub *subscribe(struct channel *ch, struct conn *c)
{
    struct sub *s = channel_subscribe(ch, c, &c->subs);
    assert_non_null(s);
    return s;
}

/* Publishes an integer payload; returns the seq given. */
static uint64_t publish_int(struct channel *ch, long long v, int64_t now)
{
    json_t *data = json_integer(v);
    struct publish_result res;
    assert_int_equal(channel_publish(ch, data, "c1", now, &res), 0);
    json_decref(data);
    return res.seq;
}

static json_t *frame_json(struct frame *f)
{
    json_error_t jerr;
    json_t *j = json_loadb((const char *)frame_payload(f), f->len, 0, &jerr);
    if (!j)
        fail_msg("frame is not JSON: %s: %.*s", jerr.text, (int)f->len, frame_payload(f));
    return j;
}

static long long frame_int(struct frame *f, const char *key)
{
    json_t *j = frame_json(f);
    json_t *v = json_object_get(j, key);
    assert_true(json_is_integer(v));
    long long n = json_integer_value(v);
    json_decref(j);
    return n;
}

/* Every slot of ch->subs knows its index, and the conns on the channel are
 * exactly `want` (in any order). */
static void check_subs(struct channel *ch, struct conn *const *want, uint32_t n)
{
    assert_int_equal(ch->nsubs, n);
    for (uint32_t i = 0; i < ch->nsubs; i++) {
        assert_int_equal(ch->subs[i]->idx, i);
        assert_ptr_equal(ch->subs[i]->ch, ch);
    }
    for (uint32_t w = 0; w < n; w++) {
        int found = 0;
        for (uint32_t i = 0; i < ch->nsubs; i++)
            found += ch->subs[i]->conn == want[w];
        if (found != 1)
            fail_msg("conn %d is on channel %s %d times", want[w]->id, ch->name, found);
    }
}

/* The connection's list (a utlist LL) holds only c's subscriptions, each
 * in its channel's array, and counts list->n entries. */
static void check_list(struct sub_list *list, struct conn *c)
{
    uint32_t n = 0;
    for (struct sub *s = list->head; s; s = s->conn_next) {
        assert_ptr_equal(s->conn, c);
        assert_ptr_equal(s->ch->subs[s->idx], s);
        n++;
    }
    assert_int_equal(n, list->n);
}

/* ------------------------------------------------------------- registry */

static void test_channel_get_creates_a_channel_once(void **state)
{
    (void)state;
    assert_null(find("room:lobby"));
    char name[] = "room:lobby";
    struct channel *ch = get(name);
    assert_int_equal(channel_count(), 1);
    assert_int_equal(metrics.channels, 1);
    assert_string_equal(ch->name, "room:lobby");
    assert_int_equal(ch->len, 10);
    assert_ptr_not_equal(ch->name, name); /* the registry keeps its own copy */
    assert_int_equal(ch->seq, 0);
    assert_int_equal(ch->nsubs, 0);
    assert_true(strlen(ch->epoch) > 0);
    name[0] = 'X';
    assert_ptr_equal(get("room:lobby"), ch);
    assert_ptr_equal(find("room:lobby"), ch);
    assert_int_equal(channel_count(), 1);
    assert_int_equal(metrics.channels, 1);
}

static void test_channel_find_matches_the_whole_name_only(void **state)
{
    (void)state;
    struct channel *a = get("room:a");
    struct channel *ab = get("room:ab");
    assert_ptr_not_equal(a, ab);
    assert_int_equal(channel_count(), 2);
    assert_ptr_equal(find("room:a"), a);
    assert_ptr_equal(find("room:ab"), ab);
    assert_null(find("room:"));
    assert_null(find("room:abc"));
    /* Lookups use the given length, not a NUL terminator. */
    assert_ptr_equal(channel_find("room:abc", 6), a);
}

static void test_channels_take_the_options_of_their_namespace(void **state)
{
    (void)state;
    assert_ptr_equal(get("nohist:x")->ns, &namespaces[0]);
    assert_ptr_equal(get("forever:x")->ns, &namespaces[1]);
    assert_ptr_equal(get("room:x")->ns, &cfg.default_ns);
    assert_ptr_equal(get("plain")->ns, &cfg.default_ns);
    /* The namespace is what precedes the first colon, nothing less. */
    assert_ptr_equal(get("nohistory:x")->ns, &cfg.default_ns);
}

/* --------------------------------------------------------- subscriptions */

static void test_subscribe_links_both_sides(void **state)
{
    (void)state;
    struct channel *ch = get("room:a");
    struct sub *s = subscribe(ch, &conns[0]);
    assert_ptr_equal(s->ch, ch);
    assert_ptr_equal(s->conn, &conns[0]);
    assert_int_equal(s->idx, 0);
    assert_ptr_equal(ch->subs[0], s);
    assert_int_equal(ch->nsubs, 1);
    assert_ptr_equal(conns[0].subs.head, s);
    assert_int_equal(conns[0].subs.n, 1);
    assert_int_equal(metrics.subscriptions, 1);
    assert_ptr_equal(channel_sub_find(&conns[0].subs, ch), s);
    assert_null(channel_sub_find(&conns[1].subs, ch));
}

static void test_one_connection_on_several_channels_keeps_a_consistent_list(void **state)
{
    (void)state;
    struct channel *a = get("a"), *b = get("b"), *c = get("c");
    struct sub *sa = subscribe(a, &conns[0]);
    struct sub *sb = subscribe(b, &conns[0]);
    struct sub *sc = subscribe(c, &conns[0]);
    subscribe(b, &conns[1]);
    assert_int_equal(conns[0].subs.n, 3);
    check_list(&conns[0].subs, &conns[0]);
    assert_ptr_equal(channel_sub_find(&conns[0].subs, a), sa);
    assert_ptr_equal(channel_sub_find(&conns[0].subs, b), sb);
    assert_ptr_equal(channel_sub_find(&conns[0].subs, c), sc);

    /* Remove from the middle of the list, then the head, then the tail. */
    channel_unsubscribe(sb, &conns[0].subs);
    check_list(&conns[0].subs, &conns[0]);
    assert_int_equal(conns[0].subs.n, 2);
    assert_null(channel_sub_find(&conns[0].subs, b));
    assert_ptr_equal(find("b"), b); /* conns[1] still holds it */
    assert_int_equal(b->nsubs, 1);
    channel_unsubscribe(conns[0].subs.head, &conns[0].subs);
    check_list(&conns[0].subs, &conns[0]);
    channel_unsubscribe(conns[0].subs.head, &conns[0].subs);
    assert_null(conns[0].subs.head);
    assert_int_equal(conns[0].subs.n, 0);
    assert_int_equal(metrics.subscriptions, 1);
}

static void test_unsubscribe_swap_removes_and_keeps_every_index_consistent(void **state)
{
    (void)state;
    struct channel *ch = get("room:big");
    struct sub *subs[NCONNS];
    struct conn *left[NCONNS];
    for (int i = 0; i < NCONNS; i++) {
        subs[i] = subscribe(ch, &conns[i]);
        left[i] = &conns[i];
    }
    uint32_t n = NCONNS;
    check_subs(ch, left, n);
    assert_int_equal(metrics.subscriptions, NCONNS);

    /* Remove in an order that hits the middle, the first and the last slot. */
    static const int order[] = {3, 0, 6, 7, 1, 5, 2, 4};
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
        int victim = order[k];
        channel_unsubscribe(subs[victim], &conns[victim].subs);
        for (uint32_t w = 0; w < n; w++)
            if (left[w] == &conns[victim]) {
                left[w] = left[--n];
                break;
            }
        assert_int_equal(conns[victim].subs.n, 0);
        assert_null(conns[victim].subs.head);
        if (n) {
            check_subs(ch, left, n);
            assert_ptr_equal(find("room:big"), ch);
        }
    }
    /* The last unsubscribe from a channel without history deletes it. */
    assert_null(find("room:big"));
    assert_int_equal(metrics.subscriptions, 0);
    assert_int_equal(metrics.channels, 0);
}

static void test_a_channel_without_subscribers_or_history_is_deleted(void **state)
{
    (void)state;
    struct channel *ch = get("room:a");
    struct sub *s1 = subscribe(ch, &conns[0]);
    struct sub *s2 = subscribe(ch, &conns[1]);
    channel_unsubscribe(s1, &conns[0].subs);
    assert_ptr_equal(find("room:a"), ch);
    channel_unsubscribe(s2, &conns[1].subs);
    assert_null(find("room:a"));
    assert_int_equal(channel_count(), 0);
    assert_int_equal(metrics.channels, 0);
}

static void test_unsubscribe_all_leaves_the_connection_with_nothing(void **state)
{
    (void)state;
    struct channel *a = get("a"), *b = get("b"), *c = get("c");
    subscribe(a, &conns[0]);
    subscribe(b, &conns[0]);
    subscribe(c, &conns[0]);
    subscribe(b, &conns[1]);
    publish_int(c, 1, T0); /* c has history, so it outlives its subscribers */
    deliveries_release();

    channel_unsubscribe_all(&conns[0].subs);
    assert_null(conns[0].subs.head);
    assert_int_equal(conns[0].subs.n, 0);
    assert_null(find("a"));                  /* empty: deleted */
    assert_ptr_equal(find("b"), b);          /* still has conns[1] */
    assert_int_equal(b->nsubs, 1);
    assert_ptr_equal(b->subs[0]->conn, &conns[1]);
    assert_int_equal(b->subs[0]->idx, 0);
    assert_ptr_equal(find("c"), c);          /* kept for its history */
    assert_int_equal(c->nsubs, 0);
    assert_int_equal(metrics.subscriptions, 1);
    assert_int_equal(channel_count(), 2);
}

static void test_a_large_room_that_empties_gives_its_subscriber_array_back(void **state)
{
    (void)state;
    /* 100 subscriptions of 8 connections would be duplicates; use one
     * connection's list per sub instead (the registry does not forbid it). */
    struct sub_list lists[100];
    memset(lists, 0, sizeof lists);
    struct channel *ch = get("room:crowd");
    publish_int(ch, 0, T0); /* history keeps the channel after the room empties */
    for (int i = 0; i < 100; i++)
        assert_non_null(channel_subscribe(ch, &conns[i % NCONNS], &lists[i]));
    assert_true(ch->subs_cap >= 100);
    for (int i = 0; i < 100; i++)
        channel_unsubscribe(lists[i].head, &lists[i]);
    assert_ptr_equal(find("room:crowd"), ch);
    assert_int_equal(ch->nsubs, 0);
    assert_null(ch->subs);
    assert_int_equal(ch->subs_cap, 0);
    /* Usable again. */
    subscribe(ch, &conns[0]);
    check_subs(ch, (struct conn *const[]){&conns[0]}, 1);
}

/* ------------------------------------------------------ history helpers */

struct collected {
    uint64_t seq[64];
    struct frame *f[64];
    size_t n;
};

static void collect(const struct hist_entry *e, void *ud)
{
    struct collected *c = ud;
    assert_true(c->n < 64);
    c->seq[c->n] = e->seq;
    c->f[c->n] = e->f;
    c->n++;
}

static struct collected history(struct channel *ch, uint64_t after, long long limit, int64_t now)
{
    struct collected c = {.n = 0};
    channel_history_each(ch, after, limit, now, collect, &c);
    return c;
}

static void expect_seqs(struct collected c, uint64_t first, size_t n)
{
    if (c.n != n)
        fail_msg("got %zu history entries, expected %zu", c.n, n);
    for (size_t i = 0; i < n; i++)
        if (c.seq[i] != first + i)
            fail_msg("entry %zu has seq %llu, expected %llu", i, (unsigned long long)c.seq[i],
                     (unsigned long long)(first + i));
}

/* ---------------------------------------------------------------- publish */

static void test_publish_assigns_seq_one_two_three(void **state)
{
    (void)state;
    struct channel *ch = get("room:a");
    subscribe(ch, &conns[0]);
    for (uint64_t want = 1; want <= 10; want++) {
        json_t *data = json_integer((json_int_t)want);
        struct publish_result res;
        assert_int_equal(channel_publish(ch, data, NULL, T0, &res), 0);
        json_decref(data);
        assert_int_equal(res.seq, want);
        assert_string_equal(res.epoch, ch->epoch);
        assert_int_equal(ch->seq, want);
    }
    assert_int_equal(n_deliveries, 10);
    for (size_t i = 0; i < n_deliveries; i++)
        assert_int_equal(frame_int(deliveries[i].f, "seq"), (long long)i + 1);
}

static void test_publish_delivers_the_same_frame_to_every_subscriber_exactly_once(void **state)
{
    (void)state;
    struct channel *ch = get("room:a");
    struct channel *other = get("room:other");
    for (int i = 0; i < 5; i++)
        subscribe(ch, &conns[i]);
    subscribe(other, &conns[5]);
    subscribe(other, &conns[0]);

    json_t *data = json_pack("{s:s}", "text", "hi");
    struct publish_result res;
    assert_int_equal(channel_publish(ch, data, "c5f1e2a0000001", T0 + 5, &res), 0);

    assert_int_equal(n_deliveries, 5);
    struct frame *f = deliveries[0].f;
    int seen[NCONNS] = {0};
    for (size_t i = 0; i < n_deliveries; i++) {
        assert_ptr_equal(deliveries[i].f, f); /* by reference, never a copy */
        seen[deliveries[i].c->id]++;
    }
    for (int i = 0; i < NCONNS; i++)
        assert_int_equal(seen[i], i < 5 ? 1 : 0);
    /* One reference per delivery plus the history's; the publisher's own
     * reference was dropped when channel_publish returned. */
    assert_int_equal(f->refs, 5 + 1);
    assert_int_equal(frame_live, 1);
    assert_int_equal(metrics.delivered, 5);

    json_t *msg = frame_json(f);
    assert_string_equal(json_string_value(json_object_get(msg, "op")), "msg");
    assert_string_equal(json_string_value(json_object_get(msg, "ch")), "room:a");
    assert_int_equal(json_integer_value(json_object_get(msg, "seq")), 1);
    assert_true(json_integer_value(json_object_get(msg, "ts")) == T0 + 5);
    assert_string_equal(json_string_value(json_object_get(msg, "client")), "c5f1e2a0000001");
    assert_true(json_equal(json_object_get(msg, "data"), data));
    json_decref(msg);
    json_decref(data);

    /* The other channel saw nothing. */
    assert_int_equal(other->seq, 0);
}

static void test_publish_without_subscribers_or_history_leaves_no_channel(void **state)
{
    (void)state;
    struct channel *ch = get("nohist:x");
    struct publish_result res;
    json_t *data = json_true();
    assert_int_equal(channel_publish(ch, data, NULL, T0, &res), 0);
    assert_int_equal(res.seq, 1);
    assert_true(strlen(res.epoch) > 0);
    assert_null(find("nohist:x"));
    assert_int_equal(frame_live, 0);
    assert_int_equal(n_deliveries, 0);
    /* The next publish starts a new life: another epoch, seq 1 again. */
    struct publish_result res2;
    ch = get("nohist:x");
    assert_int_equal(channel_publish(ch, data, NULL, T0, &res2), 0);
    assert_int_equal(res2.seq, 1);
    assert_string_not_equal(res2.epoch, res.epoch);
    assert_null(find("nohist:x"));
    json_decref(data);
}

static void test_publish_in_a_namespace_without_history_still_fans_out(void **state)
{
    (void)state;
    struct channel *ch = get("nohist:x");
    subscribe(ch, &conns[0]);
    subscribe(ch, &conns[1]);
    assert_int_equal(publish_int(ch, 1, T0), 1);
    assert_int_equal(publish_int(ch, 2, T0), 2);
    assert_int_equal(n_deliveries, 4);
    assert_int_equal(ch->hist_count, 0);
    assert_int_equal(deliveries[0].f->refs, 2); /* both queues, no history */
}

static void test_the_history_ring_keeps_the_newest_history_size_entries(void **state)
{
    (void)state;
    struct channel *ch = get("room:a"); /* history_size 4 */
    subscribe(ch, &conns[0]);
    for (int i = 1; i <= 11; i++)
        publish_int(ch, i * 100, T0 + i);
    assert_int_equal(ch->hist_count, 4);
    /* The 7 dropped frames are gone apart from the deliveries' references. */
    for (size_t i = 0; i < n_deliveries; i++)
        assert_int_equal(deliveries[i].f->refs, i < 7 ? 1 : 2);
    deliveries_release();
    assert_int_equal(frame_live, 4);

    struct collected kept = history(ch, 0, -1, T0 + 11);
    expect_seqs(kept, 8, 4);
    for (size_t i = 0; i < kept.n; i++) {
        assert_int_equal(frame_int(kept.f[i], "seq"), (long long)kept.seq[i]);
        assert_int_equal(frame_int(kept.f[i], "data"), (long long)kept.seq[i] * 100);
    }
}

/* A backup fetching a channel (engine/shardsync.c) merges the owner's
 * history with what REPL brought first: each seq once, the higher position. */
static void test_merge_keeps_each_seq_once_and_the_higher_position(void **state)
{
    (void)state;
    struct channel *ch = get("room:a"); /* history_size 4 */
    struct frame *f[6];
    for (int i = 0; i < 6; i++) {
        char text[32];
        int n = snprintf(text, sizeof text, "{\"seq\":%d,\"data\":%d}", i + 1, (i + 1) * 100);
        f[i] = frame_from(text, (size_t)n);
        assert_non_null(f[i]);
    }
    channel_adopt(ch, "E1", 4, false);
    channel_record(ch, f[4], 5, T0); /* REPL brought 5 and 6 first */
    channel_record(ch, f[5], 6, T0);
    ch->seq = 6;
    struct hist_entry owner[4] = {{f[2], 3, T0}, {f[3], 4, T0}, {f[4], 5, T0}, {NULL, 0, 0}};
    channel_merge(ch, "E1", 5, owner, 3);
    assert_string_equal(ch->epoch, "E1");
    assert_int_equal(ch->seq, 6);
    expect_seqs(history(ch, 0, -1, T0), 3, 4);
    /* Another epoch replaces what was held. */
    struct hist_entry other[2] = {{f[0], 1, T0}, {f[1], 2, T0}};
    channel_merge(ch, "E2", 2, other, 2);
    assert_string_equal(ch->epoch, "E2");
    assert_int_equal(ch->seq, 2);
    expect_seqs(history(ch, 0, -1, T0), 1, 2);
    for (int i = 0; i < 6; i++)
        frame_unref(f[i]);
}

/* --------------------------------------------------------------- history */

static void test_history_each_returns_entries_after_a_position_oldest_first(void **state)
{
    (void)state;
    struct channel *ch = get("room:a");
    subscribe(ch, &conns[0]);
    for (int i = 1; i <= 4; i++)
        publish_int(ch, i, T0);
    expect_seqs(history(ch, 0, -1, T0), 1, 4);
    expect_seqs(history(ch, 2, -1, T0), 3, 2);
    expect_seqs(history(ch, 4, -1, T0), 1, 0);
    expect_seqs(history(ch, 99, -1, T0), 1, 0);
    /* The entries are the very frames that were delivered. */
    struct collected all = history(ch, 0, -1, T0);
    for (size_t i = 0; i < all.n; i++)
        assert_ptr_equal(all.f[i], deliveries[i].f);
}

static void test_history_each_limit_keeps_the_newest_entries(void **state)
{
    (void)state;
    struct channel *ch = get("room:a");
    subscribe(ch, &conns[0]);
    for (int i = 1; i <= 4; i++)
        publish_int(ch, i, T0);
    expect_seqs(history(ch, 0, 2, T0), 3, 2);
    expect_seqs(history(ch, 0, 0, T0), 1, 0);
    expect_seqs(history(ch, 0, 4, T0), 1, 4);
    expect_seqs(history(ch, 0, 100, T0), 1, 4);
    expect_seqs(history(ch, 1, 2, T0), 3, 2);
    expect_seqs(history(ch, 2, 5, T0), 3, 2);
    expect_seqs(history(ch, 3, 1, T0), 4, 1);
}

static void test_history_each_skips_expired_entries(void **state)
{
    (void)state;
    struct channel *ch = get("room:a"); /* ttl 10 s */
    subscribe(ch, &conns[0]);
    publish_int(ch, 1, T0);
    publish_int(ch, 2, T0 + 5000);
    publish_int(ch, 3, T0 + 9000);
    /* Exactly ttl old is still kept; one millisecond more is not. */
    expect_seqs(history(ch, 0, -1, T0 + 10000), 1, 3);
    expect_seqs(history(ch, 0, -1, T0 + 10001), 2, 2);
    expect_seqs(history(ch, 0, -1, T0 + 19001), 1, 0);
    assert_int_equal(ch->hist_count, 0);
    /* Sequencing goes on regardless of what history still holds. */
    assert_int_equal(publish_int(ch, 4, T0 + 20000), 4);
    expect_seqs(history(ch, 0, -1, T0 + 20000), 4, 1);
}

static void test_history_without_an_age_limit_never_expires(void **state)
{
    (void)state;
    struct channel *ch = get("forever:a"); /* 3 entries, ttl 0 */
    publish_int(ch, 1, T0);
    publish_int(ch, 2, T0);
    int64_t much_later = T0 + 365LL * 24 * 3600 * 1000;
    expect_seqs(history(ch, 0, -1, much_later), 1, 2);
    channel_sweep(much_later);
    assert_ptr_equal(find("forever:a"), ch);
    /* teardown's channel_registry_free() releases it. */
}

/* -------------------------------------------------------------- recovery */

static void test_can_recover_when_every_later_message_is_in_history(void **state)
{
    (void)state;
    struct channel *ch = get("room:a"); /* history_size 4 */
    subscribe(ch, &conns[0]);
    for (int i = 1; i <= 3; i++)
        publish_int(ch, i, T0);
    assert_true(channel_can_recover(ch, ch->epoch, 0, T0));
    assert_true(channel_can_recover(ch, ch->epoch, 1, T0));
    assert_true(channel_can_recover(ch, ch->epoch, 2, T0));
}

static void test_can_recover_at_the_current_seq_even_without_history(void **state)
{
    (void)state;
    struct channel *ch = get("nohist:a");
    subscribe(ch, &conns[0]);
    assert_true(channel_can_recover(ch, ch->epoch, 0, T0)); /* nothing published yet */
    publish_int(ch, 1, T0);
    publish_int(ch, 2, T0);
    assert_true(channel_can_recover(ch, ch->epoch, 2, T0));
    assert_false(channel_can_recover(ch, ch->epoch, 1, T0));
}

static void test_cannot_recover_from_another_epoch(void **state)
{
    (void)state;
    struct channel *ch = get("room:a");
    subscribe(ch, &conns[0]);
    publish_int(ch, 1, T0);
    assert_false(channel_can_recover(ch, "not-this-epoch", 0, T0));
    assert_false(channel_can_recover(ch, "not-this-epoch", 1, T0));
    assert_false(channel_can_recover(ch, "", 1, T0));
}

static void test_cannot_recover_when_the_position_fell_out_of_history(void **state)
{
    (void)state;
    struct channel *ch = get("room:a"); /* history_size 4 */
    subscribe(ch, &conns[0]);
    for (int i = 1; i <= 10; i++)
        publish_int(ch, i, T0);
    /* History holds 7..10: a client at 6 misses nothing, one at 5 missed 6. */
    assert_true(channel_can_recover(ch, ch->epoch, 6, T0));
    assert_false(channel_can_recover(ch, ch->epoch, 5, T0));
    assert_false(channel_can_recover(ch, ch->epoch, 0, T0));
}

static void test_cannot_recover_once_history_expired(void **state)
{
    (void)state;
    struct channel *ch = get("room:a"); /* ttl 10 s */
    subscribe(ch, &conns[0]);
    publish_int(ch, 1, T0);
    publish_int(ch, 2, T0);
    assert_true(channel_can_recover(ch, ch->epoch, 1, T0 + 10000));
    assert_false(channel_can_recover(ch, ch->epoch, 1, T0 + 10001));
    assert_true(channel_can_recover(ch, ch->epoch, 2, T0 + 10001));
}

static void test_cannot_recover_from_a_seq_beyond_the_current_one(void **state)
{
    (void)state;
    struct channel *ch = get("room:a");
    subscribe(ch, &conns[0]);
    publish_int(ch, 1, T0);
    assert_false(channel_can_recover(ch, ch->epoch, 2, T0));
    assert_false(channel_can_recover(ch, ch->epoch, UINT64_MAX, T0));
}

/* ----------------------------------------------------- idle life and sweep */

static void test_a_channel_with_history_stays_until_its_ttl_passes_and_sweep_removes_it(void **state)
{
    (void)state;
    struct channel *ch = get("room:a"); /* ttl 10 s */
    struct sub *s = subscribe(ch, &conns[0]);
    publish_int(ch, 1, T0);
    publish_int(ch, 2, T0 + 4000);
    channel_unsubscribe(s, &conns[0].subs);
    deliveries_release();
    assert_ptr_equal(find("room:a"), ch);
    assert_true(ch->idle);

    channel_sweep(T0 + 10000);
    assert_ptr_equal(find("room:a"), ch);
    channel_sweep(T0 + 12000); /* the first message expired, the second has not */
    assert_ptr_equal(find("room:a"), ch);
    assert_int_equal(ch->hist_count, 1);
    assert_int_equal(frame_live, 1);
    channel_sweep(T0 + 14001);
    assert_null(find("room:a"));
    assert_int_equal(channel_count(), 0);
    assert_int_equal(metrics.channels, 0);
    assert_int_equal(frame_live, 0);
}

static void test_sweep_leaves_subscribed_channels_alone(void **state)
{
    (void)state;
    struct channel *ch = get("room:a");
    subscribe(ch, &conns[0]);
    publish_int(ch, 1, T0);
    channel_sweep(T0 + 60000);
    assert_ptr_equal(find("room:a"), ch);
    assert_false(ch->idle);
    assert_int_equal(ch->seq, 1);
}

static void test_subscribing_to_an_idle_channel_keeps_it_and_its_sequence(void **state)
{
    (void)state;
    struct channel *ch = get("room:a");
    struct sub *s = subscribe(ch, &conns[0]);
    publish_int(ch, 1, T0);
    channel_unsubscribe(s, &conns[0].subs);
    assert_true(ch->idle);
    char epoch[CHANNEL_EPOCH_MAX];
    memcpy(epoch, ch->epoch, sizeof epoch);

    subscribe(ch, &conns[1]);
    assert_false(ch->idle);
    channel_sweep(T0 + 60000); /* history expired, but there is a subscriber */
    assert_ptr_equal(find("room:a"), ch);
    assert_string_equal(ch->epoch, epoch);
    assert_int_equal(publish_int(ch, 2, T0 + 60000), 2);
}

static void test_sweep_handles_several_idle_channels(void **state)
{
    (void)state;
    static const char *const names[] = {"i:a", "i:b", "i:c", "i:d", "i:e"};
    for (int i = 0; i < 5; i++)
        publish_int(get(names[i]), i, T0 + i * 1000);
    assert_int_equal(channel_count(), 5);
    channel_sweep(T0 + 12500); /* a (T0), b (T0+1s) and c (T0+2s) are > 10 s old */
    assert_null(find("i:a"));
    assert_null(find("i:b"));
    assert_null(find("i:c"));
    assert_non_null(find("i:d"));
    assert_non_null(find("i:e"));
    channel_sweep(T0 + 100000);
    assert_int_equal(channel_count(), 0);
}

static void test_successive_lives_of_a_channel_have_different_epochs(void **state)
{
    (void)state;
    char seen[5][CHANNEL_EPOCH_MAX];
    for (int life = 0; life < 5; life++) {
        struct channel *ch = get("room:a");
        assert_int_equal(ch->seq, 0);
        memcpy(seen[life], ch->epoch, sizeof seen[life]);
        for (int k = 0; k < life; k++)
            assert_string_not_equal(seen[life], seen[k]);
        struct sub *s = subscribe(ch, &conns[0]);
        assert_int_equal(publish_int(ch, life, T0), 1);
        channel_unsubscribe(s, &conns[0].subs);
        channel_sweep(T0 + 20000); /* the history expires: this life ends */
        assert_null(find("room:a"));
    }
}

static void test_different_channels_have_different_epochs(void **state)
{
    (void)state;
    struct channel *a = get("a");
    struct channel *b = get("b");
    assert_string_not_equal(a->epoch, b->epoch);
}

/* ------------------------------------------------------- idempotency keys */

static void test_idempotency_keys_evict_the_oldest_first(void **state)
{
    (void)state;
    struct channel *ch = get("room:keys");
    char key[32];
    for (int i = 1; i <= NKEYS + 10; i++) {
        snprintf(key, sizeof key, "k%d", i);
        channel_key_record(ch, key, (uint64_t)i, T0);
        if (i == 5)
            channel_key_record(ch, "k1", 999, T0); /* known key: kept with its seq, not renewed */
    }
    assert_int_equal(ch->nkeys, NKEYS);
    for (int i = 1; i <= 10; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(channel_key_seq(ch, key, T0), 0);
    }
    for (int i = 11; i <= NKEYS + 10; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(channel_key_seq(ch, key, T0), i);
    }
    /* Evicted keys can be recorded again, as the newest. */
    channel_key_record(ch, "k1", 7, T0);
    assert_int_equal(channel_key_seq(ch, "k1", T0), 7);
    assert_int_equal(channel_key_seq(ch, "k11", T0), 0);
    assert_int_equal(ch->nkeys, NKEYS);
    assert_int_equal(metrics.idempotency_keys, NKEYS);
    assert_int_equal(metrics.idempotency_dropped[1], 11); /* channel_limit */
}

static void test_a_key_past_its_window_is_unknown_and_publishes_anew(void **state)
{
    (void)state;
    struct channel *ch = get("room:keys"); /* window: 60 s */
    channel_key_record(ch, "a", 1, T0);
    channel_key_record(ch, "b", 2, T0 + 30000);
    assert_int_equal(channel_key_seq(ch, "a", T0 + 59999), 1);
    assert_int_equal(channel_key_seq(ch, "a", T0 + 60000), 0); /* the window ends */
    assert_int_equal(channel_key_seq(ch, "b", T0 + 60000), 2);
    assert_int_equal(ch->nkeys, 1);
    channel_key_record(ch, "a", 9, T0 + 60000); /* seen again: a new publish */
    assert_int_equal(channel_key_seq(ch, "a", T0 + 60001), 9);
    assert_int_equal(channel_key_seq(ch, "b", T0 + 90000), 0);
    assert_int_equal(channel_key_seq(ch, "a", T0 + 90000), 9);
    assert_int_equal(metrics.idempotency_dropped[0], 2); /* window */
    assert_int_equal(metrics.idempotency_keys, 1);
}

static void test_sweep_expires_keys_of_channels_nobody_publishes_to(void **state)
{
    (void)state;
    struct channel *a = get("room:a"), *b = get("room:b"), *f = get("forever:c");
    /* Subscribers keep a and b, history keeps f; nobody publishes. */
    assert_non_null(channel_subscribe(a, &conns[0], &conns[0].subs));
    assert_non_null(channel_subscribe(b, &conns[0], &conns[0].subs));
    publish_int(f, 1, T0);
    channel_key_record(a, "x", 1, T0);
    channel_key_record(b, "x", 1, T0 + 1000);
    channel_key_record(f, "x", 1, T0);  /* "forever": no window */
    assert_int_equal(metrics.idempotency_keys, 3);
    channel_sweep(T0 + 60500);
    assert_int_equal(metrics.idempotency_keys, 2);
    assert_int_equal(b->nkeys, 1);
    channel_sweep(T0 + 61000);
    assert_int_equal(metrics.idempotency_keys, 1);
    assert_int_equal(channel_key_seq(f, "x", T0 + 86400000), 1);
}

static void test_the_node_bound_drops_the_oldest_key_of_any_channel(void **state)
{
    (void)state;
    cfg.max_idempotency_keys = 4;
    struct channel *a = get("room:a"), *b = get("room:b"), *f = get("forever:c");
    channel_key_record(f, "f1", 1, T0);        /* oldest, in another namespace */
    channel_key_record(a, "a1", 1, T0 + 1);
    channel_key_record(b, "b1", 1, T0 + 2);
    channel_key_record(a, "a2", 2, T0 + 3);
    channel_key_record(b, "b2", 2, T0 + 4);   /* fifth: f1 goes */
    assert_int_equal(metrics.idempotency_keys, 4);
    assert_int_equal(channel_key_seq(f, "f1", T0 + 5), 0);
    channel_key_record(f, "f2", 2, T0 + 5);   /* a1 goes */
    assert_int_equal(channel_key_seq(a, "a1", T0 + 6), 0);
    assert_int_equal(channel_key_seq(a, "a2", T0 + 6), 2);
    assert_int_equal(channel_key_seq(b, "b1", T0 + 6), 1);
    assert_int_equal(channel_key_seq(f, "f2", T0 + 6), 2);
    assert_int_equal(metrics.idempotency_dropped[2], 2); /* node_limit */
    assert_int_equal(metrics.idempotency_keys, 4);
}

static void test_keys_end_with_the_epoch_and_a_namespace_may_turn_them_off(void **state)
{
    (void)state;
    struct channel *ch = get("room:keys");
    channel_key_record(ch, "a", 1, T0);
    channel_adopt(ch, "another-epoch", 0, false);
    assert_int_equal(channel_key_seq(ch, "a", T0), 0);
    assert_int_equal(metrics.idempotency_keys, 0);
    assert_int_equal(metrics.idempotency_dropped[0] + metrics.idempotency_dropped[1] +
                     metrics.idempotency_dropped[2], 0); /* not a drop: the epoch ended */
    struct channel *n = get("nohist:x"); /* idempotency_keys 0 */
    channel_key_record(n, "a", 1, T0);
    assert_int_equal(channel_key_seq(n, "a", T0), 0);
    assert_int_equal(metrics.idempotency_keys, 0);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_channel_get_creates_a_channel_once),
        T(test_channel_find_matches_the_whole_name_only),
        T(test_channels_take_the_options_of_their_namespace),
        T(test_subscribe_links_both_sides),
        T(test_one_connection_on_several_channels_keeps_a_consistent_list),
        T(test_unsubscribe_swap_removes_and_keeps_every_index_consistent),
        T(test_a_channel_without_subscribers_or_history_is_deleted),
        T(test_unsubscribe_all_leaves_the_connection_with_nothing),
        T(test_a_large_room_that_empties_gives_its_subscriber_array_back),
        T(test_publish_assigns_seq_one_two_three),
        T(test_publish_delivers_the_same_frame_to_every_subscriber_exactly_once),
        T(test_publish_without_subscribers_or_history_leaves_no_channel),
        T(test_publish_in_a_namespace_without_history_still_fans_out),
        T(test_the_history_ring_keeps_the_newest_history_size_entries),
        T(test_history_each_returns_entries_after_a_position_oldest_first),
        T(test_history_each_limit_keeps_the_newest_entries),
        T(test_history_each_skips_expired_entries),
        T(test_history_without_an_age_limit_never_expires),
        T(test_can_recover_when_every_later_message_is_in_history),
        T(test_can_recover_at_the_current_seq_even_without_history),
        T(test_cannot_recover_from_another_epoch),
        T(test_cannot_recover_when_the_position_fell_out_of_history),
        T(test_cannot_recover_once_history_expired),
        T(test_cannot_recover_from_a_seq_beyond_the_current_one),
        T(test_a_channel_with_history_stays_until_its_ttl_passes_and_sweep_removes_it),
        T(test_sweep_leaves_subscribed_channels_alone),
        T(test_subscribing_to_an_idle_channel_keeps_it_and_its_sequence),
        T(test_sweep_handles_several_idle_channels),
        T(test_successive_lives_of_a_channel_have_different_epochs),
        T(test_different_channels_have_different_epochs),
        T(test_idempotency_keys_evict_the_oldest_first),
        T(test_merge_keeps_each_seq_once_and_the_higher_position),
        T(test_a_key_past_its_window_is_unknown_and_publishes_anew),
        T(test_sweep_expires_keys_of_channels_nobody_publishes_to),
        T(test_the_node_bound_drops_the_oldest_key_of_any_channel),
        T(test_keys_end_with_the_epoch_and_a_namespace_may_turn_them_off),
    };
#undef T
    return cmocka_run_group_tests_name("channel", tests, NULL, NULL);
}
