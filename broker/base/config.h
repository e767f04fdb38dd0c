/* config.h - chorusd settings: built-in defaults, a JSON file, environment
 * variables and command-line flags, in rising order of precedence.
 *
 * One table (config.c) names every setting once; the flag `--max-queue-bytes`,
 * the variable CHORUS_MAX_QUEUE_BYTES and the JSON key "max_queue_bytes" are
 * derived from the same entry, and so is `chorusd --help`. */
#ifndef CHORUS_CONFIG_H
#define CHORUS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#define CONFIG_MAX_ORIGINS 32
#define CONFIG_MAX_PEERS 64

/* Who may subscribe to (and read the history and presence of) a namespace's
 * channels (PROTOCOL.md section 8). */
enum ns_subscribe {
    NS_SUB_ANYONE,          /* every connection, anonymous ones too */
    NS_SUB_AUTHENTICATED,   /* connections with a valid token */
    NS_SUB_CLAIM,           /* the token's "channels" claim matches the channel */
    NS_SUB_TOKEN,           /* the sub request carries a subscription token for it */
};

/* Who may publish from a WebSocket (HTTP API publishes are always trusted). */
enum ns_publish {
    NS_PUB_ANYONE,
    NS_PUB_AUTHENTICATED,
    NS_PUB_MEMBERS,         /* connections subscribed to the channel */
    NS_PUB_NOBODY,          /* tickers: only the HTTP API publishes */
};

/* What happens to a connection whose outbound queue fills (PROTOCOL.md 5). */
enum ns_slow_consumer {
    NS_SLOW_CLOSE,          /* closed with 4008 once the queue is full */
    NS_SLOW_CONFLATE,       /* past conflate_queue_bytes a channel's queued msg is replaced
                             * by its newest ("skipped"); closed only when even that fails */
};

/* Per-namespace options (the part of a channel name before the first ':').
 * One of these exists for each namespace in the config file, plus the default
 * one for channels without a configured namespace. */
struct ns_opts {
    char name[64];
    int history_size;   /* messages kept per channel; 0 = none */
    int history_ttl;    /* seconds a message stays in history; 0 = no age limit */
    bool client_publish; /* may WebSocket clients publish? (publish != NS_PUB_NOBODY) */
    bool presence;      /* is the presence op allowed? */
    enum ns_subscribe subscribe;
    enum ns_publish publish;
    bool personal;      /* "<ns>:<id>" (and "<ns>:<id>/...") belong to user <id> only */
    bool publish_info;  /* msgs of authenticated publishers carry the token's info too */
    int presence_max_members; /* past this, presence gives counts and join/leave stop */
    int idempotency_window;   /* seconds a publish key is remembered; 0 = no time limit */
    int idempotency_keys;     /* keys remembered per channel; 0 = keys are not checked */
    /* backend hooks (session/proxy.c): NULL = none. The default namespace's
     * point at the config's global URLs; a namespace's own are its copies. */
    const char *proxy_subscribe;
    const char *proxy_publish;
    bool proxy_owned[2];      /* namespace: proxy_subscribe / proxy_publish are its own */
    enum ns_slow_consumer slow_consumer;
    bool compression;         /* its messages go compressed to permessage-deflate clients */
};

struct config {
    int port;
    char *bind;
    char *api_key;
    char *admin_secret;           /* HTTP Basic password of /admin (admin_page.h); NULL: disabled */
    char *config_file;
    char *node_id;
    char *static_dir;
    char *sdk_dir;
    char *allowed_origin[CONFIG_MAX_ORIGINS];
    int n_allowed_origin;
    int max_connections;

    /* cluster */
    char *cluster_bind;           /* XPUB endpoint (forwarder: XSUB; XPUB at port + 1) */
    char *peer[CONFIG_MAX_PEERS]; /* peers' cluster_bind endpoints; names re-resolved */
    int n_peer;
    char *forwarder_connect;      /* use this forwarder instead of the mesh */
    bool forwarder;               /* run as the XSUB/XPUB forwarder, not as a node */
    bool curve_keygen;            /* print a new cluster CURVE secret and exit */
    char *cluster_curve_secret;   /* Z85 secret key shared by the cluster's nodes */
    bool cluster_insecure;        /* allow plaintext node links */
    int heartbeat_ms;
    int peer_timeout_ms;
    int cluster_timeout_ms;
    int peer_resolve_interval;
    int peer_resolve_fast_ms;     /* while a peer is down or unheard */
    int peer_max_addresses;       /* per --peer name */
    int join_wait_ms;             /* longest wait for peers to hear a starting node */
    int cluster_hwm;
    char *data_dir;               /* Raft log and vote (cluster nodes) */
    char *raft_bind;              /* IPv4:port for Raft; NULL: derived from cluster_bind */
    char *raft_peer[CONFIG_MAX_PEERS]; /* peers' raft_bind; empty: derived from peer[] */
    int n_raft_peer;
    char *raft_advertise;         /* HOST:PORT the peers name this node's Raft by */
    int lease_ms;
    int election_timeout_ms;
    int replication_factor;

