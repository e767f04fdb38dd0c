/* config.c - the settings table and its three sources (file, environment, flags). */
#include "config.h"
#include "clientip.h"
#include "log.h"
#include "paths.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef CHORUS_VERSION
#define CHORUS_VERSION "dev"
#endif
#ifndef CHORUS_GIT_COMMIT
#define CHORUS_GIT_COMMIT "unknown"
#endif
#ifndef CHORUS_WWW_DIR
#define CHORUS_WWW_DIR "www"
#endif
#ifndef CHORUS_SDK_DIR
#define CHORUS_SDK_DIR "sdk"
#endif
/* The same directories of an installed chorusd, relative to its bin dir. */
#ifndef CHORUS_WWW_REL
#define CHORUS_WWW_REL "../share/chorus/www"
#endif
#ifndef CHORUS_SDK_REL
#define CHORUS_SDK_REL "../share/chorus/sdk"
#endif

enum opt_type { OPT_INT, OPT_STR, OPT_BOOL, OPT_LIST, OPT_FLAG };

struct opt {
    const char *name;        /* flag name without "--"; env and JSON names derive from it */
    enum opt_type type;
    size_t off;
    size_t off_n;            /* OPT_LIST: the count beside the array */
    const char *metavar;
    long min, max;
    const char *help;
    const char *def;         /* the default, as the text a flag would give; NULL: zero,
                              * or computed (node-id, static-dir, sdk-dir). --help
                              * shows it, with the metavar's unit, unless help does */
};

