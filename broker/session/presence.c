/* presence.c - per-channel members, counted once per user (see presence.h).
 *
 * Invariant: member->conns equals the number of pres_links pointing at it,
 * room->count the number of its members; a member with no link and a room
 * with no member are freed at once. */
#include "presence.h"
#include "auth_ws.h"
#include "channel.h"
#include "conn.h"
#include "frame.h"
#include "metrics.h"
#include "cluster.h"
#include "runtime.h"
#include "webhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>
#include <utlist.h>

struct pres_member {
    char *key;                    /* user id, or "\x01" + client id when anonymous */
    char *user;                   /* NULL when anonymous */
    char client[24];              /* anonymous: the connection's id */
    json_t *info;                 /* from the token of the first connection, may be NULL */
    uint32_t conns;               /* this node's connections */
    char nodes[PRESENCE_MAX_NODES][ENVELOPE_ID_MAX + 1]; /* other nodes where it is present */
    int64_t heard_ms[PRESENCE_MAX_NODES]; /* when each node last listed it (JOIN or FULL) */
    uint8_t nnodes;
    bool seen;                    /* scratch for a full refresh */
    UT_hash_handle hh;
};

/* One per channel with at least one member, here or on a node this one
 * hears (it follows the channel). */
struct pres_room {
    char *name;
    struct pres_member *members;  /* uthash by key */
    uint32_t count;
    uint32_t local;               /* members with a connection to this node */
    UT_hash_handle hh;
};

/* One per (connection, room); owned by the connection's list (utlist DL, so
 * a leave unlinks what its search found without a second walk). */
struct pres_link {
    struct pres_room *room;
    struct pres_member *member;
    struct pres_link *prev, *next;
};

static struct pres_room *rooms;

static void presence_send(const char *ch, bool join, const char *key, const json_t *member);
static void send_presence_full(const char *to_node, const char *ch);

static json_t *member_json(const struct pres_member *m)
{
    if (!m->user)
        return json_pack("{s:s}", "client", m->client);
    json_t *j = json_pack("{s:s}", "user", m->user);
    if (j && m->info)
        json_object_set(j, "info", m->info);
    return j;
}

/* {"op":"join"|"leave","ch","user","info"?} or {...,"client"} to every
 * subscriber of the channel except `except`. */
static void announce(const char *op, struct pres_room *room, struct pres_member *m,
                     struct conn *except)
{
    struct channel *ch = channel_find(room->name, strlen(room->name));
    if (!ch || !ch->nsubs)
        return;
    json_t *j = member_json(m);
    if (!j)
        return;
    json_object_set_new(j, "op", json_string(op));
    json_object_set_new(j, "ch", json_string(room->name));
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    struct frame *f = text ? frame_from(text, strlen(text)) : NULL;
    free(text);
    if (!f)
        return;
    for (uint32_t i = 0; i < ch->nsubs; i++)
        if (ch->subs[i]->conn != except)
            conn_enqueue(ch->subs[i]->conn, f);
    metrics.presence_events++;
    frame_unref(f);
}

/* member_added / member_removed for the backend. Sent by the node where
 * the member's connection joined or left, when no other node it hears
 * lists the member: once per cluster, except when the same user joins (or
 * leaves) on two nodes within the time presence takes to cross the
 * cluster, when both may send it. */
static void member_webhook(const char *event, struct pres_room *room, struct pres_member *m)
{
    if (webhook_enabled())
        webhook_emit(event, room->name, member_json(m));
}

static void member_key(struct conn *c, char *out, size_t cap, const struct auth_claims *who)
{
    if (who && who->user)
        snprintf(out, cap, "%s", who->user);
    else
        snprintf(out, cap, "\x01%s", c->id);
}

