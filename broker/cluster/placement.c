/* placement.c - the leader's next shard map (placement.h). */
#include "placement.h"

#include <stdio.h>
#include <string.h>
#include <uthash.h>

/* Rendezvous score of a node for a shard, by node id (not incarnation), so
 * a restarted node ranks where it did. */
static unsigned score(const char *ref, unsigned shard)
{
    char key[SHARDMAP_REF_MAX + 8];
    char id[SHARDMAP_REF_MAX + 1];
    shardmap_node_id(ref, id, sizeof id);
    int n = snprintf(key, sizeof key, "%s%c%u", id, 0, shard);
    unsigned h;
    HASH_JEN(key, (unsigned)n, h);
    return h;
}

static bool in_shard(const struct shardmap *m, const struct shard_assign *a, const char *ref)
{
    if (a->owner >= 0 && !strcmp(m->nodes[a->owner], ref))
        return true;
    for (int k = 0; k < a->nbackups; k++)
        if (!strcmp(m->nodes[a->backup[k]], ref))
            return true;
    return false;
}

/* The best-ranked leased node not yet in the shard, or NULL. */
static const char *best_free(const struct shardmap *m, const struct shard_assign *a, unsigned shard,
                             const char *const *leased, int nleased)
{
    const char *best = NULL;
    unsigned best_score = 0;
    for (int i = 0; i < nleased; i++) {
        if (in_shard(m, a, leased[i]))
            continue;
        unsigned s = score(leased[i], shard);
        if (!best || s > best_score || (s == best_score && strcmp(leased[i], best) < 0)) {
            best = leased[i];
            best_score = s;
        }
    }
    return best;
}

static void drop_backup(struct shard_assign *a, int k)
{
    memmove(&a->backup[k], &a->backup[k + 1], sizeof a->backup[0] * (size_t)(a->nbackups - k - 1));
    memmove(&a->since[k], &a->since[k + 1], sizeof a->since[0] * (size_t)(a->nbackups - k - 1));
    a->nbackups--;
}

static void promote(struct shard_assign *a, int k)
{
    a->owner = a->backup[k];
    a->cont = a->since[k];
    drop_backup(a, k);
}

/* The rf best-ranked leased nodes for the shard, best first. */
static int preferred(unsigned shard, const char *const *leased, int nleased, int rf,
                     const char **out)
{
    int n = 0;
    for (int i = 0; i < nleased; i++) {
        unsigned s = score(leased[i], shard);
        int at = n;
        while (at > 0) {
            unsigned t = score(out[at - 1], shard);
            if (t > s || (t == s && strcmp(out[at - 1], leased[i]) < 0))
                break;
            at--;
        }
        if (at >= rf)
            continue;
        if (n < rf)
            n++;
        memmove(&out[at + 1], &out[at], sizeof out[0] * (size_t)(n - 1 - at));
        out[at] = leased[i];
    }
    return n;
}

static int backup_index(const struct shardmap *m, const struct shard_assign *a, const char *ref)
{
    for (int k = 0; k < a->nbackups; k++)
        if (!strcmp(m->nodes[a->backup[k]], ref))
            return k;
    return -1;
}

/* One step toward the preferred nodes for a shard whose owner is leased
 * and staying; true when it changed. */
static bool rebalance(struct shardmap *n, unsigned i, placement_synced_fn *synced, void *ud,
                      const char *const *leased, int nleased, int rf)
{
    struct shard_assign *a = &n->s[i];
    const char *want[SHARDMAP_MAX_BACKUPS + 1];
    int nwant = preferred(i, leased, nleased, rf, want);
    if (!nwant)
        return false;
    /* A preferred node outside the shard joins as a backup and fetches. */
    for (int w = 0; w < nwant; w++)
        if (!in_shard(n, a, want[w])) {
            int idx = a->nbackups < SHARDMAP_MAX_BACKUPS ? shardmap_node(n, want[w]) : -1;
            if (idx < 0)
                return false;
            a->backup[a->nbackups] = idx;
            a->since[a->nbackups] = n->version;
            a->nbackups++;
            return true;
        }
    /* The preferred owner holds the state: it takes over, and the old owner
     * stays a backup (it holds everything it delivered). First the other
     * backups leave: a backup without local subscribers applies what it is
     * sent at once, so at the switch the new owner may hold messages the
     * old one never delivered, which only a sole backup is sure to share. */
    if (strcmp(n->nodes[a->owner], want[0]) != 0) {
        int k = backup_index(n, a, want[0]);
        if (k < 0 || !synced(want[0], i, ud))
            return false;
        if (a->nbackups > 1) {
            int keep = a->backup[k];
            uint64_t since = a->since[k];
            a->backup[0] = keep;
            a->since[0] = since;
            a->nbackups = 1;
            return true;
        }
        int old = a->owner;
        a->owner = a->backup[0];
        a->cont = a->since[0];
        a->backup[0] = old;
        a->since[0] = n->version;
        return true;
    }
    /* Backups no longer preferred leave once the preferred ones hold the
     * state, never before: redundancy does not dip during the move. */
    for (int w = 1; w < nwant; w++)
        if (!synced(want[w], i, ud))
            return false;
    bool dropped = false;
    for (int k = a->nbackups - 1; k >= 0; k--) {
        bool keep = false;
        for (int w = 1; w < nwant && !keep; w++)
            keep = !strcmp(n->nodes[a->backup[k]], want[w]);
        if (!keep) {
            drop_backup(a, k);
            dropped = true;
        }
    }
    return dropped;
}