#define F(field) offsetof(struct config, field)
static const struct opt opts[] = {
    {"port", OPT_INT, F(port), 0, "N", 1, 65535, "TCP port for HTTP and WebSocket", "8080"},
    {"bind", OPT_STR, F(bind), 0, "ADDR", 0, 0, "address to listen on", "0.0.0.0"},
    {"api-key", OPT_STR, F(api_key), 0, "KEY", 0, 0,
     "key for POST /api/publish; without one the HTTP publish API is disabled", NULL},
    {"admin-secret", OPT_STR, F(admin_secret), 0, "SECRET", 0, 0,
     "password of the read-only /admin page (HTTP Basic); without one /admin is disabled", NULL},
    {"config", OPT_STR, F(config_file), 0, "FILE", 0, 0, "JSON config file (keys as below, with '_')", NULL},
    {"node-id", OPT_STR, F(node_id), 0, "ID", 0, 0, "this node's id (default: host name)", NULL},
    {"static-dir", OPT_STR, F(static_dir), 0, "DIR", 0, 0, "files served at / (default: the demo)", NULL},
    {"sdk-dir", OPT_STR, F(sdk_dir), 0, "DIR", 0, 0, "files served at /sdk/ (default: the JS SDK)", NULL},
    {"allowed-origin", OPT_LIST, F(allowed_origin), F(n_allowed_origin), "URL", 0, 0,
     "accept WebSocket upgrades only from this Origin (repeatable; default: any)", NULL},
    {"max-connections", OPT_INT, F(max_connections), 0, "N", 1, 10000000,
     "most WebSocket connections held at once", "10000"},
    {"max-frame-bytes", OPT_INT, F(max_frame_bytes), 0, "BYTES", 64, 64 << 20,
     "largest client frame or HTTP body accepted", "65536"},
    {"workers", OPT_INT, F(workers), 0, "N", 1, 64,
     "worker processes sharing the port, one per core, joined as a cluster over ipc://", "1"},
    {"rx-buffer-bytes", OPT_INT, F(rx_buffer_bytes), 0, "BYTES", 128, 1 << 20,
     "receive buffer lws keeps for each connection (memory per connection); longer messages arrive in pieces", "256"},
    {"rx-turn-bytes", OPT_INT, F(rx_turn_bytes), 0, "BYTES", 128, 1 << 20,
     "read from one connection per loop turn at most, in rx-buffer-bytes reads; larger lets one publisher feed more fan-out", "4096"},
    {"max-header-bytes", OPT_INT, F(max_header_bytes), 0, "BYTES", 4096, 65535,
     "request line and headers kept per HTTP request or upgrade, room for an 8192-byte ?token=", "16384"},
    {"max-channels-per-conn", OPT_INT, F(max_channels_per_conn), 0, "N", 1, 1000000,
     "most channels one connection may subscribe to", "128"},
    {"max-queue-bytes", OPT_INT, F(max_queue_bytes), 0, "BYTES", 1024, INT_MAX,
     "outbound queue bound per connection; past it the client is closed 4008", "1048576"},
    {"max-queue-frames", OPT_INT, F(max_queue_frames), 0, "N", 4, 1 << 24,
     "outbound queue bound per connection in frames", "4096"},
    {"conflate-queue-bytes", OPT_INT, F(conflate_queue_bytes), 0, "BYTES", 0, INT_MAX,
     "in namespaces with slow_consumer \"conflate\": once a connection's queue holds this much, "
     "a channel's new message replaces its queued one", "4096"},
    {"conflate-sndbuf-bytes", OPT_INT, F(conflate_sndbuf_bytes), 0, "BYTES", 0, 64 << 20,
     "socket send buffer of a connection reading conflating channels (0: the kernel's autotuning, "
     "which lets seconds of stale values wait in the kernel)", "8192"},
    {"conflate-notsent-bytes", OPT_INT, F(conflate_notsent_bytes), 0, "BYTES", 0, 64 << 20,
     "unsent bytes a connection reading conflating channels may have in its socket (TCP_NOTSENT_LOWAT); "
     "past it, its messages wait in chorusd, where conflate-queue-bytes counts them (0: no limit)", "1024"},
    {"ping-interval", OPT_INT, F(ping_interval), 0, "SECONDS", 1, 65000,
     "idle time before the server PINGs a client", "25"},
    {"ping-timeout", OPT_INT, F(ping_timeout), 0, "SECONDS", 1, 65000,
     "time a client has to answer a PING before it is dropped", "10"},
    {"history-size", OPT_INT, F(history_size), 0, "N", 0, 1000000,
     "messages of history kept per channel", "100"},
    {"history-ttl", OPT_INT, F(history_ttl), 0, "SECONDS", 0, INT_MAX,
     "how long a message stays in history, 0 = forever", "600"},
    {"client-publish", OPT_BOOL, F(client_publish), 0, "true|false", 0, 0,
     "may WebSocket clients publish in namespaces that do not say", "true"},
    {"shutdown-timeout", OPT_INT, F(shutdown_timeout_ms), 0, "MS", 0, 600000,
     "time allowed to flush and close clients on SIGTERM", "2000"},
    {"cluster-bind", OPT_STR, F(cluster_bind), 0, "ENDPOINT", 0, 0,
     "join a cluster: bind the node's XPUB here, e.g. tcp://0.0.0.0:7000 (default: no cluster)", NULL},
    {"peer", OPT_LIST, F(peer), F(n_peer), "ENDPOINT", 0, 0,
     "another node's cluster-bind endpoint, tcp://HOST:PORT (repeatable; DNS names are re-resolved)", NULL},
    {"forwarder-connect", OPT_STR, F(forwarder_connect), 0, "ENDPOINT", 0, 0,
     "link through the forwarder at tcp://HOST:PORT instead of a mesh of peers", NULL},
    {"forwarder", OPT_FLAG, F(forwarder), 0, "", 0, 0,
     "run as the cluster forwarder (XSUB on the cluster-bind port, XPUB on port + 1)", NULL},
    {"cluster-curve-secret", OPT_STR, F(cluster_curve_secret), 0, "Z85", 0, 0,
     "encrypt and authenticate node links with this CURVE secret key (see --curve-keygen)", NULL},
    {"curve-keygen", OPT_FLAG, F(curve_keygen), 0, "", 0, 0,
     "print a new secret for --cluster-curve-secret (and its public key) and exit", NULL},
    {"cluster-insecure", OPT_BOOL, F(cluster_insecure), 0, "true|false", 0, 0,
     "allow plaintext node links when no CURVE key is set", "false"},
    {"heartbeat-ms", OPT_INT, F(heartbeat_ms), 0, "MS", 50, 60000, "node heartbeat interval", "500"},
    {"peer-timeout-ms", OPT_INT, F(peer_timeout_ms), 0, "MS", 100, 600000,
     "a peer silent this long is down", "2000"},
    {"cluster-timeout-ms", OPT_INT, F(cluster_timeout_ms), 0, "MS", 50, 600000,
     "wait this long for a channel owner's answer before replying unavailable", "2000"},
    {"peer-resolve-interval", OPT_INT, F(peer_resolve_interval), 0, "SECONDS", 1, 86400,
     "re-resolve peer DNS names this often", "10"},
    {"peer-resolve-fast-ms", OPT_INT, F(peer_resolve_fast_ms), 0, "MS", 100, 600000,
     "re-resolve peer DNS names this often while a peer is down or not heard yet", "1000"},
    {"peer-max-addresses", OPT_INT, F(peer_max_addresses), 0, "N", 1, 1024,
     "addresses kept per peer name (more are dropped, with a warning)", "64"},
    {"join-wait-ms", OPT_INT, F(join_wait_ms), 0, "MS", 0, 600000,
     "a starting node reports ready once every peer it hears hears it too, or after this long", "10000"},
    {"cluster-hwm", OPT_INT, F(cluster_hwm), 0, "N", 100, 10000000,
     "ZeroMQ high-water mark, messages per link", "100000"},
    {"data-dir", OPT_STR, F(data_dir), 0, "DIR", 0, 0,
     "where a cluster node keeps its Raft log and vote; keep it across restarts (default: chorus-data/NODE-ID)", NULL},
    {"raft-bind", OPT_STR, F(raft_bind), 0, "IPV4:PORT", 0, 0,
     "agreed membership (Raft) listens here (default: the cluster-bind address, port + 1)", NULL},
    {"raft-peer", OPT_LIST, F(raft_peer), F(n_raft_peer), "HOST:PORT", 0, 0,
     "another node's Raft address, a name or IPv4 (repeatable; default: each --peer's host, port + 1)", NULL},
    {"raft-advertise", OPT_STR, F(raft_advertise), 0, "HOST:PORT", 0, 0,
     "the Raft address the peers know this node by (default: the --peer entry naming this node, else raft-bind)", NULL},
    {"lease-ms", OPT_INT, F(lease_ms), 0, "MS", 200, 60000,
     "an owner or backup acts only this long after the Raft leader last confirmed it", "1500"},
    {"election-timeout-ms", OPT_INT, F(election_timeout_ms), 0, "MS", 100, 60000,
     "Raft election timeout: followers wait this long (to twice as long) for a silent leader before electing another", "600"},
    {"replication-factor", OPT_INT, F(replication_factor), 0, "N", 1, 5,
     "copies of every acknowledged message: the owner's and N-1 backups'", "2"},
    {"event-loop", OPT_STR, F(event_loop), 0, "poll|epoll", 0, 0,
     "event loop: epoll (libev; scales with many connections) or poll (lws built-in)", "epoll"},
    {"log-level", OPT_STR, F(log_level), 0, "LEVEL", 0, 0, "debug, info, warn or error", "info"},
    {"jwt-secret", OPT_STR, F(jwt_secret), 0, "SECRET", 0, 0,
     "verify HS256 connection tokens with this secret (default: no HS256)", NULL},
    {"jwt-public-key", OPT_STR, F(jwt_public_key), 0, "FILE", 0, 0,
     "verify RS256 or ES256 connection tokens with this PEM public key (default: none)", NULL},
    {"jwt-leeway", OPT_INT, F(jwt_leeway), 0, "SECONDS", 0, 3600,
     "clock skew allowed when checking a token's exp and nbf", "5"},
    {"allow-anonymous", OPT_BOOL, F(allow_anonymous), 0, "true|false", 0, 0,
     "may connections without a token subscribe and publish where namespaces allow", "true"},
    {"auth-timeout", OPT_INT, F(auth_timeout), 0, "SECONDS", 1, 3600,
     "without anonymous access, time a tokenless connection has to send auth", "10"},
    {"tls-cert", OPT_STR, F(tls_cert), 0, "FILE", 0, 0,
     "PEM certificate (chain): serve wss:// and https:// on the port (needs --tls-key)", NULL},
    {"tls-key", OPT_STR, F(tls_key), 0, "FILE", 0, 0, "PEM private key of --tls-cert", NULL},
    {"max-pub-rate", OPT_INT, F(max_pub_rate), 0, "N", 0, 1000000,
     "publishes per second per connection, beyond it err rate_limited (default 0 = no limit)", NULL},
    {"pub-burst", OPT_INT, F(pub_burst), 0, "N", 0, 1000000,
     "publishes allowed at once before the rate limits apply (default 0 = one second's worth)", NULL},
    {"max-pub-rate-user", OPT_INT, F(max_pub_rate_user), 0, "N", 0, 1000000,
     "publishes per second per authenticated user, over all their connections (default 0 = no limit)", NULL},
    {"max-conn-rate-ip", OPT_INT, F(max_conn_rate_ip), 0, "N", 0, 1000000,
     "WebSocket upgrades per second per client IP, beyond it HTTP 429 (default 0 = no limit)", NULL},
    {"max-conns-per-ip", OPT_INT, F(max_conns_per_ip), 0, "N", 0, 10000000,
     "open WebSocket connections per client IP, beyond it HTTP 429 (default 0 = no limit)", NULL},
    {"presence-max-members", OPT_INT, F(presence_max_members), 0, "N", 0, 10000000,
     "past this many members presence answers counts and join/leave stop", "1000"},
    {"trusted-proxy", OPT_LIST, F(trusted_proxy), F(n_trusted_proxy), "CIDR", 0, 0,
     "a reverse proxy's address or range (IPv4 or IPv6, repeatable): from it, X-Forwarded-For, "
     "X-Real-IP or a PROXY v1 line name the client IP used by per-IP limits and logs (default: none)", NULL},
    {"drain-delay", OPT_INT, F(drain_delay), 0, "SECONDS", 0, 3600,
     "on SIGTERM, keep serving clients this long while /healthz is 503 and new upgrades are "
     "refused, so load balancers stop sending new ones, before closing clients with 1001", "0"},
    {"idempotency-window", OPT_INT, F(idempotency_window), 0, "SECONDS", 0, INT_MAX,
     "seconds a publish's key is remembered; a key seen again later publishes anew, 0 = no time limit", "600"},
    {"idempotency-keys", OPT_INT, F(idempotency_keys), 0, "N", 0, 1000000,
     "publish keys remembered per channel (the newest), 0 = keys are ignored", "1024"},
    {"compression", OPT_BOOL, F(compression), 0, "true|false", 0, 0,
     "permessage-deflate (RFC 7692) for clients that offer it: each message compressed once and "
     "shared; a namespace's \"compression\" overrides it", "false"},
    {"compression-min-bytes", OPT_INT, F(compression_min_bytes), 0, "BYTES", 0, 64 << 20,
     "frames smaller than this are sent uncompressed (replies such as acks mostly are)", "128"},
    {"compression-huffman-max-bytes", OPT_INT, F(compression_huffman_max_bytes), 0, "BYTES", 0, 64 << 20,
     "frames up to this size are compressed with Huffman codes only, no string matching: about a "
     "third fewer instructions and about as small on short messages such as ticker quotes; 0 = never", "200"},
    {"max-idempotency-keys", OPT_INT, F(max_idempotency_keys), 0, "N", 0, INT_MAX,
     "publish keys remembered on this node over all channels, the oldest dropped first (~150 bytes each), 0 = no bound", "200000"},
    {"proxy-connect", OPT_STR, F(proxy_connect), 0, "URL", 0, 0,
     "ask this backend (POST JSON) whether a new connection may stay, and as whom (default: no hook)", NULL},
    {"proxy-subscribe", OPT_STR, F(proxy_subscribe), 0, "URL", 0, 0,
     "ask this backend whether a sub may go ahead; namespaces may set their own (default: no hook)", NULL},
    {"proxy-publish", OPT_STR, F(proxy_publish), 0, "URL", 0, 0,
     "ask this backend whether a pub may go ahead, and with what data; namespaces may set their own (default: no hook)", NULL},
    {"proxy-timeout", OPT_INT, F(proxy_timeout_ms), 0, "MS", 10, 600000,
     "a proxy hook not answered within this is a refusal (fail closed)", "3000"},
    {"proxy-max-pending", OPT_INT, F(proxy_max_pending), 0, "N", 1, 10000000,
     "proxy hooks waiting for the backend on this node; past it ops are refused unavailable", "10000"},
    {"hook-max-connections", OPT_INT, F(hook_max_connections), 0, "N", 1, 100000,
     "connections open to hook and webhook backends at once (more requests wait their turn)", "64"},
    {"webhook", OPT_STR, F(webhook), 0, "URL", 0, 0,
     "POST batches of channel_occupied/vacated and member_added/removed events here (default: none)", NULL},
    {"webhook-secret", OPT_STR, F(webhook_secret), 0, "SECRET", 0, 0,
     "sign webhook bodies with HMAC-SHA256 in X-Chorus-Signature (default: unsigned)", NULL},
    {"webhook-timeout", OPT_INT, F(webhook_timeout_ms), 0, "MS", 10, 600000,
     "time a webhook POST may take before it is retried", "5000"},
    {"webhook-max-queue", OPT_INT, F(webhook_max_queue), 0, "N", 1, 10000000,
     "webhook events waiting to be sent; past it new ones are dropped and counted", "10000"},
    {"webhook-batch", OPT_INT, F(webhook_batch), 0, "N", 1, 10000,
     "most events in one webhook POST", "100"},
    {"webhook-retries", OPT_INT, F(webhook_retries), 0, "N", 0, 100,
     "times a failed webhook POST is retried (backoff 0.5 s doubling to 30 s) before its events are dropped", "8"},
};
#undef F

