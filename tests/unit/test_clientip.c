/* test_clientip.c - which address a connection counts as behind trusted
 * proxies (clientip.h): CIDR parsing, the rightmost-untrusted rule of
 * X-Forwarded-For, X-Real-IP and PROXY v1 fallbacks, and that nothing a
 * client sends is believed unless the TCP peer is trusted. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "clientip.h"

static struct trusted_nets nets(int n, char **list)
{
    struct trusted_nets t;
    char err[200];
    assert_int_equal(trusted_nets_parse(&t, list, n, err, sizeof err), 0);
    return t;
}

static void test_cidrs_parse_strictly(void **state)
{
    (void)state;
    struct cidr c;
    const char *good[] = {"10.0.0.0/8", "127.0.0.1", "0.0.0.0/0", "::1", "fd00::/8", "::/0",
                          "2001:db8::/128", "10.1.2.3/32", "192.168.1.77/24"};
    const char *bad[] = {"", "/8", "10.0.0.0/33", "::1/129", "10.0.0.0/", "10.0.0.0/-1",
                         "10.0.0.0/8x", "10.0.0.0/0008", "1.2.3.4:80", "[::1]", "10.0.0",
                         "host.example", " 10.0.0.0/8", "10.0.0.0 /8", "fd00::/8/8"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (cidr_parse(good[i], &c) != 0)
            fail_msg("'%s' refused", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (cidr_parse(bad[i], &c) == 0)
            fail_msg("'%s' accepted", bad[i]);
    char *list[] = {"10.0.0.0/8", "nonsense"};
    struct trusted_nets t;
    char err[200];
    assert_int_equal(trusted_nets_parse(&t, list, 2, err, sizeof err), -1);
    assert_non_null(strstr(err, "'nonsense'"));
}

static void test_ranges_match_by_prefix_in_either_family(void **state)
{
    (void)state;
    char *list[] = {"10.0.0.0/8", "192.168.1.77/24", "fd00::/8", "172.16.0.0/12"};
    struct trusted_nets t = nets(4, list);
    assert_true(trusted_nets_match(&t, "10.255.0.1"));
    assert_false(trusted_nets_match(&t, "11.0.0.1"));
    assert_true(trusted_nets_match(&t, "192.168.1.1"));   /* host bits of the range ignored */
    assert_false(trusted_nets_match(&t, "192.168.2.1"));
    assert_true(trusted_nets_match(&t, "172.31.255.255"));
    assert_false(trusted_nets_match(&t, "172.32.0.0"));
    assert_true(trusted_nets_match(&t, "fdab::1"));
    assert_false(trusted_nets_match(&t, "fe80::1"));
    assert_true(trusted_nets_match(&t, "::ffff:10.1.1.1")); /* IPv4-mapped is IPv4 */
    assert_false(trusted_nets_match(&t, "garbage"));
}

static void resolve(const struct trusted_nets *t, const char *peer, const char *xff,
                    const char *real, const char *proxy, const char *want, bool from_headers)
{
    char out[CLIENTIP_LEN];
    bool got = clientip_resolve(t, peer, xff, xff ? strlen(xff) : 0, real, real ? strlen(real) : 0,
                                proxy, proxy ? strlen(proxy) : 0, out);
    if (strcmp(out, want) || got != from_headers)
        fail_msg("peer %s xff %s real %s proxy %s: got %s (%d), want %s (%d)", peer,
                 xff ? xff : "-", real ? real : "-", proxy ? proxy : "-", out, got, want,
                 from_headers);
}

