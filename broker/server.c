/* server.c - the lws context: one port for WebSocket (/ws), the HTTP API,
 * metrics, health and static files; the sweep timer; graceful shutdown.
 *
 * Shutdown order (SIGTERM/SIGINT): /healthz turns 503 and new upgrades are
 * refused at once, while connected clients are still served; a cluster node
 * hands its shards over meanwhile. Once --drain-delay has passed since the
 * signal (and the hand-over is done), every client is asked to close with
 * 1001 "shutdown" after its queue drains; the loop runs until they are gone
 * or shutdown_timeout passes; then the context is destroyed. A second
 * signal skips what is left of the drain delay.
 *
 * SIGHUP reloads what can change without a restart (config_reload). */
#include "server.h"
#include "auth_ws.h"
#include "cluster.h"
#include "consensus.h"
#include "conn.h"
#include "sse.h"
#include "deflate.h"
#include "ws.h"
#include "http_api.h"
#include "hookstats.h"
#include "httpc.h"
#include "webhook.h"
#include "occupancy.h"
#include "sdk_files.h"
#include "log.h"
#include "metrics.h"
#include "mirror.h"
#include "owner.h"
#include "publish.h"
#include "shardsync.h"
#include "presence.h"
#include "admin.h"
#include "replica.h"
#include "sdnotify.h"
#include "tls_reload.h"
#include "workers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

static lws_sorted_usec_list_t sweep_timer;

static volatile sig_atomic_t got_signal;   /* SIGTERM/SIGINT count */
static volatile sig_atomic_t got_hup;
static int signals_seen;

/* main's arguments and config, read again on SIGHUP. */
static int saved_argc;
static char **saved_argv;
static struct config *live_cfg;

static int listener_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                             void *in, size_t len);

static struct lws_protocols protocols[] = {
    /* First, so upgrades that offer no sub-protocol bind to it. */
    {"chorus.v1", ws_callback, 0, 512, 0, NULL, CONN_WRITE_BATCH + LWS_PRE},
    {"chorus-http", http_api_callback, 0, 0, 0, NULL, 0},
    {"chorus-sdk", sdk_files_callback, 0, 0, 0, NULL, 0},
    {"chorus-sse", sse_callback, 0, 0, 0, NULL, CONN_WRITE_BATCH + LWS_PRE},
    {"chorus-zmq", cluster_zmq_callback, 0, 0, 0, NULL, 0},
    {"chorus-raft", consensus_lws_callback, 0, 0, 0, NULL, 0},
    {"chorus-listen", listener_callback, 0, 0, 0, NULL, 0},
    {"chorus-httpc", httpc_lws_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}
};

static struct lws_http_mount mounts[7];

/* --workers: this worker's own SO_REUSEPORT listener, adopted as a raw fd;
 * each connection it accepts is handed to lws as if lws had accepted it.
 * Also where a signal's wake-up arrives, with or without workers. */
static int listener_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                             void *in, size_t len)
{
    if (reason == LWS_CALLBACK_EVENT_WAIT_CANCELLED) {
        /* lws_cancel_service() from the signal handler lands here: lws
         * broadcasts it to every protocol of the vhost, this one included. */
        server_reload_if_asked();
        server_begin_shutdown();
        return 0;
    }
    if (reason != LWS_CALLBACK_RAW_RX_FILE)
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    int lfd = (int)(intptr_t)lws_get_socket_fd(wsi);
    for (int i = 0; i < 256; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            break;
        if (!lws_adopt_socket_vhost(rt.vh, fd))
            close(fd);
    }
    return 0;
}

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        got_hup = 1;
    else
        got_signal++;
    if (rt.ctx)
        lws_cancel_service(rt.ctx);
}

/* Applies what changed in the live config to those who copied it. Returns
 * how many more things changed (files read again under the same names). */
static int apply_reloaded(void)
{
    char err[300];
    int more = 0;
    log_set_level((enum log_level)log_level_parse(rt.cfg->log_level));
    log_install_lws(log_get_level());
    if (ws_set_trusted_proxies(rt.cfg->trusted_proxy, rt.cfg->n_trusted_proxy, err, sizeof err) < 0)
        log_error("event=reload_failed msg=\"%s\"", err); /* config_load checked it: not reached */
    /* Token keys, always loaded again: the PEM file may have new text under its old name. */
    bool pem_changed = false;
    if (auth_ws_reload(rt.cfg, &pem_changed, err, sizeof err) < 0)
        log_error("event=reload_failed key=jwt msg=\"%s; the running token keys stay\"", err);
    else if (pem_changed && rt.cfg->jwt_public_key) {
        log_info("event=reload_changed key=jwt-public-key file=%s", rt.cfg->jwt_public_key);
        more++;
    }
    more += tls_reload(rt.ctx, rt.cfg) > 0;
    return more;
}

