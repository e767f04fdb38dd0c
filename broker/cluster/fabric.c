/* fabric.c - ZeroMQ sockets, receive and dispatch, heartbeat and tick,
 * serviced from the lws event loop (fabric.h).
 *
 * ZMQ_FD is edge-triggered: every wake-up, and every zmq_* call made outside
 * the fd callback, must be followed by a drain until EAGAIN or messages sit
 * unnoticed. The periodic tick drains too, as a safety net. */
#include "fabric.h"
#include "consensus.h"
#include "endpoint.h"
#include "codec.h"
#include "log.h"
#include "membership.h"
#include "metrics.h"
#include "runtime.h"
#include "zap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define TICK_US (100 * LWS_US_PER_MS)
#define DRAIN_BUDGET 20000          /* messages per wake-up before yielding to WebSockets */
#define MAX_PARTS 4096              /* payload frames accepted in one message */
#define MAX_HOOKS 16                /* tick and peer-down handlers */

static struct {
    const struct config *cfg;
    void *ctx;
    void *pub;                      /* XPUB: our messages out, peers' subscriptions in */
    void *sub;                      /* SUB: peers' messages in */
    void *zap;                      /* REP: CURVE client authentication */
    struct lws *pub_wsi, *sub_wsi, *zap_wsi;
    char self_topic[ENVELOPE_ID_MAX + 8];
    size_t self_topic_len;
    char curve_public[CURVE_Z85_LEN + 1], curve_secret[CURVE_Z85_LEN + 1];
    int64_t last_heartbeat_ms;
    lws_sorted_usec_list_t tick, drain_soon;
} fb;

/* Registered by the cluster layer's own files and the layers above; kept
 * apart from fb so the sockets' state can be reset alone. */
static struct {
    cluster_handler_fn *by_type[ENV_TYPE_COUNT];
    cluster_tick_fn *tick[MAX_HOOKS];
    int ntick;
    cluster_peer_down_fn *down[MAX_HOOKS];
    int ndown;
    fabric_subscription_fn *subscription;
} hooks;

void cluster_handle(uint8_t type, cluster_handler_fn *fn)
{
    if (type < ENV_TYPE_COUNT)
        hooks.by_type[type] = fn;
}

/* A hook that does not fit is a bug of this program, found at start: say so
 * and stop rather than run without it. */
static void hooks_full(const char *what)
{
    log_error("event=bug msg=\"too many cluster %s hooks; raise MAX_HOOKS\"", what);
    abort();
}

void cluster_on_tick(cluster_tick_fn *fn)
{
    if (hooks.ntick == MAX_HOOKS)
        hooks_full("tick");
    hooks.tick[hooks.ntick++] = fn;
}

void cluster_on_peer_down(cluster_peer_down_fn *fn)
{
    if (hooks.ndown == MAX_HOOKS)
        hooks_full("peer-down");
    hooks.down[hooks.ndown++] = fn;
}

void fabric_on_subscription(fabric_subscription_fn *fn) { hooks.subscription = fn; }

/* ----------------------------------------------------------------- send */