void presence_join(struct conn *c, struct channel *ch)
{
    if (!ch->ns->presence)
        return;
    struct pres_link *l;
    DL_FOREACH(c->presence.links, l)
        if (!strcmp(l->room->name, ch->name))
            return;

    struct pres_link *link = calloc(1, sizeof *link);
    if (!link)
        return;                    /* presence is best effort under memory pressure */
    struct pres_room *room;
    HASH_FIND_STR(rooms, ch->name, room);
    if (!room) {
        room = calloc(1, sizeof *room);
        if (!room || !(room->name = strdup(ch->name))) {
            free(room);
            free(link);
            return;
        }
        HASH_ADD_KEYPTR(hh, rooms, room->name, strlen(room->name), room);
    }

    const struct auth_claims *who = auth_ws_who(c);
    char key[AUTH_USER_MAX + 32];
    member_key(c, key, sizeof key, who);
    struct pres_member *m;
    HASH_FIND_STR(room->members, key, m);
    bool first = !m;
    if (!m) {
        m = calloc(1, sizeof *m);
        if (!m || !(m->key = strdup(key)) || (who && who->user && !(m->user = strdup(who->user)))) {
            if (m)
                free(m->key);
            free(m);
            free(link);
            if (!room->count) {
                HASH_DEL(rooms, room);
                free(room->name);
                free(room);
            }
            return;
        }
        snprintf(m->client, sizeof m->client, "%s", c->id);
        if (who && who->info)
            m->info = json_incref(who->info);
        HASH_ADD_KEYPTR(hh, room->members, m->key, strlen(m->key), m);
        room->count++;
    }
    m->conns++;
    link->room = room;
    link->member = m;
    DL_PREPEND(c->presence.links, link);
    if (m->conns == 1) {
        room->local++;
        json_t *mj = member_json(m);
        presence_send(room->name, true, m->key, mj);
        json_decref(mj);
    }
    if (first && room->count <= (uint32_t)ch->ns->presence_max_members)
        announce("join", room, m, c);
    if (first)
        member_webhook("member_added", room, m);
}

static void member_free(struct pres_member *m)
{
    json_decref(m->info);
    free(m->key);
    free(m->user);
    free(m);
}

/* The member is gone from every node: tell subscribers and forget it. The
 * caller releases the room when it is done with it. */
static void member_gone(struct pres_room *room, struct pres_member *m, struct conn *except,
                        int max_members)
{
    if (room->count <= (uint32_t)max_members)
        announce("leave", room, m, except);
    HASH_DEL(room->members, m);
    room->count--;
    member_free(m);
}

static void room_release(struct pres_room *room)
{
    if (room->count)
        return;
    HASH_DEL(rooms, room);
    free(room->name);
    free(room);
}

/* Drops link (already unlinked from its connection) and what it alone kept. */
static void drop_link(struct conn *c, struct pres_link *link, int max_members)
{
    struct pres_room *room = link->room;
    struct pres_member *m = link->member;
    free(link);
    if (--m->conns)
        return;
    presence_send(room->name, false, m->key, NULL);
    if (!--room->local)
        /* This node's list is empty now: say so as a full list too, which
         * also clears whatever a lost leave would have left on the others
         * (they no longer get this node's periodic lists). */
        send_presence_full(NULL, room->name);
    if (!m->nnodes) {
        member_webhook("member_removed", room, m);
        member_gone(room, m, c, max_members);
    }
    room_release(room);
}

void presence_leave(struct conn *c, struct channel *ch)
{
    struct pres_link *link;
    DL_FOREACH(c->presence.links, link) {
        if (!strcmp(link->room->name, ch->name)) {
            DL_DELETE(c->presence.links, link);
            drop_link(c, link, ch->ns->presence_max_members);
            return;
        }
    }
}

void presence_conn_closed(struct conn *c)
{
    struct pres_link *link;
    while ((link = c->presence.links)) {
        DL_DELETE(c->presence.links, link);
        const struct ns_opts *ns = config_ns_for(rt.cfg, link->room->name,
                                                 strlen(link->room->name));
        drop_link(c, link, ns->presence_max_members);
    }
}

json_t *presence_describe(const char *chname, size_t len)
{
    const struct ns_opts *ns = config_ns_for(rt.cfg, chname, len);
    if (!ns->presence)
        return NULL;
    struct pres_room *room;
    HASH_FIND(hh, rooms, chname, len, room);
    uint32_t count = room ? room->count : 0;
    json_t *j = json_pack("{s:s%, s:I}", "ch", chname, len, "count", (json_int_t)count);
    if (j && count <= (uint32_t)ns->presence_max_members) {
        json_t *members = json_array();
        for (struct pres_member *m = room ? room->members : NULL; m; m = m->hh.next)
            json_array_append_new(members, member_json(m));
        json_object_set_new(j, "members", members);
    }
    return j;
}

