/* test_membership.c - who is up and who owns each channel (the cluster
 * layer's membership.c), linked against the cluster layer and those below
 * it only: no sockets, no engine, no connections.
 *
 * Every node must compute the same owner and backup for a channel from the
 * same view; a node that falls silent is reported down once and stops
 * owning anything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "cluster.h"
#include "membership.h"

#define T0 1795000000000LL /* an arbitrary "now" in ms */
#define NCH 200

static struct config cfg;
static char downs[8][ENVELOPE_ID_MAX + 1];
static int ndowns;

static void on_down(const char *id)
{
    assert_true(ndowns < 8);
    snprintf(downs[ndowns++], sizeof downs[0], "%s", id);
}

/* This process plays node `self` and has heard from every node in `others`. */
static void start_as(const char *self, const char *const *others, int n)
{
    memset(&cfg, 0, sizeof cfg);
    cfg.node_id = (char *)self;
    cfg.heartbeat_ms = 500;
    cfg.peer_timeout_ms = 2000;
    membership_start(&cfg, T0);
    for (int i = 0; i < n; i++)
        membership_seen(others[i], T0);
    ndowns = 0;
}

static const char *channel_name(int i, char *buf, size_t cap)
{
    snprintf(buf, cap, "room:%d", i);
    return buf;
}

static void every_node_picks_the_same_owner_and_backup(void **state)
{
    (void)state;
    static const char *const nodes[3] = {"n1", "n2", "n3"};
    char owner[3][NCH][ENVELOPE_ID_MAX + 1], backup[3][NCH][ENVELOPE_ID_MAX + 1], buf[32];
    for (int self = 0; self < 3; self++) {
        const char *others[2];
        for (int i = 0, k = 0; i < 3; i++)
            if (i != self)
                others[k++] = nodes[i];
        start_as(nodes[self], others, 2);
        for (int c = 0; c < NCH; c++) {
            const char *ch = channel_name(c, buf, sizeof buf);
            const char *b = cluster_backup_of(ch, strlen(ch));
            bool mine = cluster_is_owner(ch, strlen(ch));
            snprintf(owner[self][c], sizeof owner[0][0], "%s",
                     mine ? nodes[self] : cluster_owner_of(ch, strlen(ch)));
            /* NULL: this node is the backup (or no other node is up). */
            snprintf(backup[self][c], sizeof backup[0][0], "%s", b ? b : nodes[self]);
            assert_string_not_equal(owner[self][c], backup[self][c]);
        }
        membership_stop();
    }
    int owned[3] = {0};
    for (int c = 0; c < NCH; c++) {
        assert_string_equal(owner[0][c], owner[1][c]);
        assert_string_equal(owner[0][c], owner[2][c]);
        assert_string_equal(backup[0][c], backup[1][c]);
        assert_string_equal(backup[0][c], backup[2][c]);
        for (int i = 0; i < 3; i++)
            owned[i] += !strcmp(owner[0][c], nodes[i]);
    }
    /* Rendezvous hashing spreads channels: each node owns some of 200. */
    for (int i = 0; i < 3; i++)
        assert_true(owned[i] > NCH / 10);
}

static void a_silent_node_goes_down_once_and_owns_nothing(void **state)
{
    (void)state;
    static const char *const others[1] = {"n2"};
    char buf[32];
    start_as("n1", others, 1);
    membership_sweep(T0 + 2000, on_down);
    assert_int_equal(ndowns, 0); /* silent for exactly peer_timeout: still up */
    membership_sweep(T0 + 2001, on_down);
    membership_sweep(T0 + 5000, on_down);
    assert_int_equal(ndowns, 1);
    assert_string_equal(downs[0], "n2");
    for (int c = 0; c < NCH; c++) {
        const char *ch = channel_name(c, buf, sizeof buf);
        assert_true(cluster_is_owner(ch, strlen(ch)));
        assert_null(cluster_backup_of(ch, strlen(ch)));
    }
    struct cluster_peer_info peers[4];
    assert_int_equal(cluster_peers(peers, 4), 1);
    assert_false(peers[0].up);
    membership_seen("n2", T0 + 6000); /* back */
    cluster_peers(peers, 4);
    assert_true(peers[0].up);
    membership_stop();
}

static void without_a_cluster_this_node_owns_everything(void **state)
{
    (void)state;
    assert_false(cluster_enabled());
    assert_true(cluster_ready());
    assert_true(cluster_is_owner("room:1", 6));
    assert_null(cluster_backup_of("room:1", 6));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(without_a_cluster_this_node_owns_everything),
        cmocka_unit_test(every_node_picks_the_same_owner_and_backup),
        cmocka_unit_test(a_silent_node_goes_down_once_and_owns_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
