/* lease.c - lease requests and grants; the leader's placement (lease.h). */
#include "lease.h"
#include "cluster.h"
#include "consensus.h"
#include "log.h"
#include "membership.h"
#include "placement.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#define SENT_RING 16

/* What the leader knows of one node reference. */
struct grant {
    char ref[SHARDMAP_REF_MAX + 1];
    char id[ENVELOPE_ID_MAX + 1];
    int64_t granted_ms;       /* leader's monotonic clock */
    bool superseded;          /* a newer incarnation of the same node asked */
    bool asked;               /* granted by this leader (else granted_ms is its start) */
    bool leaving;             /* it asked to hand its shards over (SIGTERM) */
    uint64_t synced;          /* shards whose state it holds (bit per shard) ... */
    uint64_t quiesced;        /* shards it hands off, with nothing pending ... */
    uint64_t synced_version;  /* ... in the map of this version */
    UT_hash_handle hh;
};

/* LEASE_REQ status: the requester is leaving (PROTOCOL.md 7.4). */
#define LEASE_LEAVING 1

static struct {
    const struct config *cfg;
    char self_ref[SHARDMAP_REF_MAX + 1];
    bool leaving;
    uint64_t synced;            /* this node's shards with state held (cluster_set_synced) */
    uint64_t quiesced;          /* ... handed off with nothing pending (cluster_set_quiesced) */
    int64_t interval_ms, margin_ms;
    /* requester */
    int64_t until_ms, lost_since_ms, last_req_ms;
    uint64_t next_req;
    struct { uint64_t id; int64_t sent_ms; } sent[SENT_RING];
    /* leader */
    bool leading;
    int64_t leader_since_ms;
    int64_t quorum_since_ms;    /* since when a majority holds leases (0: it does not) */
    uint64_t leased_sig;        /* which nodes hold leases (a hash of the set) ... */
    int64_t leased_since_ms;    /* ... unchanged since then */
    struct grant *grants;
} ls;

bool lease_valid(void) { return runtime_mono_ms() < ls.until_ms; }

int64_t lease_lost_ms(void)
{
    int64_t now = runtime_mono_ms();
    if (now < ls.until_ms)
        return 0;
    return now - (ls.lost_since_ms ? ls.lost_since_ms : now);
}

/* ----------------------------------------------------------------- leader */

static void forget_grants(void)
{
    struct grant *g, *tmp;
    HASH_ITER(hh, ls.grants, g, tmp) {
        HASH_DEL(ls.grants, g);
        free(g);
    }
}

static struct grant *grant_get(const char *ref)
{
    struct grant *g;
    HASH_FIND_STR(ls.grants, ref, g);
    if (g || strlen(ref) > SHARDMAP_REF_MAX || !(g = calloc(1, sizeof *g)))
        return g;
    snprintf(g->ref, sizeof g->ref, "%s", ref);
    shardmap_node_id(ref, g->id, sizeof g->id);
    /* A node this leader never heard may hold a lease from its predecessor
     * until lease_ms after this leader started. */
    g->granted_ms = ls.leader_since_ms;
    HASH_ADD_STR(ls.grants, ref, g);
    return g;
}

/* Grants ref a lease now; false when it must first apply the current map. */
static bool grant(const char *ref, uint64_t applied, bool leaving, uint64_t synced,
                  uint64_t quiesced)
{
    if (applied < consensus_map()->version)
        return false;
    struct grant *g = grant_get(ref);
    if (!g)
        return false;
    g->synced = synced;
    g->quiesced = quiesced;
    g->synced_version = applied;
    if (leaving && !g->leaving)
        log_info("event=node_leaving node=%s msg=\"moving its shards to their backups\"", ref);
    g->leaving = leaving;
    g->granted_ms = runtime_mono_ms();
    g->superseded = false;
    g->asked = true;
    /* Only one incarnation of a node id runs: older ones are dead. */
    for (struct grant *o = ls.grants; o; o = o->hh.next)
        if (o != g && !strcmp(o->id, g->id) && !o->superseded) {
            o->superseded = true;
            log_info("event=node_restarted old=%s new=%s", o->ref, g->ref);
        }
    return true;
}

static enum node_state state_of(const char *ref, void *ud)
{
    (void)ud;
    struct grant *g = grant_get(ref);
    if (!g || g->superseded)
        return NODE_GONE;
    int64_t age = runtime_mono_ms() - g->granted_ms;
    if (age < ls.cfg->lease_ms && g->asked)
        return g->leaving ? NODE_LEAVING : NODE_LEASED;
    return age > ls.cfg->lease_ms + ls.margin_ms ? NODE_GONE : NODE_UNCERTAIN;
}

/* Does ref hold shard's state? Its lease requests say so for the map they
 * applied; a report counts from a map where it already was the shard's
 * backup without a break since (its `since`), so later maps that changed
 * other things do not make it wait for the next report. */