/* How many values the array of a list option holds. */
static int list_cap(const struct opt *o)
{
    return o->off == offsetof(struct config, peer) || o->off == offsetof(struct config, raft_peer)
               ? CONFIG_MAX_PEERS : CONFIG_MAX_ORIGINS;
}

static void set_str(char **slot, const char *v)
{
    free(*slot);
    *slot = strdup(v);
}

/* Applies one textual value; `src` names its origin for error messages. */
static int apply(struct config *cfg, const struct opt *o, const char *v, const char *src)
{
    char *base = (char *)cfg;
    switch (o->type) {
    case OPT_INT: {
        char *end;
        errno = 0;
        long n = strtol(v, &end, 10);
        /* strtol skips leading blanks and takes a '+': " 80" and "+80" are refused. */
        if (errno || end == v || *end || !(isdigit((unsigned char)*v) || *v == '-') ||
            n < o->min || n > o->max) {
            fprintf(stderr, "chorusd: %s: %s must be an integer in [%ld, %ld], got '%s'\n", src,
                    o->name, o->min, o->max, v);
            return -1;
        }
        *(int *)(base + o->off) = (int)n;
        return 0;
    }
    case OPT_FLAG:
    case OPT_BOOL:
        /* Strict: "yes", "on" or "TRUE" are refused rather than guessed. */
        if (!strcmp(v, "true") || !strcmp(v, "1"))
            *(bool *)(base + o->off) = true;
        else if (!strcmp(v, "false") || !strcmp(v, "0"))
            *(bool *)(base + o->off) = false;
        else {
            fprintf(stderr, "chorusd: %s: %s must be true or false (or 1 or 0), got '%s'\n", src,
                    o->name, v);
            return -1;
        }
        return 0;
    case OPT_STR:
        set_str((char **)(base + o->off), v);
        return 0;
    case OPT_LIST: {
        int *n = (int *)(base + o->off_n);
        int max = list_cap(o);
        if (*n >= max) {
            fprintf(stderr, "chorusd: %s: at most %d values for %s\n", src, max, o->name);
            return -1;
        }
        ((char **)(base + o->off))[(*n)++] = strdup(v);
        return 0;
    }
    }
    return -1;
}

/* Every option's default comes from its row of opts[]; the node id and the
 * two served directories (beside an installed chorusd, else in the source
 * tree: paths.h) are computed. */
static void defaults(struct config *cfg)
{
    char host[256] = "chorus";
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (opts[i].def)
            apply(cfg, &opts[i], opts[i].def, "default");
    if (gethostname(host, sizeof host - 1) != 0)
        strcpy(host, "chorus");
    set_str(&cfg->node_id, host);
    cfg->static_dir = paths_data_dir(CHORUS_WWW_REL, "index.html", CHORUS_WWW_DIR);
    cfg->sdk_dir = paths_data_dir(CHORUS_SDK_REL, "chorus.js", CHORUS_SDK_DIR);
}

static void clear_list(struct config *cfg, const struct opt *o)
{
    char **v = (char **)((char *)cfg + o->off);
    int *n = (int *)((char *)cfg + o->off_n);
    for (int i = 0; i < *n; i++)
        free(v[i]);
    *n = 0;
}

static void clear_lists(struct config *cfg)
{
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (opts[i].type == OPT_LIST)
            clear_list(cfg, &opts[i]);
}

static void derive_name(char *out, size_t cap, const char *name, bool env)
{
    size_t o = 0;
    if (env)
        o = (size_t)snprintf(out, cap, "CHORUS_");
    for (; *name && o + 1 < cap; name++)
        out[o++] = *name == '-' ? '_' : env ? (char)toupper((unsigned char)*name) : *name;
    out[o] = '\0';
}

/* The file's values must have their option's JSON type: "port": "8080" and
 * "allow_anonymous": "yes" are refused, naming the value. */