int fabric_send(const char *topic, size_t tlen, const struct envelope *env,
                const struct cluster_part *parts, int nparts)
{
    unsigned char hdr[ENVELOPE_HEADER_MAX];
    size_t hl = envelope_encode(env, hdr);
    if (zmq_send(fb.pub, topic, tlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        metrics.cluster_send_drops++;
        fabric_drain_later();
        return -1;
    }
    /* Once the first frame is accepted the rest of a multipart message is too. */
    zmq_send(fb.pub, hdr, hl, nparts ? ZMQ_SNDMORE : 0);
    for (int i = 0; i < nparts; i++)
        zmq_send(fb.pub, parts[i].data, parts[i].len, i + 1 < nparts ? ZMQ_SNDMORE : 0);
    metrics.cluster_sent[env->type]++;
    fabric_drain_later();
    return 0;
}

void cluster_env_init(struct envelope *e, uint8_t type)
{
    memset(e, 0, sizeof *e);
    e->type = type;
    snprintf(e->origin, sizeof e->origin, "%s", membership_self());
}

int cluster_send_to(const char *node, const struct envelope *env, const struct cluster_part *parts,
                    int nparts)
{
    char topic[ENVELOPE_ID_MAX + 8];
    int n = snprintf(topic, sizeof topic, "!to:%s", node);
    return fabric_send(topic, (size_t)n + 1, env, parts, nparts);
}

int cluster_send_channel(const char *ch, size_t len, const struct envelope *env,
                         const struct cluster_part *parts, int nparts)
{
    /* Channel names are NUL-terminated where they are kept; the topic is
     * the name with its NUL. */
    return fabric_send(ch, len + 1, env, parts, nparts);
}

void fabric_subscribe(const char *topic, size_t tlen, bool on)
{
    zmq_setsockopt(fb.sub, on ? ZMQ_SUBSCRIBE : ZMQ_UNSUBSCRIBE, topic, tlen);
    fabric_drain_later();
}

int fabric_connect(const char *endpoint) { return zmq_connect(fb.sub, endpoint); }

void fabric_disconnect(const char *endpoint) { zmq_disconnect(fb.sub, endpoint); }

/* --------------------------------------------------------------- receive */

static void handle_message(const struct cluster_part *topic, const struct envelope *env,
                           const struct cluster_part *parts, int n)
{
    if (!strcmp(env->origin, membership_self()))
        return; /* our own traffic, e.g. through a forwarder or a self-listed peer */
    metrics.cluster_received[env->type]++;
    membership_seen(env->origin, runtime_now_ms());
    if (env->type == ENV_HEARTBEAT)
        membership_seen_raft(env->origin, env->seq);
    cluster_handler_fn *fn = env->type < ENV_TYPE_COUNT ? hooks.by_type[env->type] : NULL;
    if (fn)
        fn(topic, env, parts, n);
}

/* Reads one multipart message; returns false when none is waiting. */
static bool recv_one(void *sock, bool *bad)
{
    zmq_msg_t frames[2 + 1];
    static zmq_msg_t *more;
    static int more_cap;
    int n = 0, more_flag = 1;
    *bad = false;

    zmq_msg_init(&frames[0]);
    if (zmq_msg_recv(&frames[0], sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&frames[0]);
        return false;
    }
    n = 1;
    more_flag = zmq_msg_more(&frames[0]);
    if (!more_flag) {
        zmq_msg_close(&frames[0]);
        *bad = true;
        return true;
    }
    zmq_msg_init(&frames[1]);
    zmq_msg_recv(&frames[1], sock, 0);
    n = 2;
    int nparts = 0;
    while (zmq_msg_more(nparts ? &more[nparts - 1] : &frames[1])) {
        if (nparts == more_cap) {
            int ncap = more_cap ? more_cap * 2 : 16;
            zmq_msg_t *nm = realloc(more, sizeof *nm * (size_t)ncap);
            if (!nm)
                break;
            more = nm;
            more_cap = ncap;
        }
        zmq_msg_init(&more[nparts]);
        zmq_msg_recv(&more[nparts], sock, 0);
        nparts++;
        if (nparts > MAX_PARTS)
            *bad = true;
    }

    struct envelope env;
    struct cluster_part topic = {zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0])};
    if (!*bad && envelope_decode(zmq_msg_data(&frames[1]), zmq_msg_size(&frames[1]), &env)) {
        struct cluster_part *parts = nparts ? malloc(sizeof *parts * (size_t)nparts) : NULL;
        if (!nparts || parts) {
            for (int i = 0; i < nparts; i++)
                parts[i] = (struct cluster_part){zmq_msg_data(&more[i]), zmq_msg_size(&more[i])};
            handle_message(&topic, &env, parts, nparts);
        }
        free(parts);
    } else {
        *bad = true;
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
    for (int i = 0; i < nparts; i++)
        zmq_msg_close(&more[i]);
    return true;
}

/* XPUB delivers subscriptions: byte 1 = subscribe, 0 = unsubscribe, then the topic. */
static void handle_subscription(const unsigned char *d, size_t len)
{
    if (len < 3 || d[len - 1] != '\0')
        return;
    /* "!to:ID": node ID's SUB follows us; XPUB reports the first subscriber
     * and the last one leaving, so a restarted node's two links count once. */
    if (len > 6 && !memcmp(d + 1, "!to:", 4) && len - 6 <= ENVELOPE_ID_MAX && (d[0] == 0 || d[0] == 1)) {
        membership_heard_by((const char *)d + 5, d[0] == 1);
        return;
    }
    if (d[1] == '!')
        return;
    const char *name = (const char *)d + 1;
    size_t nl = len - 2;
    if (!codec_channel_valid(name, nl) || (d[0] != 0 && d[0] != 1))
        return;
    if (hooks.subscription)
        hooks.subscription(name, nl, d[0] == 1);
}

