/* codec.c - decoding of client requests and encoding of msg frames.
 *
 * Every check a peer could trip returns an error; asserts are not used on
 * decoded input. */
#include "codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    enum codec_op op;
    bool needs_ch;
} op_table[] = {
    {"sub", CODEC_OP_SUB, true},
    {"unsub", CODEC_OP_UNSUB, true},
    {"pub", CODEC_OP_PUB, true},
    {"history", CODEC_OP_HISTORY, true},
    {"presence", CODEC_OP_PRESENCE, true},
    {"ping", CODEC_OP_PING, false},
    {"auth", CODEC_OP_AUTH, false},
};

/* 256-entry table: which bytes may appear in a channel name. */
static bool channel_byte_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == ':' || c == '@' || c == '/' || c == '-';
}

bool codec_channel_valid(const char *name, size_t len)
{
    if (!name || len == 0 || len > CODEC_CHANNEL_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!channel_byte_ok((unsigned char)name[i]))
            return false;
    return true;
}

size_t codec_channel_ns_len(const char *name, size_t len)
{
    const char *colon = memchr(name, ':', len);
    return colon ? (size_t)(colon - name) : 0;
}

static bool fail(struct codec_error *err, enum chorus_err code, const char *fmt, const char *arg)
{
    err->code = code;
    snprintf(err->msg, sizeof err->msg, fmt, arg ? arg : "");
    return false;
}

static bool decode_since(json_t *since, struct codec_request *req, struct codec_error *err)
{
    json_t *epoch = json_object_get(since, "epoch");
    json_t *seq = json_object_get(since, "seq");

    if (!json_is_object(since) || !json_is_string(epoch) || !json_is_integer(seq))
        return fail(err, CHORUS_ERR_BAD_REQUEST,
                    "'since' must be {\"epoch\": string, \"seq\": integer}", NULL);
    size_t elen = json_string_length(epoch);
    if (elen > CODEC_EPOCH_MAX || json_integer_value(seq) < 0 ||
        memchr(json_string_value(epoch), '\0', elen))
        return fail(err, CHORUS_ERR_BAD_REQUEST, "'since' epoch or seq out of range", NULL);
    memcpy(req->since_epoch, json_string_value(epoch), elen);
    req->since_epoch[elen] = '\0';
    req->since_seq = (uint64_t)json_integer_value(seq);
    req->has_since = true;
    return true;
}

bool codec_decode_request(const char *buf, size_t len, struct codec_request *req,
                          struct codec_error *err)
{
    json_error_t jerr;

    memset(req, 0, sizeof *req);
    /* Duplicate keys would let two readers see two different requests. */
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root)
        return fail(err, CHORUS_ERR_BAD_REQUEST, "invalid JSON: %s", jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return fail(err, CHORUS_ERR_BAD_REQUEST, "a request must be a JSON object", NULL);
    }

    json_t *id = json_object_get(root, "id");
    if (id) {
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) > CODEC_ID_MAX) {
            json_decref(root);
            return fail(err, CHORUS_ERR_BAD_REQUEST,
                        "'id' must be an integer between 0 and 2^53-1", NULL);
        }
        req->has_id = true;
        req->id = json_integer_value(id);
    }

    json_t *op = json_object_get(root, "op");
    if (!json_is_string(op)) {
        json_decref(root);
        return fail(err, CHORUS_ERR_BAD_REQUEST, "'op' must be a string", NULL);
    }
    const char *opname = json_string_value(op);
    size_t oplen = json_string_length(op);
    size_t i;
    for (i = 0; i < sizeof op_table / sizeof op_table[0]; i++)
        if (strlen(op_table[i].name) == oplen && !memcmp(op_table[i].name, opname, oplen))
            break;
    if (i == sizeof op_table / sizeof op_table[0]) {
        char shown[48];
        size_t n = oplen < sizeof shown - 1 ? oplen : sizeof shown - 1;
        memcpy(shown, opname, n);
        shown[n] = '\0';
        json_decref(root);
        return fail(err, CHORUS_ERR_UNKNOWN_OP, "unknown op '%s'", shown);
    }
    req->op = op_table[i].op;

    if (op_table[i].needs_ch) {
        json_t *ch = json_object_get(root, "ch");
        if (!json_is_string(ch) ||
            !codec_channel_valid(json_string_value(ch), json_string_length(ch))) {
            json_decref(root);
            return fail(err, CHORUS_ERR_BAD_CHANNEL,
                        "'ch' must be 1-255 bytes of [A-Za-z0-9_.:@/-]", NULL);
        }
        req->ch = json_string_value(ch);
        req->ch_len = json_string_length(ch);
    }

    if (req->op == CODEC_OP_PUB) {
        req->data = json_object_get(root, "data");
        if (!req->data) {
            json_decref(root);
            return fail(err, CHORUS_ERR_BAD_REQUEST, "'pub' needs 'data'", NULL);
        }
        /* Deliver the client's own text: re-encoding would rewrite numbers. */
        if (!codec_find_member(buf, len, "data", &req->data_raw, &req->data_raw_len)) {
            req->data_owned = json_dumps(req->data, JSON_COMPACT | JSON_ENCODE_ANY);
            if (!req->data_owned) {
                json_decref(root);
                return fail(err, CHORUS_ERR_BAD_REQUEST, "'data' cannot be encoded", NULL);
            }
            req->data_raw = req->data_owned;
            req->data_raw_len = strlen(req->data_owned);
        }
        json_t *key = json_object_get(root, "key");
        if (key) {
            if (!json_is_string(key) || json_string_length(key) == 0 ||
                json_string_length(key) > CODEC_KEY_MAX ||
                memchr(json_string_value(key), '\0', json_string_length(key))) {
                json_decref(root);
                return fail(err, CHORUS_ERR_BAD_REQUEST, "'key' must be a string of 1-64 bytes", NULL);
            }
            req->key = json_string_value(key);
        }
    }

    json_t *since = json_object_get(root, "since");
    if (since && (req->op == CODEC_OP_SUB || req->op == CODEC_OP_HISTORY) &&
        !decode_since(since, req, err)) {
        json_decref(root);
        return false;
    }

    json_t *limit = json_object_get(root, "limit");
    if (limit && req->op == CODEC_OP_HISTORY) {
        if (!json_is_integer(limit) || json_integer_value(limit) < 0) {
            json_decref(root);
            return fail(err, CHORUS_ERR_BAD_REQUEST, "'limit' must be a non-negative integer",
                        NULL);
        }
        req->has_limit = true;
        req->limit = json_integer_value(limit);
    }

    req->root = root;
    return true;
}

