/* ws.c - the "chorus.v1" lws protocol: what lws reports about a WebSocket
 * connection (filter, open, receive, writeable, close) turned into calls on
 * the connection (conn.c), its authentication (auth_ws.c), keepalive, the
 * client protocol's ops and presence. The top of the session layer: nothing
 * in it is called but by lws. */
#include "ws.h"
#include "auth_ws.h"
#include "binmsg.h"
#include "clientip.h"
#include "cluster.h"
#include "conn.h"
#include "deflate.h"
#include "frame.h"
#include "http_reply.h"
#include "keepalive.h"
#include "log.h"
#include "metrics.h"
#include "ops.h"
#include "pipelined.h"
#include "presence.h"
#include "proxy.h"
#include "readmore.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static uint64_t conn_counter;
static uint32_t conn_id_salt;
static struct trusted_nets trusted;

size_t ws_session_size(void) { return sizeof(struct conn); }

int ws_set_trusted_proxies(char *const *cidrs, int n, char *err, size_t cap)
{
    struct trusted_nets t;
    if (trusted_nets_parse(&t, cidrs, n, err, cap) < 0)
        return -1;
    trusted = t;
    return 0;
}

/* ---------------------------------------------------------------- receive */

/* Fails the connection at once (RFC 6455 7.1.7): the close frame goes out
 * ahead of anything queued, and nothing more of the client's is read. */
static int conn_fail(struct conn *c, enum chorus_close code, const char *reason)
{
    log_info("event=ws_protocol_close client=%s code=%d reason=\"%s\"", c->id, (int)code, reason);
    lws_close_reason(c->wsi, (enum lws_close_status)code, (unsigned char *)reason, strlen(reason));
    return -1;
}

/* Hands one whole message to the ops (text) or binmsg (binary). A
 * compressed one is inflated first (at most max bytes: past that it gets
 * too_large) and its text checked as UTF-8 then. -1 fails the connection. */
static int conn_dispatch(struct conn *c, const unsigned char *in, size_t len, uint32_t max)
{
    metrics.frames_received++;
    if (c->rx_deflated) {
        int rc = deflate_inflate(in, len, max, &in, &len);
        if (rc < 0)
            return conn_fail(c, CHORUS_CLOSE_PROTOCOL_ERROR, "invalid compressed data");
        if (rc > 0) {
            char msg[64];
            snprintf(msg, sizeof msg, "frame exceeds %u bytes", max);
            conn_send_err(c, false, 0, CHORUS_ERR_TOO_LARGE, msg);
            return 0;
        }
        struct utf8_check u = {0};
        if (!c->rx_binary && (!utf8_feed(&u, in, len) || !utf8_complete(&u)))
            return conn_fail(c, CHORUS_CLOSE_INVALID_PAYLOAD, CHORUS_CLOSE_REASON_INVALID_PAYLOAD);
    }
    if (c->rx_binary)
        binmsg_handle(c, in, len);
    else
        ops_handle(c, (const char *)in, len);
    return 0;
}

/* Returns -1 when the connection must be failed. */
static int conn_receive(struct conn *c, const unsigned char *in, size_t len)
{
    const uint32_t max = (uint32_t)rt.cfg->max_frame_bytes;
    bool final = lws_is_final_fragment(c->wsi) && !lws_remaining_packet_payload(c->wsi);

    metrics.bytes_received += len;
    readmore_note(c, len);
    if (!c->rx_in_msg) {
        c->rx_in_msg = true;
        c->rx_len = 0;
        c->rx_discard = false;
        c->rx_binary = lws_frame_is_binary(c->wsi);
        /* lws accepts RSV1 only where the extension was negotiated. */
        c->rx_deflated = c->deflate && (lws_get_reserved_bits(c->wsi) & FRAME_RSV1);
        memset(&c->rx_utf8, 0, sizeof c->rx_utf8);
    }
    /* What is gathered: a compressed message may be a little longer than
     * what it inflates to. */
    const uint32_t lim = c->rx_deflated ? (uint32_t)deflate_input_max(max) : max;
    /* Checked as it arrives, also for a message being discarded as too large
     * (a compressed one once inflated). */
    if (!c->rx_binary && !c->rx_deflated &&
        (!utf8_feed(&c->rx_utf8, in, len) || (final && !utf8_complete(&c->rx_utf8))))
        return conn_fail(c, CHORUS_CLOSE_INVALID_PAYLOAD, CHORUS_CLOSE_REASON_INVALID_PAYLOAD);

    /* The common case: a whole message in one callback needs no copy. */
    if (final && c->rx_len == 0 && !c->rx_discard && len <= lim) {
        c->rx_in_msg = false;
        return conn_dispatch(c, in, len, max);
    }

    /* An empty fragment adds nothing (and c->rx may still be NULL). */
    if (!c->rx_discard && len) {
        if ((size_t)c->rx_len + len > lim) {
            c->rx_discard = true; /* keep reading, stop storing */
        } else {
            if (c->rx_len + len > c->rx_cap) {
                uint32_t ncap = c->rx_cap ? c->rx_cap : 1024;
                while (ncap < c->rx_len + len)
                    ncap *= 2;
                if (ncap > lim)
                    ncap = lim;
                unsigned char *n = realloc(c->rx, ncap);
                if (!n) {
                    c->rx_discard = true;
                } else {
                    c->rx = n;
                    c->rx_cap = ncap;
                }
            }
            if (!c->rx_discard) {
                memcpy(c->rx + c->rx_len, in, len);
                c->rx_len += (uint32_t)len;
            }
        }
    }
    if (!final)
        return 0;

    c->rx_in_msg = false;
    int rc = 0;
    if (c->rx_discard) {
        char msg[64];
        metrics.frames_received++;
        snprintf(msg, sizeof msg, "frame exceeds %u bytes", max);
        conn_send_err(c, false, 0, CHORUS_ERR_TOO_LARGE, msg);
    } else {
        rc = conn_dispatch(c, c->rx, c->rx_len, max);
    }
    /* Idle connections should hold no assembly buffer. */
    free(c->rx);
    c->rx = NULL;
    c->rx_cap = c->rx_len = 0;
    return rc;
}

