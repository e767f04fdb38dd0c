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

/* Per-namespace options (the part of a channel name before the first ':').
 * One of these exists for each namespace in the config file, plus the default
 * one for channels without a configured namespace. */
struct ns_opts {
    char name[64];
    int history_size;   /* messages kept per channel; 0 = none */
    int history_ttl;    /* seconds a message stays in history; 0 = no age limit */
    bool client_publish; /* may WebSocket clients publish? */
    bool presence;      /* is the presence op allowed? */
};

struct config {
    int port;
    char *bind;
    char *api_key;
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
    int cluster_hwm;

    int max_frame_bytes;
    int max_channels_per_conn;
    int max_queue_bytes;
    int max_queue_frames;
    int ping_interval;
    int ping_timeout;
    int history_size;
    int history_ttl;
    bool client_publish;
    int shutdown_timeout_ms;
    char *log_level;

    struct ns_opts default_ns;
    struct ns_opts *namespaces;
    int n_namespaces;
};

/* Fills cfg from defaults, then the config file (--config or CHORUS_CONFIG),
 * then the environment, then argv. Returns 0, 1 when --help/--version was
 * printed (exit 0), or -1 after printing an error to stderr (exit 2). */
int config_load(struct config *cfg, int argc, char **argv);
void config_free(struct config *cfg);

/* The options of the namespace that `channel` belongs to; never NULL. */
const struct ns_opts *config_ns_for(const struct config *cfg, const char *channel, size_t len);

#endif