static bool synced_of(const char *ref, unsigned shard, void *ud)
{
    (void)ud;
    const struct shardmap *m = consensus_map();
    int k = shardmap_backup_pos(m, shard, ref);
    struct grant *g = grant_get(ref);
    return g && k >= 0 && g->synced_version >= m->s[shard].since[k] && (g->synced >> shard & 1);
}

/* Has the owner ref stopped sequencing for the shard it hands off, with
 * nothing pending? A report counts from the map that named the handoff. */
static bool quiesced_of(const char *ref, unsigned shard, void *ud)
{
    (void)ud;
    struct grant *g = grant_get(ref);
    return g && g->synced_version >= consensus_map()->s[shard].gen &&
           (g->quiesced >> shard & 1);
}

/* While a new majority settles nobody is called gone: only planned moves
 * (a leaving node, a handoff) go on. */
static enum node_state state_in_grace(const char *ref, void *ud)
{
    enum node_state st = state_of(ref, ud);
    return st == NODE_GONE && !grant_get(ref)->superseded ? NODE_UNCERTAIN : st;
}

static void place(int64_t now)
{
    const struct shardmap *map = consensus_map();
    const char *leased[SHARDMAP_MAX_NODES], *members[SHARDMAP_MAX_NODES];
    int n = 0, nmembers = 0;
    for (struct grant *g = ls.grants; g && n < SHARDMAP_MAX_NODES; g = g->hh.next) {
        if (state_of(g->ref, NULL) == NODE_LEASED)
            leased[n++] = g->ref;
        if (!g->superseded)
            members[nmembers++] = g->ref;
    }
    /* The first map waits for every voter (or for a while), so the shards
     * spread over the whole cluster rather than over the first to ask. */
    if (map->version == 0 && n < consensus_voters() && now - ls.leader_since_ms < 2 * ls.cfg->lease_ms)
        return;
    /* Moves only while a majority holds leases: when the data path is cut
     * for most nodes (a forwarder restarting, the leader alone on its side of
     * the ZeroMQ links) nothing can be served anyway, and moving every shard
     * to the few leased nodes would only restart epochs. */
    if (n * 2 <= consensus_voters()) {
        ls.quorum_since_ms = 0;
        return;
    }
    /* When a majority comes back (a forwarder restarted, a partition healed),
     * give the others a few lease rounds to ask before calling them gone:
     * moving their shards now would only restart epochs. */
    if (!ls.quorum_since_ms)
        ls.quorum_since_ms = now;
    bool grace = now - ls.quorum_since_ms < 3 * ls.interval_ms;
    /* Shards drift back only once the same nodes have held leases for a
     * lease's length: a node just back from a stall or a partition, or just
     * restarted, first catches up (and may go again) before work moves. */
    uint64_t sig = (uint64_t)n;
    for (int i = 0; i < n; i++) {
        unsigned h;
        HASH_JEN(leased[i], strlen(leased[i]), h);
        sig ^= (uint64_t)h * 0x9e3779b97f4a7c15ull;
    }
    if (sig != ls.leased_sig || !ls.leased_since_ms) {
        ls.leased_sig = sig;
        ls.leased_since_ms = now;
    }
    if (now - ls.leased_since_ms < ls.cfg->lease_ms)
        nmembers = 0;
    static struct shardmap next;
    struct placement_view view = {grace ? state_in_grace : state_of, synced_of, quiesced_of, NULL,
                                  members, nmembers};
    if (placement_next(map, &view, leased, n, ls.cfg->replication_factor, &next)) {
        if (log_get_level() <= LOG_DEBUG)
            for (unsigned i = 0; i < SHARDMAP_SHARDS; i++)
                if (next.s[i].gen == next.version) {
                    const struct shard_assign *a = &next.s[i];
                    log_debug("event=shard_placed version=%llu shard=%u owner=%s backups=%d "
                              "first=%s handoff=%s", (unsigned long long)next.version, i,
                              a->owner >= 0 ? next.nodes[a->owner] : "-", a->nbackups,
                              a->nbackups ? next.nodes[a->backup[0]] : "-",
                              a->handoff >= 0 ? next.nodes[a->handoff] : "-");
                }
        consensus_propose(&next);
    }
}

static void on_lease_req(const struct cluster_part *topic, const struct envelope *req,
                         const struct cluster_part *parts, int n)
{
    (void)topic;
    struct envelope e;
    cluster_env_init(&e, ENV_LEASE_GRANT);
    e.req_id = req->req_id;
    e.seq = consensus_map()->version;
    char ref[SHARDMAP_REF_MAX + 1];
    if (n < 1 || n > 3 || parts[0].len > SHARDMAP_REF_MAX || parts[0].len == 0 ||
        (n >= 2 && parts[1].len != 8) || (n == 3 && parts[2].len != 8))
        return;
    memcpy(ref, parts[0].data, parts[0].len);
    ref[parts[0].len] = '\0';
    uint64_t masks[2] = {0, 0};
    for (int p = 1; p < n; p++)
        for (size_t i = 0; i < 8; i++)
            masks[p - 1] = masks[p - 1] << 8 | parts[p].data[i];
    if (!consensus_is_leader() ||
        !grant(ref, req->seq, req->status == LEASE_LEAVING, masks[0], masks[1]))
        e.status = 1;
    cluster_send_to(req->origin, &e, NULL, 0);
}

