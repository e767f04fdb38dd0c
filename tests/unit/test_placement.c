/* test_placement.c - the shard map Raft agrees on (cluster/shardmap.c) and
 * the leader's rules for changing it (cluster/placement.c), linked against
 * the cluster layer and those below it only: no sockets, no Raft.
 *
 * What must hold: ownership never moves away from a node that may still act
 * (its lease is valid or uncertain); a promoted backup continues epochs only
 * from the gen it became a backup at; entries based on an old map are not
 * applied; a restarted node (new incarnation) owns nothing of its past. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "placement.h"
#include "shardmap.h"

/* The test's view of every node's lease, by reference. */
static struct {
    const char *ref;
    enum node_state st;
} nodes[8];
static int nnodes;

static enum node_state state_of(const char *ref, void *ud)
{
    (void)ud;
    for (int i = 0; i < nnodes; i++)
        if (!strcmp(nodes[i].ref, ref))
            return nodes[i].st;
    return NODE_GONE;
}

/* Nodes that do not hold the state of any shard they back up (yet). */
static const char *unsynced[8];
static int nunsynced;

static bool synced_of(const char *ref, unsigned shard, void *ud)
{
    (void)shard;
    (void)ud;
    for (int i = 0; i < nunsynced; i++)
        if (!strcmp(unsynced[i], ref))
            return false;
    return true;
}

/* Owners still sequencing for a shard they hand off (not quiesced). */
static const char *busy[8];
static int nbusy;

static bool quiesced_of(const char *ref, unsigned shard, void *ud)
{
    (void)shard;
    (void)ud;
    for (int i = 0; i < nbusy; i++)
        if (!strcmp(busy[i], ref))
            return false;
    return true;
}

static void set_state(const char *ref, enum node_state st)
{
    for (int i = 0; i < nnodes; i++)
        if (!strcmp(nodes[i].ref, ref)) {
            nodes[i].st = st;
            return;
        }
    nodes[nnodes].ref = ref;
    nodes[nnodes++].st = st;
}

/* The next map from the leased nodes; false when nothing changed. */
static bool next(const struct shardmap *cur, struct shardmap *out, int rf)
{
    const char *leased[8], *members[8];
    int n = 0, nm = 0;
    for (int i = 0; i < nnodes; i++) {
        if (nodes[i].st == NODE_LEASED)
            leased[n++] = nodes[i].ref;
        if (nodes[i].st != NODE_GONE) /* gone here: a newer incarnation asked */
            members[nm++] = nodes[i].ref;
    }
    const struct placement_view view = {state_of, synced_of, quiesced_of, NULL, members, nm};
    return placement_next(cur, &view, leased, n, rf, out);
}

/* Applies next() until nothing changes (at most 10 maps); the result in *out. */
static void settle(const struct shardmap *cur, struct shardmap *out, int rf)
{
    static struct shardmap a, b;
    a = *cur;
    for (int i = 0; i < 10 && next(&a, &b, rf); i++)
        a = b;
    *out = a;
}

static const char *owner(const struct shardmap *m, int s)
{
    return m->s[s].owner >= 0 ? m->nodes[m->s[s].owner] : NULL;
}

static const char *backup(const struct shardmap *m, int s, int k)
{
    return k < m->s[s].nbackups ? m->nodes[m->s[s].backup[k]] : NULL;
}

static struct shardmap m0, m1, m2, m3;

static int setup(void **state)
{
    (void)state;
    nnodes = 0;
    nunsynced = 0;
    nbusy = 0;
    set_state("a#1", NODE_LEASED);
    set_state("b#1", NODE_LEASED);
    set_state("c#1", NODE_LEASED);
    shardmap_init(&m0);
    assert_true(next(&m0, &m1, 2));
    return 0;
}

