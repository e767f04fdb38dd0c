/* test_replica.c - the owner's side of replication (engine/replica.c): a
 * message is delivered and acknowledged only once the channel's backup holds
 * it at the shard's current gen, in seq order, and only while this node holds
 * its lease; a message with no backup placed waits, and the messages of a
 * channel the map moves away are answered unavailable. Linked
 * against the engine layer with a stub fabric (fabric_stub.c) in place of
 * the cluster layer: the test plays the backup node. */
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
#include "publish.h"
#include "replica.h"
#include "runtime.h"

static struct conn sub;

struct outcome {
    struct pub_wait w;
    int calls;
    enum chorus_err err;
    uint64_t seq;
};

static void done(struct pub_wait *w, enum chorus_err err, const char *msg, const char *epoch,
                 uint64_t seq, bool duplicate)
{
    (void)msg, (void)epoch, (void)duplicate;
    struct outcome *o = w->ud;
    o->calls++;
    o->err = err;
    o->seq = seq;
}

static int setup(void **state)
{
    (void)state;
    engine_fixture_setup(8, 60, &sub, 1, engine_record_delivery);
    engine_cfg.cluster_timeout_ms = 2000;
    stub_reset();
    stub_backup = "n2";
    engine_cfg.replication_factor = 2;
    replica_start(&engine_cfg);
    assert_non_null(stub_handlers[ENV_REPL_ACK]);
    assert_non_null(stub_tick);
    struct channel *ch = channel_get("room:1", 6);
    assert_non_null(ch);
    assert_non_null(channel_subscribe(ch, &sub, &sub.subs));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    engine_fixture_teardown(&sub, 1);
    return 0;
}

static void publish(const char *data, struct outcome *o)
{
    memset(o, 0, sizeof *o);
    publish_submit("room:1", 6, data, strlen(data), false, NULL, NULL, &o->w, done, o);
}

/* The backup answers REPL_ACK for everything up to seq (status: refused). */
static void backup_acks(uint64_t seq, uint16_t status)
{
    struct channel *ch = channel_find("room:1", 6);
    assert_non_null(ch);
    struct envelope e = {.type = ENV_REPL_ACK, .seq = seq, .status = status, .req_id = stub_gen};
    snprintf(e.origin, sizeof e.origin, "n2");
    snprintf(e.epoch, sizeof e.epoch, "%s", ch->epoch);
    struct cluster_part name = {(const unsigned char *)"room:1", 6};
    stub_handlers[ENV_REPL_ACK](NULL, &e, &name, 1);
}

static void a_publish_waits_for_the_backup_then_is_delivered(void **state)
{
    (void)state;
    struct outcome o;
    publish("{\"n\":1}", &o);
    assert_int_equal(o.calls, 0);
    assert_int_equal(ndelivered, 0);
    assert_int_equal(stub_nsent, 1);
    assert_int_equal(stub_sent[0].env.type, ENV_REPL);
    assert_string_equal(stub_sent[0].node, "n2");
    assert_string_equal(stub_sent[0].ch, "room:1");
    assert_int_equal(stub_sent[0].env.seq, 1);

    backup_acks(1, 0);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.err, CHORUS_ERR__COUNT);
    assert_int_equal(o.seq, 1);
    assert_int_equal(ndelivered, 1);
}

static void one_ack_delivers_everything_up_to_its_seq_in_order(void **state)
{
    (void)state;
    struct outcome a, b, c;
    publish("1", &a);
    publish("2", &b);
    publish("3", &c);
    assert_int_equal(stub_nsent, 3);
    backup_acks(2, 0);
    assert_int_equal(a.calls + b.calls, 2);
    assert_int_equal(c.calls, 0);
    assert_int_equal(ndelivered, 2);
    assert_non_null(memmem(frame_payload(delivered[0]), delivered[0]->len, "\"seq\":1", 7));
    assert_non_null(memmem(frame_payload(delivered[1]), delivered[1]->len, "\"seq\":2", 7));
    backup_acks(3, 0);
    assert_int_equal(c.seq, 3);
    assert_int_equal(ndelivered, 3);
}

static void a_refusing_backup_delivers_nothing(void **state)
{
    (void)state;
    struct outcome o;
    publish("1", &o);
    backup_acks(1, CHORUS_ERR_UNAVAILABLE + 1);
    assert_int_equal(o.calls, 0);
    assert_int_equal(ndelivered, 0);
    assert_int_equal(metrics.replication_refused, 1);
    backup_acks(1, 0); /* the views agree again */
    assert_int_equal(o.calls, 1);
}

static void a_message_waits_while_no_backup_is_placed(void **state)
{
    (void)state;
    struct outcome o;
    stub_backup = NULL;
    publish("1", &o);
    stub_tick(runtime_now_ms() + 1000); /* past the re-send interval */
    assert_int_equal(o.calls, 0);
    assert_int_equal(ndelivered, 0);
    stub_backup = "n2"; /* the map places a backup: the message goes to it */
    stub_gen = 8;
    stub_map_hook();
    assert_int_equal(stub_nsent, 1);
    assert_int_equal(stub_sent[0].env.req_id, 8);
    backup_acks(1, 0);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.err, CHORUS_ERR__COUNT);
}

static void an_ack_under_an_older_gen_counts_for_nothing(void **state)
{
    (void)state;
    struct outcome o;
    publish("1", &o);
    stub_gen = 9; /* the map changed the shard's assignment */
    stub_map_hook();
    stub_gen = 7;
    backup_acks(1, 0);
    assert_int_equal(o.calls, 0);
    stub_gen = 9;
    backup_acks(1, 0);
    assert_int_equal(o.calls, 1);
}