/* A close frame from the client (RFC 6455 5.5.1, 7.4). lws 4.1.6 echoes
 * whatever came and has already replaced most invalid codes with 1002 in
 * `in`, but not codes of 5000 and above, a 1-byte body or a reason that is
 * not UTF-8: those fail the connection here with our own close frame. */
static int conn_peer_close(struct conn *c, const unsigned char *in, size_t len)
{
    if (len == 1)
        return conn_fail(c, CHORUS_CLOSE_PROTOCOL_ERROR, "close frame of 1 byte");
    if (len >= 2) {
        unsigned int code = (unsigned int)in[0] << 8 | in[1];
        bool valid = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
                     (code >= 3000 && code <= 4999);
        if (!valid)
            return conn_fail(c, CHORUS_CLOSE_PROTOCOL_ERROR, CHORUS_CLOSE_REASON_PROTOCOL_ERROR);
        struct utf8_check u = {0};
        if (!utf8_feed(&u, in + 2, len - 2) || !utf8_complete(&u))
            return conn_fail(c, CHORUS_CLOSE_INVALID_PAYLOAD, "invalid UTF-8 in close reason");
    }
    return 0;
}

/* -------------------------------------------------------------- lifecycle */

static bool origin_allowed(struct lws *wsi)
{
    const struct config *cfg = rt.cfg;
    char origin[256];
    if (!cfg->n_allowed_origin)
        return true;
    int n = lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN);
    if (n <= 0)
        return false;
    /* Whole lengths: lws keeps a NUL inside a header value (its length
     * counts the other bytes), and lws_hdr_copy() ends the copy at the NUL,
     * so strcmp() let "http://ok.example\0.evil" pass as "http://ok.example". */
    for (int i = 0; i < cfg->n_allowed_origin; i++)
        if (strlen(cfg->allowed_origin[i]) == (size_t)n &&
            !memcmp(origin, cfg->allowed_origin[i], (size_t)n))
            return true;
    return false;
}

/* A header's whole value (every occurrence, joined with ',' by lws), or
 * NULL when absent; the caller frees it. Bounded by --max-header-bytes. */
static char *header_dup(struct lws *wsi, enum lws_token_indexes h, size_t *len)
{
    int total = lws_hdr_total_length(wsi, h);
    *len = 0;
    if (total <= 0)
        return NULL;
    /* lws adds a ',' between occurrences, not counted in the total. */
    size_t cap = (size_t)total * 2 + 2;
    char *v = malloc(cap);
    int n = v ? lws_hdr_copy(wsi, v, (int)cap, h) : -1;
    if (n <= 0) {
        free(v);
        return NULL;
    }
    *len = (size_t)n;
    return v;
}

/* The client's address: the TCP peer, or what a trusted proxy says it is
 * (clientip.h). */
