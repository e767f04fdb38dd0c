/* test_outq.c - a connection's bounded outbound queue of shared frames.
 *
 * Checks FIFO order across growth and wrap-around, the frame and byte bounds,
 * and that every entry holds exactly one frame reference: each test ends by
 * checking that frame_live is back to zero. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "frame.h"
#include "outq.h"

/* Frames in these tests are at least this long so that they can carry their
 * number. */
#define MIN_LEN 12

/* A frame whose payload is the text "n<i>" padded with '.' to len bytes. */
static struct frame *numbered(unsigned i, size_t len)
{
    assert_true(len >= MIN_LEN);
    struct frame *f = frame_new(len);
    assert_non_null(f);
    memset(frame_payload(f), '.', len);
    char tag[MIN_LEN + 1];
    int n = snprintf(tag, sizeof tag, "n%u", i);
    assert_true(n > 0 && n < MIN_LEN);
    memcpy(frame_payload(f), tag, (size_t)n);
    return f;
}

static unsigned number_of(struct frame *f)
{
    unsigned i = 0;
    assert_int_equal(frame_payload(f)[0], 'n');
    assert_int_equal(sscanf((const char *)frame_payload(f) + 1, "%u", &i), 1);
    return i;
}

/* Pushes frame number i (of len bytes) and drops the caller's reference, so
 * the queue holds the only one. */
static int push_owned(struct outq *q, unsigned i, size_t len, uint32_t max_frames, size_t max_bytes)
{
    struct frame *f = numbered(i, len);
    int rc = outq_push(q, f, max_frames, max_bytes);
    frame_unref(f);
    return rc;
}

static void expect_pop(struct outq *q, unsigned want)
{
    struct frame *f = outq_peek(q);
    assert_non_null(f);
    if (number_of(f) != want)
        fail_msg("popped frame n%u, expected n%u", number_of(f), want);
    outq_pop(q);
}

/* A failed test longjmps out with its frames still allocated; start each test
 * from a zero count so one failure does not cascade into the next. Every test
 * checks frame_live itself before it returns. */
static int setup(void **state)
{
    (void)state;
    frame_live = 0;
    return 0;
}

/* -------------------------------------------------------------- basics */

static void test_new_queue_is_empty_and_peek_gives_null(void **state)
{
    (void)state;
    struct outq q = {0};
    assert_true(outq_empty(&q));
    assert_null(outq_peek(&q));
    outq_pop(&q); /* popping an empty queue does nothing */
    assert_true(outq_empty(&q));
    assert_int_equal(outq_clear(&q), 0);
}

static void test_push_then_pop_keeps_fifo_order(void **state)
{
    (void)state;
    struct outq q = {0};
    for (unsigned i = 0; i < 5; i++)
        assert_int_equal(push_owned(&q, i, 16, 100, 1 << 20), 0);
    assert_int_equal(q.count, 5);
    assert_int_equal(q.bytes, 5 * 16);
    for (unsigned i = 0; i < 5; i++)
        expect_pop(&q, i);
    assert_true(outq_empty(&q));
    assert_int_equal(q.bytes, 0);
    assert_int_equal(frame_live, 0);
    outq_clear(&q);
}

static void test_push_takes_a_reference_and_pop_drops_it(void **state)
{
    (void)state;
    struct outq q = {0};
    struct frame *f = frame_from("hello", 5);
    assert_int_equal(f->refs, 1);
    assert_int_equal(outq_push(&q, f, 10, 1000), 0);
    assert_int_equal(f->refs, 2);
    assert_ptr_equal(outq_peek(&q), f); /* by reference, not a copy */
    assert_int_equal(outq_push(&q, f, 10, 1000), 0);
    assert_int_equal(f->refs, 3);
    outq_pop(&q);
    assert_int_equal(f->refs, 2);
    outq_pop(&q);
    assert_int_equal(f->refs, 1);
    assert_int_equal(frame_live, 1);
    frame_unref(f);
    assert_int_equal(frame_live, 0);
    outq_clear(&q);
}

static void test_the_queue_alone_keeps_a_frame_alive_after_the_caller_lets_go(void **state)
{
    (void)state;
    struct outq q = {0};
    assert_int_equal(push_owned(&q, 7, 32, 10, 1000), 0);
    assert_int_equal(frame_live, 1);
    assert_int_equal(outq_peek(&q)->refs, 1);
    expect_pop(&q, 7);
    assert_int_equal(frame_live, 0);
    outq_clear(&q);
}

/* -------------------------------------------------------------- bounds */

