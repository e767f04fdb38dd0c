/* shardmap.c - the committed shard map and its JSON form (shardmap.h). */
#include "shardmap.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

void shardmap_init(struct shardmap *m)
{
    memset(m, 0, sizeof *m);
    for (int i = 0; i < SHARDMAP_SHARDS; i++) {
        m->s[i].owner = -1;
        m->s[i].cont = SHARDMAP_NEVER;
        m->s[i].handoff = -1;
    }
}

unsigned shardmap_shard_of(const char *ch, size_t len)
{
    unsigned h;
    HASH_JEN(ch, len, h);
    return h % SHARDMAP_SHARDS;
}

int shardmap_node(struct shardmap *m, const char *ref)
{
    for (int i = 0; i < m->nnodes; i++)
        if (!strcmp(m->nodes[i], ref))
            return i;
    if (m->nnodes >= SHARDMAP_MAX_NODES || strlen(ref) > SHARDMAP_REF_MAX)
        return -1;
    snprintf(m->nodes[m->nnodes], sizeof m->nodes[0], "%s", ref);
    return m->nnodes++;
}

void shardmap_node_id(const char *ref, char *out, size_t cap)
{
    const char *hash = strchr(ref, '#');
    size_t n = hash ? (size_t)(hash - ref) : strlen(ref);
    snprintf(out, cap, "%.*s", (int)n, ref);
}

int shardmap_backup_pos(const struct shardmap *m, unsigned shard, const char *ref)
{
    const struct shard_assign *a = &m->s[shard];
    for (int k = 0; k < a->nbackups; k++)
        if (!strcmp(m->nodes[a->backup[k]], ref))
            return k;
    return -1;
}

void shardmap_compact(struct shardmap *m)
{
    int remap[SHARDMAP_MAX_NODES], used[SHARDMAP_MAX_NODES] = {0};
    for (int i = 0; i < SHARDMAP_SHARDS; i++) {
        if (m->s[i].owner >= 0)
            used[m->s[i].owner] = 1;
        for (int k = 0; k < m->s[i].nbackups; k++)
            used[m->s[i].backup[k]] = 1;
    }
    int n = 0;
    for (int j = 0; j < m->nnodes; j++) {
        remap[j] = used[j] ? n : -1;
        if (used[j]) {
            if (n != j)
                memcpy(m->nodes[n], m->nodes[j], sizeof m->nodes[0]);
            n++;
        }
    }
    m->nnodes = n;
    for (int i = 0; i < SHARDMAP_SHARDS; i++) {
        if (m->s[i].owner >= 0)
            m->s[i].owner = remap[m->s[i].owner];
        if (m->s[i].handoff >= 0)
            m->s[i].handoff = remap[m->s[i].handoff];
        for (int k = 0; k < m->s[i].nbackups; k++)
            m->s[i].backup[k] = remap[m->s[i].backup[k]];
    }
}

/* ------------------------------------------------------------------ JSON */

/* Versions and gens are below 2^53 in practice; JSON integers carry them. */
static json_t *map_json(const struct shardmap *m)
{
    json_t *nodes = json_array(), *shards = json_array();
    for (int j = 0; j < m->nnodes; j++)
        json_array_append_new(nodes, json_string(m->nodes[j]));
    for (int i = 0; i < SHARDMAP_SHARDS; i++) {
        const struct shard_assign *a = &m->s[i];
        json_t *b = json_array();
        for (int k = 0; k < a->nbackups; k++)
            json_array_append_new(b, json_pack("[iI]", a->backup[k], (json_int_t)a->since[k]));
        json_t *sh = json_pack("[IiIo]", (json_int_t)a->gen, a->owner,
                               a->cont == SHARDMAP_NEVER ? (json_int_t)-1 : (json_int_t)a->cont, b);
        if (sh && a->handoff >= 0)
            json_array_append_new(sh, json_integer(a->handoff)); /* absent: none */
        json_array_append_new(shards, sh);
    }
    return json_pack("{sIsoso}", "v", (json_int_t)m->version, "nodes", nodes, "s", shards);
}

static int map_from_json(struct shardmap *m, json_t *j)
{
    json_t *nodes = json_object_get(j, "nodes"), *shards = json_object_get(j, "s");
    json_int_t v;
    if (!json_is_array(nodes) || !json_is_array(shards) ||
        json_array_size(nodes) > SHARDMAP_MAX_NODES || json_array_size(shards) != SHARDMAP_SHARDS ||
        json_unpack(j, "{sI}", "v", &v) < 0 || v < 0)
        return -1;
    struct shardmap out;
    shardmap_init(&out);
    out.version = (uint64_t)v;
    size_t idx;
    json_t *e;
    json_array_foreach(nodes, idx, e) {
        const char *ref = json_string_value(e);
        if (!ref || strlen(ref) > SHARDMAP_REF_MAX)
            return -1;
        snprintf(out.nodes[out.nnodes++], sizeof out.nodes[0], "%s", ref);
    }
    json_array_foreach(shards, idx, e) {
        struct shard_assign *a = &out.s[idx];
        json_int_t gen, cont;
        json_t *b;
        if (json_unpack(e, "[IiIo]", &gen, &a->owner, &cont, &b) < 0 || !json_is_array(b) ||
            json_array_size(b) > SHARDMAP_MAX_BACKUPS || a->owner < -1 || a->owner >= out.nnodes)
            return -1;
        a->gen = (uint64_t)gen;
        a->cont = cont < 0 ? SHARDMAP_NEVER : (uint64_t)cont;
        json_t *h = json_array_get(e, 4);
        if (h && (!json_is_integer(h) || json_integer_value(h) < -1 ||
                  json_integer_value(h) >= out.nnodes))
            return -1;
        a->handoff = h ? (int)json_integer_value(h) : -1;
        size_t k;
        json_t *be;
        json_array_foreach(b, k, be) {
            json_int_t since;
            int node;
            if (json_unpack(be, "[iI]", &node, &since) < 0 || node < 0 || node >= out.nnodes)
                return -1;
            a->backup[k] = node;
            a->since[k] = (uint64_t)since;
        }
        a->nbackups = (int)json_array_size(b);
    }
    *m = out;
    return 0;
}

static char *dump(json_t *j, size_t *len)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (s)
        *len = strlen(s);
    return s;
}

char *shardmap_encode(const struct shardmap *m, size_t *len) { return dump(map_json(m), len); }

int shardmap_decode(struct shardmap *m, const char *buf, size_t len)
{
    json_t *j = json_loadb(buf, len, 0, NULL);
    int rc = j ? map_from_json(m, j) : -1;
    json_decref(j);
    return rc;
}

char *shardmap_entry_encode(uint64_t base, const struct shardmap *next, size_t *len)
{
    return dump(json_pack("{sIso}", "base", (json_int_t)base, "map", map_json(next)), len);
}

bool shardmap_entry_apply(struct shardmap *m, const char *buf, size_t len)
{
    json_t *j = json_loadb(buf, len, 0, NULL);
    json_int_t base;
    bool ok = false;
    struct shardmap next;
    if (j && json_unpack(j, "{sI}", "base", &base) == 0 && (uint64_t)base == m->version &&
        map_from_json(&next, json_object_get(j, "map")) == 0 && next.version == m->version + 1) {
        *m = next;
        ok = true;
    }
    json_decref(j);
    return ok;
}
