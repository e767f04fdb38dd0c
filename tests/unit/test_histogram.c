/* test_histogram.c - the fixed-bucket latency histograms (histogram.h):
 * bucket boundaries (le is inclusive), the +Inf bucket, negative values,
 * n observations at once, and the rendered exposition (cumulative buckets,
 * +Inf == _count, _sum in seconds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "histogram.h"
#include "metrics.h"

static int bucket_of(int64_t us)
{
    struct histogram h = {0};
    histogram_observe_us_n(&h, us, 1);
    for (int i = 0; i <= HISTOGRAM_BUCKETS; i++)
        if (h.counts[i])
            return i;
    return -1;
}

static void boundaries_are_inclusive(void **state)
{
    (void)state;
    assert_int_equal(bucket_of(-5), 0);
    assert_int_equal(bucket_of(0), 0);
    assert_int_equal(bucket_of(128), 0);
    assert_int_equal(bucket_of(129), 1);
    assert_int_equal(bucket_of(256), 1);
    assert_int_equal(bucket_of(257), 2);
    assert_int_equal(bucket_of(1000), 3);             /* (512, 1024] */
    assert_int_equal(bucket_of(1 << 23), HISTOGRAM_BUCKETS - 1);
    assert_int_equal(bucket_of((1 << 23) + 1), HISTOGRAM_BUCKETS); /* +Inf */
    assert_int_equal(bucket_of(INT64_MAX), HISTOGRAM_BUCKETS);
}

static void n_observations_at_once(void **state)
{
    (void)state;
    struct histogram h = {0};
    histogram_observe_us_n(&h, 300, 7);
    histogram_observe_us_n(&h, -1, 2);
    assert_int_equal(h.counts[2], 7);
    assert_int_equal(h.counts[0], 2);
    assert_int_equal(h.sum_us, 2100);
}

static void renders_cumulative_buckets(void **state)
{
    (void)state;
    struct histogram h = {0};
    histogram_observe_us_n(&h, 100, 1);
    histogram_observe_us_n(&h, 1000, 2);
    histogram_observe_us_n(&h, 20000000, 1);
    struct sbuf b = {malloc(64), 0, 64};
    assert_non_null(b.p);
    histogram_render(&b, "t_seconds", "help", &h);
    assert_non_null(strstr(b.p, "# TYPE t_seconds histogram\n"));
    assert_non_null(strstr(b.p, "t_seconds_bucket{le=\"0.000128\"} 1\n"));
    assert_non_null(strstr(b.p, "t_seconds_bucket{le=\"0.000512\"} 1\n"));
    assert_non_null(strstr(b.p, "t_seconds_bucket{le=\"0.001024\"} 3\n"));
    assert_non_null(strstr(b.p, "t_seconds_bucket{le=\"8.388608\"} 3\n"));
    assert_non_null(strstr(b.p, "t_seconds_bucket{le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(b.p, "t_seconds_sum 20.002100\n"));
    assert_non_null(strstr(b.p, "t_seconds_count 4\n"));
    free(b.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(boundaries_are_inclusive),
        cmocka_unit_test(n_observations_at_once),
        cmocka_unit_test(renders_cumulative_buckets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
