/* proxy.c - connect, subscribe and publish hooks to a backend (proxy.h).
 *
 * The request is JSON about the connection (client id, user, IP, node) and
 * the op; the answer is one of {"result":{...}}, {"error":{code,message}}
 * or {"disconnect":{code,reason}} (PROTOCOL.md 11.1). Everything else - no
 * answer, a non-2xx status, a body that is not one of those - refuses. */
#include "proxy.h"
#include "auth_ws.h"
#include "conn.h"
#include "hookstats.h"
#include "httpc.h"
#include "log.h"
#include "runtime.h"

#include <stdlib.h>
#include <string.h>

/* One per connection at most (conn->proxy), from the op to its answer; a
 * disconnect keeps it until the connection closes, as the holder of the
 * close reason. */
struct proxy_call {
    struct conn *conn;
    struct httpc_req *req;        /* NULL once answered */
    enum hook_kind kind;
    int64_t started_ms;
    char reason[124];             /* a close's reason (fits a close frame) */

    struct codec_request sub;     /* subscribe: the request, its root held */
    proxy_sub_fn *sub_go;

    bool has_id;                  /* publish: */
    long long id;
    char *ch;
    size_t ch_len;
    char *data;
    size_t data_len;
    bool binary;
    char *key;
    proxy_pub_fn *pub_go;

    proxy_hello_fn *hello;        /* connect */
    proxy_server_sub_fn *server_sub;
};

static void call_free(struct proxy_call *p)
{
    if (p->req) {
        httpc_cancel(p->req);
        hookstats.proxy_pending--;
    }
    if (p->kind == HOOK_SUBSCRIBE)
        codec_request_free(&p->sub);
    free(p->ch);
    free(p->data);
    free(p->key);
    free(p);
}

/* ------------------------------------------------------------ the request */

/* The fields every hook sends: who the client is and where it came in. */
static json_t *describe(struct conn *c)
{
    const struct auth_claims *who = auth_ws_who(c);
    json_t *j = json_pack("{s:s, s:s, s:s}", "client", c->id, "node", rt.cfg->node_id, "ip",
                          c->limits.ip);
    if (j) {
        json_object_set_new(j, "user", who && who->user ? json_string(who->user) : json_null());
        if (who && who->info)
            json_object_set(j, "info", who->info);
    }
    return j;
}

static void on_answer(void *ud, long status, const char *body, size_t len, const char *err);

/* Sends j (taken) plus `"data":raw` when raw is set; true when the hook
 * now waits for the backend. */
static bool post(struct proxy_call *p, const char *url, json_t *j, const char *raw, size_t raw_len)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return false;
    char *body = text;
    size_t blen = strlen(text);
    if (raw) {
        /* The client's data exactly as it wrote it: spliced, not re-encoded. */
        body = malloc(blen + raw_len + 16);
        if (body) {
            memcpy(body, text, blen - 1);
            size_t o = blen - 1;
            memcpy(body + o, blen > 2 ? ",\"data\":" : "\"data\":", blen > 2 ? 8 : 7);
            o += blen > 2 ? 8 : 7;
            memcpy(body + o, raw, raw_len);
            o += raw_len;
            body[o++] = '}';
            blen = o;
        }
        free(text);
        if (!body)
            return false;
    }
    p->started_ms = runtime_mono_ms();
    p->req = httpc_post(url, body, blen, NULL, rt.cfg->proxy_timeout_ms, on_answer, p);
    free(body);
    if (!p->req)
        return false;
    hookstats.proxy_pending++;
    p->conn->proxy = p;
    /* Nothing more of this client is read until the answer: its next ops
     * keep their order behind this one (lws keeps what it already read). */
    lws_rx_flow_control(p->conn->wsi, 0);
    return true;
}

/* Too many hooks pending on the node, or the request could not be queued:
 * refused at once, like a backend that is down. */
static bool busy(const struct conn *c, enum hook_kind kind)
{
    /* c->proxy: a second op while one waits would mean lws delivered a
     * frame despite the paused reads; refused rather than reordered. */
    if (!c->proxy && hookstats.proxy_pending < rt.cfg->proxy_max_pending)
        return false;
    hookstats.proxy[kind][HOOK_BUSY]++;
    return true;
}

/* ------------------------------------------------------------- the answer */

static enum chorus_err err_code(json_t *code)
{
    const char *s = json_string_value(code);
    for (int i = 0; s && i < CHORUS_ERR__COUNT; i++)
        if (!strcmp(s, chorus_err_str((enum chorus_err)i)))
            return (enum chorus_err)i;
    return CHORUS_ERR_FORBIDDEN;
}

static void copy_reason(struct proxy_call *p, json_t *s, const char *dflt)
{
    const char *r = json_is_string(s) ? json_string_value(s) : dflt;
    size_t n = strlen(r);
    if (n >= sizeof p->reason)
        n = sizeof p->reason - 1;
    /* Cut only at a character boundary: a close reason must be UTF-8. */
    while (n && ((unsigned char)r[n] & 0xc0) == 0x80)
        n--;
    memcpy(p->reason, r, n);
    p->reason[n] = '\0';
}