static void the_first_map_spreads_owners_and_places_a_backup_elsewhere(void **state)
{
    (void)state;
    assert_int_equal(m1.version, 1);
    int owned[3] = {0};
    for (int s = 0; s < SHARDMAP_SHARDS; s++) {
        assert_non_null(owner(&m1, s));
        assert_int_equal(m1.s[s].nbackups, 1);
        assert_string_not_equal(owner(&m1, s), backup(&m1, s, 0));
        assert_int_equal(m1.s[s].gen, 1);
        assert_true(m1.s[s].cont == SHARDMAP_NEVER);
        owned[owner(&m1, s)[0] - 'a']++;
    }
    for (int i = 0; i < 3; i++)
        assert_true(owned[i] >= 10); /* 64 shards over 3 nodes: none is starved */
    assert_false(next(&m1, &m2, 2)); /* nothing changed: nothing to propose */
}

static void an_uncertain_owner_keeps_its_shards(void **state)
{
    (void)state;
    set_state("a#1", NODE_UNCERTAIN);
    assert_false(next(&m1, &m2, 2));
}

static void a_gone_owner_is_replaced_by_its_backup_which_continues_from_its_since(void **state)
{
    (void)state;
    set_state("a#1", NODE_GONE);
    assert_true(next(&m1, &m2, 2));
    for (int s = 0; s < SHARDMAP_SHARDS; s++) {
        if (strcmp(owner(&m1, s), "a#1") == 0) {
            assert_string_equal(owner(&m2, s), backup(&m1, s, 0));
            assert_int_equal(m2.s[s].cont, m1.s[s].since[0]);
            assert_int_equal(m2.s[s].gen, 2);
            /* the third node becomes the new backup */
            assert_non_null(backup(&m2, s, 0));
            assert_string_not_equal(backup(&m2, s, 0), "a#1");
            assert_int_equal(m2.s[s].since[0], 2);
        } else if (strcmp(backup(&m1, s, 0), "a#1") == 0) {
            assert_string_equal(owner(&m2, s), owner(&m1, s)); /* the owner stays */
            assert_string_not_equal(backup(&m2, s, 0), "a#1");
            assert_int_equal(m2.s[s].gen, 2);
        } else {
            assert_int_equal(m2.s[s].gen, 1); /* untouched shards keep their gen */
        }
    }
    for (int j = 0; j < m2.nnodes; j++)
        assert_string_not_equal(m2.nodes[j], "a#1"); /* compacted away */
}

static void a_gone_owner_waits_for_an_uncertain_backup(void **state)
{
    (void)state;
    int s = 0;
    while (strcmp(owner(&m1, s), "a#1") != 0)
        s++;
    set_state("a#1", NODE_GONE);
    set_state(backup(&m1, s, 0), NODE_UNCERTAIN);
    assert_true(next(&m1, &m2, 2)); /* other shards change, this one waits */
    assert_string_equal(owner(&m2, s), "a#1");
}

static void owner_and_backup_gone_the_survivor_starts_new_epochs(void **state)
{
    (void)state;
    int s = 0;
    while (strcmp(owner(&m1, s), "a#1") != 0 || strcmp(backup(&m1, s, 0), "b#1") != 0)
        s++;
    set_state("a#1", NODE_GONE);
    set_state("b#1", NODE_GONE);
    assert_true(next(&m1, &m2, 2));
    assert_string_equal(owner(&m2, s), "c#1");
    assert_true(m2.s[s].cont == SHARDMAP_NEVER);
    assert_int_equal(m2.s[s].nbackups, 0); /* nobody left to hold a copy */
}

static void a_restarted_node_owns_nothing_of_its_past_and_backs_up_again(void **state)
{
    (void)state;
    set_state("a#1", NODE_GONE); /* a new incarnation asked: the old one is dead */
    set_state("a#2", NODE_LEASED);
    assert_true(next(&m1, &m2, 2));
    int backups = 0;
    for (int s = 0; s < SHARDMAP_SHARDS; s++) {
        assert_string_not_equal(owner(&m2, s), "a#1");
        assert_string_not_equal(owner(&m2, s), "a#2"); /* no move to a node holding nothing */
        if (backup(&m2, s, 0) && !strcmp(backup(&m2, s, 0), "a#2"))
            backups++;
    }
    assert_true(backups > 0);
}