static void client_ip(struct lws *wsi, char *out)
{
    char peer[CLIENTIP_LEN + 8] = "";
    lws_get_peer_simple(wsi, peer, sizeof peer);
    if (!trusted.n || !trusted_nets_match(&trusted, peer)) {
        clientip_resolve(&trusted, peer, NULL, 0, NULL, 0, NULL, 0, out);
        return;
    }
    size_t xl, rl, pl;
    char *xff = header_dup(wsi, WSI_TOKEN_X_FORWARDED_FOR, &xl);
    char *real = header_dup(wsi, WSI_TOKEN_HTTP_X_REAL_IP, &rl);
    char *proxy = header_dup(wsi, WSI_TOKEN_PROXY, &pl);
    clientip_resolve(&trusted, peer, xff, xl, real, rl, proxy, pl, out);
    free(xff);
    free(real);
    free(proxy);
}

/* Answers a refused upgrade with an HTTP status and the reason before hanging
 * up, so clients and load balancers see why. */
static int refuse(struct lws *wsi, enum reject_reason why, unsigned int status, const char *msg)
{
    metrics.connections_rejected[why]++;
    return http_reply_close(wsi, status, "text/plain", msg);
}

/* Refuses the upgrade (non-zero) for a wrong path, origin, when full, for a
 * client IP over its limits (429) or a token that does not verify (401). */
static int conn_filter(struct conn *c, struct lws *wsi)
{
    char uri[64];
    int n = lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI);
    if (n <= 0 || strcmp(uri, "/ws") != 0)
        return refuse(wsi, REJECT_PATH, HTTP_STATUS_FORBIDDEN, "WebSocket upgrades are served at /ws");
    /* The query carries at most a token (PROTOCOL.md 8.1): a longer one is
     * refused, where the token reader would only have missed it. */
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS) > AUTH_QUERY_MAX)
        return refuse(wsi, REJECT_PATH, HTTP_STATUS_REQ_URI_TOO_LONG,
                      "the query is longer than a token may be (8192 bytes)");
    return ws_admit(c, wsi, false);
}

int ws_admit(struct conn *c, struct lws *wsi, bool origin_optional)
{
    if (rt.draining || rt.shutting_down || rt.leaving)
        return refuse(wsi, REJECT_SHUTDOWN, HTTP_STATUS_SERVICE_UNAVAILABLE, "node is shutting down");
    if (!cluster_ready())
        return refuse(wsi, REJECT_STARTING, HTTP_STATUS_SERVICE_UNAVAILABLE,
                      cluster_lease_lost_ms() > 0
                          ? "node is cut off from the cluster majority (no lease): try another node"
                          : "node is starting: waiting for the cluster to agree on its shard map");
    if (!origin_allowed(wsi) &&
        !(origin_optional && lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) <= 0)) {
        char origin[256] = "", q[300];
        int n = lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN);
        log_info("event=upgrade_refused reason=origin origin=%s",
                 log_quote(q, sizeof q, origin, n > 0 ? (size_t)n : 0));
        return refuse(wsi, REJECT_ORIGIN, HTTP_STATUS_FORBIDDEN, "origin not allowed");
    }
    if (metrics.connections >= rt.cfg->max_connections)
        return refuse(wsi, REJECT_MAX_CONNECTIONS, HTTP_STATUS_SERVICE_UNAVAILABLE,
                      "node is at max_connections");
    char ip[CLIENTIP_LEN];
    client_ip(wsi, ip);
    int status = ratelimit_upgrade(&c->limits, ip, lws_now_usecs());
    if (status) {
        log_info("event=upgrade_refused reason=ip_limit ip=%s status=%d", ip, status);
        return refuse(wsi, REJECT_IP_LIMIT, (unsigned int)status,
                      status == 429 ? "too many connections or upgrades from this address"
                                    : "refused for this address");
    }
    status = auth_ws_filter(c, wsi);
    if (status)
        return refuse(wsi, REJECT_AUTH, (unsigned int)status, "token refused");
    return 0;
}

/* Greets the client, once the connect hook (if any) allowed it; `extra`
 * adds the hook's fields (channels). */
static void conn_hello(struct conn *c, json_t *extra)
{
    json_t *hello = json_pack("{s:s, s:i, s:s, s:s}", "op", "hello", "v", 1, "node",
                              rt.cfg->node_id, "client", c->id);
    if (hello && extra)
        json_object_update(hello, extra);
    if (hello)
        auth_ws_open(c, hello);
    conn_send_json(c, hello);
}

void ws_conn_open(struct conn *c, struct lws *wsi)
{
    if (!conn_id_salt)
        conn_id_salt = (uint32_t)lws_now_usecs() & 0xffffff;
    c->wsi = wsi;
    c->established = true;
    snprintf(c->id, sizeof c->id, "%06x%08llx", conn_id_salt, (unsigned long long)++conn_counter);
    conn_list_add(c);
    metrics.connections++;
    metrics.connections_accepted++;

    keepalive_conn_open(c);
    ratelimit_conn_open(&c->limits);
    log_info("event=conn_open client=%s ip=%s", c->id, c->limits.ip);
    if (!proxy_connect(c, conn_hello, ops_hook_subscribe))
        conn_hello(c, NULL);
}

