/* engine_fixture.h - what the engine's unit tests (test_publish, test_replica,
 * test_mirror) share: a config with one default namespace, a fresh channel
 * registry with metrics and the live frame count at zero, the tests'
 * connections, and a recorder that keeps every delivered frame. Teardown
 * checks that no channel and no frame is left, so a leak fails the test. */
#ifndef CHORUS_ENGINE_FIXTURE_H
#define CHORUS_ENGINE_FIXTURE_H

#include "channel.h"
#include "config.h"
#include "frame.h"

/* A test's connection: only the connection side of the subscription index. */
struct conn {
    struct sub_list subs;
};

#define ENGINE_DELIVERED_MAX 16

extern struct config engine_cfg;
extern struct frame *delivered[ENGINE_DELIVERED_MAX]; /* referenced until teardown */
extern int ndelivered;

/* Keeps a reference to each frame delivered, in delivery order. */
void engine_record_delivery(struct sub *s, struct frame *f);

/* Zeroes engine_cfg, metrics, the frame count, the recorder and conns[0..n),
 * gives the default namespace history_size messages kept history_ttl seconds
 * with clients allowed to publish, and opens the registry with `deliver` as
 * its delivery hook. Assertions fail the test from inside a cmocka setup. */
void engine_fixture_setup(int history_size, int history_ttl, struct conn *conns, int n,
                          channel_deliver_fn *deliver);

/* Unsubscribes conns[0..n), frees the registry, drops the recorded frames and
 * asserts that no channel and no frame is left. */
void engine_fixture_teardown(struct conn *conns, int n);

#endif