void server_reload_if_asked(void)
{
    if (!got_hup)
        return;
    got_hup = 0;
    log_info("event=reload_begin signal=SIGHUP config=%s",
             rt.cfg->config_file ? rt.cfg->config_file : "-");
    if (!live_cfg || !saved_argv) {
        log_warn("event=reload_refused msg=\"this process cannot reload\"");
        return;
    }
    int changed = config_reload(live_cfg, saved_argc, saved_argv);
    if (changed >= 0) {
        changed += apply_reloaded();
        log_info("event=reload_done changed=%d", changed);
    }
}

void server_set_args(int argc, char **argv)
{
    saved_argc = argc;
    saved_argv = argv;
}

static void sweep(lws_sorted_usec_list_t *sul)
{
    channel_sweep(runtime_now_ms());
    ratelimit_sweep(lws_now_usecs());
    lws_sul_schedule(rt.ctx, 0, sul, sweep, LWS_US_PER_SEC);
}

/* --workers: this worker's shared-port socket starts listening once the
 * worker is ready (workers.h). */
static int worker_fd = -1;
static lws_sorted_usec_list_t listen_timer;

static void listen_when_ready(lws_sorted_usec_list_t *sul)
{
    if (!cluster_ready()) {
        lws_sul_schedule(rt.ctx, 0, sul, listen_when_ready, 20 * LWS_US_PER_MS);
        return;
    }
    lws_sock_file_fd_type u;
    u.filefd = worker_fd;
    if (listen(worker_fd, 1024) < 0 ||
        !lws_adopt_descriptor_vhost(rt.vh, LWS_ADOPT_RAW_FILE_DESC, u, "chorus-listen", NULL)) {
        log_error("event=listen_failed port=%d error=\"%s\"", rt.cfg->port, strerror(errno));
        lws_cancel_service(rt.ctx);
        rt.shutting_down = true;
        return;
    }
    log_info("event=worker_listening port=%d", rt.cfg->port);
}

static void mount_callback(struct lws_http_mount *m, const char *point, struct lws_http_mount *next)
{
    m->mountpoint = point;
    m->mountpoint_len = (unsigned char)strlen(point);
    m->protocol = "chorus-http";
    m->origin_protocol = LWSMPRO_CALLBACK;
    m->mount_next = next;
}

static void mount_files(struct lws_http_mount *m, const char *point, const char *dir,
                        const char *def, struct lws_http_mount *next)
{
    m->mountpoint = point;
    m->mountpoint_len = (unsigned char)strlen(point);
    m->origin = dir;
    m->def = def;
    m->origin_protocol = LWSMPRO_FILE;
    m->mount_next = next;
}

/* Lets max_connections be reached without hitting the descriptor limit. */
static void raise_fd_limit(int want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t need = (rlim_t)want + 64;
    if (rl.rlim_cur < need) {
        rl.rlim_cur = need < rl.rlim_max ? need : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < need)
        log_warn("event=fd_limit limit=%llu max_connections=%d msg=\"raise ulimit -n to reach max_connections\"",
                 (unsigned long long)rl.rlim_cur, want);
}

/* Does any hook or webhook need the HTTP client? */
static bool hooks_wanted(const struct config *cfg)
{
    bool any = cfg->proxy_connect || cfg->proxy_subscribe || cfg->proxy_publish || cfg->webhook;
    for (int i = 0; i < cfg->n_namespaces; i++)
        any = any || cfg->namespaces[i].proxy_subscribe || cfg->namespaces[i].proxy_publish;
    return any;
}

