/* test_utf8.c - the incremental UTF-8 check behind close 1007 (utf8.h):
 * every boundary of RFC 3629's table, and the same verdict whatever the
 * split into fragments. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "utf8.h"

struct sample {
    const char *bytes;
    size_t len;
    bool valid;
};

#define S(lit, ok) {lit, sizeof lit - 1, ok}
static const struct sample samples[] = {
    S("", true), S("plain ascii {\"op\":\"ping\"}", true), S("nul\0inside", true),
    S("\xc2\x80", true), S("\xdf\xbf", true),                       /* U+0080, U+07FF */
    S("\xe0\xa0\x80", true), S("\xed\x9f\xbf", true),               /* U+0800, U+D7FF */
    S("\xee\x80\x80", true), S("\xef\xbf\xbf", true),               /* U+E000, U+FFFF */
    S("\xf0\x90\x80\x80", true), S("\xf4\x8f\xbf\xbf", true),       /* U+10000, U+10FFFF */
    S("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", true),
    S("\x80", false), S("\xbf", false),                             /* lone continuation */
    S("\xc0\xaf", false), S("\xc1\xbf", false),                     /* overlong 2-byte */
    S("\xe0\x9f\xbf", false),                                       /* overlong 3-byte */
    S("\xed\xa0\x80", false), S("\xed\xbf\xbf", false),             /* surrogates */
    S("\xf0\x8f\xbf\xbf", false),                                   /* overlong 4-byte */
    S("\xf4\x90\x80\x80", false), S("\xf5\x80\x80\x80", false),     /* above U+10FFFF */
    S("\xf8\x88\x80\x80\x80", false), S("\xfe", false), S("\xff", false),
    S("\xc3", false), S("\xe2\x82", false), S("\xf0\x9f\x98", false), /* cut short */
    S("\xc3(", false), S("\xe2\x28\xa1", false), S("a\xc3\xa9\xa9", false),
};

static bool check_split(const struct sample *s, size_t cut1, size_t cut2)
{
    struct utf8_check u = {0};
    const unsigned char *p = (const unsigned char *)s->bytes;
    return utf8_feed(&u, p, cut1) && utf8_feed(&u, p + cut1, cut2 - cut1) &&
           utf8_feed(&u, p + cut2, s->len - cut2) && utf8_complete(&u);
}

static void test_every_table_boundary_gets_the_rfc_3629_verdict(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        if (check_split(&samples[i], 0, 0) != samples[i].valid)
            fail_msg("sample %zu: expected %s", i, samples[i].valid ? "valid" : "invalid");
    }
}

static void test_the_verdict_does_not_depend_on_where_fragments_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++)
        for (size_t a = 0; a <= samples[i].len; a++)
            for (size_t b = a; b <= samples[i].len; b++)
                if (check_split(&samples[i], a, b) != samples[i].valid)
                    fail_msg("sample %zu split at %zu and %zu", i, a, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_table_boundary_gets_the_rfc_3629_verdict),
        cmocka_unit_test(test_the_verdict_does_not_depend_on_where_fragments_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
