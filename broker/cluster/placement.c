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

/* A planned switch to backup k: first the map names it (handoff), then,
 * once the owner said it has stopped sequencing with nothing pending, the
 * switch; the old owner stays as a backup (keep_old) or goes. */
static bool hand_over(struct shardmap *n, unsigned i, const struct placement_view *pv, int k,
                      bool keep_old)
{
    struct shard_assign *a = &n->s[i];
    if (a->handoff != a->backup[k]) {
        a->handoff = a->backup[k];
        return true;
    }
    if (!pv->quiesced(n->nodes[a->owner], i, pv->ud))
        return false;
    a->handoff = -1;
    if (!keep_old) {
        promote(a, k);
        return true;
    }
    int old = a->owner;
    a->owner = a->backup[k];
    a->cont = a->since[k];
    a->backup[k] = old;
    a->since[k] = n->version;
    return true;
}

/* One step toward the preferred nodes for a shard whose owner is leased
 * and staying; true when it changed. */
static bool rebalance(struct shardmap *n, unsigned i, const struct placement_view *pv, int rf)
{
    struct shard_assign *a = &n->s[i];
    const char *want[SHARDMAP_MAX_BACKUPS + 1];
    int nwant = preferred(i, pv->members, pv->nmembers, rf, want);
    bool all_leased = nwant > 0;
    for (int w = 0; w < nwant && all_leased; w++)
        all_leased = pv->state(want[w], pv->ud) == NODE_LEASED;
    if (!all_leased) {
        bool had = a->handoff >= 0;
        a->handoff = -1;
        return had;
    }
    /* A preferred node outside the shard joins as a backup and fetches: the
     * preferred owner first, the other preferred backups once it owns. */
    bool owns = !strcmp(n->nodes[a->owner], want[0]);
    for (int w = 0; w < (owns ? nwant : 1); w++)
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
    if (!owns) {
        int k = backup_index(n, a, want[0]);
        if (k < 0 || !pv->synced(want[0], i, pv->ud)) {
            bool had = a->handoff >= 0;
            a->handoff = -1;
            return had;
        }
        if (a->nbackups > 1) {
            int keep = a->backup[k];
            uint64_t since = a->since[k];
            a->backup[0] = keep;
            a->since[0] = since;
            a->nbackups = 1;
            a->handoff = -1;
            return true;
        }
        return hand_over(n, i, pv, 0, true);
    }
    if (a->handoff >= 0) {
        a->handoff = -1;
        return true;
    }
    /* Backups no longer preferred leave once the preferred ones hold the
     * state, never before: redundancy does not dip during the move. */
    for (int w = 1; w < nwant; w++)
        if (!pv->synced(want[w], i, pv->ud))
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
static bool place_shard(struct shardmap *n, unsigned i, const struct placement_view *pv,
                        const char *const *leased, int nleased, int rf, bool stable)
{
    struct shard_assign *a = &n->s[i];
    uint64_t v = n->version;
    bool changed = false;
    enum node_state ost = a->owner >= 0 ? pv->state(n->nodes[a->owner], pv->ud) : NODE_GONE;

    /* Backups that certainly stopped acting leave; uncertain ones stay, since
     * they may still acknowledge what the owner sends. A leaving backup
     * leaves too: what it acknowledged is also held by the owner. */
    for (int k = a->nbackups - 1; k >= 0; k--) {
        enum node_state bs = pv->state(n->nodes[a->backup[k]], pv->ud);
        if (bs == NODE_GONE || bs == NODE_LEAVING) {
            drop_backup(a, k);
            changed = true;
        }
    }
    /* A handoff stands only while its target is a leased backup and the
     * owner is leaving or the cluster stable (else the owner would hold
     * publishes back for a switch that is not coming). */
    if (a->handoff >= 0) {
        int k = backup_index(n, a, n->nodes[a->handoff]);
        if (k < 0 || pv->state(n->nodes[a->handoff], pv->ud) != NODE_LEASED ||
            !(ost == NODE_LEAVING || (ost == NODE_LEASED && stable))) {
            a->handoff = -1;
            changed = true;
        }
    }

    if (ost == NODE_LEAVING) {
        /* Planned: only to a backup that holds the state, so no channel
         * restarts its epoch; a new backup is fetching it meanwhile. */
        for (int k = 0; k < a->nbackups; k++)
            if (pv->state(n->nodes[a->backup[k]], pv->ud) == NODE_LEASED &&
                pv->synced(n->nodes[a->backup[k]], i, pv->ud)) {
                changed |= hand_over(n, i, pv, k, false);
                break;
            }
    } else if (ost == NODE_GONE) {
        int pick = -1;
        bool waiting = false;
        for (int pass = 0; pass < 2 && pick < 0; pass++)
            for (int k = 0; k < a->nbackups && pick < 0; k++) {
                enum node_state bs = pv->state(n->nodes[a->backup[k]], pv->ud);
                if (bs == NODE_LEASED && (pass || pv->synced(n->nodes[a->backup[k]], i, pv->ud)))
                    pick = k;
                else if (bs != NODE_LEASED)
                    waiting = true;
            }
        if (pick >= 0) {
            /* The backup holds all the gone owner delivered: promote it
             * (one that fetched the shard's state first). */
            promote(a, pick);
            a->handoff = -1;
            changed = true;
        } else if (!waiting) {
            const char *ref = best_free(n, a, i, leased, nleased);
            int idx = ref ? shardmap_node(n, ref) : -1;
            if (a->owner != idx || idx >= 0)
                changed = true;
            a->owner = idx;
            a->cont = SHARDMAP_NEVER;
            a->handoff = -1;
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
        changed = rebalance(n, i, pv, rf);
    if (changed)
        a->gen = v;
    return changed;
}

bool placement_next(const struct shardmap *cur, const struct placement_view *pv,
                    const char *const *leased, int nleased, int rf, struct shardmap *next)
{
    *next = *cur;
    next->version = cur->version + 1;
    /* Shards drift back to their preferred nodes only while every node the
     * map names holds a lease: never in the middle of a failure. */
    bool stable = true;
    for (unsigned i = 0; i < SHARDMAP_SHARDS && stable; i++) {
        const struct shard_assign *a = &cur->s[i];
        stable = a->owner < 0 || pv->state(cur->nodes[a->owner], pv->ud) == NODE_LEASED;
        for (int k = 0; k < a->nbackups && stable; k++)
            stable = pv->state(cur->nodes[a->backup[k]], pv->ud) == NODE_LEASED;
    }
    bool changed = false;
    for (unsigned i = 0; i < SHARDMAP_SHARDS; i++)
        changed |= place_shard(next, i, pv, leased, nleased, rf, stable);
    if (changed)
        shardmap_compact(next);
    return changed;
}