static int apply_json_value(struct config *cfg, const struct opt *o, json_t *v, const char *src)
{
    char buf[64];
    if (json_is_string(v) && (o->type == OPT_STR || o->type == OPT_LIST))
        return apply(cfg, o, json_string_value(v), src);
    if (json_is_integer(v) && o->type == OPT_INT) {
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
        return apply(cfg, o, buf, src);
    }
    if (json_is_boolean(v) && (o->type == OPT_BOOL || o->type == OPT_FLAG))
        return apply(cfg, o, json_is_true(v) ? "true" : "false", src);
    if (json_is_array(v) && o->type == OPT_LIST) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_string(e) || apply(cfg, o, json_string_value(e), src) < 0) {
                fprintf(stderr, "chorusd: %s: %s must be an array of strings\n", src, o->name);
                return -1;
            }
        }
        return 0;
    }
    static const char *const want[] = {[OPT_INT] = "an integer", [OPT_STR] = "a string",
                                       [OPT_BOOL] = "true or false", [OPT_LIST] = "an array of strings",
                                       [OPT_FLAG] = "true or false"};
    char *got = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT), key[64];
    derive_name(key, sizeof key, o->name, false);
    fprintf(stderr, "chorusd: %s: %s has the wrong type: must be %s, got %s\n", src, key,
            want[o->type], got ? got : "?");
    free(got);
    return -1;
}

static int load_file(struct config *cfg, const char *path, json_t **root_out)
{
    json_error_t err;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        fprintf(stderr, "chorusd: config %s:%d: %s\n", path, err.line, err.text);
        return -1;
    }
    if (!json_is_object(root)) {
        fprintf(stderr, "chorusd: config %s: must be a JSON object\n", path);
        json_decref(root);
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "namespaces"))
            continue;
        size_t i;
        char jname[64];
        for (i = 0; i < sizeof opts / sizeof opts[0]; i++) {
            derive_name(jname, sizeof jname, opts[i].name, false);
            if (!strcmp(jname, key))
                break;
        }
        if (i == sizeof opts / sizeof opts[0] || !strcmp(key, "config")) {
            fprintf(stderr, "chorusd: config %s: unknown key '%s'\n", path, key);
            json_decref(root);
            return -1;
        }
        if (apply_json_value(cfg, &opts[i], v, path) < 0) {
            json_decref(root);
            return -1;
        }
    }
    *root_out = root;
    return 0;
}

static const char *const sub_rules[] = {"anyone", "authenticated", "claim", "token", NULL};
static const char *const pub_rules[] = {"anyone", "authenticated", "members", "nobody", NULL};

static const char *const slow_rules[] = {"close", "conflate", NULL};

static int name_index(const char *const *names, const char *v)
{
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], v))
            return i;
    return -1;
}

static bool json_int_in(json_t *v, json_int_t lo, json_int_t hi)
{
    return json_is_integer(v) && json_integer_value(v) >= lo && json_integer_value(v) <= hi;
}

/* One key of a namespace object. An unknown key and a bad value are told
 * apart, and a bad value is named with what the key accepts. */
static int ns_key(struct ns_opts *ns, json_t *o, const char *k, json_t *v, const char *path)
{
    const char *want = NULL;
    int n;
    if (!strcmp(k, "history_size")) {
        if (json_int_in(v, 0, 1000000))
            ns->history_size = (int)json_integer_value(v);
        else
            want = "an integer in [0, 1000000]";
    } else if (!strcmp(k, "history_ttl")) {
        if (json_int_in(v, 0, INT_MAX))
            ns->history_ttl = (int)json_integer_value(v);
        else
            want = "an integer of seconds >= 0";
    } else if (!strcmp(k, "client_publish")) {
        if (json_object_get(o, "publish"))
            want = "absent when publish is set (it is the older spelling of publish anyone|nobody)";
        else if (json_is_boolean(v))
            ns->publish = json_is_true(v) ? NS_PUB_ANYONE : NS_PUB_NOBODY;
        else
            want = "true or false";
    } else if (!strcmp(k, "presence")) {
        if (json_is_boolean(v))
            ns->presence = json_is_true(v);
        else
            want = "true or false";
    } else if (!strcmp(k, "subscribe")) {
        if (json_is_string(v) && (n = name_index(sub_rules, json_string_value(v))) >= 0)
            ns->subscribe = (enum ns_subscribe)n;
        else
            want = "\"anyone\", \"authenticated\", \"claim\" or \"token\"";
    } else if (!strcmp(k, "publish")) {
        if (json_is_string(v) && (n = name_index(pub_rules, json_string_value(v))) >= 0)
            ns->publish = (enum ns_publish)n;
        else
            want = "\"anyone\", \"authenticated\", \"members\" or \"nobody\"";
    } else if (!strcmp(k, "personal")) {
        if (json_is_boolean(v))
            ns->personal = json_is_true(v);
        else
            want = "true or false";
    } else if (!strcmp(k, "publish_info")) {
        if (json_is_boolean(v))
            ns->publish_info = json_is_true(v);
        else
            want = "true or false";
    } else if (!strcmp(k, "presence_max_members")) {
        if (json_int_in(v, 0, 10000000))
            ns->presence_max_members = (int)json_integer_value(v);
        else
            want = "an integer in [0, 10000000]";
    } else if (!strcmp(k, "idempotency_window")) {
        if (json_int_in(v, 0, INT_MAX))
            ns->idempotency_window = (int)json_integer_value(v);
        else
            want = "an integer of seconds >= 0";
    } else if (!strcmp(k, "compression")) {
        if (json_is_boolean(v))
            ns->compression = json_is_true(v);
        else
            want = "true or false";
    } else if (!strcmp(k, "idempotency_keys")) {
        if (json_int_in(v, 0, 1000000))
            ns->idempotency_keys = (int)json_integer_value(v);
        else
            want = "an integer in [0, 1000000]";
    } else if (!strcmp(k, "proxy_subscribe") || !strcmp(k, "proxy_publish")) {
        int i = k[6] == 'p';
        const char **slot = i ? &ns->proxy_publish : &ns->proxy_subscribe;
        if (json_is_string(v)) {
            /* "" turns off a global hook for this namespace. */
            const char *u = json_string_value(v);
            *slot = *u ? strdup(u) : NULL;
            ns->proxy_owned[i] = *slot != NULL;
        } else {
            want = "a URL string (\"\" for none)";
        }
    } else if (!strcmp(k, "slow_consumer")) {
        if (json_is_string(v) && (n = name_index(slow_rules, json_string_value(v))) >= 0)
            ns->slow_consumer = (enum ns_slow_consumer)n;
        else
            want = "\"close\" or \"conflate\"";
    } else {
        fprintf(stderr, "chorusd: config %s: namespace '%s': unknown key '%s' (known: history_size, "
                        "history_ttl, subscribe, publish, client_publish, presence, "
                        "presence_max_members, personal, publish_info, idempotency_window, "
                        "idempotency_keys, proxy_subscribe, proxy_publish, slow_consumer, compression)\n",
                path, ns->name, k);
        return -1;
    }
    if (!want)
        return 0;
    char *got = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    fprintf(stderr, "chorusd: config %s: namespace '%s': %s must be %s, got %s\n", path, ns->name, k,
            want, got ? got : "?");
    free(got);
    return -1;
}

