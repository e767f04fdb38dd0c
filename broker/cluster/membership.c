/* membership.c - members, liveness, and the committed shard map as the
 * data path reads it (membership.h). */
#include "membership.h"
#include "cluster.h"
#include "log.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <uthash.h>

/* One per node ever heard from; never freed while running (membership is small). */
struct member {
    char id[ENVELOPE_ID_MAX + 1];
    uint64_t raft_id;                 /* from its heartbeats */
    int64_t last_seen_ms;
    bool up;
    bool hears_us;                    /* its SUB follows our XPUB ("!to:ID" subscribed) */
    UT_hash_handle hh;
};

/* One shard of the committed map, as node ids. */
struct shard_view {
    char owner[ENVELOPE_ID_MAX + 1];  /* "" when none */
    bool mine;
    int nbackups;
    char backup[SHARDMAP_MAX_BACKUPS][ENVELOPE_ID_MAX + 1];
    int my_backup;                    /* this node's position among the backups, or -1 */
    uint64_t my_since;                /* ... and the map version it has been one since */
    uint64_t gen, cont;
    bool handing_off;                 /* mine, and the map names a handoff target */
};

static struct {
    bool enabled;
    const struct config *cfg;
    char self[ENVELOPE_ID_MAX + 1];
    char self_ref[SHARDMAP_REF_MAX + 1];
    struct member *members;
    int64_t started_ms;
    bool joined;                      /* every peer heard once heard us (membership_joined) */
    uint64_t version;
    bool past_self;                   /* the map names an earlier incarnation of this node */
    bool in_map;                      /* the map names this incarnation (owner or backup) */
    struct shard_view view[SHARDMAP_SHARDS];
} ms;

static void refresh(const struct shardmap *m);

void membership_start(const struct config *cfg, int64_t now_ms)
{
    ms.cfg = cfg;
    snprintf(ms.self, sizeof ms.self, "%s", cfg->node_id);
    /* This process's incarnation: a restarted node owns nothing its
     * predecessor did until the leader places shards on it again. */
    uint64_t inc = 0;
    if (getrandom(&inc, sizeof inc, 0) != (ssize_t)sizeof inc)
        inc = (uint64_t)now_ms ^ ((uint64_t)getpid() << 32);
    snprintf(ms.self_ref, sizeof ms.self_ref, "%s#%016llx", cfg->node_id, (unsigned long long)inc);
    struct shardmap empty;
    shardmap_init(&empty);
    refresh(&empty);
    ms.started_ms = now_ms;
    ms.enabled = true;
}

void membership_stop(void)
{
    struct member *m, *tmp;
    HASH_ITER(hh, ms.members, m, tmp) {
        HASH_DEL(ms.members, m);
        free(m);
    }
    memset(&ms, 0, sizeof ms);
}

const char *membership_self(void) { return ms.self; }

bool cluster_enabled(void) { return ms.enabled; }



static struct member *member_get(const char *id)
{
    struct member *m;
    HASH_FIND_STR(ms.members, id, m);
    if (!m) {
        m = calloc(1, sizeof *m);
        if (!m)
            return NULL;
        snprintf(m->id, sizeof m->id, "%s", id);
        HASH_ADD_STR(ms.members, id, m);
    }
    return m;
}

void membership_seen(const char *id, int64_t now)
{
    struct member *m = member_get(id);
    if (!m)
        return;
    m->last_seen_ms = now;
    if (!m->up) {
        m->up = true;
        log_info("event=peer_up peer=%s", m->id);
    }
}

void membership_sweep(int64_t now, void (*down)(const char *id))
{
    for (struct member *m = ms.members; m; m = m->hh.next)
        if (m->up && now - m->last_seen_ms > ms.cfg->peer_timeout_ms) {
            m->up = false;
            log_warn("event=peer_down peer=%s silent_ms=%lld", m->id,
                     (long long)(now - m->last_seen_ms));
            down(m->id);
        }
}

void membership_heard_by(const char *id, bool on)
{
    if (!strcmp(id, ms.self))
        return; /* our own SUB, when this node lists itself among its peers */
    struct member *m = member_get(id);
    if (m && m->hears_us != on) {
        m->hears_us = on;
        log_info("event=peer_hears_us peer=%s on=%s", m->id, on ? "yes" : "no");
    }
}

bool membership_any_down(void)
{
    if (!ms.members)
        return true;
    for (struct member *m = ms.members; m; m = m->hh.next)
        if (!m->up || !m->hears_us)
            return true;
    return false;
}

/* A node that comes back on a new address hears its peers at once, but
 * they link to it only when they resolve its name again: until then what
 * they forward to it (or it answers them) is lost. So it counts as started
 * until every peer it hears hears it too; join_wait_ms bounds the wait (a
 * link that works one way only must not keep it out forever). Once
 * joined, stays joined: later link trouble is the lease's business. */
bool membership_joined(int64_t now)
{
    if (ms.joined)
        return true;
    int heard = 0, missing = 0;
    const char *first_missing = NULL;
    for (struct member *m = ms.members; m; m = m->hh.next)
        if (m->up) {
            heard++;
            if (!m->hears_us) {
                missing++;
                first_missing = first_missing ? first_missing : m->id;
            }
        }
    if (!missing) {
        log_info("event=cluster_joined peers_hearing=%d after_ms=%lld", heard,
                 (long long)(now - ms.started_ms));
    } else if (now - ms.started_ms >= ms.cfg->join_wait_ms) {
        log_warn("event=cluster_joined peers_hearing=%d not_hearing=%d e.g.=%s after_ms=%lld "
                 "msg=\"join-wait-ms passed: ready although some peers do not follow this node\"",
                 heard - missing, missing, first_missing, (long long)(now - ms.started_ms));
    } else {
        return false;
    }
    ms.joined = true;
    return true;
}

