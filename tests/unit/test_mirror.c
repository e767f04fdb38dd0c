/* test_mirror.c - following a channel whose owner is another node
 * (engine/mirror.c): a subscriber waits until the mirror has joined the
 * owner's stream; the owner's messages are delivered in seq order; a gap
 * holds everything later back until a repair from the owner's history fills
 * it. Linked against the engine layer with a stub fabric (fabric_stub.c)
 * in place of the cluster layer: the test plays the owner. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "engine_fixture.h"
#include "fabric_stub.h"
#include "metrics.h"
#include "mirror.h"
#include "runtime.h"

static struct conn sub;
static struct channel *ch;
static uint64_t seqs[32];   /* the seq in each delivered msg frame; 0: an event */
static int nseqs;
static int joined, join_err;

static void record_seq(struct sub *s, struct frame *f)
{
    (void)s;
    unsigned long long seq = 0;
    char text[64] = "";
    memcpy(text, frame_payload(f), f->len < sizeof text - 1 ? f->len : sizeof text - 1);
    if (sscanf(text, "{\"seq\":%llu}", &seq) != 1)
        assert_non_null(strstr(text, "\"op\":\"epoch\""));
    assert_true(nseqs < 32);
    seqs[nseqs++] = seq;
}

static void on_current(struct mirror_wait *w, enum chorus_err err, const char *msg)
{
    (void)w, (void)msg;
    joined++;
    join_err = err;
}

static int setup(void **state)
{
    (void)state;
    engine_fixture_setup(8, 60, &sub, 1, record_seq);
    engine_cfg.cluster_timeout_ms = 2000;
    nseqs = joined = 0;
    stub_reset();
    stub_not_owner = true;
    mirror_start();
    assert_non_null(stub_handlers[ENV_MSG]);
    ch = channel_get("room:1", 6);
    assert_non_null(ch);
    ch->mirror = true;
    assert_non_null(channel_subscribe(ch, &sub, &sub.subs));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    engine_fixture_teardown(&sub, 1);
    return 0;
}

/* A message frame as the owner encoded it: here just its seq. */
static void owner_sends(uint64_t seq)
{
    char text[64];
    int n = snprintf(text, sizeof text, "{\"seq\":%llu}", (unsigned long long)seq);
    struct envelope e = {.type = ENV_MSG, .seq = seq};
    snprintf(e.origin, sizeof e.origin, "n2");
    snprintf(e.epoch, sizeof e.epoch, "E1");
    struct cluster_part topic = {(const unsigned char *)"room:1", 7}; /* with its NUL */
    struct cluster_part msg = {(const unsigned char *)text, (size_t)n};
    stub_handlers[ENV_MSG](&topic, &e, &msg, 1);
}

/* The owner's SYNC_REP to call i: position (E1, seq) and messages
 * first..last (none when first > last). */
static void owner_answers(int i, uint64_t seq, uint64_t first, uint64_t last, bool recovered)
{
    assert_true(i < stub_nsyncs);
    struct envelope rep = {.type = ENV_SYNC_REP, .seq = seq};
    snprintf(rep.epoch, sizeof rep.epoch, "E1");
    if (recovered)
        rep.flags |= ENV_FLAG_RECOVERED;
    struct cluster_part parts[1 + 2 * 8];
    unsigned char items[8][ENV_SYNC_ITEM_LEN];
    char texts[8][64];
    int n = 1;
    parts[0] = (struct cluster_part){(const unsigned char *)"room:1", 6};
    for (uint64_t s = first; s <= last; s++, n += 2) {
        int k = (n - 1) / 2;
        envelope_put_sync_item(items[k], s, runtime_now_ms(), 0);
        int len = snprintf(texts[k], sizeof texts[k], "{\"seq\":%llu}", (unsigned long long)s);
        parts[n] = (struct cluster_part){items[k], ENV_SYNC_ITEM_LEN};
        parts[n + 1] = (struct cluster_part){(const unsigned char *)texts[k], (size_t)len};
    }
    struct cluster_call *call = stub_syncs[i].call;
    call->cb(call, &rep, parts, n);
}