int server_start(struct config *cfg)
{
    struct lws_context_creation_info info;
    struct in_addr a4;

    memset(&rt, 0, sizeof rt);
    rt.cfg = cfg;
    live_cfg = cfg;
    raise_fd_limit(cfg->max_connections);

    char err[300];
    if (auth_ws_init(cfg, err, sizeof err) < 0) {
        log_error("event=start_failed msg=\"%s\"", err);
        return -1;
    }
    ratelimit_init(cfg);
    if (ws_set_trusted_proxies(cfg->trusted_proxy, cfg->n_trusted_proxy, err, sizeof err) < 0) {
        log_error("event=start_failed msg=\"%s\"", err);
        auth_ws_free();
        return -1;
    }
    if (cfg->tls_cert && (access(cfg->tls_cert, R_OK) || access(cfg->tls_key, R_OK))) {
        log_error("event=start_failed msg=\"cannot read --tls-cert %s or --tls-key %s\"",
                  cfg->tls_cert, cfg->tls_key);
        auth_ws_free();
        return -1;
    }

    protocols[0].per_session_data_size = ws_session_size();
    protocols[0].rx_buffer_size = (size_t)cfg->rx_buffer_bytes;
    protocols[1].per_session_data_size = http_api_session_size();
    protocols[3].per_session_data_size = sse_session_size();

    mount_callback(&mounts[0], "/api", &mounts[1]);
    mount_callback(&mounts[1], "/healthz", &mounts[2]);
    mount_callback(&mounts[2], "/metrics", &mounts[3]);
    mount_files(&mounts[3], "/sdk", cfg->sdk_dir, "chorus.js", &mounts[4]);
    mounts[3].protocol = "chorus-sdk"; /* CORS, sdk_files.h */
    mounts[3].extra_mimetypes = sdk_files_mimetypes;
    mount_callback(&mounts[4], "/admin", &mounts[5]); /* admin_page.h */
    mount_callback(&mounts[5], "/sse", &mounts[6]);
    mounts[5].protocol = "chorus-sse"; /* sse.h */
    mount_files(&mounts[6], "/", cfg->static_dir, "index.html", NULL);

    memset(&info, 0, sizeof info);
    /* Workers listen themselves (SO_REUSEPORT, workers.h). */
    info.port = cfg->workers > 1 ? CONTEXT_PORT_NO_LISTEN_SERVER : cfg->port;
    /* lws takes an interface name or address; NULL means every interface. */
    info.iface = strcmp(cfg->bind, "0.0.0.0") ? cfg->bind : NULL;
    info.protocols = protocols;
    info.mounts = &mounts[0];
    info.vhost_name = "chorus";
    if (config_compression_any(cfg))
        info.extensions = deflate_extensions; /* permessage-deflate, deflate.h */
    /* keepalive.c PINGs and hangs up. lws' own validity timers would cost a
     * walk of one sorted list of every connection per PONG; a policy without
     * a hangup time turns them off (lws' default policy has one). */
    static const lws_retry_bo_t no_validity_timers = {.secs_since_valid_hangup = 0};
    info.retry_and_idle_policy = &no_validity_timers;
    info.timeout_secs = 10;
    /* lws keeps the request line and the values of the headers it knows in
     * one table of this size per request in progress (4096 by default, too
     * small for an 8192-byte ?token=); a request that overflows it is dropped
     * without an answer (lws 4.1.6 parsers.c). Freed once the upgrade or
     * the HTTP transaction is done, so idle connections do not hold it. */
    info.max_http_header_data = (unsigned short)cfg->max_header_bytes;
    /* No fd_limit_per_thread: setting it makes lws find a socket's wsi by a
     * linear scan (wsi_from_fd) instead of indexing its table, O(connections)
     * per event (docs/benchmarks.md has the cost). lws sizes the table from
     * the descriptor limit raised above. */
    info.options = LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE;
    if (!strcmp(cfg->event_loop, "epoll")) {
        /* lws' libev plugin: epoll, so cost follows ready sockets, not open ones. */
        info.options |= LWS_SERVER_OPTION_LIBEV;
        rt.event_lib = true;
    }
    if (inet_pton(AF_INET, cfg->bind, &a4) == 1)
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6; /* else lws listens on every address */
    if (cfg->tls_cert) {
        /* wss:// and https:// on the one port. ALPN offers only HTTP/1.1: the
         * write path sends pre-built WebSocket frames (conn.c), which is only
         * valid for RFC 6455 over HTTP/1.1, never for WebSocket over HTTP/2. */
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = cfg->tls_cert;
        info.ssl_private_key_filepath = cfg->tls_key;
        info.alpn = "http/1.1";
    }

    rt.ctx = lws_create_context(&info);
    if (!rt.ctx) {
        log_error("event=start_failed port=%d bind=%s msg=\"could not create the listener (port in use?%s)\"",
                  cfg->port, cfg->bind, cfg->tls_cert ? " or a bad TLS certificate or key" : "");
        auth_ws_free();
        return -1;
    }
    rt.vh = lws_get_vhost_by_name(rt.ctx, "chorus");
    tls_reload_init(cfg);
    if (cfg->workers > 1) {
        lws_sock_file_fd_type u;
        u.filefd = workers_listen(cfg);
        worker_fd = u.filefd;
        if (u.filefd < 0) {
            log_error("event=start_failed port=%d msg=\"could not share the port (SO_REUSEPORT)\"",
                      cfg->port);
            lws_context_destroy(rt.ctx);
            rt.ctx = NULL;
            return -1;
        }
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    channel_registry_init(cfg);
    channel_set_deliver(conn_deliver);
    sse_start();
    if (cluster_start(cfg, rt.vh) < 0) {
        lws_context_destroy(rt.ctx);
        rt.ctx = NULL;
        return -1;
    }
    /* The layers above the cluster register what they serve to other nodes. */
    owner_start();
    publish_start(cfg);
    replica_start(cfg);
    mirror_start();
    shardsync_start();
    presence_start();
    admin_start();
    conn_watch_cluster();
    /* The backend hooks' HTTP client; the answers it waits for are bounded
     * by max_frame_bytes plus room for the envelope. */
    if (hooks_wanted(cfg) &&
        httpc_start(rt.vh, cfg->hook_max_connections, (size_t)cfg->max_frame_bytes * 2 + 4096) < 0) {
        cluster_stop();
        lws_context_destroy(rt.ctx);
        rt.ctx = NULL;
        return -1;
    }
    if (webhook_start(rt.ctx, cfg) < 0) {
        cluster_stop();
        lws_context_destroy(rt.ctx);
        rt.ctx = NULL;
        return -1;
    }
    occupancy_start();
    metrics_set_extra(hookstats_render);
    if (keepalive_start() < 0) {
        cluster_stop();
        lws_context_destroy(rt.ctx);
        rt.ctx = NULL;
        return -1;
    }
    lws_sul_schedule(rt.ctx, 0, &sweep_timer, sweep, LWS_US_PER_SEC);
    if (cfg->workers > 1)
        lws_sul_schedule(rt.ctx, 0, &listen_timer, listen_when_ready, 1);
    log_info("event=listening node=%s bind=%s port=%d event_loop=%s static_dir=%s api=%s tls=%s tokens=%s%s anonymous=%s",
             cfg->node_id, cfg->bind, cfg->port, cfg->event_loop, cfg->static_dir,
             cfg->api_key && *cfg->api_key ? "enabled" : "disabled", cfg->tls_cert ? "on" : "off",
             cfg->jwt_secret && *cfg->jwt_secret ? "HS256," : "",
             cfg->jwt_public_key ? "public-key" : "", cfg->allow_anonymous ? "allowed" : "refused");
    sdnotify_start();
    return 0;
}

static lws_sorted_usec_list_t shutdown_timer;
static int64_t shutdown_deadline_ms;
static int64_t signal_ms;         /* monotonic: when the first SIGTERM/SIGINT came */
static bool finished;

/* Runs inside the loop every 20 ms once shutdown began: done when every
 * client is gone or the time is up. An event library (libev) keeps its loop
 * running inside lws_service(); staging the context's destroy is what ends it. */
static void shutdown_check(lws_sorted_usec_list_t *sul)
{
    if (!conn_list_empty() && runtime_now_ms() < shutdown_deadline_ms) {
        lws_sul_schedule(rt.ctx, 0, sul, shutdown_check, 20 * LWS_US_PER_MS);
        return;
    }
    log_info("event=shutdown_done connections_left=%lld since_signal_ms=%lld",
             (long long)metrics.connections, (long long)(runtime_mono_ms() - signal_ms));
    finished = true;
    if (rt.event_lib)
        lws_context_destroy(rt.ctx);
    else
        lws_cancel_service(rt.ctx);
}

static void begin_drain(void)
{
    rt.shutting_down = true;
    log_info("event=shutdown_begin connections=%lld since_signal_ms=%lld",
             (long long)metrics.connections, (long long)(runtime_mono_ms() - signal_ms));
    conn_drain_all(CHORUS_CLOSE_SHUTDOWN, CHORUS_CLOSE_REASON_SHUTDOWN);
    shutdown_deadline_ms = runtime_now_ms() + rt.cfg->shutdown_timeout_ms;
    lws_sul_schedule(rt.ctx, 0, &shutdown_timer, shutdown_check, 1);
}

/* Between the signal and the 1001 closes. A cluster node first hands its
 * shards over (PROTOCOL.md 7.4): until the committed map names it nowhere
 * it keeps serving its clients, whose publishes now go to the new owners.
 * Bounded: without a leader the shards move when its lease runs out.
 * Meanwhile, and for at least drain_delay, /healthz says 503 so that load
 * balancers take the node out before its clients come back through them. */
static lws_sorted_usec_list_t drain_timer;
static int64_t leave_deadline_ms, drain_until_ms;
static int64_t left_ms;

static void drain_check(lws_sorted_usec_list_t *sul)
{
    int64_t now = runtime_now_ms();
    if (rt.leaving && !left_ms && (cluster_left() || now >= leave_deadline_ms)) {
        left_ms = now;
        log_info("event=leave_done handed_over=%s", cluster_left() ? "yes" : "no (timeout)");
        cluster_step_down();
    }
    /* Peers apply the new map a heartbeat or two after this node: until
     * then they still send it publishes, which it forwards to the new
     * owners; it lingers that long before draining, and until the answers
     * to what it forwarded came back (bounded by the call timeout). */
    bool handed_over = !rt.leaving ||
                       (left_ms && now - left_ms >= rt.cfg->lease_ms / 3 &&
                        (!cluster_calls_outstanding() || now - left_ms >= rt.cfg->cluster_timeout_ms));
    if (!handed_over || runtime_mono_ms() < drain_until_ms) {
        lws_sul_schedule(rt.ctx, 0, sul, drain_check, 20 * LWS_US_PER_MS);
        return;
    }
    begin_drain();
}

void server_begin_shutdown(void)
{
    if (rt.shutting_down || got_signal == signals_seen)
        return;
    sdnotify_stopping();
    signals_seen = got_signal;
    if (rt.draining) {
        log_info("event=drain_skip msg=\"signal again: closing clients without waiting out the drain delay\"");
        drain_until_ms = 0;
        return;
    }
    rt.draining = true;
    signal_ms = runtime_mono_ms();
    drain_until_ms = signal_ms + (int64_t)rt.cfg->drain_delay * 1000;
    log_info("event=drain_begin drain_delay_s=%d connections=%lld leave=%s", rt.cfg->drain_delay,
             (long long)metrics.connections,
             cluster_enabled() && cluster_ready() ? "yes" : "no");
    if (cluster_enabled() && cluster_ready()) {
        rt.leaving = true;
        cluster_leave();
        leave_deadline_ms = runtime_now_ms() + 3 * (int64_t)rt.cfg->lease_ms;
    } else if (!rt.cfg->drain_delay) {
        begin_drain();
        return;
    }
    lws_sul_schedule(rt.ctx, 0, &drain_timer, drain_check, 1);
}

int server_run(void)
{
    while (!finished && lws_service(rt.ctx, 0) >= 0)
        ;
    return 0;
}

void server_stop(void)
{
    if (!rt.ctx)
        return;
    if (!rt.event_lib) {
        lws_sul_cancel(&sweep_timer);
        lws_sul_cancel(&listen_timer);
    }
    if (!rt.event_lib) {
        lws_sul_cancel(&shutdown_timer);
        lws_sul_cancel(&drain_timer);
    }
    if (!rt.event_lib)
        keepalive_stop();
    sdnotify_stop();
    /* lws holds dups of the ZeroMQ fds, so the sockets may close first. */
    mirror_stop();
    shardsync_stop();
    publish_stop();
    cluster_stop();
    owner_stop();
    lws_context_destroy(rt.ctx);
    rt.ctx = NULL;
    /* After the connections' CLOSED, which cancel their own hooks. */
    httpc_stop();
    webhook_stop();
    occupancy_stop();
    keepalive_free();
    channel_registry_free();
    presence_free();
    ratelimit_free();
    auth_ws_free();
    tls_reload_free();
}
