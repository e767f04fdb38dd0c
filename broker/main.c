/* main.c - chorusd: load the configuration, serve (or forward, with
 * --forwarder) until SIGTERM/SIGINT, exit 0. */
#include "config.h"
#include "forwarder.h"
#include "log.h"
#include "server.h"
#include "workers.h"
#include "zap.h"

#include <stdio.h>
#include <zmq.h>

/* --curve-keygen: one secret serves every node of a cluster. */
static int curve_keygen(void)
{
    char pub[CURVE_Z85_LEN + 1], sec[CURVE_Z85_LEN + 1];
    if (!zmq_has("curve") || zmq_curve_keypair(pub, sec) != 0) {
        fprintf(stderr, "chorusd: this libzmq has no CURVE support\n");
        return 1;
    }
    printf("cluster_curve_secret=%s\ncluster_curve_public=%s\n", sec, pub);
    return 0;
}

int main(int argc, char **argv)
{
    struct config cfg;
    int rc = config_load(&cfg, argc, argv);
    if (rc != 0) {
        config_free(&cfg);
        return rc > 0 ? 0 : rc == -2 ? 1 : 2;
    }
    if (cfg.curve_keygen) {
        config_free(&cfg);
        return curve_keygen();
    }
    log_set_level((enum log_level)log_level_parse(cfg.log_level));
    log_install_lws(log_get_level());

    if (cfg.workers > 1) {
        rc = workers_run(&cfg);
        if (rc >= 0) {
            config_free(&cfg);
            return rc;
        }
        /* A worker: serve with the configuration workers_run rewrote. */
    }
    if (cfg.forwarder) {
        rc = forwarder_run(&cfg);
        config_free(&cfg);
        return rc;
    }
    if (cfg.workers <= 1)
        server_set_args(argc, argv); /* a worker's config is rewritten: no reload */
    if (server_start(&cfg) < 0) {
        config_free(&cfg);
        return 1;
    }
    rc = server_run();
    server_stop();
    config_free(&cfg);
    return rc;
}
