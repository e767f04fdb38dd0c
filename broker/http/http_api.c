/* http_api.c - the HTTP endpoints on the WebSocket port (PROTOCOL.md section 6):
 * POST /api/publish, history, presence, the server API, GET /healthz, GET /metrics.
 *
 * One http_session per HTTP request, allocated zeroed by lws when the request
 * binds to this protocol and cleaned up on DROP_PROTOCOL.
 *
 * A response is written the moment it is known, headers and body, and the
 * request is then completed on the spot (lws' own pattern, dummy-callback.c):
 * lws 4.1.6 stays in its body state until the transaction completes and,
 * while input is buffered behind the body (a pipelined request), calls
 * BODY_COMPLETION again on every pass without consuming any of it, so a
 * response left for a later HTTP_WRITEABLE spun the loop forever. A request
 * answered later (a publish waiting for its owner, a history fetch) stops
 * reading with rx flow control until then, so the next request waits in
 * lws' buffer. Requests with a body are answered only once the body is read,
 * so the next request always starts where lws thinks it does. */
#include "auth.h"
#include "http_api.h"
#include "admin_page.h"
#include "admin.h"
#include "channel.h"
#include "cluster.h"
#include "codec.h"
#include "log.h"
#include "frame.h"
#include "history_fetch.h"
#include "http_reply.h"
#include "metrics.h"
#include "pipelined.h"
#include "presence.h"
#include "publish.h"
#include "runtime.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct http_session {
    struct lws *wsi;
    struct pub_wait pub;        /* the publish, until it is delivered */
    bool publishing;
    struct history_fetch hist;  /* a history request, maybe at the channel's owner */
    bool hist_pending;
    int hist_rc;                /* what answering it returned, when answered at once */
    char hist_ch[CODEC_CHANNEL_MAX + 1];
    char path[32];
    unsigned char *body;        /* request body being received */
    size_t body_len;
    bool body_too_large;
    bool body_done;             /* BODY_COMPLETION was handled */
    bool responded;
    bool rx_paused;             /* input held back until the answer is out */
    bool in_request;            /* inside this request's own lws callback */
    bool waits_for_body;        /* answered at BODY_COMPLETION */
    bool admin_ok;              /* /admin/api/...: the admin secret stands in for the API key */
    const char *challenge;      /* WWW-Authenticate of a 401 (static string) */
    struct admin_call *admin;   /* a server API call waiting for the other nodes */
    struct broadcast *bcast;    /* POST /api/broadcast's publishes in flight */
};

static void broadcast_cancel(struct broadcast *b);

size_t http_api_session_size(void) { return sizeof(struct http_session); }

static void session_free(struct http_session *s)
{
    if (s->publishing) {
        publish_cancel(&s->pub);
        s->publishing = false;
    }
    if (s->hist_pending) {
        history_fetch_cancel(&s->hist);
        s->hist_pending = false;
    }
    admin_cancel(s->admin);
    s->admin = NULL;
    broadcast_cancel(s->bcast);
    s->bcast = NULL;
    free(s->body);
    s->body = NULL;
    s->body_len = 0;
}

/* Writes the whole response now: the status and headers, then the body
 * (lws keeps what the socket does not take and sends it before anything
 * else). Returns -1 when the connection can no longer be used. */