static void test_push_past_the_frame_bound_fails_and_leaves_the_queue_unchanged(void **state)
{
    (void)state;
    struct outq q = {0};
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(push_owned(&q, i, 16, 4, 1 << 20), 0);
    struct frame *extra = numbered(99, 16);
    assert_int_equal(outq_push(&q, extra, 4, 1 << 20), -1);
    assert_int_equal(extra->refs, 1); /* no reference taken on failure */
    assert_int_equal(q.count, 4);
    assert_int_equal(q.bytes, 4 * 16);
    frame_unref(extra);
    for (unsigned i = 0; i < 4; i++)
        expect_pop(&q, i);
    assert_int_equal(outq_clear(&q), 0);
    assert_int_equal(frame_live, 0);
}

static void test_push_past_the_byte_bound_fails_and_exactly_at_it_succeeds(void **state)
{
    (void)state;
    struct outq q = {0};
    assert_int_equal(push_owned(&q, 0, 60, 100, 100), 0);
    /* 60 + 41 > 100 */
    struct frame *big = numbered(1, 41);
    assert_int_equal(outq_push(&q, big, 100, 100), -1);
    assert_int_equal(big->refs, 1);
    assert_int_equal(q.count, 1);
    assert_int_equal(q.bytes, 60);
    frame_unref(big);
    /* 60 + 40 == 100 is still within the bound. */
    assert_int_equal(push_owned(&q, 2, 40, 100, 100), 0);
    assert_int_equal(q.bytes, 100);
    /* Full in bytes: even a small frame is refused. */
    assert_int_equal(push_owned(&q, 3, 12, 100, 100), -1);
    expect_pop(&q, 0);
    assert_int_equal(q.bytes, 40);
    /* Popping made room again. */
    assert_int_equal(push_owned(&q, 4, 60, 100, 100), 0);
    assert_int_equal(outq_clear(&q), 2);
    assert_int_equal(frame_live, 0);
}

static void test_an_empty_queue_accepts_one_frame_larger_than_the_byte_bound(void **state)
{
    (void)state;
    struct outq q = {0};
    assert_int_equal(push_owned(&q, 0, 5000, 10, 1000), 0);
    assert_int_equal(q.count, 1);
    assert_int_equal(q.bytes, 5000);
    /* But only one: the queue is now over its bound. */
    assert_int_equal(push_owned(&q, 1, 16, 10, 1000), -1);
    assert_int_equal(q.count, 1);
    expect_pop(&q, 0);
    assert_true(outq_empty(&q));
    assert_int_equal(push_owned(&q, 2, 16, 10, 1000), 0);
    assert_int_equal(outq_clear(&q), 1);
    assert_int_equal(frame_live, 0);
}

static void test_an_empty_queue_accepts_one_frame_even_with_a_frame_bound_of_zero(void **state)
{
    (void)state;
    struct outq q = {0};
    assert_int_equal(push_owned(&q, 0, 16, 0, 0), 0);
    assert_int_equal(push_owned(&q, 1, 16, 0, 0), -1);
    assert_int_equal(outq_clear(&q), 1);
    assert_int_equal(frame_live, 0);
}

/* ------------------------------------------------- growth and wrap-around */

static void test_growth_past_the_initial_capacity_keeps_fifo_order(void **state)
{
    (void)state;
    struct outq q = {0};
    unsigned n = 1000;
    for (unsigned i = 0; i < n; i++)
        assert_int_equal(push_owned(&q, i, 16, 4096, 1 << 20), 0);
    assert_int_equal(q.count, n);
    assert_true(q.cap >= n);
    assert_int_equal(q.cap & (q.cap - 1), 0); /* a power of two */
    assert_int_equal(frame_live, n);
    for (unsigned i = 0; i < n; i++)
        expect_pop(&q, i);
    assert_int_equal(frame_live, 0);
    assert_int_equal(outq_clear(&q), 0);
}