/* ---------------------------------------------------------------- requester */

static void granted(uint64_t req_id)
{
    for (int i = 0; i < SENT_RING; i++)
        if (ls.sent[i].id == req_id) {
            int64_t until = ls.sent[i].sent_ms + ls.cfg->lease_ms;
            if (until > ls.until_ms) {
                if (runtime_mono_ms() >= ls.until_ms)
                    log_info("event=lease_acquired map_version=%llu",
                             (unsigned long long)consensus_map()->version);
                ls.until_ms = until;
                ls.lost_since_ms = 0;
            }
            return;
        }
}

static void on_lease_grant(const struct cluster_part *topic, const struct envelope *rep,
                           const struct cluster_part *parts, int n)
{
    (void)topic;
    (void)parts;
    (void)n;
    if (!rep->status)
        granted(rep->req_id);
}

static void request(int64_t now)
{
    uint64_t leader = consensus_leader_id();
    if (!leader)
        return;
    uint64_t id = ++ls.next_req;
    ls.sent[id % SENT_RING].id = id;
    ls.sent[id % SENT_RING].sent_ms = now;
    uint64_t applied = consensus_map()->version;
    if (leader == consensus_self_id()) {
        if (consensus_is_leader() &&
            grant(ls.self_ref, applied, ls.leaving, ls.synced, ls.quiesced))
            granted(id);
        return;
    }
    const char *node = membership_node_of_raft(leader);
    if (!node)
        return; /* its heartbeats have not named it yet */
    struct envelope e;
    cluster_env_init(&e, ENV_LEASE_REQ);
    e.req_id = id;
    e.seq = applied;
    e.status = ls.leaving ? LEASE_LEAVING : 0;
    unsigned char mask[2][8];
    for (int i = 0; i < 8; i++) {
        mask[0][i] = (unsigned char)(ls.synced >> (56 - 8 * i));
        mask[1][i] = (unsigned char)(ls.quiesced >> (56 - 8 * i));
    }
    struct cluster_part p[3] = {{(const unsigned char *)ls.self_ref, strlen(ls.self_ref)},
                                {mask[0], 8}, {mask[1], 8}};
    cluster_send_to(node, &e, p, 3);
}

static void lease_tick(int64_t wall_now)
{
    (void)wall_now;
    int64_t now = runtime_mono_ms();
    if (now >= ls.until_ms && !ls.lost_since_ms && ls.until_ms) {
        ls.lost_since_ms = ls.until_ms;
        log_warn("event=lease_lost msg=\"no lease from a Raft leader: this node acknowledges no "
                 "publish until it gets one\"");
    }
    bool leading = consensus_is_leader();
    if (leading != ls.leading) {
        ls.leading = leading;
        forget_grants();
        ls.leader_since_ms = now;
        ls.quorum_since_ms = 0;
        ls.leased_since_ms = 0;
        if (leading)
            log_info("event=raft_leader msg=\"this node places shards now\"");
    }
    if (now - ls.last_req_ms >= ls.interval_ms) {
        ls.last_req_ms = now;
        request(now);
    }
    if (leading && !consensus_proposing())
        place(now);
}

void lease_start(const struct config *cfg, const char *self_ref)
{
    ls.cfg = cfg;
    snprintf(ls.self_ref, sizeof ls.self_ref, "%s", self_ref);
    ls.interval_ms = cfg->lease_ms / 5 > 20 ? cfg->lease_ms / 5 : 20;
    ls.margin_ms = cfg->lease_ms / 10 > 100 ? cfg->lease_ms / 10 : 100;
    cluster_handle(ENV_LEASE_REQ, on_lease_req);
    cluster_handle(ENV_LEASE_GRANT, on_lease_grant);
    cluster_on_tick(lease_tick);
}

void lease_leave(void)
{
    if (ls.leaving)
        return;
    ls.leaving = true;
    log_info("event=leave_begin msg=\"asking the leader to move this node's shards\"");
    request(runtime_mono_ms()); /* at once, not at the next renewal */
}

void cluster_set_synced(uint64_t mask)
{
    if (mask & ~ls.synced) {
        ls.synced = mask;
        request(runtime_mono_ms()); /* news the leader waits for: tell it now */
    }
    ls.synced = mask;
}

void cluster_set_quiesced(uint64_t mask)
{
    uint64_t news = mask & ~ls.quiesced;
    ls.quiesced = mask;
    if (news)
        request(runtime_mono_ms());
}

void lease_stop(void)
{
    forget_grants();
    memset(&ls, 0, sizeof ls);
}