static int respond(struct lws *wsi, struct http_session *s, int status, const char *ctype,
                   const char *text, size_t len)
{
    unsigned char hdr[LWS_PRE + 512], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;

    if (s->responded)
        return 0;
    s->responded = true;
    metrics_http_request(s->path, status);

    if (lws_add_http_common_headers(wsi, (unsigned int)status, ctype, len, &p, end))
        return -1;
    if (lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-store", 8, &p, end))
        return -1;
    if (s->challenge && lws_add_http_header_by_name(wsi, (const unsigned char *)"www-authenticate:",
                                                    (const unsigned char *)s->challenge,
                                                    (int)strlen(s->challenge), &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    if (!len)
        return 0;
    unsigned char *buf = malloc(LWS_PRE + len);
    if (!buf)
        return -1;
    memcpy(buf + LWS_PRE, text, len);
    int n = lws_write(wsi, buf + LWS_PRE, len, LWS_WRITE_HTTP_FINAL);
    free(buf);
    return n < (int)len ? -1 : 0;
}

/* Ends the request once its response is written: closes, or readies the
 * connection for the next request. After it returns 0, `s` is gone (lws
 * frees the session when it rebinds the connection). Returns -1 to close. */
static int finish(struct lws *wsi, struct http_session *s)
{
    bool close = !s->responded;
    session_free(s);
    if (s->rx_paused) {
        s->rx_paused = false;
        lws_rx_flow_control(wsi, 1);
    }
    if (close)
        return -1;
    pipelined_mark(wsi);
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* finish() for an answer that arrives outside this connection's callbacks. */
static void finish_async(struct lws *wsi, struct http_session *s)
{
    if (finish(wsi, s) < 0)
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* Holds back the input behind this request until finish(). */
static void pause_rx(struct lws *wsi, struct http_session *s)
{
    if (!s->rx_paused) {
        s->rx_paused = true;
        lws_rx_flow_control(wsi, 0);
    }
}

static int respond_json(struct lws *wsi, struct http_session *s, int status, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text)
        return -1;
    int rc = respond(wsi, s, status, "application/json", text, strlen(text));
    free(text);
    return rc;
}

static int respond_err(struct lws *wsi, struct http_session *s, enum chorus_err code, const char *msg)
{
    return respond_json(wsi, s, chorus_err_http_status(code),
                        json_pack("{s:s, s:s}", "code", chorus_err_str(code), "msg", msg));
}

/* Returns 0 when the request carries the right key, else the HTTP status to answer. */
static int check_api_key(struct lws *wsi)
{
    const char *key = rt.cfg->api_key;
    char buf[512];
    int n;

    if (!key || !*key)
        return 403;
    n = lws_hdr_copy(wsi, buf, sizeof buf, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (n > 7 && !strncasecmp(buf, "apikey ", 7)) {
        const char *v = buf + 7;
        while (*v == ' ')
            v++;
        if (auth_secret_equal(v, strlen(v), key))
            return 0;
    }
    n = lws_hdr_custom_copy(wsi, buf, sizeof buf, "x-api-key:", 10);
    if (n > 0 && auth_secret_equal(buf, (size_t)n, key))
        return 0;
    return 401;
}

static int respond_auth_failure(struct lws *wsi, struct http_session *s, int status)
{
    if (status == 403)
        return respond_err(wsi, s, CHORUS_ERR_FORBIDDEN,
                           "the HTTP publish API is disabled: start chorusd with --api-key");
    return respond_err(wsi, s, CHORUS_ERR_UNAUTHORIZED,
                       "missing or wrong API key (send 'Authorization: apikey KEY' or 'X-API-Key: KEY')");
}

/* The publish was delivered (or refused, or timed out). */
static void on_published(struct pub_wait *w, enum chorus_err err, const char *msg,
                         const char *epoch, uint64_t seq, bool duplicate)
{
    struct http_session *s = w->ud;
    s->publishing = false;
    if (err == CHORUS_ERR__COUNT) {
        metrics.published_http++;
        json_t *j = json_pack("{s:s, s:s, s:I}", "ch", w->ch, "epoch", epoch, "seq", (json_int_t)seq);
        if (j && duplicate)
            json_object_set_new(j, "duplicate", json_true());
        respond_json(s->wsi, s, 200, j);
    } else {
        respond_err(s->wsi, s, err, msg);
    }
    if (!s->in_request)
        finish_async(s->wsi, s);
}

/* POST /api/publish {"ch","data"} -> {"ch","epoch","seq"} */
/* An HTTP publish's "user" (and "info"): NULL when absent; sets *bad when
 * present but not a string of 1-128 bytes (PROTOCOL.md 6: the backend is
 * trusted to name the user). Else the encoded identity, caller frees. */
static char *body_user(json_t *root, bool *bad)
{
    json_t *user = json_object_get(root, "user");
    char *attr = NULL;
    *bad = user && (!json_is_string(user) || json_string_length(user) == 0 ||
                    json_string_length(user) > 128 ||
                    !(attr = codec_attr(json_string_value(user), json_object_get(root, "info"))));
    return attr;
}

/* The body's "data" as the backend wrote it (re-encoding would rewrite its
 * numbers), or re-encoded when it cannot be found; returns what the caller
 * frees (NULL when nothing was allocated). */
static char *body_data(const struct http_session *s, json_t *data, const char **raw, size_t *raw_len)
{
    if (codec_find_member((const char *)s->body, s->body_len, "data", raw, raw_len))
        return NULL;
    char *owned = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    *raw = owned;
    *raw_len = owned ? strlen(owned) : 0;
    return owned;
}

static int api_publish(struct lws *wsi, struct http_session *s)
{
    json_error_t jerr;
    int status = check_api_key(wsi);
    if (status)
        return respond_auth_failure(wsi, s, status);
    if (!s->body_len)
        return respond_err(wsi, s, CHORUS_ERR_BAD_REQUEST, "a JSON body with Content-Length is required");
    if (rt.shutting_down)
        return respond_err(wsi, s, CHORUS_ERR_UNAVAILABLE, "node is shutting down");
    if (!cluster_ready())
        return respond_err(wsi, s, CHORUS_ERR_UNAVAILABLE,
                           cluster_lease_lost_ms() > 0
                               ? "node is cut off from the cluster majority (no lease): try another node"
                               : "node is starting: waiting for the cluster to agree on its shard map");

    json_t *root = json_loadb((const char *)s->body, s->body_len,
                              JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(root)) {
        char msg[256];
        snprintf(msg, sizeof msg, "body must be a JSON object {\"ch\",\"data\"}%s%s",
                 root ? "" : ": ", root ? "" : jerr.text);
        json_decref(root);
        return respond_err(wsi, s, CHORUS_ERR_BAD_REQUEST, msg);
    }
    json_t *ch = json_object_get(root, "ch");
    json_t *data = json_object_get(root, "data");
    json_t *key = json_object_get(root, "key");
    bool bad_user;
    char *attr = body_user(root, &bad_user);
    int rc;
    if (!json_is_string(ch) || !codec_channel_valid(json_string_value(ch), json_string_length(ch))) {
        rc = respond_err(wsi, s, CHORUS_ERR_BAD_CHANNEL, "'ch' must be 1-255 bytes of [A-Za-z0-9_.:@/-]");
    } else if (!data) {
        rc = respond_err(wsi, s, CHORUS_ERR_BAD_REQUEST, "'data' is required");
    } else if (key && (!json_is_string(key) || json_string_length(key) == 0 ||
                       json_string_length(key) > CODEC_KEY_MAX)) {
        rc = respond_err(wsi, s, CHORUS_ERR_BAD_REQUEST, "'key' must be a string of 1-64 bytes");
    } else if (bad_user) {
        rc = respond_err(wsi, s, CHORUS_ERR_BAD_REQUEST, "'user' must be a string of 1-128 bytes");
    } else {
        const char *raw;
        size_t raw_len;
        char *owned = body_data(s, data, &raw, &raw_len);
        s->wsi = wsi;
        s->publishing = true;
        publish_submit_as(json_string_value(ch), json_string_length(ch), raw, raw_len, false, NULL,
                          attr, key ? json_string_value(key) : NULL, &s->pub, on_published, s);
        free(owned);
        rc = 0;
    }
    free(attr);
    json_decref(root);
    return rc;
}

/* GET /healthz -> {"status","node","connections","channels","peers"?}; 503 from SIGTERM on
 * (status "draining" or "leaving" during the drain delay, then "shutting_down") */
static int api_healthz(struct lws *wsi, struct http_session *s)
{
    json_t *j = json_pack("{s:s, s:s, s:I, s:I}", "status",
                          rt.shutting_down ? "shutting_down" : "ok", "node", rt.cfg->node_id,
                          "connections", (json_int_t)metrics.connections, "channels",
                          (json_int_t)metrics.channels);
    if (j && cluster_enabled())
        json_object_set_new(j, "peers", admin_peers_json());
    if (j && rt.leaving && !rt.shutting_down)
        json_object_set_new(j, "status", json_string("leaving"));
    else if (j && rt.draining && !rt.shutting_down)
        json_object_set_new(j, "status", json_string("draining"));
    else if (j && !rt.shutting_down && !cluster_ready())
        json_object_set_new(j, "status",
                            json_string(cluster_lease_lost_ms() > 0 ? "cut_off" : "starting"));
    if (j && cluster_enabled()) {
        json_object_set_new(j, "lease", json_boolean(cluster_can_act()));
        json_object_set_new(j, "map_version", json_integer((json_int_t)cluster_map_version()));
    }
    return respond_json(wsi, s, rt.draining || rt.shutting_down || rt.leaving || !cluster_ready() ? 503 : 200, j);
}

/* GET /metrics -> Prometheus text */
static int api_metrics(struct lws *wsi, struct http_session *s)
{
    char *text;
    size_t len = metrics_render(&text, rt.cfg->node_id);
    if (!len)
        return -1;
    int rc = respond(wsi, s, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
    return rc;
}

static int respond_frame(struct lws *wsi, struct http_session *s, struct frame *f)
{
    if (!f)
        return respond_err(wsi, s, CHORUS_ERR_UNAVAILABLE, "out of memory");
    int rc = respond(wsi, s, 200, "application/json", (const char *)frame_payload(f), f->len);
    frame_unref(f);
    return rc;
}

static void on_history(struct history_fetch *h, struct frame *f, enum chorus_err err,
                       const char *msg)
{
    struct http_session *s = h->ud;
    s->hist_pending = false;
    s->hist_rc = f ? respond_frame(s->wsi, s, f) : respond_err(s->wsi, s, err, msg);
    if (!s->in_request)
        finish_async(s->wsi, s);
}

/* GET /api/history?ch=..&limit=..&since_epoch=..&since_seq=.. -> the history reply of PROTOCOL.md 2.4 */
static int api_history(struct lws *wsi, struct http_session *s)
{
    char buf[320], epoch[CODEC_EPOCH_MAX + 1] = "";
    const char *v;
    int status = check_api_key(wsi);
    if (status)
        return respond_auth_failure(wsi, s, status);
    v = lws_get_urlarg_by_name(wsi, "ch=", buf, sizeof buf);
    if (!v || !codec_channel_valid(v, strlen(v)))
        return respond_err(wsi, s, CHORUS_ERR_BAD_CHANNEL, "'ch' must be 1-255 bytes of [A-Za-z0-9_.:@/-]");
    snprintf(s->hist_ch, sizeof s->hist_ch, "%s", v);
    size_t len = strlen(s->hist_ch);
    const struct ns_opts *ns = config_ns_for(rt.cfg, s->hist_ch, len);
    long long limit = ns->history_size;
    if ((v = lws_get_urlarg_by_name(wsi, "limit=", buf, sizeof buf)) && atoll(v) >= 0 && atoll(v) < limit)
        limit = atoll(v);
    bool has_since = false;
    uint64_t since_seq = 0;
    if ((v = lws_get_urlarg_by_name(wsi, "since_epoch=", buf, sizeof buf))) {
        if (strlen(v) > CODEC_EPOCH_MAX)
            return respond_err(wsi, s, CHORUS_ERR_BAD_REQUEST, "since_epoch is too long");
        snprintf(epoch, sizeof epoch, "%s", v);
        has_since = true;
        if ((v = lws_get_urlarg_by_name(wsi, "since_seq=", buf, sizeof buf)))
            since_seq = strtoull(v, NULL, 10);
    }
    s->wsi = wsi;
    s->hist_pending = true;
    history_fetch(&s->hist, s->hist_ch, len, false, 0, has_since, epoch, since_seq, limit,
                  on_history, s);
    return s->hist_pending ? 0 : s->hist_rc;
}

/* GET /api/presence?ch=.. -> {"ch","count","members"?} (this node's members, PROTOCOL.md 8.4) */
static int api_presence(struct lws *wsi, struct http_session *s)
{
    char buf[320];
    int status = check_api_key(wsi);
    if (status)
        return respond_auth_failure(wsi, s, status);
    const char *v = lws_get_urlarg_by_name(wsi, "ch=", buf, sizeof buf);
    if (!v || !codec_channel_valid(v, strlen(v)))
        return respond_err(wsi, s, CHORUS_ERR_BAD_CHANNEL, "'ch' must be 1-255 bytes of [A-Za-z0-9_.:@/-]");
    json_t *j = presence_describe(v, strlen(v));
    if (!j)
        return respond_err(wsi, s, CHORUS_ERR_FORBIDDEN, "presence is not enabled for this namespace");
    return respond_json(wsi, s, 200, j);
}

/* ------------------------------------------------------------ server API
 * PROTOCOL.md 6, "Server API": the same key as /api/publish; each call acts
 * on every node of the cluster (admin.c gathers them). */

static void on_admin_done(json_t *answer, void *ud)
{
    struct http_session *s = ud;
    bool later = s->admin != NULL;
    s->admin = NULL;
    if (answer)
        respond_json(s->wsi, s, 200, answer);
    else
        respond_err(s->wsi, s, CHORUS_ERR_UNAVAILABLE, "out of memory");
    if (later && !s->in_request)
        finish_async(s->wsi, s);
}

static int admin_start_call(struct lws *wsi, struct http_session *s, json_t *req)
{
    char why[160];
    struct admin_call *a;
    s->wsi = wsi;
    if (admin_run(req, on_admin_done, s, &a, why, sizeof why) < 0) {
        json_decref(req);
        return respond_err(wsi, s, CHORUS_ERR_BAD_REQUEST, why);
    }
    json_decref(req);
    s->admin = a;
    return 0;
}

/* GET /api/info -> {"nodes":[{node,version,uptime_s,status,connections,channels,peers}],"missing"}
 * GET /api/channels?prefix=P&limit=N -> {"channels":[{"ch","subscribers"}],"missing","truncated"?} */
static int api_server_get(struct lws *wsi, struct http_session *s, const char *op)
{
    int status = s->admin_ok ? 0 : check_api_key(wsi);
    if (status)
        return respond_auth_failure(wsi, s, status);
    json_t *req = json_pack("{s:s}", "op", op);
    char buf[320];
    const char *v;
    if (req && !strcmp(op, "channels")) {
        if ((v = lws_get_urlarg_by_name(wsi, "prefix=", buf, sizeof buf)))
            json_object_set_new(req, "prefix", json_string(v));
        if ((v = lws_get_urlarg_by_name(wsi, "limit=", buf, sizeof buf)))
            json_object_set_new(req, "limit", json_integer(atoll(v)));
    }
    if (!req)
        return respond_err(wsi, s, CHORUS_ERR_UNAVAILABLE, "out of memory");
    return admin_start_call(wsi, s, req);
}

/* GET /admin[/...] (admin_page.h): the page's files and its read-only views
 * of the server API, behind the admin secret. */
static int admin_page(struct lws *wsi, struct http_session *s, const char *uri)
{
    char *body;
    size_t len;
    const char *ctype;
    switch (admin_page_route(wsi, uri)) {
    case ADMIN_PAGE_DISABLED:
        return respond_err(wsi, s, CHORUS_ERR_NOT_FOUND,
                           "the admin page is disabled: start chorusd with --admin-secret");
    case ADMIN_PAGE_UNAUTHORIZED:
        s->challenge = ADMIN_PAGE_CHALLENGE;
        return respond_err(wsi, s, CHORUS_ERR_UNAUTHORIZED,
                           "the admin page needs the admin secret as the HTTP Basic password");
    case ADMIN_PAGE_INFO:
    case ADMIN_PAGE_CHANNELS:
        s->admin_ok = true;
        return api_server_get(wsi, s, strrchr(uri, '/') + 1);
    case ADMIN_PAGE_FILE:
        if (admin_page_file(uri, &body, &len, &ctype) < 0)
            return respond_err(wsi, s, CHORUS_ERR_NOT_FOUND, "the admin page's files are missing");
        int rc = respond(wsi, s, 200, ctype, body, len);
        free(body);
        return rc;
    case ADMIN_PAGE_NOT_FOUND:
        break;
    }
    return respond_err(wsi, s, CHORUS_ERR_NOT_FOUND, "no such admin page");
}

/* POST /api/broadcast {"channels":[..],"data","key"?,"user"?,"info"?}
 *   -> {"results":[{"ch","epoch","seq","duplicate"?} | {"ch","error":{"code","msg"}}]}
 * One publish per channel (each goes to its channel's owner), answered once
 * every one is delivered or refused. */
#define BROADCAST_MAX 1000

struct broadcast_pub {
    struct pub_wait w;
    struct broadcast *b;
    size_t i;
    bool pending;
};

struct broadcast {
    struct http_session *s;
    json_t *results;
    int waiting;
    size_t n;
    struct broadcast_pub pubs[];
};

static void broadcast_free(struct broadcast *b)
{
    json_decref(b->results);
    free(b);
}

static void broadcast_cancel(struct broadcast *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        if (b->pubs[i].pending)
            publish_cancel(&b->pubs[i].w);
    broadcast_free(b);
}

static void broadcast_answer(struct broadcast *b)
{
    struct http_session *s = b->s;
    bool later = s->bcast != NULL;
    s->bcast = NULL;
    respond_json(s->wsi, s, 200, json_pack("{s:O}", "results", b->results));
    broadcast_free(b);
    if (later && !s->in_request)
        finish_async(s->wsi, s);
}

static void on_broadcast_pub(struct pub_wait *w, enum chorus_err err, const char *msg,
                             const char *epoch, uint64_t seq, bool duplicate)
{
    struct broadcast_pub *p = (struct broadcast_pub *)w;
    struct broadcast *b = p->b;
    json_t *r = json_array_get(b->results, p->i);
    p->pending = false;
    if (err == CHORUS_ERR__COUNT) {
        metrics.published_http++;
        json_object_set_new(r, "epoch", json_string(epoch));
        json_object_set_new(r, "seq", json_integer((json_int_t)seq));
        if (duplicate)
            json_object_set_new(r, "duplicate", json_true());
    } else {
        json_object_set_new(r, "error", json_pack("{s:s, s:s}", "code", chorus_err_str(err), "msg",
                                                  msg ? msg : ""));
    }
    if (--b->waiting == 0)
        broadcast_answer(b);
}

static int api_broadcast(struct lws *wsi, struct http_session *s, json_t *root)
{
    json_t *chs = json_object_get(root, "channels"), *data = json_object_get(root, "data");
    json_t *key = json_object_get(root, "key");
    size_t n = json_array_size(chs), i;
    json_t *v;
    if (!json_is_array(chs) || n < 1 || n > BROADCAST_MAX)
        return respond_err(wsi, s, CHORUS_ERR_BAD_REQUEST, "'channels' must be an array of 1-1000 channel names");
    json_array_foreach(chs, i, v)
        if (!json_is_string(v) || !codec_channel_valid(json_string_value(v), json_string_length(v)))
            return respond_err(wsi, s, CHORUS_ERR_BAD_CHANNEL,
                               "each channel must be 1-255 bytes of [A-Za-z0-9_.:@/-]");
    if (!data)
        return respond_err(wsi, s, CHORUS_ERR_BAD_REQUEST, "'data' is required");
    if (key && (!json_is_string(key) || json_string_length(key) == 0 || json_string_length(key) > CODEC_KEY_MAX))
        return respond_err(wsi, s, CHORUS_ERR_BAD_REQUEST, "'key' must be a string of 1-64 bytes");
    bool bad_user;
    char *attr = body_user(root, &bad_user);
    if (bad_user)
        return respond_err(wsi, s, CHORUS_ERR_BAD_REQUEST, "'user' must be a string of 1-128 bytes");
    if (rt.shutting_down || !cluster_ready()) {
        free(attr);
        return respond_err(wsi, s, CHORUS_ERR_UNAVAILABLE, "node is not serving publishes now");
    }
    const char *raw;
    size_t raw_len;
    char *owned = body_data(s, data, &raw, &raw_len);
    struct broadcast *b = raw ? calloc(1, sizeof *b + n * sizeof b->pubs[0]) : NULL;
    if (!b) {
        free(owned);
        free(attr);
        return respond_err(wsi, s, CHORUS_ERR_UNAVAILABLE, "out of memory");
    }
    b->s = s;
    b->n = n;
    b->results = json_array();
    s->wsi = wsi;
    b->waiting = 1; /* held while submitting: a publish may be answered at once */
    json_array_foreach(chs, i, v)
        json_array_append_new(b->results, json_pack("{s:O}", "ch", v));
    s->bcast = b;
    json_array_foreach(chs, i, v) {
        struct broadcast_pub *p = &b->pubs[i];
        p->b = b;
        p->i = i;
        p->pending = true;
        b->waiting++;
        publish_submit_as(json_string_value(v), json_string_length(v), raw, raw_len, false, NULL, attr,
                          key ? json_string_value(key) : NULL, &p->w, on_broadcast_pub, p);
    }
    free(owned);
    free(attr);
    s->bcast = NULL; /* answered synchronously unless publishes are still in flight */
    if (--b->waiting == 0) {
        broadcast_answer(b);
        return 0;
    }
    s->bcast = b;
    return 0;
}

/* POST /api/disconnect {"user","reason"?} -> {"disconnected":N,"missing"}
 * POST /api/unsubscribe {"user","ch","reason"?} -> {"unsubscribed":N,"missing"}
 * POST /api/subscribe {"user","ch"} -> {"subscribed":N,"missing"} */
static int api_server_post(struct lws *wsi, struct http_session *s, const char *op)
{
    int status = check_api_key(wsi);
    if (status)
        return respond_auth_failure(wsi, s, status);
    json_error_t jerr;
    json_t *root = s->body_len ? json_loadb((const char *)s->body, s->body_len,
                                            JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr)
                               : NULL;
    if (!json_is_object(root)) {
        json_decref(root);
        return respond_err(wsi, s, CHORUS_ERR_BAD_REQUEST, "a JSON object body is required");
    }
    if (!strcmp(op, "broadcast")) {
        int rc = api_broadcast(wsi, s, root);
        json_decref(root);
        return rc;
    }
    json_object_set_new(root, "op", json_string(op));
    return admin_start_call(wsi, s, root);
}

/* Answers the request now, or starts what will answer it (publish, history
 * at the owner). Every request with a body comes here only once the body is
 * read. */
static int route(struct lws *wsi, struct http_session *s)
{
    bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    bool get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;
    const char *uri = s->path;

    if (admin_page_owns(uri)) {
        if (!get)
            return respond_err(wsi, s, CHORUS_ERR_METHOD_NOT_ALLOWED, "use GET");
        return admin_page(wsi, s, uri);
    }
    if (!strcmp(uri, "/healthz") || !strcmp(uri, "/metrics")) {
        if (!get)
            return respond_err(wsi, s, CHORUS_ERR_METHOD_NOT_ALLOWED, "use GET");
        return uri[1] == 'h' ? api_healthz(wsi, s) : api_metrics(wsi, s);
    }
    if (!strcmp(uri, "/api/history")) {
        if (!get)
            return respond_err(wsi, s, CHORUS_ERR_METHOD_NOT_ALLOWED, "use GET");
        return api_history(wsi, s);
    }
    if (!strcmp(uri, "/api/presence")) {
        if (!get)
            return respond_err(wsi, s, CHORUS_ERR_METHOD_NOT_ALLOWED, "use GET");
        return api_presence(wsi, s);
    }
    if (!strcmp(uri, "/api/info") || !strcmp(uri, "/api/channels")) {
        if (!get)
            return respond_err(wsi, s, CHORUS_ERR_METHOD_NOT_ALLOWED, "use GET");
        return api_server_get(wsi, s, uri + 5);
    }
    if (!strcmp(uri, "/api/disconnect") || !strcmp(uri, "/api/unsubscribe") ||
        !strcmp(uri, "/api/subscribe") || !strcmp(uri, "/api/broadcast")) {
        if (!post)
            return respond_err(wsi, s, CHORUS_ERR_METHOD_NOT_ALLOWED, "use POST");
        return api_server_post(wsi, s, uri + 5);
    }
    if (strcmp(uri, "/api/publish") != 0)
        return respond_err(wsi, s, CHORUS_ERR_NOT_FOUND, "no such endpoint");
    if (!post)
        return respond_err(wsi, s, CHORUS_ERR_METHOD_NOT_ALLOWED, "use POST");
    return api_publish(wsi, s);
}

/* After route(): completes an answered request, or holds the connection's
 * input back until the answer comes. Returns the callback's result. */
static int routed(struct lws *wsi, struct http_session *s, int rc)
{
    s->in_request = false;
    if (rc < 0)
        return -1;
    if (s->responded)
        return finish(wsi, s);
    if (!s->publishing && !s->hist_pending && !s->admin && !s->bcast)
        return -1; /* nothing will answer: never leave a request hanging */
    s->wsi = wsi;
    pause_rx(wsi, s);
    return 0;
}

/* The method lws matched this request with ("" for none we know of). */
static const char *request_method(struct lws *wsi)
{
    static const struct { enum lws_token_indexes tok; const char *name; } methods[] = {
        {WSI_TOKEN_GET_URI, "GET"},      {WSI_TOKEN_POST_URI, "POST"},
        {WSI_TOKEN_HEAD_URI, "HEAD"},
#if defined(LWS_WITH_HTTP_UNCOMMON_HEADERS)
        {WSI_TOKEN_PUT_URI, "PUT"},      {WSI_TOKEN_PATCH_URI, "PATCH"},
        {WSI_TOKEN_DELETE_URI, "DELETE"}, {WSI_TOKEN_OPTIONS_URI, "OPTIONS"},
#endif
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (lws_hdr_total_length(wsi, methods[i].tok) > 0)
            return methods[i].name;
    return "";
}

/* lws 4.1.6 reads the body of a request that was pipelined behind another
 * (parsed from its buffer of read-ahead input, not from the socket) from the
 * start of that buffer (roles/http/server/server.c, lws_http_action: the
 * buflist loop after "Prepare to read body"), so its "body" is the request's
 * own request line, and then loops forever on what it fails to consume. That
 * is the one case where a body starts with this request's method and a space
 * (or is a prefix of them, which no endpoint accepts as a body); refusing it
 * and closing is what ends the loop. Only the method is compared: lws keeps
 * the path decoded and normalised (%41, //, /./, /../) and split at '&', so
 * the path it reports need not be the bytes sent (each of those hung the node
 * when the path was compared too; found by fuzz_http). Such a request is
 * normally refused before it gets here (session/pipelined.c: by then lws has
 * already used up the buffer under its reader); this stays for a connection
 * whose kernel counts cannot be read. */
static bool body_is_own_request(struct lws *wsi, const void *in, size_t len)
{
    char start[16];
    int n = snprintf(start, sizeof start, "%s ", request_method(wsi));
    /* A short body is compared whole: a Content-Length below the method's
     * length gets that many of its bytes. */
    return n > 1 && !strncasecmp(in, start, len < (size_t)n ? len : (size_t)n);
}

static int on_request(struct lws *wsi, struct http_session *s)
{
    bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    char uri[256] = "";
    lws_hdr_copy(wsi, uri, sizeof uri, post ? WSI_TOKEN_POST_URI : WSI_TOKEN_GET_URI);
    snprintf(s->path, sizeof s->path, "%.*s", (int)sizeof s->path - 1, uri);
    s->wsi = wsi;

    /* The framing was checked in FILTER_HTTP_CONNECTION (http_reply.h). */
    char cl[32] = "";
    bool has_cl = lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0;
    long long length = has_cl ? atoll(cl) : 0;
    if (length > rt.cfg->max_frame_bytes) {
        /* Not read: answer, then close, since the body would be taken for
         * the next request. */
        char msg[64];
        snprintf(msg, sizeof msg, "body exceeds %d bytes", rt.cfg->max_frame_bytes);
        respond_err(wsi, s, CHORUS_ERR_TOO_LARGE, msg);
        return -1;
    }
    /* lws calls BODY_COMPLETION for any body, and for a POST that says
     * Content-Length: 0; answering before it would answer twice. */
    if (length > 0 || (has_cl && post)) {
        s->waits_for_body = true;
        return 0;
    }
    s->in_request = true;
    return routed(wsi, s, route(wsi, s));
}

int http_api_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len)
{
    struct http_session *s = user;

    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return on_request(wsi, s);

    case LWS_CALLBACK_HTTP_BODY:
        if (s->body_done || s->body_too_large || !len)
            return 0;
        if (!s->body_len && body_is_own_request(wsi, in, len))
            return pipelined_refuse(wsi);
        if (s->body_len + len > (size_t)rt.cfg->max_frame_bytes) {
            s->body_too_large = true;
            free(s->body);
            s->body = NULL;
            s->body_len = 0;
            return 0;
        }
        {
            unsigned char *nb = realloc(s->body, s->body_len + len);
            if (!nb)
                return -1;
            s->body = nb;
            memcpy(s->body + s->body_len, in, len);
            s->body_len += len;
        }
        return 0;

    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        /* Called again on every pass over input buffered behind the body
         * while the answer is pending; rx flow control stops those passes,
         * this stops any that come before it applies. */
        if (s->body_done || !s->waits_for_body)
            return 0;
        s->body_done = true;
        s->in_request = true;
        if (s->body_too_large) {
            char msg[64];
            snprintf(msg, sizeof msg, "body exceeds %d bytes", rt.cfg->max_frame_bytes);
            respond_err(wsi, s, CHORUS_ERR_TOO_LARGE, msg);
            return -1;
        }
        return routed(wsi, s, route(wsi, s));

    case LWS_CALLBACK_HTTP_WRITEABLE:
        return 0; /* answers are written when known; lws sends what is left */

    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        session_free(s);
        return 0;

    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}