static int events_of(void *sock)
{
    int ev = 0;
    size_t sl = sizeof ev;
    zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &sl);
    return ev;
}

/* CURVE lets any client that knows the server key connect; the ZAP handler
 * admits only clients presenting the cluster's own public key. */
static void zap_serve(void)
{
    uint8_t key[32];
    bool ok;
    zmq_z85_decode(key, fb.curve_public);
    while ((events_of(fb.zap) & ZMQ_POLLIN) && zap_serve_one(fb.zap, ZMQ_DONTWAIT, key, &ok) > 0)
        if (!ok) {
            metrics.cluster_auth_failures++;
            log_warn("event=cluster_auth_refused msg=\"a node presented an unknown CURVE key\"");
        }
}

static void drain(void)
{
    int budget = DRAIN_BUDGET;
    bool bad;
    while (budget > 0 && (events_of(fb.sub) & ZMQ_POLLIN)) {
        if (!recv_one(fb.sub, &bad))
            break;
        if (bad)
            metrics.cluster_bad_messages++;
        budget--;
    }
    while (budget > 0 && (events_of(fb.pub) & ZMQ_POLLIN)) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, fb.pub, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            break;
        }
        handle_subscription(zmq_msg_data(&m), zmq_msg_size(&m));
        zmq_msg_close(&m);
        budget--;
    }
    if (fb.zap)
        zap_serve();
    if (budget <= 0)
        fabric_drain_later(); /* more is waiting; let WebSocket work run first */
}

static void drain_cb(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    drain();
}

void fabric_drain_later(void)
{
    if (rt.ctx)
        lws_sul_schedule(rt.ctx, 0, &fb.drain_soon, drain_cb, 1);
}

/* ------------------------------------------------------------------ tick */

static void peer_down(const char *node)
{
    for (int i = 0; i < hooks.ndown; i++)
        hooks.down[i](node);
}

static void tick(lws_sorted_usec_list_t *sul)
{
    int64_t now = runtime_now_ms();
    if (now - fb.last_heartbeat_ms >= fb.cfg->heartbeat_ms) {
        struct envelope e;
        cluster_env_init(&e, ENV_HEARTBEAT);
        e.ts_ms = now;
        e.seq = consensus_self_id(); /* peers learn which node our Raft id is */
        fabric_send("!hb", 4, &e, NULL, 0);
        fb.last_heartbeat_ms = now;
    }
    membership_sweep(now, peer_down);
    for (int i = 0; i < hooks.ntick; i++)
        hooks.tick[i](now);
    drain();
    lws_sul_schedule(rt.ctx, 0, sul, tick, TICK_US);
}

/* --------------------------------------------------------- lws adoption */

int cluster_zmq_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        drain();
        return 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (wsi == fb.pub_wsi)
            fb.pub_wsi = NULL;
        if (wsi == fb.sub_wsi)
            fb.sub_wsi = NULL;
        if (wsi == fb.zap_wsi)
            fb.zap_wsi = NULL;
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* lws closes what it adopts, and libzmq must keep its own fd: adopt a dup. */
static struct lws *adopt(struct lws_vhost *vh, void *sock)
{
    int fd;
    size_t sl = sizeof fd;
    lws_sock_file_fd_type u;
    if (zmq_getsockopt(sock, ZMQ_FD, &fd, &sl) != 0)
        return NULL;
    u.filefd = dup(fd);
    if (u.filefd < 0)
        return NULL;
    struct lws *w = lws_adopt_descriptor_vhost(vh, LWS_ADOPT_RAW_FILE_DESC, u, "chorus-zmq", NULL);
    if (!w)
        close(u.filefd);
    return w;
}

static void set_int(void *sock, int opt, int v) { zmq_setsockopt(sock, opt, &v, sizeof v); }

static int curve_setup(void *sock, bool server_role)
{
    if (!fb.cfg->cluster_curve_secret)
        return 0;
    if (server_role) {
        set_int(sock, ZMQ_CURVE_SERVER, 1);
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "chorus", 6);
        return zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, fb.curve_secret, CURVE_Z85_LEN);
    }
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, fb.curve_public, CURVE_Z85_LEN) ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, fb.curve_public, CURVE_Z85_LEN) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, fb.curve_secret, CURVE_Z85_LEN))
        return -1;
    return 0;
}