static void test_growth_while_wrapped_around_keeps_fifo_order(void **state)
{
    (void)state;
    struct outq q = {0};
    unsigned next_in = 0, next_out = 0;
    /* Fill the initial ring, drain part of it, then refill so that the live
     * entries straddle the end of the ring before it has to grow. */
    for (int i = 0; i < 8; i++)
        assert_int_equal(push_owned(&q, next_in++, 16, 4096, 1 << 20), 0);
    uint32_t first_cap = q.cap;
    assert_int_equal(first_cap, 8);
    for (int i = 0; i < 5; i++)
        expect_pop(&q, next_out++);
    for (int i = 0; i < 5; i++)
        assert_int_equal(push_owned(&q, next_in++, 16, 4096, 1 << 20), 0);
    assert_int_equal(q.cap, first_cap);       /* full but not grown yet */
    assert_true(q.head + q.count > q.cap);    /* wrapped */
    /* This push has to grow a wrapped ring. */
    for (int i = 0; i < 20; i++)
        assert_int_equal(push_owned(&q, next_in++, 16, 4096, 1 << 20), 0);
    assert_true(q.cap > first_cap);
    /* Interleave pops and pushes for several laps around the ring; the extra
     * push every fourth lap makes it grow again while its contents wrap. */
    uint32_t grown_cap = q.cap;
    for (int lap = 0; lap < 300; lap++) {
        expect_pop(&q, next_out++);
        assert_int_equal(push_owned(&q, next_in++, 16, 4096, 1 << 20), 0);
        if (lap % 4 == 0)
            assert_int_equal(push_owned(&q, next_in++, 16, 4096, 1 << 20), 0);
    }
    assert_true(q.cap > grown_cap);
    assert_int_equal(q.count, next_in - next_out);
    while (!outq_empty(&q))
        expect_pop(&q, next_out++);
    assert_int_equal(next_in, next_out);
    assert_int_equal(q.bytes, 0);
    assert_int_equal(frame_live, 0);
    outq_clear(&q);
}

static void test_a_drained_queue_that_grew_large_gives_its_ring_back(void **state)
{
    (void)state;
    struct outq q = {0};
    for (unsigned i = 0; i < 200; i++)
        assert_int_equal(push_owned(&q, i, 16, 4096, 1 << 20), 0);
    assert_true(q.cap > 64);
    for (unsigned i = 0; i < 200; i++)
        expect_pop(&q, i);
    assert_null(q.ring);
    assert_int_equal(q.cap, 0);
    /* And it is usable again afterwards. */
    assert_int_equal(push_owned(&q, 500, 16, 4096, 1 << 20), 0);
    expect_pop(&q, 500);
    outq_clear(&q);
    assert_int_equal(frame_live, 0);
}

/* --------------------------------------------------------------- clear */

static void test_clear_returns_the_count_drops_references_and_frees_the_ring(void **state)
{
    (void)state;
    struct outq q = {0};
    struct frame *shared = frame_from("shared", 6);
    for (int i = 0; i < 3; i++)
        assert_int_equal(outq_push(&q, shared, 100, 1000), 0);
    for (unsigned i = 0; i < 30; i++)
        assert_int_equal(push_owned(&q, i, 16, 100, 1000), 0);
    assert_int_equal(shared->refs, 4);
    assert_int_equal(frame_live, 31);
    assert_int_equal(outq_clear(&q), 33);
    assert_int_equal(shared->refs, 1);
    assert_int_equal(frame_live, 1);
    assert_null(q.ring);
    assert_int_equal(q.cap, 0);
    assert_int_equal(q.count, 0);
    assert_int_equal(q.bytes, 0);
    assert_int_equal(q.head, 0);
    frame_unref(shared);
    assert_int_equal(frame_live, 0);
    /* Clearing twice is harmless. */
    assert_int_equal(outq_clear(&q), 0);
}

/* ------------------------------------------------------------- frames */

static void test_frame_from_copies_the_payload_behind_the_headroom(void **state)
{
    (void)state;
    struct frame *f = frame_from("abc", 3);
    assert_int_equal(f->len, 3);
    assert_int_equal(f->refs, 1);
    assert_ptr_equal(frame_payload(f), f->buf + FRAME_PRE);
    assert_memory_equal(frame_payload(f), "abc", 3);
    assert_int_equal(frame_live, 1);
    frame_unref(f);
    assert_int_equal(frame_live, 0);
    frame_unref(NULL); /* tolerated */
}

static void test_ws_header_uses_the_shortest_length_form(void **state)
{
    (void)state;
    unsigned char h[10];
    static const struct {
        size_t len;
        size_t hlen;
    } cases[] = {{0, 2}, {125, 2}, {126, 4}, {65535, 4}, {65536, 10}, {1u << 20, 10}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = cases[i].len;
        assert_int_equal(frame_ws_header_len(len), cases[i].hlen);
        assert_int_equal(frame_ws_header(h, len), cases[i].hlen);
        assert_int_equal(h[0], 0x81);
        size_t decoded;
        if (cases[i].hlen == 2) {
            decoded = h[1];
        } else if (cases[i].hlen == 4) {
            assert_int_equal(h[1], 126);
            decoded = ((size_t)h[2] << 8) | h[3];
        } else {
            assert_int_equal(h[1], 127);
            decoded = 0;
            for (int b = 0; b < 8; b++)
                decoded = (decoded << 8) | h[2 + b];
        }
        assert_int_equal(decoded, len);
    }
}

/* Conflation (conn.c) finds a queued entry again by its position and
 * replaces its frame in place, counting what was replaced. */
