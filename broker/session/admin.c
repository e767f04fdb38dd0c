/* admin.c - the server API's operations on this node, and their gathering
 * from every node of the cluster (admin.h). Each node answers for its own
 * connections and channels only; the node that was called merges. */
#include "admin.h"
#include "channel.h"
#include "cluster.h"
#include "codec.h"
#include "conn.h"
#include "metrics.h"
#include "ops.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_PEERS_MAX 64
/* Channels one answer lists at most unless the request's "limit" says
 * otherwise (up to ADMIN_CHANNELS_LIMIT); past it the answer says
 * "truncated". */
#define ADMIN_CHANNELS_DEFAULT 10000
#define ADMIN_CHANNELS_LIMIT 1000000

static int64_t started_mono_ms;

/* ------------------------------------------------------------ checking */

static const char *str(const json_t *req, const char *key)
{
    return json_string_value(json_object_get(req, key));
}

/* NULL when req is an operation this node can run, else why not. */
static const char *check(const json_t *req)
{
    const char *op = str(req, "op");
    if (!op)
        return "'op' is missing";
    if (!strcmp(op, "info"))
        return NULL;
    if (!strcmp(op, "channels")) {
        const json_t *p = json_object_get(req, "prefix"), *l = json_object_get(req, "limit");
        if (p && (!json_is_string(p) || json_string_length(p) > CODEC_CHANNEL_MAX))
            return "'prefix' must be a string of at most 255 bytes";
        if (l && (!json_is_integer(l) || json_integer_value(l) < 1 ||
                  json_integer_value(l) > ADMIN_CHANNELS_LIMIT))
            return "'limit' must be an integer in [1, 1000000]";
        return NULL;
    }
    if (strcmp(op, "disconnect") && strcmp(op, "unsubscribe") && strcmp(op, "subscribe"))
        return "unknown operation";
    const json_t *u = json_object_get(req, "user"), *r = json_object_get(req, "reason");
    if (!json_is_string(u) || json_string_length(u) < 1 || json_string_length(u) > 128)
        return "'user' must be a string of 1-128 bytes";
    if (r && (!json_is_string(r) || json_string_length(r) > 123))
        return "'reason' must be a string of at most 123 bytes (a close frame's limit)";
    if (strcmp(op, "disconnect") != 0) {
        const json_t *ch = json_object_get(req, "ch");
        if (!json_is_string(ch) || !codec_channel_valid(json_string_value(ch), json_string_length(ch)))
            return "'ch' must be 1-255 bytes of [A-Za-z0-9_.:@/-]";
    }
    return NULL;
}

/* ------------------------------------------------------------ this node */

static const char *node_status(void)
{
    if (rt.shutting_down)
        return "shutting_down";
    if (rt.leaving)
        return "leaving";
    if (rt.draining)
        return "draining";
    if (!cluster_ready())
        return cluster_lease_lost_ms() > 0 ? "cut_off" : "starting";
    return "ok";
}

json_t *admin_peers_json(void)
{
    json_t *peers = json_array();
    struct cluster_peer_info p[ADMIN_PEERS_MAX];
    int n = cluster_enabled() ? cluster_peers(p, ADMIN_PEERS_MAX) : 0;
    int64_t now = runtime_now_ms();
    for (int i = 0; i < n; i++)
        json_array_append_new(peers, json_pack("{s:s, s:s, s:I}", "node", p[i].node, "state",
                                               p[i].up ? "up" : "down", "last_seen_ms_ago",
                                               (json_int_t)(now - p[i].last_seen_ms)));
    return peers;
}

static json_t *info_local(void)
{
    json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:I, s:I}", "node", rt.cfg->node_id, "version",
                          CHORUS_VERSION, "uptime_s",
                          (json_int_t)((runtime_mono_ms() - started_mono_ms) / 1000), "status",
                          node_status(), "connections", (json_int_t)metrics.connections,
                          "channels", (json_int_t)metrics.channels);
    json_t *peers = admin_peers_json();
    json_object_set_new(j, "peers", peers);
    return j;
}

struct list_ctx {
    const char *prefix;
    size_t plen;
    json_int_t limit;
    json_t *out;          /* {"ch": subscribers} */
    bool truncated;
};

static void list_one(struct channel *ch, void *ud)
{
    struct list_ctx *l = ud;
    if (!ch->nsubs || (l->plen && (ch->len < l->plen || memcmp(ch->name, l->prefix, l->plen))))
        return;
    if ((json_int_t)json_object_size(l->out) >= l->limit) {
        l->truncated = true;
        return;
    }
    json_object_set_new(l->out, ch->name, json_integer(ch->nsubs));
}