static int load_namespaces(struct config *cfg, json_t *root, const char *path)
{
    json_t *nss = root ? json_object_get(root, "namespaces") : NULL;
    if (!nss)
        return 0;
    if (!json_is_object(nss)) {
        fprintf(stderr, "chorusd: config %s: 'namespaces' must be an object\n", path);
        return -1;
    }
    cfg->namespaces = calloc(json_object_size(nss), sizeof *cfg->namespaces);
    const char *name;
    json_t *o;
    json_object_foreach(nss, name, o) {
        struct ns_opts *ns = &cfg->namespaces[cfg->n_namespaces];
        *ns = cfg->default_ns;
        ns->proxy_owned[0] = ns->proxy_owned[1] = false;
        if (!json_is_object(o) || strlen(name) == 0 || strlen(name) >= sizeof ns->name ||
            strchr(name, ':')) {
            fprintf(stderr, "chorusd: config %s: namespace '%s' must be an object named without ':'\n",
                    path, name);
            return -1;
        }
        snprintf(ns->name, sizeof ns->name, "%s", name);
        const char *k;
        json_t *v;
        json_object_foreach(o, k, v) {
            if (ns_key(ns, o, k, v, path) < 0)
                return -1;
        }
        ns->client_publish = ns->publish != NS_PUB_NOBODY;
        bool needs_tokens = ns->subscribe != NS_SUB_ANYONE || ns->personal ||
                            ns->publish == NS_PUB_AUTHENTICATED;
        if (needs_tokens && !cfg->jwt_secret && !cfg->jwt_public_key) {
            fprintf(stderr, "chorusd: config %s: namespace '%s' admits only token holders: "
                            "set --jwt-secret or --jwt-public-key\n", path, name);
            return -1;
        }
        cfg->n_namespaces++;
    }
    return 0;
}

/* --help's topics, in the order shown. A row of opts[] is listed under the
 * first topic naming it; a row no topic names is listed under "Other", so a
 * new option is never left out of --help. (trusted-proxy and drain-delay are
 * issue 15's options from another branch: a name without a row is ignored.) */
static const struct {
    const char *title;
    const char *names; /* space-separated option names, each followed by a space */
} topics[] = {
    {"General", "config node-id log-level event-loop workers "},
    {"Listening and serving", "port bind tls-cert tls-key allowed-origin static-dir sdk-dir "
                              "max-header-bytes trusted-proxy "},
    {"Authentication and permissions", "api-key admin-secret jwt-secret jwt-public-key jwt-leeway "
                                       "allow-anonymous auth-timeout client-publish "},
    {"Compression", "compression compression-min-bytes compression-huffman-max-bytes "},
    {"Limits", "max-connections max-frame-bytes rx-buffer-bytes rx-turn-bytes max-channels-per-conn "
               "max-queue-bytes max-queue-frames conflate-queue-bytes conflate-sndbuf-bytes conflate-notsent-bytes max-pub-rate pub-burst max-pub-rate-user "
               "max-conn-rate-ip max-conns-per-ip presence-max-members "},
    {"History", "history-size history-ttl "},
    {"Keep-alive and shutdown", "ping-interval ping-timeout drain-delay shutdown-timeout "},
    {"Cluster", "cluster-bind peer forwarder-connect forwarder cluster-curve-secret curve-keygen "
                "cluster-insecure heartbeat-ms peer-timeout-ms cluster-timeout-ms "
                "peer-resolve-interval peer-resolve-fast-ms peer-max-addresses join-wait-ms "
                "cluster-hwm "},
    {"Backend hooks", "proxy-connect proxy-subscribe proxy-publish proxy-timeout proxy-max-pending "
                      "hook-max-connections webhook webhook-secret webhook-timeout "
                      "webhook-max-queue webhook-batch webhook-retries "},
    {"Cluster membership (Raft)", "data-dir raft-bind raft-peer raft-advertise lease-ms "
                                  "election-timeout-ms "
                                  "replication-factor "},
};
#define N_TOPICS (sizeof topics / sizeof topics[0])

static size_t topic_of(const char *name)
{
    size_t n = strlen(name);
    for (size_t t = 0; t < N_TOPICS; t++)
        for (const char *p = strstr(topics[t].names, name); p; p = strstr(p + 1, name))
            if ((p == topics[t].names || p[-1] == ' ') && p[n] == ' ')
                return t;
    return N_TOPICS;
}

/* The default as --help shows it, with the unit its metavar names. */
static void format_default(char *out, size_t cap, const struct opt *o)
{
    const char *unit = !strcmp(o->metavar, "MS")        ? " ms"
                       : !strcmp(o->metavar, "SECONDS") ? " s"
                       : !strcmp(o->metavar, "BYTES")   ? " bytes"
                                                        : "";
    snprintf(out, cap, " (default %s%s)", o->def, unit);
}

static void usage_option(const struct opt *o)
{
    char env[64], flag[64], def[300] = "";
    derive_name(env, sizeof env, o->name, true);
    snprintf(flag, sizeof flag, "--%s%s%s", o->name, *o->metavar ? " " : "", o->metavar);
    if (o->def && !strstr(o->help, "(default"))
        format_default(def, sizeof def, o);
    char text[600];
    snprintf(text, sizeof text, "%s%s", o->help, def);
    /* Words wrapped at 79 columns, in a column after the flag. */
    enum { COL = 35, WIDTH = 79 };
    int at = printf("  %-32s ", flag);
    if (at > COL) {
        printf("\n%*s", COL, "");
        at = COL;
    }
    for (const char *w = text; *w;) {
        size_t n = strcspn(w, " ");
        if (at > COL && at + 1 + (int)n > WIDTH) {
            printf("\n%*s", COL, "");
            at = COL;
        } else if (at > COL) {
            putchar(' ');
            at++;
        }
        printf("%.*s", (int)n, w);
        at += (int)n;
        w += n;
        while (*w == ' ')
            w++;
    }
    printf("\n%*s[env %s]\n", COL, "", env);
}

static void usage(void)
{
    printf("Usage: chorusd [OPTIONS]\n\n"
           "Chorus edge node: WebSocket pub/sub (protocol v1 at /ws), HTTP API, metrics and\n"
           "the demo on one port. Runs with no options.\n\n"
           "Every option can also be set by the environment variable shown and by the same\n"
           "key with '_' in the JSON config file; flags win over environment over file.\n"
           "Units: MS = milliseconds, SECONDS = seconds, BYTES = bytes; rates are per\n"
           "second.\n"
           "Booleans: true or false (1 or 0 also accepted). Numbers: decimal integers.\n");
    for (size_t t = 0; t <= N_TOPICS; t++) {
        bool header = false;
        for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
            if (topic_of(opts[i].name) != t)
                continue;
            if (!header)
                printf("\n%s:\n", t < N_TOPICS ? topics[t].title : "Other");
            header = true;
            usage_option(&opts[i]);
        }
    }
    printf("\nCommands:\n");
    printf("  %-32s %s\n", "--help", "print this help and exit");
    printf("  %-32s %s\n", "--version", "print the version and git commit, and exit");
    printf("  %-32s %s\n  %-32s %s\n  %-32s %s\n", "--check-config",
           "validate the configuration from every", "",
           "source, print the effective one as JSON", "",
           "(secrets as \"<set>\"); exit 0: valid, 1: not");
    printf("\nNamespaces (config file only):\n"
           "  \"namespaces\": {\"ticker\": {\"history_size\": 1, \"history_ttl\": 60,\n"
           "                 \"publish\": \"nobody\", \"presence\": false},\n"
           "                \"chat\": {\"subscribe\": \"authenticated\", \"publish\": \"members\",\n"
           "                 \"presence\": true, \"presence_max_members\": 500,\n"
           "                 \"idempotency_window\": 60, \"idempotency_keys\": 256},\n"
           "                \"user\": {\"personal\": true}}\n"
           "  A channel \"ticker:AAPL\" uses namespace \"ticker\"; other channels use the\n"
           "  top-level history_size, history_ttl, client_publish, presence_max_members,\n"
           "  idempotency_window and idempotency_keys,\n"
           "  with presence off, subscribe \"anyone\" and publish \"anyone\".\n"
           "  history_ttl is in seconds, like --history-ttl.\n"
           "  subscribe: anyone | authenticated\n"
           "             | claim (the token's \"channels\" claim matches)\n"
           "             | token (the sub request carries a token for the channel)\n"
           "  publish:   anyone | authenticated | members (subscribers) | nobody\n"
           "             (client_publish true/false is the older spelling of anyone/nobody)\n"
           "  personal:  \"user:42\" and \"user:42/...\" are open only to the token with sub 42\n"
           "  publish_info: true adds the token's info to msgs of authenticated publishers\n");
}