static void common_options(void *sock)
{
    set_int(sock, ZMQ_LINGER, 0);
    set_int(sock, ZMQ_SNDHWM, fb.cfg->cluster_hwm);
    set_int(sock, ZMQ_RCVHWM, fb.cfg->cluster_hwm);
    set_int(sock, ZMQ_RECONNECT_IVL, 100);
    set_int(sock, ZMQ_RECONNECT_IVL_MAX, 2000);
    set_int(sock, ZMQ_HEARTBEAT_IVL, 1000);
    set_int(sock, ZMQ_HEARTBEAT_TIMEOUT, 3000);
    set_int(sock, ZMQ_HEARTBEAT_TTL, 3000);
    set_int(sock, ZMQ_TCP_KEEPALIVE, 1);
    /* IPv6 endpoints (peers resolved to IPv6, a [::] bind) need this; IPv4 ones still work. */
    set_int(sock, ZMQ_IPV6, 1);
}

int fabric_start(const struct config *cfg, struct lws_vhost *vh)
{
    fb.cfg = cfg;
    fb.self_topic_len = (size_t)snprintf(fb.self_topic, sizeof fb.self_topic, "!to:%s",
                                         cfg->node_id) + 1;
    if (cfg->cluster_curve_secret) {
        if (!zmq_has("curve") || strlen(cfg->cluster_curve_secret) != CURVE_Z85_LEN ||
            zmq_curve_public(fb.curve_public, cfg->cluster_curve_secret) != 0) {
            log_error("event=cluster_start_failed msg=\"cluster-curve-secret must be a 40-character Z85 CURVE secret key and libzmq must support CURVE\"");
            return -1;
        }
        snprintf(fb.curve_secret, sizeof fb.curve_secret, "%s", cfg->cluster_curve_secret);
    }

    fb.ctx = zmq_ctx_new();
    if (cfg->cluster_curve_secret) {
        fb.zap = zmq_socket(fb.ctx, ZMQ_REP);
        set_int(fb.zap, ZMQ_LINGER, 0);
        if (zmq_bind(fb.zap, ZAP_ENDPOINT) != 0)
            goto fail;
    }
    fb.pub = zmq_socket(fb.ctx, ZMQ_XPUB);
    fb.sub = zmq_socket(fb.ctx, ZMQ_SUB);
    common_options(fb.pub);
    common_options(fb.sub);
    /* Refuse rather than drop silently at the high-water mark (counted). */
    set_int(fb.pub, ZMQ_XPUB_NODROP, 1);

    if (cfg->forwarder_connect) {
        char sub_ep[300];
        if (!endpoint_plus(cfg->forwarder_connect, 1, sub_ep, sizeof sub_ep) ||
            curve_setup(fb.pub, false) || curve_setup(fb.sub, false) ||
            zmq_connect(fb.pub, cfg->forwarder_connect) || zmq_connect(fb.sub, sub_ep))
            goto fail;
    } else {
        if (curve_setup(fb.pub, true) || curve_setup(fb.sub, false) ||
            zmq_bind(fb.pub, cfg->cluster_bind) != 0)
            goto fail;
    }
    zmq_setsockopt(fb.sub, ZMQ_SUBSCRIBE, "!hb", 4);
    zmq_setsockopt(fb.sub, ZMQ_SUBSCRIBE, fb.self_topic, fb.self_topic_len);

    fb.pub_wsi = adopt(vh, fb.pub);
    fb.sub_wsi = adopt(vh, fb.sub);
    if (fb.zap)
        fb.zap_wsi = adopt(vh, fb.zap);
    if (!fb.pub_wsi || !fb.sub_wsi || (fb.zap && !fb.zap_wsi))
        goto fail;
    return 0;

fail:
    log_error("event=cluster_start_failed bind=%s error=%s", cfg->cluster_bind ? cfg->cluster_bind : "-",
              zmq_strerror(zmq_errno()));
    return -1;
}

/* Starts the tick once every file of the layer is set up. */
void fabric_run(void)
{
    lws_sul_schedule(rt.ctx, 0, &fb.tick, tick, TICK_US);
}

void fabric_stop(void)
{
    if (rt.ctx) {
        lws_sul_cancel(&fb.tick);
        lws_sul_cancel(&fb.drain_soon);
    }
    if (fb.pub)
        zmq_close(fb.pub);
    if (fb.sub)
        zmq_close(fb.sub);
    if (fb.zap)
        zmq_close(fb.zap);
    if (fb.ctx)
        zmq_ctx_term(fb.ctx);
    memset(&fb, 0, sizeof fb);
    memset(&hooks, 0, sizeof hooks);
}