static json_t *channels_local(const json_t *req)
{
    const json_t *lim = json_object_get(req, "limit");
    struct list_ctx l = {str(req, "prefix"), 0, lim ? json_integer_value(lim) : ADMIN_CHANNELS_DEFAULT,
                         json_object(), false};
    l.plen = l.prefix ? strlen(l.prefix) : 0;
    channel_foreach(list_one, &l);
    json_t *j = json_pack("{s:s, s:o}", "node", rt.cfg->node_id, "channels", l.out);
    if (l.truncated)
        json_object_set_new(j, "truncated", json_true());
    return j;
}

struct user_ctx {
    const json_t *req;
    const char *op, *user;
    int done;
};

static void user_one(struct conn *c, void *ud)
{
    struct user_ctx *u = ud;
    const struct auth_claims *who = auth_ws_who(c);
    if (!who || c->closing || strcmp(who->user, u->user) != 0)
        return;
    const json_t *chj = json_object_get(u->req, "ch");
    const char *ch = json_string_value(chj), *reason = str(u->req, "reason");
    if (u->op[0] == 'd') {
        conn_close_reason(c, CHORUS_CLOSE_DISCONNECTED,
                          reason ? reason : CHORUS_CLOSE_REASON_DISCONNECTED);
        u->done++;
    } else if (u->op[0] == 'u') {
        u->done += ops_server_unsubscribe(c, ch, json_string_length(chj),
                                          reason ? reason : "unsubscribed by the server") > 0;
    } else {
        u->done += ops_server_subscribe(c, ch, json_string_length(chj), true) > 0;
    }
}

/* Runs a checked request on this node: {"node", what it did}. */
static json_t *run_local(const json_t *req)
{
    const char *op = str(req, "op");
    if (!strcmp(op, "info"))
        return info_local();
    if (!strcmp(op, "channels"))
        return channels_local(req);
    struct user_ctx u = {req, op, str(req, "user"), 0};
    conn_foreach(user_one, &u);
    const char *key = op[0] == 'd' ? "disconnected" : op[0] == 'u' ? "unsubscribed" : "subscribed";
    return json_pack("{s:s, s:i}", "node", rt.cfg->node_id, key, u.done);
}

/* ENV_API_REQ [request JSON] -> ENV_API_REP [what this node did, JSON] */
static void on_api_req(const struct cluster_part *topic, const struct envelope *req,
                       const struct cluster_part *parts, int n)
{
    (void)topic;
    json_t *r = n == 1 ? json_loadb((const char *)parts[0].data, parts[0].len, 0, NULL) : NULL;
    const char *why = r ? check(r) : "malformed server API request";
    if (why) {
        cluster_reply_status(req, ENV_API_REP, CHORUS_ERR_BAD_REQUEST, why);
        json_decref(r);
        return;
    }
    json_t *res = run_local(r);
    json_decref(r);
    char *text = res ? json_dumps(res, JSON_COMPACT) : NULL;
    json_decref(res);
    if (!text) {
        cluster_reply_status(req, ENV_API_REP, CHORUS_ERR_UNAVAILABLE, "out of memory");
        return;
    }
    struct envelope e;
    cluster_env_init(&e, ENV_API_REP);
    e.req_id = req->req_id;
    struct cluster_part p = {(const unsigned char *)text, strlen(text)};
    cluster_send_to(req->origin, &e, &p, 1);
    free(text);
}

/* ------------------------------------------------------------ gathering */

struct peer_call {
    struct cluster_call call;
    struct admin_call *a;
};

struct admin_call {
    admin_done_cb *done;
    void *ud;
    json_t *req;
    json_t *parts;        /* each node's answer */
    json_t *missing;      /* ids of the nodes that did not answer */
    int waiting, npeers;
    struct peer_call peers[ADMIN_PEERS_MAX];
};

static int by_node(const void *a, const void *b)
{
    return strcmp(str(*(json_t *const *)a, "node"), str(*(json_t *const *)b, "node"));
}

static int by_ch(const void *a, const void *b)
{
    return strcmp(str(*(json_t *const *)a, "ch"), str(*(json_t *const *)b, "ch"));
}

/* An array of json values, sorted by cmp. */
static json_t *sorted(json_t *arr, int (*cmp)(const void *, const void *))
{
    size_t n = json_array_size(arr);
    json_t **v = malloc((n ? n : 1) * sizeof *v);
    json_t *out = json_array();
    if (!v)
        return arr;
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(arr, i);
    qsort(v, n, sizeof *v, cmp);
    for (size_t i = 0; i < n; i++)
        json_array_append(out, v[i]);
    free(v);
    json_decref(arr);
    return out;
}

