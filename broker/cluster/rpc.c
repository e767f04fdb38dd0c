/* rpc.c - calls to channel owners: each waits in one list, oldest first,
 * for its reply, its timeout or its target's death (rpc.h, cluster.h). */
#include "rpc.h"
#include "cluster.h"
#include "membership.h"
#include "metrics.h"
#include "runtime.h"

#include <stdio.h>
#include <string.h>
#include <utlist.h>

static struct {
    const struct config *cfg;
    struct cluster_call *calls;     /* outstanding, oldest first (utlist DL) */
    uint64_t next_call_id;
} rc;

static void call_unlink(struct cluster_call *c)
{
    DL_DELETE(rc.calls, c);
    c->prev = c->next = NULL;
    c->id = 0;
}

int cluster_calls_outstanding(void)
{
    int n = 0;
    struct cluster_call *c;
    DL_COUNT(rc.calls, c, n);
    return n;
}

void cluster_call_cancel(struct cluster_call *c)
{
    if (c->id)
        call_unlink(c);
}

static void call_start(struct cluster_call *c, const char *target, cluster_call_cb *cb, void *ud)
{
    snprintf(c->target, sizeof c->target, "%s", target);
    c->id = ++rc.next_call_id;
    c->cb = cb;
    c->ud = ud;
    c->deadline_ms = runtime_now_ms() + rc.cfg->cluster_timeout_ms;
    DL_APPEND(rc.calls, c);
}

/* Starts call toward owner and sends e (its req_id set to the call's id);
 * -1, with the call forgotten, when it could not be queued. */
static int call_send(struct cluster_call *call, const char *owner, cluster_call_cb *cb, void *ud,
                     struct envelope *e, const struct cluster_part *parts, int nparts)
{
    call_start(call, owner, cb, ud);
    e->req_id = call->id;
    if (cluster_send_to(owner, e, parts, nparts) < 0) {
        call_unlink(call);
        return -1;
    }
    return 0;
}