static void test_a_position_finds_its_entry_until_it_is_popped_even_across_growth(void **state)
{
    (void)state;
    struct outq q = {0};
    for (unsigned i = 0; i < 5; i++)
        assert_int_equal(push_owned(&q, i, 20, 100, 1 << 20), 0);
    uint64_t pos2 = q.popped + 2;
    expect_pop(&q, 0);
    for (unsigned i = 5; i < 40; i++) /* grows the ring while pos2 is queued */
        assert_int_equal(push_owned(&q, i, 20, 100, 1 << 20), 0);
    struct outq_entry *e = outq_at(&q, pos2);
    assert_non_null(e);
    assert_int_equal(number_of(e->f), 2);
    assert_int_equal(outq_last_pos(&q), q.popped + q.count - 1);
    assert_non_null(outq_at(&q, outq_last_pos(&q)));
    assert_null(outq_at(&q, outq_last_pos(&q) + 1));
    expect_pop(&q, 1);
    expect_pop(&q, 2);
    assert_null(outq_at(&q, pos2));
    outq_clear(&q);
    /* Positions keep counting across a clear: an old one names nothing. */
    assert_null(outq_at(&q, pos2));
    assert_int_equal(push_owned(&q, 99, 20, 100, 1 << 20), 0);
    assert_null(outq_at(&q, pos2));
    outq_clear(&q);
    assert_int_equal(frame_live, 0);
}

static void test_replace_swaps_the_frame_in_place_counts_skipped_and_keeps_the_byte_bound(void **state)
{
    (void)state;
    struct outq q = {0};
    assert_int_equal(push_owned(&q, 0, 20, 100, 100), 0);
    assert_int_equal(push_owned(&q, 1, 20, 100, 100), 0);
    assert_int_equal(push_owned(&q, 2, 20, 100, 100), 0);
    struct outq_entry *e = outq_at(&q, q.popped + 1);
    struct frame *f = numbered(7, 40);
    assert_int_equal(outq_replace(&q, e, f, 100), 0);
    frame_unref(f);
    assert_int_equal(e->skipped, 1);
    assert_int_equal(q.bytes, 80);
    f = numbered(8, 20);
    assert_int_equal(outq_replace(&q, e, f, 100), 0);
    frame_unref(f);
    assert_int_equal(e->skipped, 2);
    assert_int_equal(q.bytes, 60);
    /* Past the byte bound: refused, nothing changes. */
    f = numbered(9, 70);
    assert_int_equal(outq_replace(&q, e, f, 100), -1);
    frame_unref(f);
    assert_int_equal(e->skipped, 2);
    assert_int_equal(q.bytes, 60);
    expect_pop(&q, 0);
    expect_pop(&q, 8); /* the replacement keeps the replaced one's place */
    expect_pop(&q, 2);
    outq_clear(&q); /* the ring */
    assert_int_equal(frame_live, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_new_queue_is_empty_and_peek_gives_null, setup),
        cmocka_unit_test_setup(test_push_then_pop_keeps_fifo_order, setup),
        cmocka_unit_test_setup(test_push_takes_a_reference_and_pop_drops_it, setup),
        cmocka_unit_test_setup(test_the_queue_alone_keeps_a_frame_alive_after_the_caller_lets_go,
                               setup),
        cmocka_unit_test_setup(test_push_past_the_frame_bound_fails_and_leaves_the_queue_unchanged,
                               setup),
        cmocka_unit_test_setup(test_push_past_the_byte_bound_fails_and_exactly_at_it_succeeds,
                               setup),
        cmocka_unit_test_setup(test_an_empty_queue_accepts_one_frame_larger_than_the_byte_bound,
                               setup),
        cmocka_unit_test_setup(
            test_an_empty_queue_accepts_one_frame_even_with_a_frame_bound_of_zero, setup),
        cmocka_unit_test_setup(test_growth_past_the_initial_capacity_keeps_fifo_order, setup),
        cmocka_unit_test_setup(test_growth_while_wrapped_around_keeps_fifo_order, setup),
        cmocka_unit_test_setup(test_a_drained_queue_that_grew_large_gives_its_ring_back, setup),
        cmocka_unit_test_setup(test_clear_returns_the_count_drops_references_and_frees_the_ring,
                               setup),
        cmocka_unit_test_setup(test_frame_from_copies_the_payload_behind_the_headroom, setup),
        cmocka_unit_test_setup(test_ws_header_uses_the_shortest_length_form, setup),
        cmocka_unit_test_setup(
            test_a_position_finds_its_entry_until_it_is_popped_even_across_growth, setup),
        cmocka_unit_test_setup(
            test_replace_swaps_the_frame_in_place_counts_skipped_and_keeps_the_byte_bound, setup),
    };
    return cmocka_run_group_tests_name("outq", tests, NULL, NULL);
}