static void a_leaving_owner_hands_its_shards_to_its_backups_at_once(void **state)
{
    (void)state;
    set_state("a#1", NODE_LEAVING); /* still leased: no waiting for its lease to run out */
    assert_true(next(&m1, &m2, 2));
    for (int s = 0; s < SHARDMAP_SHARDS; s++)
        if (!strcmp(owner(&m1, s), "a#1")) {
            /* First the map names the backup it hands the shard to. */
            assert_string_equal(owner(&m2, s), "a#1");
            assert_string_equal(m2.nodes[m2.s[s].handoff], backup(&m1, s, 0));
        }
    settle(&m2, &m2, 2);
    for (int s = 0; s < SHARDMAP_SHARDS; s++) {
        assert_string_not_equal(owner(&m2, s), "a#1");
        for (int k = 0; k < m2.s[s].nbackups; k++)
            assert_string_not_equal(backup(&m2, s, k), "a#1");
        if (!strcmp(owner(&m1, s), "a#1")) {
            assert_string_equal(owner(&m2, s), backup(&m1, s, 0));
            assert_int_equal(m2.s[s].cont, m1.s[s].since[0]); /* same epoch continues */
        }
    }
    /* With no leased backup a leaving owner keeps its shard: nobody holds it. */
    set_state("b#1", NODE_UNCERTAIN);
    set_state("c#1", NODE_UNCERTAIN);
    assert_true(next(&m1, &m3, 2));
    for (int s = 0; s < SHARDMAP_SHARDS; s++)
        if (!strcmp(owner(&m1, s), "a#1"))
            assert_string_equal(owner(&m3, s), "a#1");
}

static void a_leaving_owner_waits_for_a_backup_that_holds_the_state(void **state)
{
    (void)state;
    set_state("a#1", NODE_LEAVING);
    unsynced[nunsynced++] = "b#1";
    unsynced[nunsynced++] = "c#1";
    settle(&m1, &m2, 2); /* it stops backing up others' shards at once */
    for (int s = 0; s < SHARDMAP_SHARDS; s++)
        if (!strcmp(owner(&m1, s), "a#1")) { /* moving now would restart idle channels' epochs */
            assert_string_equal(owner(&m2, s), "a#1");
            assert_int_equal(m2.s[s].handoff, -1);
        }
    nunsynced = 0;
    settle(&m1, &m2, 2);
    for (int s = 0; s < SHARDMAP_SHARDS; s++)
        assert_string_not_equal(owner(&m2, s), "a#1");
}

/* The node id of a shard's owner ("a" for "a#2"). */
static char owner_id(const struct shardmap *m, int s) { return owner(m, s)[0]; }