static const struct opt *find_flag(const char *arg, const char **inline_val)
{
    *inline_val = NULL;
    if (strncmp(arg, "--", 2) != 0)
        return NULL;
    arg += 2;
    const char *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (strlen(opts[i].name) == n && !strncmp(opts[i].name, arg, n)) {
            if (eq)
                *inline_val = eq + 1;
            return &opts[i];
        }
    return NULL;
}

/* "IPV4:PORT" (a bind address, as libraft 0.15 listens), or with
 * names_ok "HOST:PORT" too (peers: consensus.c resolves names at each
 * connection). */
static bool raft_addr_ok(const char *addr, bool names_ok)
{
    char ip[256];
    const char *colon = strrchr(addr, ':');
    struct in_addr a;
    if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof ip)
        return false;
    snprintf(ip, sizeof ip, "%.*s", (int)(colon - addr), addr);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (!isdigit((unsigned char)colon[1]) || *end || port <= 0 || port >= 65536)
        return false;
    if (inet_pton(AF_INET, ip, &a) == 1)
        return a.s_addr != 0;
    return names_ok && !strpbrk(ip, ":[]/ ");
}

/* --check-config: what a start would refuse later, checked now. */
static int check_deep(const struct config *cfg)
{
    if (cfg->raft_bind && !raft_addr_ok(cfg->raft_bind, false)) {
        fprintf(stderr, "chorusd: raft-bind must be IPV4:PORT, got '%s'\n", cfg->raft_bind);
        return -1;
    }
    for (int i = 0; i < cfg->n_raft_peer; i++)
        if (!raft_addr_ok(cfg->raft_peer[i], true)) {
            fprintf(stderr, "chorusd: raft-peer must be HOST:PORT, got '%s'\n", cfg->raft_peer[i]);
            return -1;
        }
    if (cfg->raft_advertise && !raft_addr_ok(cfg->raft_advertise, true)) {
        fprintf(stderr, "chorusd: raft-advertise must be HOST:PORT, got '%s'\n", cfg->raft_advertise);
        return -1;
    }
    const char *files[][2] = {{"tls-cert", cfg->tls_cert}, {"tls-key", cfg->tls_key},
                              {"jwt-public-key", cfg->jwt_public_key}};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (files[i][1] && access(files[i][1], R_OK) != 0) {
            fprintf(stderr, "chorusd: %s: cannot read '%s': %s\n", files[i][0], files[i][1],
                    strerror(errno));
            return -1;
        }
    const char *dirs[][2] = {{"static-dir", cfg->static_dir}, {"sdk-dir", cfg->sdk_dir}};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        if (access(dirs[i][1], R_OK | X_OK) != 0) {
            fprintf(stderr, "chorusd: %s: cannot read directory '%s': %s\n", dirs[i][0], dirs[i][1],
                    strerror(errno));
            return -1;
        }
    return 0;
}

/* Printed by --check-config as "<set>" when set: never echo a secret. */
static bool is_secret(const char *name)
{
    return !strcmp(name, "api-key") || !strcmp(name, "admin-secret") || !strcmp(name, "jwt-secret") ||
           !strcmp(name, "cluster-curve-secret") || !strcmp(name, "webhook-secret");
}

/* The effective configuration, keyed as in the config file. */
static void print_effective(const struct config *cfg)
{
    const char *base = (const char *)cfg;
    json_t *root = json_object();
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        const struct opt *o = &opts[i];
        char key[64];
        json_t *v = NULL;
        if (!strcmp(o->name, "config") || !strcmp(o->name, "curve-keygen"))
            continue;
        derive_name(key, sizeof key, o->name, false);
        switch (o->type) {
        case OPT_INT:
            v = json_integer(*(const int *)(base + o->off));
            break;
        case OPT_BOOL:
        case OPT_FLAG:
            v = json_boolean(*(const bool *)(base + o->off));
            break;
        case OPT_STR: {
            const char *str = *(char *const *)(base + o->off);
            v = !str ? json_null() : is_secret(o->name) ? json_string("<set>") : json_string(str);
            break;
        }
        case OPT_LIST: {
            char *const *list = (char *const *)(base + o->off);
            int n = *(const int *)(base + o->off_n);
            v = json_array();
            for (int k = 0; k < n; k++)
                json_array_append_new(v, json_string(list[k]));
            break;
        }
        }
        json_object_set_new(root, key, v);
    }
    json_t *nss = json_object();
    for (int i = 0; i < cfg->n_namespaces; i++) {
        const struct ns_opts *ns = &cfg->namespaces[i];
        json_object_set_new(nss, ns->name,
                            json_pack("{s:i, s:i, s:s, s:s, s:b, s:b, s:i, s:s, s:b}", "history_size",
                                      ns->history_size, "history_ttl", ns->history_ttl, "subscribe",
                                      sub_rules[ns->subscribe], "publish", pub_rules[ns->publish],
                                      "presence", ns->presence, "personal", ns->personal,
                                      "presence_max_members", ns->presence_max_members,
                                      "slow_consumer", slow_rules[ns->slow_consumer],
                                      "compression", ns->compression));
        if (ns->publish_info)
            json_object_set_new(json_object_get(nss, ns->name), "publish_info", json_true());
        json_t *pj = json_object_get(nss, ns->name);
        if (pj && ns->proxy_subscribe)
            json_object_set_new(pj, "proxy_subscribe", json_string(ns->proxy_subscribe));
        if (pj && ns->proxy_publish)
            json_object_set_new(pj, "proxy_publish", json_string(ns->proxy_publish));
    }
    json_object_set_new(root, "namespaces", nss);
    json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    putchar('\n');
    fflush(stdout);
    json_decref(root);
}

