/* engine_fixture.c - the set-up and clean-up the engine's unit tests share
 * (see engine_fixture.h); each test keeps its own stubs and helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "engine_fixture.h"
#include "metrics.h"
#include "runtime.h"

struct config engine_cfg;
struct frame *delivered[ENGINE_DELIVERED_MAX];
int ndelivered;

void engine_record_delivery(struct sub *s, struct frame *f)
{
    (void)s;
    assert_true(ndelivered < ENGINE_DELIVERED_MAX);
    delivered[ndelivered++] = frame_ref(f);
}

void engine_fixture_setup(int history_size, int history_ttl, struct conn *conns, int n,
                          channel_deliver_fn *deliver)
{
    memset(&engine_cfg, 0, sizeof engine_cfg);
    engine_cfg.default_ns = (struct ns_opts){.name = "", .history_size = history_size,
                                             .history_ttl = history_ttl, .client_publish = true,
                                             .idempotency_window = 600,
                                             .idempotency_keys = 1024};
    rt.cfg = &engine_cfg;
    memset(&metrics, 0, sizeof metrics);
    memset(conns, 0, (size_t)n * sizeof *conns);
    frame_live = 0;
    ndelivered = 0;
    channel_registry_init(&engine_cfg);
    channel_set_deliver(deliver);
}

void engine_fixture_teardown(struct conn *conns, int n)
{
    for (int i = 0; i < n; i++)
        channel_unsubscribe_all(&conns[i].subs);
    channel_registry_free();
    assert_int_equal(metrics.channels, 0);
    for (int i = 0; i < ndelivered; i++)
        frame_unref(delivered[i]);
    assert_int_equal(frame_live, 0);
}