void presence_op(struct conn *c, const struct codec_request *req)
{
    json_t *d = presence_describe(req->ch, req->ch_len);
    if (!d) {
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_FORBIDDEN,
                      "presence is not enabled for this namespace");
        return;
    }
    json_object_set_new(d, "op", json_string("presence"));
    if (req->has_id)
        json_object_set_new(d, "id", json_integer(req->id));
    conn_send_json(c, d);
}

void presence_free(void)
{
    struct pres_room *r, *rtmp;
    HASH_ITER(hh, rooms, r, rtmp) {
        struct pres_member *m, *mtmp;
        HASH_ITER(hh, r->members, m, mtmp) {
            HASH_DEL(r->members, m);
            member_free(m);
        }
        HASH_DEL(rooms, r);
        free(r->name);
        free(r);
    }
}

/* ------------------------------------------------------------- the cluster */

static struct pres_room *room_get(const char *name)
{
    struct pres_room *room;
    HASH_FIND_STR(rooms, name, room);
    if (room)
        return room;
    room = calloc(1, sizeof *room);
    if (!room || !(room->name = strdup(name))) {
        free(room);
        return NULL;
    }
    HASH_ADD_KEYPTR(hh, rooms, room->name, strlen(room->name), room);
    return room;
}

static int node_index(const struct pres_member *m, const char *node)
{
    for (int i = 0; i < m->nnodes; i++)
        if (!strcmp(m->nodes[i], node))
            return i;
    return -1;
}

static void remote_join(struct pres_room *room, const char *node, const char *key,
                        const json_t *mj, int max_members)
{
    struct pres_member *m;
    HASH_FIND_STR(room->members, key, m);
    bool first = !m;
    if (!m) {
        const char *user = json_string_value(json_object_get(mj, "user"));
        const char *client = json_string_value(json_object_get(mj, "client"));
        m = calloc(1, sizeof *m);
        if (!m || !(m->key = strdup(key)) || (user && !(m->user = strdup(user)))) {
            if (m)
                free(m->key);
            free(m);
            return;
        }
        snprintf(m->client, sizeof m->client, "%s", client ? client : "");
        json_t *info = json_object_get(mj, "info");
        if (info)
            m->info = json_incref(info);
        HASH_ADD_KEYPTR(hh, room->members, m->key, strlen(m->key), m);
        room->count++;
    }
    int i = node_index(m, node);
    if (i < 0 && m->nnodes < PRESENCE_MAX_NODES) {
        i = m->nnodes++;
        snprintf(m->nodes[i], sizeof m->nodes[0], "%s", node);
    }
    if (i >= 0)
        m->heard_ms[i] = runtime_now_ms();
    if (first && room->count <= (uint32_t)max_members)
        announce("join", room, m, NULL);
}

static void remote_leave(struct pres_room *room, struct pres_member *m, const char *node,
                         int max_members)
{
    int i = node_index(m, node);
    if (i < 0)
        return;
    if (i != m->nnodes - 1) {
        memcpy(m->nodes[i], m->nodes[m->nnodes - 1], sizeof m->nodes[0]);
        m->heard_ms[i] = m->heard_ms[m->nnodes - 1];
    }
    m->nnodes--;
    if (!m->conns && !m->nnodes)
        member_gone(room, m, NULL, max_members);
}

static void presence_remote(const char *node, const char *name, size_t len, int op,
                     const struct cluster_part *parts, int n)
{
    char chname[CODEC_CHANNEL_MAX + 1];
    memcpy(chname, name, len);
    chname[len] = '\0';
    const struct ns_opts *ns = config_ns_for(rt.cfg, chname, len);
    if (!ns->presence)
        return;
    struct pres_room *room = room_get(chname);
    if (!room)
        return;
    int max = ns->presence_max_members;
    char key[AUTH_USER_MAX + 32];

    if (op == PRESENCE_FULL) {
        /* The node's whole member list: anything of its not listed is gone. */
        for (struct pres_member *m = room->members; m; m = m->hh.next)
            m->seen = node_index(m, node) < 0;
    }
    for (int i = 0; i + 1 < n; i += 2) {
        if (parts[i].len == 0 || parts[i].len >= sizeof key)
            continue;
        memcpy(key, parts[i].data, parts[i].len);
        key[parts[i].len] = '\0';
        if (op == PRESENCE_LEAVE) {
            struct pres_member *m;
            HASH_FIND_STR(room->members, key, m);
            if (m)
                remote_leave(room, m, node, max);
            continue;
        }
        json_error_t jerr;
        json_t *mj = json_loadb((const char *)parts[i + 1].data, parts[i + 1].len, 0, &jerr);
        if (json_is_object(mj))
            remote_join(room, node, key, mj, max);
        json_decref(mj);
        struct pres_member *m;
        HASH_FIND_STR(room->members, key, m);
        if (m)
            m->seen = true;
    }
    if (op == PRESENCE_FULL) {
        struct pres_member *m, *tmp;
        HASH_ITER(hh, room->members, m, tmp) {
            if (!m->seen)
                remote_leave(room, m, node, max);
        }
    }
    room_release(room);
}