int config_load(struct config *cfg, int argc, char **argv)
{
    json_t *file_root = NULL;
    const char *file = getenv("CHORUS_CONFIG");
    int rc = -1;

    bool check = false;

    defaults(cfg);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage();
            return 1;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("chorusd %s (commit %s)\n", CHORUS_VERSION, CHORUS_GIT_COMMIT);
            return 1;
        }
        if (!strcmp(argv[i], "--check-config"))
            check = true;
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            file = argv[i + 1];
        else if (!strncmp(argv[i], "--config=", 9))
            file = argv[i] + 9;
    }
    if (file && *file) {
        if (load_file(cfg, file, &file_root) < 0)
            goto out;
        set_str(&cfg->config_file, file);
    }

    /* Lists from a later source replace, not extend, an earlier one. */
    bool env_list = false;
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        char env[64];
        derive_name(env, sizeof env, opts[i].name, true);
        const char *v = getenv(env);
        if (!v || !strcmp(opts[i].name, "config"))
            continue;
        if (opts[i].type == OPT_LIST) {
            clear_list(cfg, &opts[i]);
            env_list = true;
            char *copy = strdup(v), *save = NULL;
            for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
                if (apply(cfg, &opts[i], t, env) < 0) {
                    free(copy);
                    goto out;
                }
            free(copy);
        } else if (apply(cfg, &opts[i], v, env) < 0) {
            goto out;
        }
    }
    (void)env_list;

    bool flag_list[sizeof opts / sizeof opts[0]] = {false};
    for (int i = 1; i < argc; i++) {
        const char *val;
        if (!strcmp(argv[i], "--check-config"))
            continue;
        const struct opt *o = find_flag(argv[i], &val);
        if (!o) {
            fprintf(stderr, "chorusd: unknown option '%s' (see --help)\n", argv[i]);
            goto out;
        }
        if (!val && o->type == OPT_FLAG) {
            val = "true";
        } else if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "chorusd: option --%s needs a value\n", o->name);
                goto out;
            }
            val = argv[++i];
        }
        if (o->type == OPT_LIST && !flag_list[o - opts]) {
            clear_list(cfg, o);
            flag_list[o - opts] = true;
        }
        if (!strcmp(o->name, "config"))
            continue;
        if (apply(cfg, o, val, "command line") < 0)
            goto out;
    }

    if (strcmp(cfg->event_loop, "poll") && strcmp(cfg->event_loop, "epoll")) {
        fprintf(stderr, "chorusd: event-loop must be poll or epoll, got '%s'\n", cfg->event_loop);
        goto out;
    }
    if (log_level_parse(cfg->log_level) < 0) {
        fprintf(stderr, "chorusd: log-level must be debug, info, warn or error, got '%s'\n",
                cfg->log_level);
        goto out;
    }
    if (!*cfg->node_id || strlen(cfg->node_id) > 64) {
        fprintf(stderr, "chorusd: node-id must be 1-64 bytes, got '%s'\n", cfg->node_id);
        goto out;
    }
    for (const char *p = cfg->node_id; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_.-", *p)) {
            fprintf(stderr, "chorusd: node-id may hold only [A-Za-z0-9_.-], got '%s'\n", cfg->node_id);
            goto out;
        }

    if (cfg->curve_keygen) {
        rc = 0;
        goto out;
    }
    if (cfg->workers > 1 && (cfg->cluster_bind || cfg->n_peer || cfg->forwarder_connect ||
                             cfg->forwarder)) {
        fprintf(stderr, "chorusd: --workers cannot be combined with cluster options in this version\n");
        goto out;
    }
    struct in_addr bind4;
    if (cfg->workers > 1 && inet_pton(AF_INET, cfg->bind, &bind4) != 1) {
        fprintf(stderr, "chorusd: --workers needs --bind to be an IPv4 address\n");
        goto out;
    }
    bool clustered = cfg->cluster_bind || cfg->forwarder_connect || cfg->forwarder || cfg->n_peer;
    if (clustered && !cfg->cluster_curve_secret && !cfg->cluster_insecure) {
        fprintf(stderr, "chorusd: node links would be plaintext: set --cluster-curve-secret KEY "
                        "or --cluster-insecure true\n");
        goto out;
    }
    if (cfg->n_peer && !cfg->cluster_bind) {
        fprintf(stderr, "chorusd: --peer needs --cluster-bind (peers connect to it)\n");
        goto out;
    }
    if (cfg->forwarder && !cfg->cluster_bind) {
        fprintf(stderr, "chorusd: --forwarder needs --cluster-bind tcp://ADDR:PORT\n");
        goto out;
    }
    if (cfg->forwarder_connect && cfg->n_peer) {
        fprintf(stderr, "chorusd: use either --peer (mesh) or --forwarder-connect, not both\n");
        goto out;
    }

    snprintf(cfg->default_ns.name, sizeof cfg->default_ns.name, "%s", "");
    cfg->default_ns.history_size = cfg->history_size;
    cfg->default_ns.history_ttl = cfg->history_ttl;
    cfg->default_ns.client_publish = cfg->client_publish;
    cfg->default_ns.presence = false;
    cfg->default_ns.subscribe = NS_SUB_ANYONE;
    cfg->default_ns.publish = cfg->client_publish ? NS_PUB_ANYONE : NS_PUB_NOBODY;
    cfg->default_ns.personal = false;
    cfg->default_ns.presence_max_members = cfg->presence_max_members;
    cfg->default_ns.idempotency_window = cfg->idempotency_window;
    cfg->default_ns.idempotency_keys = cfg->idempotency_keys;
    cfg->default_ns.proxy_subscribe = cfg->proxy_subscribe;
    cfg->default_ns.proxy_publish = cfg->proxy_publish;
    cfg->default_ns.compression = cfg->compression;
    if (!!cfg->tls_cert != !!cfg->tls_key) {
        fprintf(stderr, "chorusd: --tls-cert and --tls-key go together\n");
        goto out;
    }
    if (!cfg->allow_anonymous && !cfg->jwt_secret && !cfg->jwt_public_key) {
        fprintf(stderr, "chorusd: --allow-anonymous false needs --jwt-secret or --jwt-public-key "
                        "(no connection could ever authenticate)\n");
        goto out;
    }
    if (cfg->admin_secret && cfg->api_key && !strcmp(cfg->admin_secret, cfg->api_key)) {
        fprintf(stderr, "chorusd: --admin-secret must differ from --api-key (the admin page is "
                        "read-only; the API key publishes)\n");
        goto out;
    }
    struct trusted_nets nets;
    char err[200];
    if (trusted_nets_parse(&nets, cfg->trusted_proxy, cfg->n_trusted_proxy, err, sizeof err) < 0) {
        fprintf(stderr, "chorusd: %s\n", err);
        goto out;
    }
    if (load_namespaces(cfg, file_root, file) < 0)
        goto out;
    if (check && check_deep(cfg) < 0)
        goto out;
    rc = 0;
out:
    json_decref(file_root);
    if (check && rc == 0) {
        print_effective(cfg);
        return 1;
    }
    if (check && rc < 0) {
        fprintf(stderr, "chorusd: --check-config: the configuration is not valid\n");
        return -2;
    }
    return rc;
}

void config_free(struct config *cfg)
{
    free(cfg->bind);
    free(cfg->api_key);
    free(cfg->admin_secret);
    free(cfg->config_file);
    free(cfg->node_id);
    free(cfg->static_dir);
    free(cfg->sdk_dir);
    free(cfg->log_level);
    free(cfg->event_loop);
    clear_lists(cfg);
    free(cfg->cluster_bind);
    free(cfg->data_dir);
    free(cfg->raft_bind);
    free(cfg->raft_advertise);
    free(cfg->forwarder_connect);
    free(cfg->cluster_curve_secret);
    free(cfg->jwt_secret);
    free(cfg->jwt_public_key);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->proxy_connect);
    free(cfg->proxy_subscribe);
    free(cfg->proxy_publish);
    free(cfg->webhook);
    free(cfg->webhook_secret);
    for (int i = 0; cfg->namespaces && i < cfg->n_namespaces; i++) {
        if (cfg->namespaces[i].proxy_owned[0])
            free((char *)cfg->namespaces[i].proxy_subscribe);
        if (cfg->namespaces[i].proxy_owned[1])
            free((char *)cfg->namespaces[i].proxy_publish);
    }
    free(cfg->namespaces);
    memset(cfg, 0, sizeof *cfg);
}

