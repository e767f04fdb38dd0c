/* auth_ws.c - tokens on WebSocket connections and the permission checks of
 * every op (see auth_ws.h; the rules themselves are in auth.c).
 *
 * Token transports, in the order they are looked at: the `token` query
 * parameter of the upgrade URL, a `token.<jwt>` entry of the
 * Sec-WebSocket-Protocol header, an {"op":"auth"} request. A token is never
 * logged. */
#include "auth_ws.h"
#include "http_reply.h"
#include "conn.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct auth_keys keys;

/* What only a connection with a token (or waiting for one) needs, allocated
 * at the first such need and freed at CLOSED: most connections of a public
 * feed never have one. */
struct auth_state {
    struct auth_claims who;       /* valid while authenticated */
    char *attr;                   /* ,"user":SUB for this connection's msgs (codec_attr) */
    char *attr_info;              /* the same with ,"info":INFO; NULL when the token has none */
    struct conn *c;               /* the timer's connection */
    bool timer_armed;
    lws_sorted_usec_list_t timer; /* token expiry, or the auth deadline */
};

static struct auth_state *state(struct conn *c)
{
    if (!c->auth.st && (c->auth.st = calloc(1, sizeof *c->auth.st)))
        c->auth.st->c = c;
    return c->auth.st;
}

int auth_ws_init(const struct config *cfg, char *err, size_t errlen)
{
    return auth_keys_load(&keys, cfg->jwt_secret, cfg->jwt_public_key, cfg->jwt_leeway, err, errlen);
}

void auth_ws_free(void) { auth_keys_free(&keys); }

int auth_ws_reload(const struct config *cfg, bool *pem_changed, char *err, size_t errlen)
{
    struct auth_keys fresh;
    memset(&fresh, 0, sizeof fresh);
    if (auth_keys_load(&fresh, cfg->jwt_secret, cfg->jwt_public_key, cfg->jwt_leeway, err, errlen) < 0)
        return -1;
    *pem_changed = fresh.pem_len != keys.pem_len ||
                   (fresh.pem_len && memcmp(fresh.pem, keys.pem, fresh.pem_len) != 0);
    auth_keys_free(&keys);
    keys = fresh;
    return 0;
}

const struct auth_claims *auth_ws_who(const struct conn *c)
{
    return c->auth.authenticated ? &c->auth.st->who : NULL;
}

static int64_t now_s(void) { return runtime_now_ms() / 1000; }

/* ------------------------------------------------------------- the upgrade */

/* lws 4.1.6 copies Sec-WebSocket-Protocol into a 128-byte buffer and names
 * of at most 63 bytes, and binds the first name it knows (server-ws.c,
 * lws_process_ws_upgrade); a longer header or a long entry before a known
 * one makes it hang up without an answer. Say why instead. */
int auth_ws_confirm_upgrade(struct lws *wsi)
{
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL);
    const char *why = NULL;
    unsigned int status = HTTP_STATUS_BAD_REQUEST;
    if (total <= 0)
        return 0;
    if (total > 126) {
        why = "Sec-WebSocket-Protocol is longer than 126 bytes, the most this server can read: "
              "send the token as ?token= or with {\"op\":\"auth\"}";
        status = 431;
    } else {
        char buf[128];
        if (lws_hdr_copy(wsi, buf, sizeof buf, WSI_TOKEN_PROTOCOL) < 0)
            return 0;
        char *save = NULL;
        why = "offer the sub-protocol chorus.v1 before any other entry";
        for (char *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
            if (!strcmp(t, "chorus.v1")) {
                why = NULL;
                break;
            }
            if (strlen(t) > 63 || lws_vhost_name_to_protocol(lws_get_vhost(wsi), t))
                break;         /* lws would fail here, or bind another protocol */
        }
    }
    if (!why)
        return 0;
    metrics.connections_rejected[REJECT_AUTH]++;
    log_info("event=upgrade_refused reason=subprotocol status=%u", status);
    return http_reply_close(wsi, status, "text/plain", why);
}