static void presence_node_down(const char *node)
{
    struct pres_room *room, *rtmp;
    HASH_ITER(hh, rooms, room, rtmp) {
        const struct ns_opts *ns = config_ns_for(rt.cfg, room->name, strlen(room->name));
        struct pres_member *m, *tmp;
        HASH_ITER(hh, room->members, m, tmp) {
            remote_leave(room, m, node, ns->presence_max_members);
        }
        room_release(room);
    }
}

static int presence_local_members(const char *name, struct cluster_part **out, char ***texts)
{
    struct pres_room *room;
    HASH_FIND_STR(rooms, name, room);
    int n = 0;
    *out = NULL;
    *texts = NULL;
    if (!room)
        return 0;
    for (struct pres_member *m = room->members; m; m = m->hh.next)
        n += m->conns > 0;
    if (!n)
        return 0;
    struct cluster_part *parts = calloc((size_t)n * 2, sizeof *parts);
    char **strs = calloc((size_t)n, sizeof *strs);
    if (!parts || !strs) {
        free(parts);
        free(strs);
        return 0;
    }
    int i = 0;
    for (struct pres_member *m = room->members; m; m = m->hh.next) {
        if (!m->conns)
            continue;
        json_t *mj = member_json(m);
        strs[i] = mj ? json_dumps(mj, JSON_COMPACT) : NULL;
        json_decref(mj);
        parts[2 * i] = (struct cluster_part){(const unsigned char *)m->key, strlen(m->key)};
        parts[2 * i + 1] = (struct cluster_part){(const unsigned char *)(strs[i] ? strs[i] : "{}"),
                                                 strs[i] ? strlen(strs[i]) : 2};
        i++;
    }
    *out = parts;
    *texts = strs;
    return n;
}

static void presence_each_local_room(void (*fn)(const char *name, void *ud), void *ud)
{
    for (struct pres_room *r = rooms; r; r = r->hh.next)
        if (r->local)
            fn(r->name, ud);
}

/* ----------------------------------------------------------------- wire */

/* Deltas can be lost at the high-water mark; full lists every few seconds
 * converge. A node that lists a member no more for PRESENCE_EXPIRE_MS (its
 * leave and its later full lists were all lost, or it stopped sending them
 * because its last member left) is taken to have dropped it. */
#define PRESENCE_REFRESH_MS 5000
#define PRESENCE_EXPIRE_MS (3 * PRESENCE_REFRESH_MS)

static int64_t last_refresh_ms;

/* ENV_PRES [channel, (key, member)...] {status = op}, on the channel's topic
 * or, when to_node is set, to that node only. */
static void send_presence(const char *to_node, const char *ch, int op,
                          const struct cluster_part *members, int n)
{
    if (!cluster_enabled())
        return;
    struct cluster_part *parts = calloc((size_t)n + 1, sizeof *parts);
    if (!parts)
        return;
    parts[0] = (struct cluster_part){(const unsigned char *)ch, strlen(ch)};
    for (int i = 0; i < n; i++)
        parts[1 + i] = members[i];
    struct envelope e;
    cluster_env_init(&e, ENV_PRES);
    e.status = (uint16_t)op;
    if (to_node)
        cluster_send_to(to_node, &e, parts, n + 1);
    else
        cluster_send_channel(ch, strlen(ch), &e, parts, n + 1);
    free(parts);
}

/* Announces a local change of `key` in channel ch to the nodes following it
 * (member is the member's JSON, for joins). */