static struct cluster_call *call_find(uint64_t id)
{
    /* Replies come back roughly in order: the match is near the head. */
    for (struct cluster_call *c = rc.calls; c; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

static void calls_expire(int64_t now)
{
    /* Every call has the same timeout, so the list is in deadline order. */
    while (rc.calls && rc.calls->deadline_ms <= now) {
        struct cluster_call *c = rc.calls;
        call_unlink(c);
        metrics.cluster_call_timeouts++;
        c->cb(c, NULL, NULL, 0);
    }
}

/* A peer went down: nobody will answer what was asked of it. */
static void calls_fail_target(const char *node)
{
    struct cluster_call *c = rc.calls, *next;
    for (; c; c = next) {
        next = c->next;
        if (strcmp(c->target, node) != 0)
            continue;
        call_unlink(c);
        c->cb(c, NULL, NULL, 0);
        next = rc.calls; /* the callback may have changed the list */
    }
}

/* PUB_REP, SYNC_REP, SHARD_REP: the reply to one of our calls. */
static void on_reply(const struct cluster_part *topic, const struct envelope *env,
                     const struct cluster_part *parts, int n)
{
    (void)topic;
    struct cluster_call *c = call_find(env->req_id);
    if (!c)
        return; /* timed out or cancelled already */
    call_unlink(c);
    c->cb(c, env, parts, n);
}

int cluster_forward_publish(const char *ch, size_t len, const char *data, size_t data_len,
                            uint8_t flags, const char *client, const char *attr, const char *key,
                            struct cluster_call *call, cluster_call_cb *cb, void *ud)
{
    const char *owner = cluster_owner_of(ch, len);
    if (!owner || owner == membership_self())
        return -1; /* no owner placed yet, or the map moved it here meanwhile */
    struct envelope e;
    cluster_env_init(&e, ENV_PUB_REQ);
    e.flags |= flags & ENV_FLAG_BINARY;
    e.seq = cluster_map_version(); /* who is behind, when two nodes disagree on the owner */
    struct cluster_part parts[5] = {
        {(const unsigned char *)ch, len},
        {(const unsigned char *)data, data_len},
        {(const unsigned char *)(client ? client : ""), client ? strlen(client) : 0},
        {(const unsigned char *)(key ? key : ""), key ? strlen(key) : 0},
        {(const unsigned char *)attr, attr ? strlen(attr) : 0},
    };
    /* The fifth frame only when there is an identity: anonymous publishes
     * keep the four-frame PUB_REQ of nodes before it. */
    if (call_send(call, owner, cb, ud, &e, parts, attr ? 5 : 4) < 0)
        return -1;
    metrics.cluster_forwarded_publishes++;
    return 0;
}

int cluster_call_node(const char *node, struct envelope *e, const struct cluster_part *parts,
                      int nparts, struct cluster_call *call, cluster_call_cb *cb, void *ud)
{
    return call_send(call, node, cb, ud, e, parts, nparts);
}

static int sync_req(const char *ch, size_t len, bool has_since, const char *epoch, uint64_t seq,
                    uint32_t limit, uint8_t flags, struct cluster_call *call, cluster_call_cb *cb,
                    void *ud);

int cluster_sync(const char *ch, size_t len, bool has_since, const char *epoch, uint64_t seq,
                 uint32_t limit, bool join, struct cluster_call *call, cluster_call_cb *cb,
                 void *ud)
{
    return sync_req(ch, len, has_since, epoch, seq, limit, join ? ENV_FLAG_JOIN : 0, call, cb, ud);
}

int cluster_sync_state(const char *ch, size_t len, struct cluster_call *call, cluster_call_cb *cb,
                       void *ud)
{
    return sync_req(ch, len, false, "", 0, CLUSTER_SYNC_ALL, ENV_FLAG_KEYS, call, cb, ud);
}

static int sync_req(const char *ch, size_t len, bool has_since, const char *epoch, uint64_t seq,
                    uint32_t limit, uint8_t flags, struct cluster_call *call, cluster_call_cb *cb,
                    void *ud)
{
    const char *owner = cluster_owner_of(ch, len);
    if (!owner || owner == membership_self())
        return -1; /* no owner placed yet, or the map moved it here meanwhile */
    struct envelope e;
    cluster_env_init(&e, ENV_SYNC_REQ);
    e.flags |= flags;
    if (has_since) {
        e.flags |= ENV_FLAG_HAS_SINCE;
        snprintf(e.epoch, sizeof e.epoch, "%s", epoch);
        e.seq = seq;
    }
    e.limit = limit;
    struct cluster_part p = {(const unsigned char *)ch, len};
    return call_send(call, owner, cb, ud, &e, &p, 1);
}

int cluster_shard_list(unsigned shard, const char *after, size_t after_len, uint32_t limit,
                       struct cluster_call *call, cluster_call_cb *cb, void *ud)
{
    uint64_t since;
    const char *owner;
    if (cluster_shard_role(shard, &since, &owner) == CLUSTER_ROLE_OWNER || !owner)
        return -1;
    struct envelope e;
    cluster_env_init(&e, ENV_SHARD_REQ);
    e.seq = shard;
    e.limit = limit;
    struct cluster_part p = {(const unsigned char *)after, after_len};
    return call_send(call, owner, cb, ud, &e, &p, 1);
}

void cluster_reply_status(const struct envelope *req, uint8_t type, enum chorus_err code,
                          const char *msg)
{
    struct envelope e;
    cluster_env_init(&e, type);
    e.req_id = req->req_id;
    e.status = (uint16_t)(code + 1);
    struct cluster_part p = {(const unsigned char *)msg, strlen(msg)};
    cluster_send_to(req->origin, &e, &p, 1);
}

enum chorus_err cluster_reply_code(const struct envelope *rep)
{
    if (!rep)
        return CHORUS_ERR_UNAVAILABLE;
    return rep->status ? (enum chorus_err)(rep->status - 1) : CHORUS_ERR__COUNT;
}

void cluster_reply_text(const struct envelope *rep, const struct cluster_part *parts, int n,
                        char *out, size_t cap)
{
    if (!rep) {
        snprintf(out, cap, "the channel's owner did not answer in time");
        return;
    }
    size_t l = n > 0 && parts[0].len < cap ? parts[0].len : 0;
    memcpy(out, l ? (const char *)parts[0].data : "", l);
    out[l] = '\0';
    if (!l)
        snprintf(out, cap, "the channel's owner refused the request");
}

void rpc_start(const struct config *cfg)
{
    rc.cfg = cfg;
    cluster_handle(ENV_PUB_REP, on_reply);
    cluster_handle(ENV_SYNC_REP, on_reply);
    cluster_handle(ENV_SHARD_REP, on_reply);
    cluster_handle(ENV_API_REP, on_reply);
    cluster_on_peer_down(calls_fail_target);
    cluster_on_tick(calls_expire);
}

void rpc_stop(void)
{
    /* Callers' calls die with their owners; just forget them. */
    while (rc.calls)
        call_unlink(rc.calls);
    const struct config *cfg = rc.cfg;
    memset(&rc, 0, sizeof rc);
    rc.cfg = cfg;
}
