/* main.c - chorusd: load the configuration, serve (or forward, with
 * --forwarder) until SIGTERM/SIGINT, exit 0. */
#include "config.h"
#include "forwarder.h"
#include "log.h"
#include "server.h"

int main(int argc, char **argv)
{
    struct config cfg;
    int rc = config_load(&cfg, argc, argv);
    if (rc != 0) {
        config_free(&cfg);
        return rc > 0 ? 0 : 2;
    }
    log_set_level((enum log_level)log_level_parse(cfg.log_level));
    log_install_lws(log_get_level());

    if (cfg.forwarder) {
        rc = forwarder_run(&cfg);
        config_free(&cfg);
        return rc;
    }
    if (server_start(&cfg) < 0) {
        config_free(&cfg);
        return 1;
    }
    rc = server_run();
    server_stop();
    config_free(&cfg);
    return rc;
}