static void without_a_lease_nothing_is_delivered_or_sequenced(void **state)
{
    (void)state;
    struct outcome o, later;
    publish("1", &o);
    stub_no_lease = true;
    backup_acks(1, 0);
    assert_int_equal(o.calls, 0);
    assert_int_equal(ndelivered, 0);
    publish("2", &later); /* refused at once: no seq is handed out */
    assert_int_equal(later.calls, 1);
    assert_int_equal(later.err, CHORUS_ERR_UNAVAILABLE);
    stub_no_lease = false; /* the lease is back: the held message goes out */
    stub_tick(runtime_now_ms());
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.seq, 1);
    assert_int_equal(ndelivered, 1);
}

static void when_the_channel_moves_to_the_backup_that_holds_a_message_it_is_acknowledged(void **state)
{
    (void)state;
    struct outcome held, not_held;
    publish("1", &held);
    publish("2", &not_held);
    stub_no_lease = true; /* seq 1 is acknowledged by n2 but cannot be delivered here */
    backup_acks(1, 0);
    assert_int_equal(held.calls, 0);
    stub_not_owner = true; /* the leader hands the channel to its backup n2 */
    stub_owner = "n2";
    stub_map_hook();
    assert_int_equal(held.calls, 1);
    assert_int_equal(held.err, CHORUS_ERR__COUNT); /* n2 holds it and continues past it */
    assert_int_equal(held.seq, 1);
    assert_int_equal(not_held.calls, 1);
    assert_int_equal(not_held.err, CHORUS_ERR_UNAVAILABLE);
    assert_int_equal(ndelivered, 0); /* delivered by n2, not here */
}

static void when_the_map_moves_the_channel_away_pending_publishes_fail(void **state)
{
    (void)state;
    struct outcome o;
    publish("1", &o);
    stub_not_owner = true;
    stub_map_hook();
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.err, CHORUS_ERR_UNAVAILABLE);
    assert_int_equal(ndelivered, 0);
    struct channel *ch = channel_find("room:1", 6);
    assert_true(ch->mirror); /* it follows the new owner now */
    backup_acks(1, 0);      /* a late ack delivers nothing */
    assert_int_equal(ndelivered, 0);
}

static void an_owner_that_becomes_the_backup_keeps_its_channel_as_a_replica(void **state)
{
    (void)state;
    struct outcome o;
    publish("1", &o);
    backup_acks(1, 0);
    assert_int_equal(o.calls, 1);
    stub_not_owner = true; /* handed to n2 on purpose; this node stays its backup */
    stub_owner = "n2";
    stub_is_backup = true;
    stub_gen = 9;
    stub_map_hook();
    struct channel *ch = channel_find("room:1", 6);
    assert_true(ch->mirror);
    assert_true(ch->replica); /* it holds everything it delivered: a move back continues */
    assert_int_equal(ch->repl_gen, 9);
}

static void an_owner_demoted_with_messages_pending_is_no_replica_until_its_next_repl(void **state)
{
    (void)state;
    struct outcome o;
    publish("1", &o); /* pending: n2 may deliver it without this node's ack */
    stub_not_owner = true;
    stub_owner = "n2";
    stub_is_backup = true;
    stub_map_hook();
    struct channel *ch = channel_find("room:1", 6);
    assert_true(ch->mirror);
    assert_false(ch->replica);
}

static void an_owner_that_leaves_the_shard_keeps_no_replica(void **state)
{
    (void)state;
    struct outcome o;
    publish("1", &o);
    backup_acks(1, 0);
    stub_not_owner = true;
    stub_owner = "n2";
    stub_map_hook();
    assert_false(channel_find("room:1", 6)->replica);
}

static void a_shard_handed_off_holds_new_publishes_and_reports_quiet_once_nothing_is_pending(void **state)
{
    (void)state;
    struct outcome before, held;
    publish("1", &before);
    stub_handing_off = true; /* the map names a handoff target for the shard */
    stub_map_hook();
    stub_tick(0);
    assert_int_equal(stub_quiesced, 0); /* seq 1 is still pending */
    publish("2", &held);
    assert_int_equal(stub_nsent, 1);    /* held back: no REPL for it */
    backup_acks(1, 0);
    assert_int_equal(before.calls, 1);
    stub_tick(0);
    assert_int_equal(stub_quiesced, 1); /* shard 0: nothing pending, the switch may come */
    assert_int_equal(held.calls, 0);
    publish_cancel(&held.w);            /* a held publish can be cancelled */
    stub_handing_off = false;
    stub_tick(0);
    assert_int_equal(stub_quiesced, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_publish_waits_for_the_backup_then_is_delivered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(one_ack_delivers_everything_up_to_its_seq_in_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_refusing_backup_delivers_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(a_message_waits_while_no_backup_is_placed, setup, teardown),
        cmocka_unit_test_setup_teardown(an_ack_under_an_older_gen_counts_for_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(without_a_lease_nothing_is_delivered_or_sequenced, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(when_the_map_moves_the_channel_away_pending_publishes_fail,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            when_the_channel_moves_to_the_backup_that_holds_a_message_it_is_acknowledged, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            an_owner_that_becomes_the_backup_keeps_its_channel_as_a_replica, setup, teardown),
        cmocka_unit_test_setup_teardown(
            an_owner_demoted_with_messages_pending_is_no_replica_until_its_next_repl, setup,
            teardown),
        cmocka_unit_test_setup_teardown(an_owner_that_leaves_the_shard_keeps_no_replica, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            a_shard_handed_off_holds_new_publishes_and_reports_quiet_once_nothing_is_pending,
            setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