static void a_restarted_node_gets_its_shards_back_once_it_holds_their_state(void **state)
{
    (void)state;
    /* a#1 leaves, its successor a#2 starts and is not synced yet. */
    set_state("a#1", NODE_LEAVING);
    settle(&m1, &m2, 2);
    set_state("a#1", NODE_GONE);
    set_state("a#2", NODE_LEASED);
    unsynced[nunsynced++] = "a#2";
    struct shardmap *cur = &m2, *nx = &m3;
    for (int round = 0; round < 10 && next(cur, nx, 2); round++) {
        for (int s = 0; s < SHARDMAP_SHARDS; s++)
            assert_string_not_equal(owner(nx, s), "a#2"); /* nothing moves to a node holding nothing */
        struct shardmap *t = cur;
        cur = nx;
        nx = t;
    }
    /* It backs up every shard it is preferred for, as an extra backup. */
    for (int s = 0; s < SHARDMAP_SHARDS; s++)
        if (owner_id(&m1, s) == 'a') {
            bool in = false;
            for (int k = 0; k < cur->s[s].nbackups; k++)
                in |= !strcmp(backup(cur, s, k), "a#2");
            assert_true(in);
        }
    /* Once it holds the state, the shards come back, one step at a time:
     * the switch happens only while it is the owner's sole backup. */
    nunsynced = 0;
    int rounds = 0;
    for (; rounds < 10 && next(cur, nx, 2); rounds++) {
        for (int s = 0; s < SHARDMAP_SHARDS; s++)
            if (owner_id(nx, s) != owner_id(cur, s)) {
                assert_int_equal(cur->s[s].nbackups, 1);
                assert_int_equal(cur->s[s].handoff, cur->s[s].backup[0]); /* named first */
                assert_int_equal(nx->s[s].handoff, -1);
                assert_string_equal(backup(cur, s, 0), owner(nx, s));
                assert_string_equal(backup(nx, s, 0), owner(cur, s)); /* the old owner backs up */
                assert_int_equal(nx->s[s].cont, cur->s[s].since[0]); /* same epochs */
            }
        struct shardmap *t = cur;
        cur = nx;
        nx = t;
    }
    assert_true(rounds < 10); /* it settles */
    assert_true(rounds >= 3); /* drop the other backup, name the handoff, switch */
    for (int s = 0; s < SHARDMAP_SHARDS; s++) {
        assert_int_equal(owner_id(cur, s), owner_id(&m1, s)); /* the first map's owners again */
        assert_int_equal(cur->s[s].nbackups, 1);
        assert_int_equal(backup(cur, s, 0)[0], backup(&m1, s, 0)[0]);
    }
}

static void an_owner_with_publishes_pending_keeps_the_shard_until_it_is_quiet(void **state)
{
    (void)state;
    set_state("a#1", NODE_LEAVING);
    busy[nbusy++] = "a#1";
    settle(&m1, &m2, 2);
    for (int s = 0; s < SHARDMAP_SHARDS; s++)
        if (!strcmp(owner(&m1, s), "a#1")) {
            assert_string_equal(owner(&m2, s), "a#1");
            assert_true(m2.s[s].handoff >= 0);
        }
    nbusy = 0;
    settle(&m2, &m3, 2);
    for (int s = 0; s < SHARDMAP_SHARDS; s++)
        assert_string_not_equal(owner(&m3, s), "a#1");
    /* A handoff whose target is no longer leased is withdrawn. */
    set_state("a#1", NODE_LEASED);
    set_state("b#1", NODE_LEAVING);
    busy[nbusy++] = "b#1";
    settle(&m1, &m2, 2);
    int s = 0;
    while (strcmp(owner(&m2, s), "b#1") != 0)
        s++;
    assert_true(m2.s[s].handoff >= 0);
    const char *target = m2.nodes[m2.s[s].handoff];
    set_state(target, NODE_UNCERTAIN);
    set_state("b#1", NODE_LEASED);
    assert_true(next(&m2, &m3, 2));
    assert_int_equal(m3.s[s].handoff, -1);
}

/* Applies next() until nothing changes; fails when it does not settle. */
static void settle_strict(const struct shardmap *cur, struct shardmap *out, int rf)
{
    static struct shardmap a, b;
    a = *cur;
    int i = 0;
    for (; i < 20 && next(&a, &b, rf); i++)
        a = b;
    assert_true(i < 20); /* no step undoes another */
    *out = a;
}

static void a_rolling_restart_of_every_node_ends_where_it_began(void **state)
{
    (void)state;
    const char *olds[3] = {"a#1", "b#1", "c#1"}, *news[3] = {"a#2", "b#2", "c#2"};
    struct shardmap cur = m1;
    for (int r = 0; r < 3; r++) {
        set_state(olds[r], NODE_LEAVING);
        settle_strict(&cur, &cur, 2);
        for (int s = 0; s < SHARDMAP_SHARDS; s++)
            assert_string_not_equal(owner(&cur, s), olds[r]);
        set_state(olds[r], NODE_GONE);
        set_state(news[r], NODE_LEASED);
        settle_strict(&cur, &cur, 2);
    }
    for (int s = 0; s < SHARDMAP_SHARDS; s++) {
        assert_int_equal(owner_id(&cur, s), owner_id(&m1, s));
        assert_int_equal(cur.s[s].nbackups, 1);
        assert_int_equal(backup(&cur, s, 0)[0], backup(&m1, s, 0)[0]);
        assert_int_equal(cur.s[s].handoff, -1);
    }
}