bool config_compression_any(const struct config *cfg)
{
    for (int i = 0; i < cfg->n_namespaces; i++)
        if (cfg->namespaces[i].compression)
            return true;
    return cfg->compression;
}

const struct ns_opts *config_ns_for(const struct config *cfg, const char *channel, size_t len)
{
    const char *colon = memchr(channel, ':', len);
    if (!colon)
        return &cfg->default_ns;
    size_t n = (size_t)(colon - channel);
    for (int i = 0; i < cfg->n_namespaces; i++)
        if (strlen(cfg->namespaces[i].name) == n && !memcmp(cfg->namespaces[i].name, channel, n))
            return &cfg->namespaces[i];
    return &cfg->default_ns;
}

/* ------------------------------------------------------------------ reload */

/* Settings every reader takes from the live config at each use, so a new
 * value simply applies from the next use on. Everything else is copied
 * into other structures at start (listeners, cluster, keepalive wheel,
 * token keys, namespaces' history rules held by channels) and needs a
 * restart. */
static const char *const reloadable[] = {
    "log-level", "max-connections", "max-queue-bytes", "max-queue-frames", "conflate-queue-bytes", "conflate-sndbuf-bytes",
    "max-pub-rate",
    "pub-burst", "max-pub-rate-user", "max-conn-rate-ip", "max-conns-per-ip", "allowed-origin",
    "trusted-proxy", "drain-delay", "shutdown-timeout",
    /* Token keys: the session layer loads them again (server.c, auth_ws_reload). */
    "jwt-secret", "jwt-public-key", "jwt-leeway",
    /* The default namespace's rules, applied in place below (not history-size:
     * every channel's history ring is sized by it). */
    "history-ttl", "client-publish", "presence-max-members", "idempotency-window",
    "idempotency-keys", NULL,
};

/* Namespace rules are read at each use through the channel's or the op's
 * namespace (config_ns_for), so a rule changed in place applies from the
 * next op on. Channels point into the namespaces array, and each channel's
 * history ring is sized by its namespace's history_size: the set of
 * namespaces and their history sizes stay until a restart. */
static int ns_update(struct ns_opts *live, const struct ns_opts *fresh)
{
    char fields[200] = "";
    size_t n = 0;
#define NS_FIELD(f)                                                                         \
    if (live->f != fresh->f)                                                                \
        n += (size_t)snprintf(fields + n, n < sizeof fields ? sizeof fields - n : 0, "%s%s", \
                              n ? "," : "", #f);
    NS_FIELD(history_ttl)
    NS_FIELD(client_publish)
    NS_FIELD(presence)
    NS_FIELD(subscribe)
    NS_FIELD(publish)
    NS_FIELD(personal)
    NS_FIELD(presence_max_members)
    NS_FIELD(idempotency_window)
    NS_FIELD(idempotency_keys)
#undef NS_FIELD
    const char *name = *live->name ? live->name : "(default)";
    if (live->history_size != fresh->history_size)
        log_warn("event=reload_refused key=namespaces.%s.history_size old=%d new=%d msg=\"history "
                 "rings are sized at start; only a restart applies it\"", name, live->history_size,
                 fresh->history_size);
    if (!n)
        return 0;
    int keep = live->history_size;
    *live = *fresh;
    live->history_size = keep;
    log_info("event=reload_changed key=namespaces.%s fields=%s", name, fields);
    return 1;
}

static bool opt_equal(const struct config *a, const struct config *b, const struct opt *o)
{
    const char *pa = (const char *)a + o->off, *pb = (const char *)b + o->off;
    switch (o->type) {
    case OPT_INT:
        return *(const int *)pa == *(const int *)pb;
    case OPT_BOOL:
    case OPT_FLAG:
        return *(const bool *)pa == *(const bool *)pb;
    case OPT_STR: {
        const char *x = *(char *const *)pa, *y = *(char *const *)pb;
        return x == y || (x && y && !strcmp(x, y));
    }
    case OPT_LIST: {
        int n = *(const int *)((const char *)a + o->off_n);
        if (n != *(const int *)((const char *)b + o->off_n))
            return false;
        for (int i = 0; i < n; i++)
            if (strcmp(((char *const *)pa)[i], ((char *const *)pb)[i]))
                return false;
        return true;
    }
    }
    return false;
}

/* Moves o's value from `from` into `to`; `from` is freed by the caller. */
static void opt_move(struct config *to, struct config *from, const struct opt *o)
{
    char *pt = (char *)to + o->off, *pf = (char *)from + o->off;
    size_t size = o->type == OPT_INT ? sizeof(int) : o->type == OPT_STR ? sizeof(char *)
                  : o->type == OPT_LIST ? list_cap(o) * sizeof(char *) : sizeof(bool);
    char tmp[CONFIG_MAX_PEERS * sizeof(char *)];
    memcpy(tmp, pt, size);
    memcpy(pt, pf, size);
    memcpy(pf, tmp, size);
    if (o->type == OPT_LIST) {
        int *nt = (int *)((char *)to + o->off_n), *nf = (int *)((char *)from + o->off_n);
        int n = *nt;
        *nt = *nf;
        *nf = n;
    }
}

int config_reload(struct config *live, int argc, char **argv)
{
    struct config fresh;
    if (config_load(&fresh, argc, argv) != 0) {
        config_free(&fresh);
        log_error("event=reload_failed msg=\"the configuration does not load (see the line above); "
                  "nothing changed\"");
        return -1;
    }
    int changed = 0;
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        const struct opt *o = &opts[i];
        if (!strcmp(o->name, "config") || opt_equal(live, &fresh, o))
            continue;
        bool ok = false;
        for (int k = 0; reloadable[k]; k++)
            ok = ok || !strcmp(reloadable[k], o->name);
        if (!ok) {
            log_warn("event=reload_refused key=%s msg=\"changed, but only a restart applies it; "
                     "the running value stays\"", o->name);
            continue;
        }
        /* Limits, times, address lists; a secret is named, never shown. */
        if (is_secret(o->name))
            log_info("event=reload_changed key=%s value=\"<hidden>\"", o->name);
        else if (o->type == OPT_INT)
            log_info("event=reload_changed key=%s old=%d new=%d", o->name,
                     *(int *)((char *)live + o->off), *(int *)((char *)&fresh + o->off));
        else if (o->type == OPT_STR)
            log_info("event=reload_changed key=%s old=%s new=%s", o->name,
                     *(char **)((char *)live + o->off), *(char **)((char *)&fresh + o->off));
        else
            log_info("event=reload_changed key=%s values=%d", o->name,
                     *(int *)((char *)&fresh + o->off_n));
        opt_move(live, &fresh, o);
        changed++;
    }
    /* The default namespace follows the top-level keys moved above. */
    changed += ns_update(&live->default_ns, &fresh.default_ns);
    bool same_set = live->n_namespaces == fresh.n_namespaces;
    for (int i = 0; same_set && i < live->n_namespaces; i++)
        same_set = !strcmp(live->namespaces[i].name, fresh.namespaces[i].name);
    if (!same_set)
        log_warn("event=reload_refused key=namespaces msg=\"namespaces added, removed, renamed or "
                 "reordered: only a restart applies that; the rules of the running ones are "
                 "reloaded only while the list of names stays the same\"");
    else
        for (int i = 0; i < live->n_namespaces; i++)
            changed += ns_update(&live->namespaces[i], &fresh.namespaces[i]);
    config_free(&fresh);
    return changed;
}
