/* forwarder.c - zmq_proxy_steerable between an XSUB and an XPUB, stopped by
 * a signal through its control socket; CURVE with a ZAP handler when keyed. */
#include "forwarder.h"
#include "log.h"
#include "sdnotify.h"
#include "zap.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

struct zap_ctx {
    void *ctx;
    char public_z85[CURVE_Z85_LEN + 1];
};

/* Admits only clients that present the cluster's public key. */
static void *zap_thread(void *arg)
{
    struct zap_ctx *z = arg;
    void *rep = zmq_socket(z->ctx, ZMQ_REP);
    int linger = 0, rcvtimeo = 200;
    uint8_t key[32];
    zmq_setsockopt(rep, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(rep, ZMQ_RCVTIMEO, &rcvtimeo, sizeof rcvtimeo);
    zmq_z85_decode(key, z->public_z85);
    if (zmq_bind(rep, ZAP_ENDPOINT) != 0) {
        zmq_close(rep);
        return NULL;
    }
    while (!stop) {
        bool ok;
        if (zap_serve_one(rep, 0, key, &ok) > 0 && !ok)
            log_warn("event=forwarder_auth_refused msg=\"a node presented an unknown CURVE key\"");
    }
    zmq_close(rep);
    return NULL;
}

/* Sends TERMINATE to the proxy once a signal arrives. */
static void *stopper_thread(void *ctx)
{
    void *ctl = zmq_socket(ctx, ZMQ_PAIR);
    zmq_connect(ctl, "inproc://forwarder-control");
    while (!stop)
        usleep(100 * 1000);
    sdnotify_stopping();
    zmq_send(ctl, "TERMINATE", 9, 0);
    zmq_close(ctl);
    return NULL;
}

static int server_socket(void *s, const struct config *cfg, const char *secret)
{
    int linger = 0, hwm = cfg->cluster_hwm, one = 1;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (!secret)
        return 0;
    zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, "chorus", 6);
    return zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, secret, CURVE_Z85_LEN);
}

int forwarder_run(const struct config *cfg)
{
    char host[256], xpub_ep[300];
    const char *ep = cfg->cluster_bind;
    const char *colon = strrchr(ep, ':');
    const char *secret = cfg->cluster_curve_secret;
    struct zap_ctx z;
    pthread_t zap_tid, stop_tid;
    bool zap_started = false;
    int rc = 1;

    if (strncmp(ep, "tcp://", 6) != 0 || !colon || (size_t)(colon - ep - 6) >= sizeof host) {
        log_error("event=forwarder_failed msg=\"cluster-bind must be tcp://ADDR:PORT\"");
        return 2;
    }
    memcpy(host, ep + 6, (size_t)(colon - ep - 6));
    host[colon - ep - 6] = '\0';
    snprintf(xpub_ep, sizeof xpub_ep, "tcp://%s:%d", host, atoi(colon + 1) + 1);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* The forwarder has nothing to reload; SIGHUP must not end it. */
    signal(SIGHUP, SIG_IGN);

    void *ctx = zmq_ctx_new();
    if (secret) {
        if (strlen(secret) != CURVE_Z85_LEN || zmq_curve_public(z.public_z85, secret) != 0) {
            log_error("event=forwarder_failed msg=\"cluster-curve-secret must be a 40-character Z85 key\"");
            zmq_ctx_term(ctx);
            return 2;
        }
        z.ctx = ctx;
        zap_started = pthread_create(&zap_tid, NULL, zap_thread, &z) == 0;
        usleep(50 * 1000); /* the handler must be bound before sockets authenticate */
    }
    void *xsub = zmq_socket(ctx, ZMQ_XSUB);
    void *xpub = zmq_socket(ctx, ZMQ_XPUB);
    void *ctl = zmq_socket(ctx, ZMQ_PAIR);
    zmq_bind(ctl, "inproc://forwarder-control");
    if (server_socket(xsub, cfg, secret) || server_socket(xpub, cfg, secret) ||
        zmq_bind(xsub, ep) != 0 || zmq_bind(xpub, xpub_ep) != 0) {
        log_error("event=forwarder_failed bind=%s error=%s", ep, zmq_strerror(zmq_errno()));
        stop = 1;
        goto out;
    }
    pthread_create(&stop_tid, NULL, stopper_thread, ctx);
    log_info("event=forwarder_started xsub=%s xpub=%s curve=%s", ep, xpub_ep, secret ? "on" : "off");
    sdnotify_ready_now();
    zmq_proxy_steerable(xsub, xpub, NULL, ctl);
    pthread_join(stop_tid, NULL);
    log_info("event=forwarder_stopped");
    rc = 0;
out:
    zmq_close(xsub);
    zmq_close(xpub);
    zmq_close(ctl);
    if (zap_started)
        pthread_join(zap_tid, NULL);
    zmq_ctx_term(ctx);
    return rc;
}