void ws_conn_closed(struct conn *c)
{
    auth_ws_closed(c); /* FILTER may have stored claims even if it refused */
    if (!c->established)
        return; /* refused in FILTER: never linked */
    c->established = false;
    lws_dll2_remove(&c->flush);
    readmore_conn_closed(c);
    keepalive_conn_closed(c);
    proxy_conn_closed(c);
    ops_conn_closed(c);
    presence_conn_closed(c);
    ratelimit_conn_closed(&c->limits);
    channel_unsubscribe_all(&c->subs);
    outq_clear(&c->q);
    free(c->rx);
    c->rx = NULL;
    conn_list_remove(c);
    metrics.connections--;
    /* server_close: the code this node closed with; 0 when the client
     * closed or the connection broke. */
    log_info("event=conn_close client=%s ip=%s server_close=%d", c->id, c->limits.ip,
             c->closing ? (int)c->close_code : 0);
}

/* lws 4.1.6 answers an Upgrade other than websocket or h2c with 403 and
 * completes the transaction, then still calls CONFIRM_UPGRADE and
 * strcasecmp()s the value (roles/http/server/server.c, lws_handshake_server,
 * lines 2150-2187). On a kept-alive connection (conn_type is still the
 * previous request's: lws_http_action sets it later) with nothing more
 * buffered, lws_http_transaction_completed has detached and freed the header
 * table (parsers.c, __lws_header_table_detach), so that value, also our `in`,
 * is freed memory; with more buffered, the table was reset. Returning -1 makes
 * lws close before its strcasecmp (bail_nuke_ah). The value is read again
 * through the table (NULL or reset then): its first fragment is what lws
 * compared. */
static bool upgrade_answered_by_lws(struct lws *wsi)
{
    char up[16];
    if (lws_hdr_copy_fragment(wsi, up, sizeof up, WSI_TOKEN_UPGRADE, 0) < 0)
        return true;
    return strcasecmp(up, "websocket") && strcasecmp(up, "h2c");
}

/* HTTP/2 over cleartext (Upgrade: h2c). The port serves HTTP/1.1 only
 * (PROTOCOL.md 6; TLS offers only http/1.1 too), and lws' HTTP/2 code is
 * beyond what the fault suite and fuzz_http exercise: refused, not exposed. */
static bool upgrade_h2c_refused(struct lws *wsi)
{
    char up[16];
    if (lws_hdr_copy_fragment(wsi, up, sizeof up, WSI_TOKEN_UPGRADE, 0) <= 0 ||
        strcasecmp(up, "h2c"))
        return false;
    http_reply_close(wsi, 400, "text/plain", "HTTP/2 (h2c) is not served: use HTTP/1.1");
    return true;
}

int ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                size_t len)
{
    struct conn *c = user;

    switch (reason) {
    case LWS_CALLBACK_FILTER_HTTP_CONNECTION:
        /* Every plain HTTP request (API and files) passes here first. */
        if (http_framing_refuse(wsi))
            return 1;
        if (pipelined_body(wsi))
            return pipelined_refuse(wsi);
        return http_body_refuse(wsi, in);
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        /* -1, not 1: 1 means "answered, keep the connection" here (lws then
         * completes the transaction), but these answers say close. */
        if (upgrade_answered_by_lws(wsi) || upgrade_h2c_refused(wsi) ||
            http_framing_refuse(wsi) || auth_ws_confirm_upgrade(wsi))
            return -1;
        return 0;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return conn_filter(c, wsi);
    case LWS_CALLBACK_CONFIRM_EXTENSION_OKAY:
        return deflate_confirm(c, wsi, in);
    case LWS_CALLBACK_ADD_HEADERS:
        if (c && c->deflate && deflate_add_headers(c, in) < 0)
            return -1;
        break;
    case LWS_CALLBACK_ESTABLISHED:
        ws_conn_open(c, wsi);
        return 0;
    case LWS_CALLBACK_RECEIVE:
        if (c->closing)
            return 0;
        return conn_receive(c, in, len);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        return conn_peer_close(c, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (!c->established)
            return 0;
        if (conn_flush(c) < 0)
            return -1;
        if (c->closing && outq_empty(&c->q)) {
            lws_close_reason(wsi, (enum lws_close_status)c->close_code,
                             (unsigned char *)c->close_reason, strlen(c->close_reason));
            return -1;
        }
        return 0;
    case LWS_CALLBACK_CLOSED:
        ws_conn_closed(c);
        return 0;
    case LWS_CALLBACK_RECEIVE_PONG:
        if (c->established)
            keepalive_conn_pong(c);
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}