int cluster_peers(struct cluster_peer_info *out, int max)
{
    int n = 0;
    for (struct member *m = ms.members; m && n < max; m = m->hh.next, n++)
        out[n] = (struct cluster_peer_info){m->id, m->up, m->last_seen_ms};
    return n;
}

/* ------------------------------------------------------------- ownership */

void membership_seen_raft(const char *id, uint64_t raft_id)
{
    struct member *m;
    HASH_FIND_STR(ms.members, id, m);
    if (m)
        m->raft_id = raft_id;
}

const char *membership_node_of_raft(uint64_t raft_id)
{
    for (struct member *m = ms.members; m; m = m->hh.next)
        if (m->raft_id == raft_id)
            return m->id;
    return NULL;
}

const char *membership_self_ref(void) { return ms.self_ref; }

/* The committed map as the data path reads it: node ids per shard, and
 * this node's role, refreshed on every committed change. */
static void refresh(const struct shardmap *m)
{
    for (unsigned i = 0; i < SHARDMAP_SHARDS; i++) {
        const struct shard_assign *a = &m->s[i];
        struct shard_view *v = &ms.view[i];
        memset(v, 0, sizeof *v);
        v->gen = a->gen;
        v->cont = a->cont;
        v->my_backup = -1;
        if (a->owner >= 0) {
            shardmap_node_id(m->nodes[a->owner], v->owner, sizeof v->owner);
            v->mine = !strcmp(m->nodes[a->owner], ms.self_ref);
            v->handing_off = v->mine && a->handoff >= 0;
        }
        v->nbackups = a->nbackups;
        for (int k = 0; k < a->nbackups; k++) {
            shardmap_node_id(m->nodes[a->backup[k]], v->backup[k], sizeof v->backup[k]);
            if (!strcmp(m->nodes[a->backup[k]], ms.self_ref)) {
                v->my_backup = k;
                v->my_since = a->since[k];
            }
        }
    }
    ms.version = m->version;
    /* A map that still names an earlier incarnation of this node gives work
     * to a process that is gone: not ready until the leader moves it. */
    ms.past_self = false;
    ms.in_map = false;
    char id[ENVELOPE_ID_MAX + 1];
    for (int j = 0; j < m->nnodes; j++) {
        shardmap_node_id(m->nodes[j], id, sizeof id);
        if (!strcmp(id, ms.self) && strcmp(m->nodes[j], ms.self_ref) != 0)
            ms.past_self = true;
        if (!strcmp(m->nodes[j], ms.self_ref))
            ms.in_map = true;
    }
}

bool membership_map_current(void) { return ms.version > 0 && !ms.past_self; }

bool membership_in_map(void) { return ms.in_map; }

void membership_map_changed(const struct shardmap *m) { refresh(m); }

static const struct shard_view *view_of(const char *ch, size_t len)
{
    return &ms.view[shardmap_shard_of(ch, len)];
}

const char *cluster_owner_of(const char *ch, size_t len)
{
    if (!ms.enabled)
        return ms.self;
    const struct shard_view *v = view_of(ch, len);
    return v->mine ? ms.self : *v->owner ? v->owner : NULL;
}

bool cluster_is_owner(const char *ch, size_t len)
{
    return !ms.enabled || view_of(ch, len)->mine;
}

int cluster_backups_of(const char *ch, size_t len, const char **out, int max, uint64_t *gen)
{
    if (!ms.enabled) {
        *gen = 0;
        return 0;
    }
    const struct shard_view *v = view_of(ch, len);
    int n = 0;
    for (int k = 0; k < v->nbackups && n < max; k++)
        out[n++] = v->backup[k];
    *gen = v->gen;
    return n;
}

uint64_t cluster_shard_gen(const char *ch, size_t len)
{
    return ms.enabled ? view_of(ch, len)->gen : 0;
}

bool membership_backup_of(const char *ch, size_t len, const char *origin, uint64_t gen)
{
    const struct shard_view *v = view_of(ch, len);
    return ms.enabled && v->my_backup >= 0 && v->gen == gen && !v->mine &&
           !strcmp(v->owner, origin);
}

bool cluster_continues(const char *ch, size_t len, uint64_t repl_gen)
{
    const struct shard_view *v = view_of(ch, len);
    return v->cont != SHARDMAP_NEVER && repl_gen >= v->cont;
}

_Static_assert(CLUSTER_SHARDS == SHARDMAP_SHARDS, "one shard count");

unsigned cluster_shard_of(const char *ch, size_t len) { return shardmap_shard_of(ch, len); }

enum cluster_role cluster_shard_role(unsigned shard, uint64_t *since, const char **owner)
{
    const struct shard_view *v = &ms.view[shard % SHARDMAP_SHARDS];
    *since = v->my_backup >= 0 ? v->my_since : 0;
    *owner = v->mine ? ms.self : *v->owner ? v->owner : NULL;
    if (!ms.enabled || v->mine)
        return CLUSTER_ROLE_OWNER;
    return v->my_backup >= 0 ? CLUSTER_ROLE_BACKUP : CLUSTER_ROLE_NONE;
}

bool cluster_shard_handing_off(unsigned shard)
{
    return ms.enabled && ms.view[shard % SHARDMAP_SHARDS].handing_off;
}

bool cluster_handing_off(const char *ch, size_t len)
{
    return ms.enabled && view_of(ch, len)->handing_off;
}

uint64_t cluster_map_version(void) { return ms.version; }

int membership_shards(bool owner)
{
    int n = 0;
    for (unsigned i = 0; i < SHARDMAP_SHARDS; i++)
        n += owner ? ms.view[i].mine : ms.view[i].my_backup >= 0;
    return n;
}
