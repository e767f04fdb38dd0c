/* membership.c - members, liveness and rendezvous-hash ownership
 * (membership.h). */
#include "membership.h"
#include "cluster.h"
#include "log.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

/* One per node ever heard from; never freed while running (membership is small). */
struct member {
    char id[ENVELOPE_ID_MAX + 1];
    int64_t last_seen_ms;
    bool up;
    UT_hash_handle hh;
};

static struct {
    bool enabled;
    const struct config *cfg;
    char self[ENVELOPE_ID_MAX + 1];
    struct member *members;
    int64_t started_ms;
} ms;

void membership_start(const struct config *cfg, int64_t now_ms)
{
    ms.cfg = cfg;
    snprintf(ms.self, sizeof ms.self, "%s", cfg->node_id);
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

bool cluster_ready(void)
{
    return !ms.enabled || runtime_now_ms() - ms.started_ms >= 3 * (int64_t)ms.cfg->heartbeat_ms;
}

void membership_seen(const char *id, int64_t now)
{
    struct member *m;
    HASH_FIND_STR(ms.members, id, m);
    if (!m) {
        m = calloc(1, sizeof *m);
        if (!m)
            return;
        snprintf(m->id, sizeof m->id, "%s", id);
        HASH_ADD_STR(ms.members, id, m);
    }
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

int cluster_peers(struct cluster_peer_info *out, int max)
{
    int n = 0;
    for (struct member *m = ms.members; m && n < max; m = m->hh.next, n++)
        out[n] = (struct cluster_peer_info){m->id, m->up, m->last_seen_ms};
    return n;
}

/* ------------------------------------------------------------- ownership */

static uint32_t rendezvous_score(const char *node, const char *ch, size_t len)
{
    char key[ENVELOPE_ID_MAX + 1 + 256];
    size_t nl = strlen(node);
    uint32_t h;
    memcpy(key, node, nl);
    key[nl] = '\0';
    memcpy(key + nl + 1, ch, len);
    HASH_JEN(key, nl + 1 + len, h);
    return h;
}

/* The live member with the highest score owns the channel; ties go to the
 * smaller id so every node picks the same one. */
const char *cluster_owner_of(const char *ch, size_t len)
{
    const char *best = ms.self;
    uint32_t best_score = rendezvous_score(ms.self, ch, len);
    for (struct member *m = ms.members; m; m = m->hh.next) {
        if (!m->up)
            continue;
        uint32_t s = rendezvous_score(m->id, ch, len);
        if (s > best_score || (s == best_score && strcmp(m->id, best) < 0)) {
            best = m->id;
            best_score = s;
        }
    }
    return best;
}

bool cluster_is_owner(const char *ch, size_t len)
{
    return !ms.enabled || cluster_owner_of(ch, len) == ms.self;
}

const char *cluster_backup_of(const char *ch, size_t len)
{
    if (!ms.enabled)
        return NULL;
    const char *owner = cluster_owner_of(ch, len);
    const char *best = NULL;
    uint32_t best_score = 0;
    /* The runner-up among live nodes, self included when self is not the owner. */
    if (owner != ms.self) {
        best = ms.self;
        best_score = rendezvous_score(ms.self, ch, len);
    }
    for (struct member *m = ms.members; m; m = m->hh.next) {
        if (!m->up || m->id == owner)
            continue;
        uint32_t s = rendezvous_score(m->id, ch, len);
        if (!best || s > best_score || (s == best_score && strcmp(m->id, best) < 0)) {
            best = m->id;
            best_score = s;
        }
    }
    return best == ms.self ? NULL : best;
}