/* The op's answer when the backend refused or failed. */
static void refuse(struct proxy_call *p, enum chorus_err code, const char *msg)
{
    struct conn *c = p->conn;
    switch (p->kind) {
    case HOOK_CONNECT:
        copy_reason(p, NULL, msg);
        conn_close_with(c, code == CHORUS_ERR_UNAVAILABLE ? CHORUS_CLOSE_HOOK_UNAVAILABLE
                                                          : CHORUS_CLOSE_HOOK_REFUSED,
                        p->reason, false);
        break;
    case HOOK_SUBSCRIBE:
        conn_send_err(c, p->sub.has_id, p->sub.id, code, msg);
        break;
    case HOOK_PUBLISH:
        conn_send_err(c, p->has_id, p->id, code, msg);
        break;
    case HOOK__COUNT:
        break;
    }
}

/* Connect: the backend may name the user (and info) and channels. */
static bool allow_connect(struct proxy_call *p, json_t *r)
{
    struct conn *c = p->conn;
    json_t *user = json_object_get(r, "user");
    if (user && (!json_is_string(user) || !json_string_length(user) ||
                 strchr(json_string_value(user), '/')))
        return false;
    if (user)
        auth_ws_set_user(c, json_string_value(user), json_object_get(r, "info"));
    json_t *chans = json_object_get(r, "channels");
    json_t *extra = json_object();
    if (json_is_array(chans) && extra)
        json_object_set(extra, "channels", chans);
    p->hello(c, extra);
    json_decref(extra);
    size_t i;
    json_t *v;
    json_array_foreach(json_is_array(chans) ? chans : NULL, i, v)
        if (json_is_string(v) && codec_channel_valid(json_string_value(v), json_string_length(v)))
            p->server_sub(c, json_string_value(v), json_string_length(v));
    return true;
}

/* Publish: the backend may replace the data (binary: data_b64). */
static bool allow_publish(struct proxy_call *p, json_t *r)
{
    json_t *d = json_object_get(r, p->binary ? "data_b64" : "data");
    if (d) {
        char *nd = NULL;
        size_t nl = 0;
        if (p->binary) {
            if (!json_is_string(d))
                return false;
            nl = json_string_length(d);
            nd = malloc(nl + 1);
            int n = nd ? lws_b64_decode_string_len(json_string_value(d), (int)nl, nd, (int)nl + 1) : -1;
            if (n < 0) {
                free(nd);
                return false;
            }
            nl = (size_t)n;
        } else {
            nd = json_dumps(d, JSON_COMPACT | JSON_ENCODE_ANY);
            if (!nd)
                return false;
            nl = strlen(nd);
        }
        if (nl > (size_t)rt.cfg->max_frame_bytes) {
            free(nd);
            return false;
        }
        free(p->data);
        p->data = nd;
        p->data_len = nl;
    }
    p->pub_go(p->conn, p->has_id, p->id, p->ch, p->ch_len, p->data, p->data_len, p->binary, p->key);
    return true;
}

static void on_answer(void *ud, long status, const char *body, size_t len, const char *err)
{
    struct proxy_call *p = ud;
    struct conn *c = p->conn;
    p->req = NULL;
    hookstats.proxy_pending--;

    json_t *ans = status >= 200 && status < 300 ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *r = NULL;
    enum hook_outcome out = HOOK_FAILED;
    bool keep = false;
    if (ans && json_is_object(r = json_object_get(ans, "result"))) {
        bool ok = p->kind == HOOK_CONNECT   ? allow_connect(p, r)
                  : p->kind == HOOK_PUBLISH ? allow_publish(p, r)
                                            : (p->sub_go(c, &p->sub), true);
        out = ok ? HOOK_ALLOWED : HOOK_FAILED;
    } else if (ans && json_is_object(r = json_object_get(ans, "error"))) {
        const char *m = json_string_value(json_object_get(r, "message"));
        refuse(p, err_code(json_object_get(r, "code")), m ? m : "refused by the backend");
        out = HOOK_REFUSED;
        keep = p->kind == HOOK_CONNECT;
    } else if (ans && json_is_object(r = json_object_get(ans, "disconnect"))) {
        json_t *code = json_object_get(r, "code");
        json_int_t cv = json_is_integer(code) ? json_integer_value(code) : 0;
        copy_reason(p, json_object_get(r, "reason"), CHORUS_CLOSE_REASON_HOOK_REFUSED);
        conn_close_with(c, cv >= 4000 && cv <= 4999 ? (uint16_t)cv : CHORUS_CLOSE_HOOK_REFUSED,
                        p->reason, false);
        out = HOOK_DISCONNECTED;
        keep = true;
    }
    if (out == HOOK_FAILED) {
        bool timed_out = !status && runtime_mono_ms() - p->started_ms >= rt.cfg->proxy_timeout_ms - 5;
        out = timed_out ? HOOK_TIMEOUT : HOOK_FAILED;
        log_warn("event=proxy_hook_failed kind=%d client=%s status=%ld error=\"%s\"", (int)p->kind,
                 c->id, status, err ? err : (ans ? "unexpected answer" : "answer is not JSON"));
        refuse(p, CHORUS_ERR_UNAVAILABLE, timed_out ? "backend hook timed out" : "backend hook failed");
        keep = p->kind == HOOK_CONNECT;
    }
    json_decref(ans);
    hookstats.proxy[p->kind][out]++;
    if (keep)
        return; /* the connection is closing with p->reason; CLOSED frees p */
    c->proxy = NULL;
    call_free(p);
    /* From outside the connection's own callback, as lws-misc.h asks:
     * applied at once. */
    if (!c->closing)
        lws_rx_flow_control(c->wsi, 1 | LWS_RXFLOW_REASON_FLAG_PROCESS_NOW);
}