    int max_frame_bytes;
    int rx_buffer_bytes;
    int rx_turn_bytes;            /* read from one connection per loop turn (readmore.h) */
    int max_header_bytes;         /* lws' header table per request (server.c) */
    int workers;                  /* processes sharing the port (workers.h) */          /* lws reads at most this much per connection per loop turn */
    int max_channels_per_conn;
    int max_queue_bytes;
    int max_queue_frames;
    int conflate_queue_bytes;     /* queue size where conflation starts (ns slow_consumer) */
    int conflate_sndbuf_bytes;    /* SO_SNDBUF of connections reading conflating channels; 0: kernel's */
    int conflate_notsent_bytes;   /* their TCP_NOTSENT_LOWAT: unsent bytes past which they wait; 0: none */
    int ping_interval;
    int ping_timeout;
    int history_size;
    int history_ttl;
    bool client_publish;
    int shutdown_timeout_ms;
    char *log_level;
    char *event_loop;             /* "poll" (lws built-in) or "epoll" (libev) */

    /* who may do what: auth.c, auth_ws.c, ratelimit.c, presence.c */
    char *jwt_secret;             /* HS256 key */
    char *jwt_public_key;         /* PEM file: RS256 (RSA key) or ES256 (P-256 key) */
    int jwt_leeway;               /* seconds of clock skew allowed for exp and nbf */
    bool allow_anonymous;         /* may connections without a token do anything? */
    int auth_timeout;             /* seconds a tokenless connection has to send auth */
    char *tls_cert, *tls_key;     /* PEM files: serve wss:// and https:// */
    int max_pub_rate;             /* publishes per second per connection; 0 = no limit */
    int pub_burst;                /* bucket size for both publish limits; 0 = the rate */
    int max_pub_rate_user;        /* publishes per second per user id; 0 = no limit */
    int max_conn_rate_ip;         /* WebSocket upgrades per second per IP; 0 = no limit */
    int max_conns_per_ip;         /* open WebSocket connections per IP; 0 = no limit */
    int presence_max_members;
    int idempotency_window;
    int idempotency_keys;
    int max_idempotency_keys;     /* keys remembered on this node, all channels; 0 = no bound */
    bool compression;             /* permessage-deflate: the default namespace's setting */
    int compression_min_bytes;    /* frames smaller than this go uncompressed */
    int compression_huffman_max_bytes; /* frames up to this size: Huffman codes only */

    /* deployment behind proxies and balancers: clientip.c, server.c */
    char *trusted_proxy[CONFIG_MAX_ORIGINS]; /* CIDRs whose X-Forwarded-For we believe */
    int n_trusted_proxy;
    int drain_delay;              /* seconds between SIGTERM and the 1001 closes */

    /* backend hooks: session/proxy.c (synchronous), base/webhook.c (events) */
    char *proxy_connect, *proxy_subscribe, *proxy_publish; /* URLs; NULL = no hook */
    int proxy_timeout_ms;         /* past it a hook counts as a refusal */
    int proxy_max_pending;        /* hooks waiting for an answer, whole node */
    int hook_max_connections;     /* connections open to backends at once */
    char *webhook;                /* URL for channel and presence events */
    char *webhook_secret;         /* HMAC-SHA256 key of X-Chorus-Signature */
    int webhook_timeout_ms;
    int webhook_max_queue;        /* events waiting to be sent; past it they are dropped */
    int webhook_batch;            /* events per POST at most */
    int webhook_retries;          /* attempts after the first, with backoff */

    struct ns_opts default_ns;
    struct ns_opts *namespaces;
    int n_namespaces;
};

/* Fills cfg from defaults, then the config file (--config or CHORUS_CONFIG),
 * then the environment, then argv. Returns 0, 1 when --help/--version or
 * --check-config's effective configuration was printed (exit 0), -1 after
 * printing an error to stderr (exit 2), or -2 when --check-config found the
 * configuration invalid (exit 1). */
int config_load(struct config *cfg, int argc, char **argv);
void config_free(struct config *cfg);

/* SIGHUP: loads the configuration again from the same sources (argv wins
 * over the environment over the file, as at start) and moves into `live`
 * the settings that are read afresh on every use (log level, limits,
 * trusted proxies, allowed origins, drain and shutdown times); every other
 * setting that differs is kept as it is and logged as needing a restart.
 * Returns the number of settings changed, or -1 (logged) when the new
 * configuration does not load: then nothing changes. */
int config_reload(struct config *live, int argc, char **argv);

/* Is permessage-deflate offered at all: --compression or any namespace's
 * "compression": true. */
bool config_compression_any(const struct config *cfg);

/* The options of the namespace that `channel` belongs to; never NULL. */
const struct ns_opts *config_ns_for(const struct config *cfg, const char *channel, size_t len);

#endif