/* The token sent with the upgrade, copied into buf; NULL when there is none. */
static const char *upgrade_token(struct lws *wsi, char *buf, size_t cap)
{
    const char *v = lws_get_urlarg_by_name(wsi, "token=", buf, (int)cap);
    if (v && *v)
        return v;
    if (lws_hdr_copy(wsi, buf, (int)cap, WSI_TOKEN_PROTOCOL) > 0) {
        char *save = NULL;
        for (char *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
            if (!strncmp(t, "token.", 6) && t[6])
                return t + 6;
    }
    return NULL;
}

/* Takes who's claims (who is left empty). -1 when memory ran out: the
 * claims are freed and c stays as it was. */
static int set_identity(struct conn *c, struct auth_claims *who)
{
    struct auth_state *st = state(c);
    if (!st) {
        auth_claims_free(who);
        return -1;
    }
    /* A refresh keeps the user (same sub) and the first info, as presence does. */
    if (!st->attr) {
        st->attr = codec_attr(who->user, NULL);
        st->attr_info = who->info ? codec_attr(who->user, who->info) : NULL;
    }
    auth_claims_free(&st->who);
    st->who = *who;
    memset(who, 0, sizeof *who);
    c->auth.authenticated = true;
    c->auth.need_auth = false;
    return 0;
}

static void disarm(struct conn *c)
{
    if (c->auth.st && c->auth.st->timer_armed) {
        lws_sul_cancel(&c->auth.st->timer);
        c->auth.st->timer_armed = false;
    }
}

int auth_ws_filter(struct conn *c, struct lws *wsi)
{
    static char buf[AUTH_QUERY_MAX + 1];
    /* A node with no key ignores tokens: the demo's clients may send one. */
    const char *token = auth_keys_any(&keys) ? upgrade_token(wsi, buf, sizeof buf) : NULL;
    if (!token) {
        c->auth.need_auth = !rt.cfg->allow_anonymous;
        return 0;
    }
    struct auth_claims who;
    enum auth_result r = auth_verify(&keys, token, strlen(token), AUTH_USE_CONNECTION, now_s(), &who);
    if (r != AUTH_OK) {
        metrics.auth_refused++;
        log_info("event=upgrade_refused reason=token token_error=\"%s\" ip=%s", auth_result_str(r),
                 c->limits.ip);
        return HTTP_STATUS_UNAUTHORIZED;
    }
    if (set_identity(c, &who) < 0)
        return HTTP_STATUS_SERVICE_UNAVAILABLE;
    metrics.auth_accepted++;
    return 0;
}

/* ------------------------------------------------------------------ timers */

static void on_timer(lws_sorted_usec_list_t *sul)
{
    struct auth_state *st = lws_container_of(sul, struct auth_state, timer);
    struct conn *c = st->c;
    st->timer_armed = false;
    if (c->auth.need_auth) {
        conn_close_with(c, CHORUS_CLOSE_AUTH, "authentication timeout", false);
    } else if (c->auth.authenticated) {
        metrics.auth_expired_closes++;
        log_info("event=token_expired client=%s", c->id);
        conn_close_with(c, CHORUS_CLOSE_AUTH, "token expired", false);
    }
}

static void arm(struct conn *c)
{
    int64_t due_ms;
    if (c->auth.need_auth)
        due_ms = runtime_now_ms() + (int64_t)rt.cfg->auth_timeout * 1000;
    else if (c->auth.authenticated && c->auth.st->who.exp) /* 0: the connect hook's, no expiry */
        due_ms = (c->auth.st->who.exp + keys.leeway) * 1000;
    else
        return;
    struct auth_state *st = state(c);
    if (!st) {
        conn_close_with(c, CHORUS_CLOSE_AUTH, "out of memory", false);
        return;
    }
    int64_t in_ms = due_ms - runtime_now_ms();
    if (in_ms < 0)
        in_ms = 0;
    lws_sul_schedule(rt.ctx, 0, &st->timer, on_timer, (lws_usec_t)in_ms * LWS_US_PER_MS);
    st->timer_armed = true;
}

void auth_ws_open(struct conn *c, json_t *hello)
{
    if (c->auth.authenticated) {
        json_object_set_new(hello, "user", json_string(c->auth.st->who.user));
        ratelimit_set_user(&c->limits, c->auth.st->who.user);
    }
    arm(c);
}

void auth_ws_set_user(struct conn *c, const char *user, json_t *info)
{
    struct auth_claims who = {0};
    who.user = strdup(user);
    if (!who.user)
        return;
    if (info)
        who.info = json_incref(info);
    disarm(c);
    set_identity(c, &who);
}

void auth_ws_closed(struct conn *c)
{
    struct auth_state *st = c->auth.st;
    disarm(c);
    if (st) {
        auth_claims_free(&st->who);
        free(st->attr);
        free(st->attr_info);
        free(st);
        c->auth.st = NULL;
    }
    c->auth.authenticated = false;
}

const char *auth_ws_attr(const struct conn *c, const char *ch, size_t len)
{
    const struct auth_state *st = c->auth.st;
    if (!st || !st->attr)
        return NULL;
    if (st->attr_info && config_ns_for(rt.cfg, ch, len)->publish_info)
        return st->attr_info;
    return st->attr;
}

/* ---------------------------------------------------------------- the ops */

bool auth_ws_gate(struct conn *c, const struct codec_request *req)
{
    if (!c->auth.need_auth || (req && (req->op == CODEC_OP_AUTH || req->op == CODEC_OP_PING)))
        return true;
    conn_close_with(c, CHORUS_CLOSE_AUTH, CHORUS_CLOSE_REASON_AUTH, false);
    return false;
}

/* {"op":"auth","id"?,"token"} -> ack {user} | close 4001 */
void auth_ws_op(struct conn *c, const struct codec_request *req)
{
    json_t *tok = json_object_get(req->root, "token");
    if (!json_is_string(tok)) {
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_BAD_REQUEST, "'auth' needs 'token' (a string)");
        return;
    }
    if (!auth_keys_any(&keys)) {
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_FORBIDDEN,
                      "this node verifies no tokens (it has no --jwt-secret or --jwt-public-key)");
        return;
    }
    if (!c->auth.authenticated && c->subs.n) {
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_FORBIDDEN,
                      "authenticate before subscribing: unsubscribe everything first or reconnect");
        return;
    }
    struct auth_claims who;
    enum auth_result r = auth_verify(&keys, json_string_value(tok), json_string_length(tok),
                                     AUTH_USE_CONNECTION, now_s(), &who);
    if (r != AUTH_OK) {
        metrics.auth_refused++;
        log_info("event=auth_refused client=%s token_error=\"%s\"", c->id, auth_result_str(r));
        conn_close_with(c, CHORUS_CLOSE_AUTH, auth_result_str(r), false);
        return;
    }
    if (c->auth.authenticated && strcmp(c->auth.st->who.user, who.user) != 0) {
        auth_claims_free(&who);
        metrics.auth_refused++;
        conn_close_with(c, CHORUS_CLOSE_AUTH, "token is for another user", false);
        return;
    }
    if (set_identity(c, &who) < 0) {
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_UNAVAILABLE, "out of memory");
        return;
    }
    metrics.auth_accepted++;
    ratelimit_set_user(&c->limits, c->auth.st->who.user);
    disarm(c);
    arm(c);
    if (req->has_id) {
        json_t *ack = json_pack("{s:s, s:I, s:s}", "op", "ack", "id", (json_int_t)req->id, "user",
                                c->auth.st->who.user);
        conn_send_json(c, ack);
    }
}