static void join(void)
{
    struct mirror_wait w;
    assert_int_equal(mirror_join(ch, &w, on_current, NULL), 0);
    assert_int_equal(joined, 0); /* waits for the owner */
    assert_int_equal(stub_nsyncs, 1);
    assert_true(stub_syncs[0].join);
    owner_answers(0, 5, 1, 5, false);
    assert_int_equal(joined, 1);
    assert_int_equal(join_err, CHORUS_ERR__COUNT);
}

static void a_subscriber_waits_until_the_mirror_has_joined(void **state)
{
    (void)state;
    join();
    assert_string_equal(ch->epoch, "E1");
    assert_int_equal(ch->seq, 5);
    assert_true(ch->live);
    assert_int_equal(ch->hist_count, 5); /* primed, not delivered */
    assert_int_equal(nseqs, 0);
    struct mirror_wait again;
    assert_int_equal(mirror_join(ch, &again, on_current, NULL), 0);
    assert_int_equal(joined, 2); /* current now: answered at once */
    assert_int_equal(stub_nsyncs, 1);
}

static void a_gap_holds_later_messages_until_the_repair(void **state)
{
    (void)state;
    join();
    owner_sends(6);
    owner_sends(8); /* 7 was lost */
    assert_int_equal(nseqs, 1);
    assert_int_equal(stub_nsyncs, 2);
    assert_true(stub_syncs[1].has_since);
    assert_int_equal(stub_syncs[1].seq, 6);
    owner_sends(9); /* held back while the repair runs */
    assert_int_equal(nseqs, 1);
    owner_answers(1, 9, 7, 9, true);
    assert_int_equal(nseqs, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(seqs[i], 6 + (uint64_t)i);
    assert_int_equal(metrics.gaps_repaired, 1);
    owner_sends(10);
    assert_int_equal(nseqs, 5);
    assert_int_equal(seqs[4], 10);
}

/* History seqs, oldest first, must be exactly first..last. */
static void assert_history(uint64_t first, uint64_t last)
{
    assert_int_equal(ch->hist_count, last - first + 1);
    for (uint32_t i = 0; i < ch->hist_count; i++)
        assert_int_equal(ch->hist[(ch->hist_head + i) % 8].seq, first + i);
}

/* The last local subscriber left (the stream is dropped, history kept: a
 * backup, or a node that was one) and one subscribes again: the second join
 * brings seqs this node still holds. */
static void rejoin(uint64_t seq, uint64_t first)
{
    ch->replica = true;
    channel_unsubscribe(sub.subs.head, &sub.subs);
    assert_ptr_equal(channel_find("room:1", 6), ch);
    ch->live = false; /* cluster/stream.c, on losing local interest */
    assert_non_null(channel_subscribe(ch, &sub, &sub.subs));
    struct mirror_wait w;
    int before = stub_nsyncs;
    assert_int_equal(mirror_join(ch, &w, on_current, NULL), 0);
    assert_int_equal(stub_nsyncs, before + 1);
    owner_answers(before, seq, first, seq, false);
    assert_int_equal(join_err, CHORUS_ERR__COUNT);
}

static void a_rejoin_takes_only_the_seqs_it_misses(void **state)
{
    (void)state;
    join();
    assert_history(1, 5);
    rejoin(5, 1); /* nothing new: the same five, not ten */
    assert_history(1, 5);
    rejoin(7, 1);
    assert_history(1, 7);
    assert_int_equal(ch->seq, 7);
    owner_sends(8);
    assert_history(1, 8);
}

static void a_rejoin_past_the_owners_history_keeps_no_hole(void **state)
{
    (void)state;
    join();
    rejoin(12, 9); /* the owner only holds 9..12 now: 6..8 are gone */
    assert_history(9, 12);
    assert_false(channel_can_recover(ch, "E1", 5, runtime_now_ms()));
    assert_true(channel_can_recover(ch, "E1", 8, runtime_now_ms()));
}

/* The owner replicates seq to this node (its backup) at the stub's gen. */
static void owner_replicates(uint64_t seq)
{
    char text[64];
    int n = snprintf(text, sizeof text, "{\"seq\":%llu}", (unsigned long long)seq);
    struct envelope e = {.type = ENV_REPL, .seq = seq, .req_id = stub_gen};
    snprintf(e.origin, sizeof e.origin, "n2");
    snprintf(e.epoch, sizeof e.epoch, "E1");
    struct cluster_part parts[3] = {
        {(const unsigned char *)"room:1", 6},
        {(const unsigned char *)text, (size_t)n},
        {(const unsigned char *)"", 0},
    };
    stub_handlers[ENV_REPL](NULL, &e, parts, 3);
}

static void a_backup_shows_its_copies_only_once_the_owner_delivers_them(void **state)
{
    (void)state;
    join();
    stub_nsent = 0;
    owner_replicates(6);
    owner_replicates(7);
    assert_int_equal(nseqs, 0); /* held: another backup may lack them */
    assert_int_equal(stub_nsent, 2);
    assert_int_equal(stub_sent[1].env.type, ENV_REPL_ACK);
    assert_int_equal(stub_sent[1].env.seq, 7); /* held counts for the ack */
    assert_int_equal(stub_sent[1].env.req_id, stub_gen);
    owner_sends(6);
    assert_int_equal(nseqs, 1);
    assert_int_equal(seqs[0], 6);
    owner_sends(8); /* 7's MSG was lost, but 8 says 7 was delivered: shown from the copy */
    assert_int_equal(stub_nsyncs, 1); /* no repair needed */
    assert_int_equal(nseqs, 3);
    assert_int_equal(seqs[1], 7);
    assert_int_equal(seqs[2], 8);
    assert_int_equal(ch->ntail, 0);
}

/* A backup with nobody subscribed here takes REPLs but does not follow the
 * owner's stream: once the map stops naming it nothing more arrives, and
 * nothing tells it. A subscriber arriving later must make it ask the owner,
 * not be answered from this copy (Jepsen rolling-restart, 5 nodes: a former
 * backup acked a sub 295 messages behind, and served that history). */
static void a_backup_without_subscribers_asks_the_owner_when_one_arrives(void **state)
{
    (void)state;
    join();
    ch->replica = true;
    channel_unsubscribe(sub.subs.head, &sub.subs);
    assert_ptr_equal(channel_find("room:1", 6), ch);
    ch->live = false; /* cluster/stream.c, on losing local interest */
    owner_replicates(6);
    owner_replicates(7);
    assert_int_equal(ch->seq, 7);
    assert_false(ch->live);
    assert_non_null(channel_subscribe(ch, &sub, &sub.subs));
    struct mirror_wait w;
    int before = stub_nsyncs;
    assert_int_equal(mirror_join(ch, &w, on_current, NULL), 0);
    assert_int_equal(joined, 1); /* only join()'s */
    assert_int_equal(stub_nsyncs, before + 1);
    owner_answers(before, 9, 8, 9, false);
    assert_int_equal(joined, 2);
    assert_int_equal(join_err, CHORUS_ERR__COUNT);
    assert_int_equal(ch->seq, 9);
    assert_true(ch->live);
}

static void a_cancelled_wait_is_never_answered(void **state)
{
    (void)state;
    struct mirror_wait w;
    assert_int_equal(mirror_join(ch, &w, on_current, NULL), 0);
    mirror_wait_cancel(&w);
    owner_answers(0, 0, 1, 0, false);
    assert_int_equal(joined, 0);
    assert_true(ch->live);
    /* A subscriber that was not waiting hears that the epoch changed. */
    assert_int_equal(nseqs, 1);
    assert_int_equal(seqs[0], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_subscriber_waits_until_the_mirror_has_joined, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_gap_holds_later_messages_until_the_repair, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_cancelled_wait_is_never_answered, setup, teardown),
        cmocka_unit_test_setup_teardown(a_backup_without_subscribers_asks_the_owner_when_one_arrives,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_rejoin_takes_only_the_seqs_it_misses, setup, teardown),
        cmocka_unit_test_setup_teardown(a_rejoin_past_the_owners_history_keeps_no_hole, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_backup_shows_its_copies_only_once_the_owner_delivers_them,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