static void replication_factor_three_places_two_backups(void **state)
{
    (void)state;
    assert_true(next(&m0, &m2, 3));
    for (int s = 0; s < SHARDMAP_SHARDS; s++) {
        assert_int_equal(m2.s[s].nbackups, 2);
        assert_string_not_equal(backup(&m2, s, 0), backup(&m2, s, 1));
    }
}

static void entries_apply_only_to_the_map_they_were_based_on(void **state)
{
    (void)state;
    size_t len;
    char *e1 = shardmap_entry_encode(0, &m1, &len);
    assert_non_null(e1);
    shardmap_init(&m3);
    assert_true(shardmap_entry_apply(&m3, e1, len));
    assert_int_equal(m3.version, 1);
    assert_string_equal(owner(&m3, 5), owner(&m1, 5));
    assert_int_equal(m3.s[5].since[0], m1.s[5].since[0]);
    /* A deposed leader's entry, also based on version 0: not applied. */
    assert_false(shardmap_entry_apply(&m3, e1, len));
    assert_int_equal(m3.version, 1);
    assert_false(shardmap_entry_apply(&m3, "{\"base\":1}", 10)); /* malformed */
    free(e1);

    char *snap = shardmap_encode(&m3, &len);
    assert_non_null(snap);
    shardmap_init(&m2);
    assert_int_equal(shardmap_decode(&m2, snap, len), 0);
    assert_memory_equal(&m2.s, &m3.s, sizeof m2.s);
    assert_int_equal(shardmap_decode(&m2, "[]", 2), -1);
    free(snap);
}

static void channels_hash_to_the_same_shard_everywhere(void **state)
{
    (void)state;
    assert_int_equal(shardmap_shard_of("room:1", 6), shardmap_shard_of("room:1xyz", 6));
    int seen[SHARDMAP_SHARDS] = {0}, used = 0;
    char name[32];
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(name, sizeof name, "room:%d", i);
        unsigned s = shardmap_shard_of(name, (size_t)n);
        assert_true(s < SHARDMAP_SHARDS);
        used += !seen[s]++;
    }
    assert_int_equal(used, SHARDMAP_SHARDS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(the_first_map_spreads_owners_and_places_a_backup_elsewhere, setup),
        cmocka_unit_test_setup(an_uncertain_owner_keeps_its_shards, setup),
        cmocka_unit_test_setup(a_gone_owner_is_replaced_by_its_backup_which_continues_from_its_since, setup),
        cmocka_unit_test_setup(a_gone_owner_waits_for_an_uncertain_backup, setup),
        cmocka_unit_test_setup(owner_and_backup_gone_the_survivor_starts_new_epochs, setup),
        cmocka_unit_test_setup(a_restarted_node_owns_nothing_of_its_past_and_backs_up_again, setup),
        cmocka_unit_test_setup(a_leaving_owner_hands_its_shards_to_its_backups_at_once, setup),
        cmocka_unit_test_setup(a_leaving_owner_waits_for_a_backup_that_holds_the_state, setup),
        cmocka_unit_test_setup(a_restarted_node_gets_its_shards_back_once_it_holds_their_state,
                               setup),
        cmocka_unit_test_setup(an_owner_with_publishes_pending_keeps_the_shard_until_it_is_quiet,
                               setup),
        cmocka_unit_test_setup(a_rolling_restart_of_every_node_ends_where_it_began, setup),
        cmocka_unit_test_setup(replication_factor_three_places_two_backups, setup),
        cmocka_unit_test_setup(entries_apply_only_to_the_map_they_were_based_on, setup),
        cmocka_unit_test_setup(channels_hash_to_the_same_shard_everywhere, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