static bool subscribed(struct conn *c, const char *ch, size_t len)
{
    struct channel *chan = channel_find(ch, len);
    return chan && channel_sub_find(&c->subs, chan);
}

bool auth_ws_may_read(struct conn *c, const struct codec_request *req)
{
    const struct ns_opts *ns = config_ns_for(rt.cfg, req->ch, req->ch_len);
    const struct auth_claims *who = auth_ws_who(c);
    char why[320] = "";
    struct auth_claims tok = {0};
    bool have_tok = false, ok;

    if (ns->subscribe == NS_SUB_TOKEN) {
        json_t *t = json_object_get(req->root, "token");
        if (req->op != CODEC_OP_SUB && !t && subscribed(c, req->ch, req->ch_len))
            return true;       /* history and presence of a channel it was admitted to */
        if (json_is_string(t)) {
            enum auth_result r = auth_verify(&keys, json_string_value(t), json_string_length(t),
                                             AUTH_USE_SUBSCRIPTION, now_s(), &tok);
            if (r != AUTH_OK) {
                snprintf(why, sizeof why, "subscription token refused: %s", auth_result_str(r));
                conn_send_err(c, req->has_id, req->id, CHORUS_ERR_FORBIDDEN, why);
                return false;
            }
            have_tok = true;
        }
    }
    ok = auth_may_subscribe(ns, who, req->ch, req->ch_len, have_tok ? &tok : NULL, why, sizeof why);
    auth_claims_free(&tok);
    if (!ok)
        conn_send_err(c, req->has_id, req->id, CHORUS_ERR_FORBIDDEN, why);
    return ok;
}

bool auth_ws_may_publish(struct conn *c, const char *ch, size_t len, bool has_id, long long id)
{
    const struct ns_opts *ns = config_ns_for(rt.cfg, ch, len);
    char why[320];
    /* Only the members rule needs the (O(channels of c)) subscription lookup. */
    bool member = ns->publish == NS_PUB_MEMBERS && subscribed(c, ch, len);
    if (!auth_may_publish(ns, auth_ws_who(c), ch, len, member, why, sizeof why)) {
        conn_send_err(c, has_id, id, CHORUS_ERR_FORBIDDEN, why);
        return false;
    }
    const struct config *cfg = rt.cfg;
    if ((cfg->max_pub_rate || cfg->max_pub_rate_user) &&
        !ratelimit_publish(&c->limits, lws_now_usecs())) {
        snprintf(why, sizeof why, "publish rate limit: %d per second per connection, %d per user",
                 cfg->max_pub_rate, cfg->max_pub_rate_user);
        conn_send_err(c, has_id, id, CHORUS_ERR_RATE_LIMITED, why);
        return false;
    }
    return true;
}