static json_t *merge(struct admin_call *a)
{
    const char *op = str(a->req, "op");
    json_t *answer;
    if (!strcmp(op, "info")) {
        answer = json_pack("{s:o}", "nodes", sorted(json_incref(a->parts), by_node));
    } else if (!strcmp(op, "channels")) {
        json_t *sum = json_object(), *arr = json_array();
        bool truncated = false;
        size_t i;
        json_t *part;
        json_array_foreach(a->parts, i, part) {
            const char *ch;
            json_t *v;
            json_object_foreach(json_object_get(part, "channels"), ch, v) {
                json_int_t had = json_integer_value(json_object_get(sum, ch));
                json_object_set_new(sum, ch, json_integer(had + json_integer_value(v)));
            }
            truncated |= json_is_true(json_object_get(part, "truncated"));
        }
        const char *ch;
        json_t *v;
        json_object_foreach(sum, ch, v)
            json_array_append_new(arr, json_pack("{s:s, s:O}", "ch", ch, "subscribers", v));
        json_decref(sum);
        answer = json_pack("{s:o}", "channels", sorted(arr, by_ch));
        if (truncated)
            json_object_set_new(answer, "truncated", json_true());
    } else {
        const char *key = op[0] == 'd' ? "disconnected" : op[0] == 'u' ? "unsubscribed" : "subscribed";
        json_int_t total = 0;
        size_t i;
        json_t *part;
        json_array_foreach(a->parts, i, part)
            total += json_integer_value(json_object_get(part, key));
        answer = json_pack("{s:I}", key, total);
    }
    if (answer)
        json_object_set(answer, "missing", a->missing);
    return answer;
}

static void finish(struct admin_call *a)
{
    json_t *answer = merge(a);
    admin_done_cb *done = a->done;
    void *ud = a->ud;
    json_decref(a->req);
    json_decref(a->parts);
    json_decref(a->missing);
    free(a);
    done(answer, ud);
}

static void on_peer(struct cluster_call *call, const struct envelope *rep,
                    const struct cluster_part *parts, int n)
{
    struct peer_call *pc = (struct peer_call *)call;
    struct admin_call *a = pc->a;
    json_t *part = rep && !rep->status && n == 1
                       ? json_loadb((const char *)parts[0].data, parts[0].len, 0, NULL)
                       : NULL;
    if (json_is_object(part))
        json_array_append_new(a->parts, part);
    else {
        json_decref(part);
        json_array_append_new(a->missing, json_string(call->target));
    }
    if (--a->waiting == 0)
        finish(a);
}

int admin_run(const json_t *req, admin_done_cb *done, void *ud, struct admin_call **out,
              char *err, size_t errlen)
{
    *out = NULL;
    const char *why = check(req);
    if (why) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    char *text = json_dumps(req, JSON_COMPACT);
    struct admin_call *a = text ? calloc(1, sizeof *a) : NULL;
    if (!a) {
        free(text);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    a->done = done;
    a->ud = ud;
    a->req = json_deep_copy(req);
    a->parts = json_array();
    a->missing = json_array();
    json_array_append_new(a->parts, run_local(req));

    struct cluster_peer_info p[ADMIN_PEERS_MAX];
    int n = cluster_enabled() ? cluster_peers(p, ADMIN_PEERS_MAX) : 0;
    struct cluster_part payload = {(const unsigned char *)text, strlen(text)};
    a->waiting = 1; /* held until every call is sent, so none can finish it early */
    for (int i = 0; i < n; i++) {
        struct peer_call *pc = &a->peers[a->npeers];
        pc->a = a;
        struct envelope e;
        cluster_env_init(&e, ENV_API_REQ);
        if (!p[i].up || cluster_call_node(p[i].node, &e, &payload, 1, &pc->call, on_peer, pc) < 0) {
            json_array_append_new(a->missing, json_string(p[i].node));
            continue;
        }
        a->npeers++;
        a->waiting++;
    }
    free(text);
    if (--a->waiting == 0) {
        finish(a);
        return 0;
    }
    *out = a;
    return 0;
}

void admin_cancel(struct admin_call *a)
{
    if (!a)
        return;
    for (int i = 0; i < a->npeers; i++)
        cluster_call_cancel(&a->peers[i].call);
    json_decref(a->req);
    json_decref(a->parts);
    json_decref(a->missing);
    free(a);
}

void admin_start(void)
{
    started_mono_ms = runtime_mono_ms();
    if (cluster_enabled())
        cluster_handle(ENV_API_REQ, on_api_req);
}