/* Returns true when shard i's assignment changed. */
static bool place_shard(struct shardmap *n, unsigned i, placement_state_fn *state,
                        placement_synced_fn *synced, void *ud, const char *const *leased,
                        int nleased, int rf, bool stable)
{
    struct shard_assign *a = &n->s[i];
    uint64_t v = n->version;
    bool changed = false;
    enum node_state ost = a->owner >= 0 ? state(n->nodes[a->owner], ud) : NODE_GONE;

    /* Backups that certainly stopped acting leave; uncertain ones stay, since
     * they may still acknowledge what the owner sends. A leaving backup
     * leaves too: what it acknowledged is also held by the owner. */
    for (int k = a->nbackups - 1; k >= 0; k--) {
        enum node_state bs = state(n->nodes[a->backup[k]], ud);
        if (bs == NODE_GONE || bs == NODE_LEAVING) {
            drop_backup(a, k);
            changed = true;
        }
    }

    if (ost == NODE_LEAVING) {
        /* Planned: only to a backup that holds the state, so no channel
         * restarts its epoch; a new backup is fetching it meanwhile. */
        for (int k = 0; k < a->nbackups; k++)
            if (state(n->nodes[a->backup[k]], ud) == NODE_LEASED &&
                synced(n->nodes[a->backup[k]], i, ud)) {
                promote(a, k);
                changed = true;
                break;
            }
    } else if (ost == NODE_GONE) {
        int pick = -1;
        bool waiting = false;
        for (int pass = 0; pass < 2 && pick < 0; pass++)
            for (int k = 0; k < a->nbackups && pick < 0; k++) {
                enum node_state bs = state(n->nodes[a->backup[k]], ud);
                if (bs == NODE_LEASED && (pass || synced(n->nodes[a->backup[k]], i, ud)))
                    pick = k;
                else if (bs != NODE_LEASED)
                    waiting = true;
            }
        if (pick >= 0) {
            /* The backup holds all the gone owner delivered: promote it
             * (one that fetched the shard's state first). */
            promote(a, pick);
            changed = true;
        } else if (!waiting) {
            const char *ref = best_free(n, a, i, leased, nleased);
            int idx = ref ? shardmap_node(n, ref) : -1;
            if (a->owner != idx || idx >= 0)
                changed = true;
            a->owner = idx;
            a->cont = SHARDMAP_NEVER;
        }
        /* else: a backup may come back within its lease; wait for it. */
    }

    if (a->owner >= 0)
        while (a->nbackups < rf - 1 && a->nbackups < SHARDMAP_MAX_BACKUPS) {
            const char *ref = best_free(n, a, i, leased, nleased);
            int idx = ref ? shardmap_node(n, ref) : -1;
            if (idx < 0)
                break;
            a->backup[a->nbackups] = idx;
            a->since[a->nbackups] = v;
            a->nbackups++;
            changed = true;
        }
    if (!changed && stable && a->owner >= 0)
        changed = rebalance(n, i, synced, ud, leased, nleased, rf);
    if (changed)
        a->gen = v;
    return changed;
}

bool placement_next(const struct shardmap *cur, placement_state_fn *state,
                    placement_synced_fn *synced, void *ud,
                    const char *const *leased, int nleased, int rf, struct shardmap *next)
{
    *next = *cur;
    next->version = cur->version + 1;
    /* Shards drift back to their preferred nodes only while every node the
     * map names holds a lease: never in the middle of a failure. */
    bool stable = true;
    for (unsigned i = 0; i < SHARDMAP_SHARDS && stable; i++) {
        const struct shard_assign *a = &cur->s[i];
        stable = a->owner < 0 || state(cur->nodes[a->owner], ud) == NODE_LEASED;
        for (int k = 0; k < a->nbackups && stable; k++)
            stable = state(cur->nodes[a->backup[k]], ud) == NODE_LEASED;
    }
    bool changed = false;
    for (unsigned i = 0; i < SHARDMAP_SHARDS; i++)
        changed |= place_shard(next, i, state, synced, ud, leased, nleased, rf, stable);
    if (changed)
        shardmap_compact(next);
    return changed;
}