/* ------------------------------------------------------------------- ops */

bool proxy_subscribe(struct conn *c, const struct codec_request *req, proxy_sub_fn *go)
{
    const char *url = config_ns_for(rt.cfg, req->ch, req->ch_len)->proxy_subscribe;
    if (!url)
        return false;
    if (busy(c, HOOK_SUBSCRIBE)) {
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_UNAVAILABLE, "too many backend hooks pending");
        return true;
    }
    struct proxy_call *p = calloc(1, sizeof *p);
    if (!p)
        goto fail;
    p->conn = c;
    p->kind = HOOK_SUBSCRIBE;
    p->sub = *req;
    p->sub.data_owned = NULL; /* a sub has none; the caller frees its own */
    json_incref(p->sub.root);
    p->sub_go = go;
    json_t *j = describe(c);
    if (j)
        json_object_set_new(j, "ch", json_stringn(req->ch, req->ch_len));
    if (post(p, url, j, NULL, 0))
        return true;
fail:
    if (p)
        call_free(p);
    hookstats.proxy[HOOK_SUBSCRIBE][HOOK_FAILED]++;
    conn_send_err(c, req->has_id, req->id, CHORUS_ERR_UNAVAILABLE, "backend hook failed");
    return true;
}

static char *memdup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

bool proxy_publish(struct conn *c, bool has_id, long long id, const char *ch, size_t len,
                   const char *data, size_t data_len, bool binary, const char *key,
                   proxy_pub_fn *go)
{
    const char *url = config_ns_for(rt.cfg, ch, len)->proxy_publish;
    if (!url)
        return false;
    if (busy(c, HOOK_PUBLISH)) {
        conn_send_err(c, has_id, id, CHORUS_ERR_UNAVAILABLE, "too many backend hooks pending");
        return true;
    }
    struct proxy_call *p = calloc(1, sizeof *p);
    char *b64 = NULL;
    if (!p)
        goto fail;
    p->conn = c;
    p->kind = HOOK_PUBLISH;
    p->has_id = has_id;
    p->id = id;
    p->binary = binary;
    p->pub_go = go;
    p->ch_len = len;
    p->data_len = data_len;
    if (!(p->ch = memdup(ch, len)) || !(p->data = memdup(data, data_len)) ||
        (key && !(p->key = strdup(key))))
        goto fail;
    json_t *j = describe(c);
    if (j) {
        json_object_set_new(j, "ch", json_stringn(ch, len));
        if (key)
            json_object_set_new(j, "key", json_string(key));
    }
    if (binary) {
        size_t cap = data_len * 4 / 3 + 8;
        b64 = malloc(cap);
        if (!b64 || lws_b64_encode_string(data, (int)data_len, b64, (int)cap) < 0) {
            json_decref(j);
            goto fail;
        }
        if (j)
            json_object_set_new(j, "data_b64", json_string(b64));
        free(b64);
        b64 = NULL;
    }
    if (post(p, url, j, binary ? NULL : data, data_len))
        return true;
fail:
    free(b64);
    if (p)
        call_free(p);
    hookstats.proxy[HOOK_PUBLISH][HOOK_FAILED]++;
    conn_send_err(c, has_id, id, CHORUS_ERR_UNAVAILABLE, "backend hook failed");
    return true;
}

bool proxy_connect(struct conn *c, proxy_hello_fn *hello, proxy_server_sub_fn *sub)
{
    const char *url = rt.cfg->proxy_connect;
    if (!url)
        return false;
    struct proxy_call *p = busy(c, HOOK_CONNECT) ? NULL : calloc(1, sizeof *p);
    if (p) {
        p->conn = c;
        p->kind = HOOK_CONNECT;
        p->hello = hello;
        p->server_sub = sub;
        if (post(p, url, describe(c), NULL, 0))
            return true;
        call_free(p);
        hookstats.proxy[HOOK_CONNECT][HOOK_FAILED]++;
    }
    conn_close_with(c, CHORUS_CLOSE_HOOK_UNAVAILABLE, CHORUS_CLOSE_REASON_HOOK_UNAVAILABLE, false);
    return true;
}

void proxy_conn_closed(struct conn *c)
{
    if (!c->proxy)
        return;
    call_free(c->proxy);
    c->proxy = NULL;
}