void codec_request_free(struct codec_request *req)
{
    json_decref(req->root);
    req->root = NULL;
    free(req->data_owned);
    req->data_owned = NULL;
}

/* ------------------------------------------------- raw member extraction */

static size_t skip_ws(const char *b, size_t i, size_t len)
{
    while (i < len && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r'))
        i++;
    return i;
}

/* i is at an opening quote; returns the index after the closing one. */
static size_t skip_string(const char *b, size_t i, size_t len)
{
    for (i++; i < len; i++) {
        if (b[i] == '\\')
            i++;
        else if (b[i] == '"')
            return i + 1;
    }
    return len;
}

/* Skips one value (the input is valid JSON, so only structure matters). */
static size_t skip_value(const char *b, size_t i, size_t len)
{
    if (i < len && b[i] == '"')
        return skip_string(b, i, len);
    if (i < len && (b[i] == '{' || b[i] == '[')) {
        int depth = 0;
        for (; i < len; i++) {
            if (b[i] == '"') {
                i = skip_string(b, i, len) - 1;
            } else if (b[i] == '{' || b[i] == '[') {
                depth++;
            } else if (b[i] == '}' || b[i] == ']') {
                if (--depth == 0)
                    return i + 1;
            }
        }
        return len;
    }
    while (i < len && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' &&
           b[i] != '\n' && b[i] != '\r')
        i++;
    return i;
}

bool codec_find_member(const char *b, size_t len, const char *key, const char **val, size_t *vlen)
{
    size_t klen = strlen(key);
    size_t i = skip_ws(b, 0, len);
    if (i >= len || b[i] != '{')
        return false;
    i++;
    for (;;) {
        i = skip_ws(b, i, len);
        if (i >= len || b[i] != '"')
            return false;
        size_t ks = i + 1, ke = skip_string(b, i, len) - 1;
        i = skip_ws(b, ke + 1, len);
        if (i >= len || b[i] != ':')
            return false;
        i = skip_ws(b, i + 1, len);
        size_t vs = i, ve = skip_value(b, i, len);
        if (ke - ks == klen && !memcmp(b + ks, key, klen)) {
            *val = b + vs;
            *vlen = ve - vs;
            return ve > vs;
        }
        i = skip_ws(b, ve, len);
        if (i >= len || b[i] != ',')
            return false;
        i++;
    }
}

#define MSG_HEAD_MAX (CODEC_CHANNEL_MAX + 160)

/* The members every msg starts with, {"op":"msg","ch","seq","ts"[,"client"],
 * then `tail`, into head; returns its length, or 0 when it does not fit. */
static size_t msg_head(char head[MSG_HEAD_MAX], const char *ch, size_t ch_len, uint64_t seq,
                       int64_t ts_ms, const char *client, const char *tail)
{
    int n = snprintf(head, MSG_HEAD_MAX, "{\"op\":\"msg\",\"ch\":\"%.*s\",\"seq\":%llu,\"ts\":%lld%s%s%s%s",
                     (int)ch_len, ch, (unsigned long long)seq, (long long)ts_ms,
                     client ? ",\"client\":\"" : "", client ? client : "", client ? "\"" : "", tail);
    return n < 0 || n >= MSG_HEAD_MAX ? 0 : (size_t)n;
}

/* Writes head, attr (may be NULL) and data's bytes, closed by `close` when
 * it is not NUL; returns the size needed, like json_dumpb(). */
static size_t splice(unsigned char *out, size_t cap, const char *head, size_t hl, const char *attr,
                     const void *data, size_t dl, char close)
{
    size_t al = attr ? strlen(attr) : 0;
    size_t need = hl + al + dl + (close ? 1 : 0);
    if (need > cap)
        return need;
    memcpy(out, head, hl);
    if (al)
        memcpy(out + hl, attr, al);
    if (dl)
        memcpy(out + hl + al, data, dl);
    if (close)
        out[hl + al + dl] = (unsigned char)close;
    return need;
}

size_t codec_encode_msg_raw(char *out, size_t cap, const char *ch, size_t ch_len, uint64_t seq,
                            int64_t ts_ms, const char *client, const char *attr,
                            const char *data_raw, size_t data_len)
{
    char head[MSG_HEAD_MAX];
    size_t hl = msg_head(head, ch, ch_len, seq, ts_ms, client, "");
    if (!hl || data_len == 0)
        return 0;
    /* ,"data": goes after attr: the head is cut where attr is spliced in */
    static const char d[] = ",\"data\":";
    size_t al = attr ? strlen(attr) : 0;
    size_t need = hl + al + sizeof d - 1 + data_len + 1;
    if (need > cap)
        return need;
    splice((unsigned char *)out, cap, head, hl, attr, d, sizeof d - 1, 0);
    memcpy(out + hl + al + sizeof d - 1, data_raw, data_len);
    out[need - 1] = '}';
    return need;
}

size_t codec_encode_binmsg(unsigned char *out, size_t cap, const char *ch, size_t ch_len,
                           uint64_t seq, int64_t ts_ms, const char *client, const char *attr,
                           const unsigned char *bytes, size_t n)
{
    char head[MSG_HEAD_MAX];
    size_t hl = msg_head(head, ch, ch_len, seq, ts_ms, client, "");
    if (!hl)
        return 0;
    size_t al = attr ? strlen(attr) : 0;
    size_t jl = hl + al + 1;       /* the JSON header, closed by '}' */
    size_t need = 4 + jl + n;
    if (need > cap)
        return need;
    out[0] = (unsigned char)(jl >> 24);
    out[1] = (unsigned char)(jl >> 16);
    out[2] = (unsigned char)(jl >> 8);
    out[3] = (unsigned char)jl;
    splice(out + 4, cap - 4, head, hl, attr, NULL, 0, '}');
    if (n)
        memcpy(out + 4 + jl, bytes, n);
    return need;
}

size_t codec_encode_msg(char *out, size_t cap, const char *ch, size_t ch_len, uint64_t seq,
                        int64_t ts_ms, const char *client, const json_t *data)
{
    char head[MSG_HEAD_MAX];
    size_t hl = msg_head(head, ch, ch_len, seq, ts_ms, client, ",\"data\":");
    if (!hl)
        return 0;
    size_t room = cap > hl ? cap - hl : 0;
    size_t dl = json_dumpb(data, room ? out + hl : NULL, room, JSON_COMPACT | JSON_ENCODE_ANY);
    if (dl == 0)
        return 0;
    size_t need = hl + dl + 1;
    if (need > cap)
        return need;
    memcpy(out, head, hl);
    out[hl + dl] = '}';
    return need;
}

/* ------------------------------------------------------------ attribution */

char *codec_attr(const char *user, const json_t *info)
{
    json_t *o = json_object();
    if (!o || json_object_set_new(o, "user", json_string(user)) < 0 ||
        (info && json_object_set(o, "info", (json_t *)info) < 0)) {
        json_decref(o);
        return NULL;
    }
    /* {"user":..,"info":..} becomes ,"user":..,"info":.. : members ready to splice */
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        return NULL;
    size_t n = strlen(s);
    s[0] = ',';
    s[n - 1] = '\0';
    return s;
}

bool codec_attr_valid(const char *attr, size_t len)
{
    if (len < 2 || attr[0] != ',')
        return false;
    char *buf = malloc(len + 1);
    if (!buf)
        return false;
    buf[0] = '{';
    memcpy(buf + 1, attr + 1, len - 1);
    buf[len] = '}';
    json_t *o = json_loadb(buf, len + 1, JSON_REJECT_DUPLICATES, NULL);
    free(buf);
    bool ok = json_is_object(o) && json_is_string(json_object_get(o, "user")) &&
              json_object_size(o) == 1 + (json_object_get(o, "info") != NULL);
    json_decref(o);
    return ok;
}
