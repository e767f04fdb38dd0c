/* test_publish.c - the engine's one publish path on a node without a
 * cluster (engine/publish.c and replica.c over the channel layer), linked
 * against the engine layer and those below it only: no connections.
 *
 * A publish is sequenced, delivered to every subscriber by reference and
 * acknowledged with its epoch and seq, all before publish_submit returns;
 * a second publish with the same idempotency key is acknowledged with the
 * first one's seq and delivered nowhere. Each test ends with no frame,
 * channel or subscription left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "cluster.h"
#include "engine_fixture.h"
#include "publish.h"

#define NCONNS 2
static struct conn conns[NCONNS];

/* What the submitter was told. */
struct outcome {
    int calls;
    enum chorus_err err;
    char epoch[64];
    uint64_t seq;
    bool duplicate;
};

static void done(struct pub_wait *w, enum chorus_err err, const char *msg, const char *epoch,
                 uint64_t seq, bool duplicate)
{
    (void)msg;
    struct outcome *o = w->ud;
    o->calls++;
    o->err = err;
    snprintf(o->epoch, sizeof o->epoch, "%s", epoch ? epoch : "");
    o->seq = seq;
    o->duplicate = duplicate;
}

static int setup(void **state)
{
    (void)state;
    engine_fixture_setup(4, 10, conns, NCONNS, engine_record_delivery);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    engine_fixture_teardown(conns, NCONNS);
    return 0;
}

static void subscribe(struct conn *c, const char *name)
{
    struct channel *ch = channel_get(name, strlen(name));
    assert_non_null(ch);
    assert_non_null(channel_subscribe(ch, c, &c->subs));
}

static void publish(const char *ch, const char *data, const char *key, struct outcome *o)
{
    struct pub_wait w;
    memset(o, 0, sizeof *o);
    publish_submit(ch, strlen(ch), data, strlen(data), false, "client-1", key, &w, done, o);
}

static bool payload_has(struct frame *f, const char *text)
{
    return memmem(frame_payload(f), f->len, text, strlen(text)) != NULL;
}

static void a_publish_is_delivered_then_acknowledged_in_sequence(void **state)
{
    (void)state;
    assert_false(cluster_enabled());
    subscribe(&conns[0], "room:1");
    subscribe(&conns[1], "room:1");
    struct outcome o1, o2;
    publish("room:1", "{\"n\":1}", NULL, &o1);
    publish("room:1", "{\"n\":2}", NULL, &o2);
    assert_int_equal(o1.calls, 1);
    assert_int_equal(o1.err, CHORUS_ERR__COUNT);
    assert_int_equal(o1.seq, 1);
    assert_false(o1.duplicate);
    assert_int_equal(o2.seq, 2);
    assert_string_equal(o1.epoch, o2.epoch);
    assert_true(strlen(o1.epoch) > 0);
    /* Each message once per subscriber, the same frame for both. */
    assert_int_equal(ndelivered, 4);
    assert_ptr_equal(delivered[0], delivered[1]);
    assert_true(payload_has(delivered[0], "{\"n\":1}"));
    assert_true(payload_has(delivered[0], "\"seq\":1"));
    assert_true(payload_has(delivered[2], "{\"n\":2}"));
    assert_true(payload_has(delivered[2], "\"client\":\"client-1\""));
}

static void the_same_key_is_acknowledged_once_with_the_first_seq(void **state)
{
    (void)state;
    subscribe(&conns[0], "room:2");
    struct outcome a, b, c;
    publish("room:2", "1", "key-a", &a);
    publish("room:2", "2", "key-a", &b);
    publish("room:2", "3", "key-b", &c);
    assert_int_equal(a.seq, 1);
    assert_false(a.duplicate);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.err, CHORUS_ERR__COUNT);
    assert_int_equal(b.seq, 1);
    assert_true(b.duplicate);
    assert_int_equal(c.seq, 2);
    assert_int_equal(ndelivered, 2);
}

static void a_publish_without_subscribers_is_kept_in_history(void **state)
{
    (void)state;
    struct outcome o;
    publish("room:3", "true", NULL, &o);
    assert_int_equal(o.seq, 1);
    assert_int_equal(ndelivered, 0);
    struct channel *ch = channel_find("room:3", 6);
    assert_non_null(ch);
    assert_int_equal(ch->hist_count, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_publish_is_delivered_then_acknowledged_in_sequence, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(the_same_key_is_acknowledged_once_with_the_first_seq, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_publish_without_subscribers_is_kept_in_history, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
