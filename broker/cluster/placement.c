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

/* Returns true when shard i's assignment changed. */
static bool place_shard(struct shardmap *n, unsigned i, placement_state_fn *state, void *ud,
                        const char *const *leased, int nleased, int rf)
{
    struct shard_assign *a = &n->s[i];
    uint64_t v = n->version;
    bool changed = false;
    enum node_state ost = a->owner >= 0 ? state(n->nodes[a->owner], ud) : NODE_GONE;

    /* Backups that certainly stopped acting leave; uncertain ones stay, since
     * they may still acknowledge what the owner sends. */
    for (int k = a->nbackups - 1; k >= 0; k--)
        if (state(n->nodes[a->backup[k]], ud) == NODE_GONE) {
            drop_backup(a, k);
            changed = true;
        }

    if (ost == NODE_GONE) {
        int pick = -1;
        bool waiting = false;
        for (int k = 0; k < a->nbackups && pick < 0; k++) {
            enum node_state bs = state(n->nodes[a->backup[k]], ud);
            if (bs == NODE_LEASED)
                pick = k;
            else
                waiting = true;
        }
        if (pick >= 0) {
            /* The backup holds all the gone owner delivered: promote it. */
            a->owner = a->backup[pick];
            a->cont = a->since[pick];
            drop_backup(a, pick);
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
    if (changed)
        a->gen = v;
    return changed;
}

bool placement_next(const struct shardmap *cur, placement_state_fn *state, void *ud,
                    const char *const *leased, int nleased, int rf, struct shardmap *next)
{
    *next = *cur;
    next->version = cur->version + 1;
    bool changed = false;
    for (unsigned i = 0; i < SHARDMAP_SHARDS; i++)
        changed |= place_shard(next, i, state, ud, leased, nleased, rf);
    if (changed)
        shardmap_compact(next);
    return changed;
}