static void presence_send(const char *ch, bool join, const char *key, const json_t *member)
{
    if (!cluster_enabled())
        return;
    char *text = member ? json_dumps(member, JSON_COMPACT) : NULL;
    struct cluster_part kv[2] = {{(const unsigned char *)key, strlen(key)},
                                 {(const unsigned char *)(text ? text : "{}"), text ? strlen(text) : 2}};
    send_presence(NULL, ch, join ? PRESENCE_JOIN : PRESENCE_LEAVE, kv, 2);
    free(text);
}

/* This node's full member list of a room, to its followers or one node. */
static void send_presence_full(const char *to_node, const char *ch)
{
    struct cluster_part *members;
    char **texts;
    int n = presence_local_members(ch, &members, &texts);
    send_presence(to_node, ch, PRESENCE_FULL, members, 2 * n);
    for (int i = 0; i < n; i++)
        free(texts[i]);
    free(texts);
    free(members);
}

static void refresh_one(const char *name, void *ud)
{
    (void)ud;
    send_presence_full(NULL, name);
}

static void on_pres(const struct cluster_part *topic, const struct envelope *env,
                    const struct cluster_part *parts, int n)
{
    (void)topic;
    if (n < 1 || !codec_channel_valid((const char *)parts[0].data, parts[0].len))
        return;
    const char *name = (const char *)parts[0].data;
    if (env->status == PRESENCE_ASK) {
        char ch[CODEC_CHANNEL_MAX + 1];
        memcpy(ch, name, parts[0].len);
        ch[parts[0].len] = '\0';
        send_presence_full(env->origin, ch);
        return;
    }
    presence_remote(env->origin, name, parts[0].len, env->status, parts + 1, n - 1);
}

/* This node stopped following the room (its last local subscriber left):
 * it will hear no more joins, leaves or lists of the others, so what it holds
 * of them would go stale. It forgets them; nobody here is left to tell. */
static void forget_remote(const char *name)
{
    struct pres_room *room;
    HASH_FIND_STR(rooms, name, room);
    if (!room)
        return;
    struct pres_member *m, *tmp;
    HASH_ITER(hh, room->members, m, tmp) {
        m->nnodes = 0;
        if (m->conns)
            continue;
        HASH_DEL(room->members, m);
        room->count--;
        member_free(m);
    }
    room_release(room);
}

/* Local subscribers appeared: learn who is already here on other nodes (the
 * room starts from their lists, the union). They left: stop holding others'. */
static void on_interest(struct channel *ch, bool on)
{
    if (!ch->ns->presence)
        return;
    if (on)
        send_presence(NULL, ch->name, PRESENCE_ASK, NULL, 0);
    else
        forget_remote(ch->name);
}

/* Drops every node's listing of a member that node has not confirmed for
 * PRESENCE_EXPIRE_MS. Once per refresh period: O(remote listings). */
static void expire_remote(int64_t now)
{
    struct pres_room *room, *rtmp;
    HASH_ITER(hh, rooms, room, rtmp) {
        const struct ns_opts *ns = config_ns_for(rt.cfg, room->name, strlen(room->name));
        struct pres_member *m, *tmp;
        HASH_ITER(hh, room->members, m, tmp) {
            /* Downwards: remote_leave moves the last listing into slot i. */
            for (int i = m->nnodes - 1; i >= 0; i--) {
                if (now - m->heard_ms[i] < PRESENCE_EXPIRE_MS)
                    continue;
                char node[ENVELOPE_ID_MAX + 1];
                memcpy(node, m->nodes[i], sizeof node);
                bool last = m->nnodes == 1 && !m->conns;
                remote_leave(room, m, node, ns->presence_max_members);
                if (last)
                    break; /* m is freed */
            }
        }
        room_release(room);
    }
}

static void on_tick(int64_t now)
{
    if (now - last_refresh_ms >= PRESENCE_REFRESH_MS) {
        last_refresh_ms = now;
        presence_each_local_room(refresh_one, NULL);
        expire_remote(now);
    }
}

void presence_start(void)
{
    last_refresh_ms = 0;
    cluster_handle(ENV_PRES, on_pres);
    cluster_on_peer_down(presence_node_down);
    cluster_on_tick(on_tick);
    cluster_on_interest(on_interest);
}