static void test_forwarded_for_is_read_from_the_right_past_trusted_hops(void **state)
{
    (void)state;
    char *list[] = {"127.0.0.1", "10.0.0.0/8"};
    struct trusted_nets t = nets(2, list);
    resolve(&t, "127.0.0.1", "203.0.113.9", NULL, NULL, "203.0.113.9", true);
    /* A client's own X-Forwarded-For is left of what the proxy appended. */
    resolve(&t, "127.0.0.1", "127.0.0.2, 203.0.113.9", NULL, NULL, "203.0.113.9", true);
    resolve(&t, "127.0.0.1", "198.51.100.1, 203.0.113.9, 10.1.1.1", NULL, NULL, "203.0.113.9", true);
    resolve(&t, "127.0.0.1", "10.0.0.5,10.0.0.6", NULL, NULL, "10.0.0.5", true); /* all trusted */
    resolve(&t, "127.0.0.1", "garbage, 10.0.0.6", NULL, NULL, "10.0.0.6", true);
    resolve(&t, "127.0.0.1", "  2001:DB8::1 ", NULL, NULL, "2001:db8::1", true);
    resolve(&t, "127.0.0.1", "[2001:db8::1]:443", NULL, NULL, "2001:db8::1", true);
    resolve(&t, "127.0.0.1", "203.0.113.9:5000", NULL, NULL, "203.0.113.9", true);
    resolve(&t, "127.0.0.1", "::ffff:203.0.113.9", NULL, NULL, "203.0.113.9", true);
    resolve(&t, "::ffff:127.0.0.1", "203.0.113.9", NULL, NULL, "203.0.113.9", true);
    /* Nothing usable: X-Real-IP, then the PROXY line, then the peer. */
    resolve(&t, "127.0.0.1", "unknown", "198.51.100.7", NULL, "198.51.100.7", true);
    resolve(&t, "127.0.0.1", ",,,", NULL, NULL, "127.0.0.1", false);
    resolve(&t, "127.0.0.1", NULL, NULL, "TCP4 198.51.100.8 127.0.0.1 4000 80", "198.51.100.8", true);
    resolve(&t, "127.0.0.1", NULL, NULL, "TCP6 2001:db8::8 ::1 4000 80", "2001:db8::8", true);
    resolve(&t, "127.0.0.1", NULL, NULL, "TCP4 2001:db8::8 ::1 4000 80", "127.0.0.1", false);
    resolve(&t, "127.0.0.1", NULL, NULL, "UNKNOWN", "127.0.0.1", false);
    resolve(&t, "127.0.0.1", NULL, NULL, "TCP4 198.51.100.8", "127.0.0.1", false);
    resolve(&t, "127.0.0.1", NULL, "not an ip", NULL, "127.0.0.1", false);
}

static void test_nothing_is_believed_from_an_untrusted_peer(void **state)
{
    (void)state;
    char *list[] = {"127.0.0.1"};
    struct trusted_nets t = nets(1, list);
    resolve(&t, "127.0.0.2", "203.0.113.9", "203.0.113.9", "TCP4 1.1.1.1 2.2.2.2 1 2",
            "127.0.0.2", false);
    struct trusted_nets none = {0};
    resolve(&none, "127.0.0.1", "203.0.113.9", NULL, NULL, "127.0.0.1", false);
    resolve(&none, "::ffff:192.0.2.1", NULL, NULL, NULL, "192.0.2.1", false);
}

static void test_hostile_values_stay_in_bounds(void **state)
{
    (void)state;
    char *list[] = {"0.0.0.0/0", "::/0"};
    struct trusted_nets t = nets(2, list);
    char big[9000];
    memset(big, ',', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    resolve(&t, "127.0.0.1", big, NULL, NULL, "127.0.0.1", false);
    memset(big, '1', sizeof big - 1);
    resolve(&t, "127.0.0.1", big, NULL, NULL, "127.0.0.1", false);
    memset(big, '[', sizeof big - 1);
    resolve(&t, "127.0.0.1", big, NULL, NULL, "127.0.0.1", false);
    /* Bytes past the given length are never read: no NUL needed. */
    char out[CLIENTIP_LEN];
    const char unterminated[] = {'1', '.', '2', '.', '3', '.', '4', '9'};
    clientip_resolve(&t, "127.0.0.1", unterminated, 7, NULL, 0, NULL, 0, out);
    assert_string_equal(out, "1.2.3.4");
    clientip_resolve(&t, "127.0.0.1", "1.2.3.4\n5", 9, NULL, 0, NULL, 0, out);
    assert_string_equal(out, "127.0.0.1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cidrs_parse_strictly),
        cmocka_unit_test(test_ranges_match_by_prefix_in_either_family),
        cmocka_unit_test(test_forwarded_for_is_read_from_the_right_past_trusted_hops),
        cmocka_unit_test(test_nothing_is_believed_from_an_untrusted_peer),
        cmocka_unit_test(test_hostile_values_stay_in_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
