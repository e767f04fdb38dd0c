/* test_config.c - chorusd settings: defaults < JSON file < CHORUS_* environment
 * < command-line flags, the error paths of each source, and namespaces.
 *
 * Every test starts with no CHORUS_* variable set and loads through a helper
 * that captures what config_load() printed, so error tests can check that an
 * error was reported and not only the return code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

extern char **environ;

static char tmpdir[256];
static int file_counter;

/* --------------------------------------------------------------- fixture */

static void clear_chorus_env(void)
{
    for (;;) {
        char name[256] = "";
        for (char **e = environ; *e; e++)
            if (!strncmp(*e, "CHORUS_", 7)) {
                size_t n = strcspn(*e, "=");
                if (n < sizeof name) {
                    memcpy(name, *e, n);
                    name[n] = '\0';
                }
                break;
            }
        if (!*name)
            return;
        unsetenv(name);
    }
}

static int group_setup(void **state)
{
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/chorus-test-config-XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    char path[512];
    for (int i = 0; i < file_counter; i++) {
        snprintf(path, sizeof path, "%s/config-%d.json", tmpdir, i);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/out", tmpdir);
    unlink(path);
    snprintf(path, sizeof path, "%s/err", tmpdir);
    unlink(path);
    return rmdir(tmpdir);
}

static int setup(void **state)
{
    (void)state;
    clear_chorus_env();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    clear_chorus_env();
    return 0;
}

/* --------------------------------------------------------------- helpers */

/* Writes text to a new file in tmpdir and returns its path (static storage,
 * one slot per call so several files can be alive at once). */
static const char *write_file(const char *text)
{
    static char paths[64][512];
    assert_true(file_counter < 64);
    char *path = paths[file_counter];
    snprintf(path, sizeof paths[0], "%s/config-%d.json", tmpdir, file_counter);
    file_counter++;
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

struct loaded {
    int rc;
    char out[32768];  /* what config_load printed on stdout */
    char err[4096];   /* and on stderr */
};

static void slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
}

/* Runs config_load(cfg, argv...) with stdout and stderr captured. The caller
 * must config_free(cfg) whatever the result. */
static void load_argv(struct config *cfg, struct loaded *l, int argc, char **argv)
{
    char out_path[512], err_path[512];
    snprintf(out_path, sizeof out_path, "%s/out", tmpdir);
    snprintf(err_path, sizeof err_path, "%s/err", tmpdir);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved_out >= 0 && saved_err >= 0 && fo >= 0 && fe >= 0);
    dup2(fo, 1);
    dup2(fe, 2);
    close(fo);
    close(fe);

    l->rc = config_load(cfg, argc, argv);

    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    slurp(out_path, l->out, sizeof l->out);
    slurp(err_path, l->err, sizeof l->err);
}

/* load(cfg, &l, "--port", "9000", NULL) */
static void load(struct config *cfg, struct loaded *l, ...)
{
    char *argv[32] = {"chorusd"};
    int argc = 1;
    va_list ap;
    va_start(ap, l);
    for (char *a; (a = va_arg(ap, char *)) != NULL;) {
        assert_true(argc < 31);
        argv[argc++] = a;
    }
    va_end(ap);
    argv[argc] = NULL;
    load_argv(cfg, l, argc, argv);
}

/* Loads and expects success; reports what was printed otherwise. */
#define LOAD_OK(cfg, l, ...)                                                       \
    do {                                                                           \
        load((cfg), (l), __VA_ARGS__);                                             \
        if ((l)->rc != 0)                                                          \
            fail_msg("config_load returned %d; stderr: %s", (l)->rc, (l)->err);    \
    } while (0)

/* Loads and expects -1 with an error on stderr that mentions `needle`. */
static void expect_rejected(const char *needle, ...)
{
    char *argv[32] = {"chorusd"};
    int argc = 1;
    va_list ap;
    va_start(ap, needle);
    for (char *a; (a = va_arg(ap, char *)) != NULL;) {
        assert_true(argc < 31);
        argv[argc++] = a;
    }
    va_end(ap);
    struct config cfg;
    struct loaded l;
    load_argv(&cfg, &l, argc, argv);
    config_free(&cfg);
    if (l.rc != -1)
        fail_msg("config_load returned %d, expected -1 (stderr: %s)", l.rc, l.err);
    if (!strstr(l.err, "chorusd") || !strstr(l.err, needle))
        fail_msg("stderr does not mention '%s': %s", needle, l.err);
}

/* ------------------------------------------------------------- defaults */

static void test_defaults_apply_when_nothing_is_given(void **state)
{
    (void)state;
    struct config cfg;
    struct loaded l;
    LOAD_OK(&cfg, &l, NULL);
    assert_int_equal(cfg.port, 8080);
    assert_string_equal(cfg.bind, "0.0.0.0");
    assert_null(cfg.api_key);
    assert_null(cfg.config_file);
    assert_non_null(cfg.node_id);
    assert_true(strlen(cfg.node_id) > 0);
    assert_int_equal(cfg.n_allowed_origin, 0);
    assert_int_equal(cfg.max_connections, 10000);
    assert_int_equal(cfg.max_frame_bytes, 65536);
    assert_int_equal(cfg.max_header_bytes, 16384); /* room for an 8192-byte ?token= */
    assert_int_equal(cfg.max_channels_per_conn, 128);
    assert_int_equal(cfg.max_queue_bytes, 1 << 20);
    assert_int_equal(cfg.max_queue_frames, 4096);
    assert_int_equal(cfg.ping_interval, 25);
    assert_int_equal(cfg.ping_timeout, 10);
    assert_int_equal(cfg.history_size, 100);
    assert_int_equal(cfg.history_ttl, 600);
    assert_true(cfg.client_publish);
    assert_int_equal(cfg.shutdown_timeout_ms, 2000);
    assert_string_equal(cfg.log_level, "info");
    /* The default namespace mirrors the top-level history options. */
    assert_string_equal(cfg.default_ns.name, "");
    assert_int_equal(cfg.default_ns.history_size, 100);
    assert_int_equal(cfg.default_ns.history_ttl, 600);
    assert_true(cfg.default_ns.client_publish);
    assert_false(cfg.default_ns.presence);
    assert_int_equal(cfg.n_namespaces, 0);
    /* Publish keys: 10 minutes, 1024 per channel, 200000 per node. */
    assert_int_equal(cfg.default_ns.idempotency_window, 600);
    assert_int_equal(cfg.default_ns.idempotency_keys, 1024);
    assert_int_equal(cfg.max_idempotency_keys, 200000);
    config_free(&cfg);
}

/* ------------------------------------------------------------ precedence */

static void test_file_overrides_defaults(void **state)
{
    (void)state;
    const char *path = write_file("{\"port\": 9000, \"history_size\": 5, \"api_key\": \"k1\","
                                  " \"client_publish\": false, \"max_queue_frames\": 64}");
    struct config cfg;
    struct loaded l;
    LOAD_OK(&cfg, &l, "--config", path, NULL);
    assert_int_equal(cfg.port, 9000);
    assert_int_equal(cfg.history_size, 5);
    assert_int_equal(cfg.default_ns.history_size, 5);
    assert_string_equal(cfg.api_key, "k1");
    assert_false(cfg.client_publish);
    assert_false(cfg.default_ns.client_publish);
    assert_int_equal(cfg.max_queue_frames, 64); /* a JSON number: "64" is refused (bad integer test) */
    assert_string_equal(cfg.config_file, path);
    /* Untouched settings keep their defaults. */
    assert_int_equal(cfg.history_ttl, 600);
    assert_int_equal(cfg.max_connections, 10000);
    config_free(&cfg);
}

static void test_env_overrides_file(void **state)
{
    (void)state;
    const char *path = write_file("{\"port\": 9000, \"history_ttl\": 30, \"api_key\": \"file\"}");
    setenv("CHORUS_PORT", "9100", 1);
    setenv("CHORUS_API_KEY", "env", 1);
    setenv("CHORUS_MAX_QUEUE_BYTES", "4096", 1);
    struct config cfg;
    struct loaded l;
    LOAD_OK(&cfg, &l, "--config", path, NULL);
    assert_int_equal(cfg.port, 9100);
    assert_string_equal(cfg.api_key, "env");
    assert_int_equal(cfg.max_queue_bytes, 4096);
    assert_int_equal(cfg.history_ttl, 30); /* from the file, env did not say */
    config_free(&cfg);
}

static void test_flags_override_env_and_file(void **state)
{
    (void)state;
    const char *path =
        write_file("{\"port\": 9000, \"node_id\": \"from-file\", \"history_size\": 7}");
    setenv("CHORUS_PORT", "9100", 1);
    setenv("CHORUS_NODE_ID", "from-env", 1);
    struct config cfg;
    struct loaded l;
    LOAD_OK(&cfg, &l, "--config", path, "--port", "9200", "--node-id=from-flag", NULL);
    assert_int_equal(cfg.port, 9200);
    assert_string_equal(cfg.node_id, "from-flag");
    assert_int_equal(cfg.history_size, 7);
    config_free(&cfg);
}

static void test_each_source_overrides_only_what_it_sets(void **state)
{
    (void)state;
    /* Four settings, each last set by a different source. */
    const char *path =
        write_file("{\"ping_interval\": 11, \"ping_timeout\": 12, \"history_size\": 13}");
    setenv("CHORUS_PING_TIMEOUT", "22", 1);
    setenv("CHORUS_HISTORY_SIZE", "23", 1);
    struct config cfg;
    struct loaded l;
    LOAD_OK(&cfg, &l, "--config", path, "--history-size", "33", NULL);
    assert_int_equal(cfg.max_channels_per_conn, 128); /* default */
    assert_int_equal(cfg.ping_interval, 11);          /* file */
    assert_int_equal(cfg.ping_timeout, 22);           /* env */
    assert_int_equal(cfg.history_size, 33);           /* flag */
    assert_int_equal(cfg.default_ns.history_size, 33);
    config_free(&cfg);
}

static void test_the_config_file_can_be_named_by_env_or_by_an_inline_flag(void **state)
{
    (void)state;
    const char *a = write_file("{\"port\": 9001}");
    const char *b = write_file("{\"port\": 9002}");
    struct config cfg;
    struct loaded l;
    setenv("CHORUS_CONFIG", a, 1);
    LOAD_OK(&cfg, &l, NULL);
    assert_int_equal(cfg.port, 9001);
    config_free(&cfg);
    /* The flag wins over the variable. */
    LOAD_OK(&cfg, &l, "--config=", NULL); /* an empty name means no file */
    assert_int_equal(cfg.port, 8080);
    config_free(&cfg);
    char flag[600];
    snprintf(flag, sizeof flag, "--config=%s", b);
    LOAD_OK(&cfg, &l, flag, NULL);
    assert_int_equal(cfg.port, 9002);
    config_free(&cfg);
}

static void test_booleans_accept_true_false_1_0(void **state)
{
    (void)state;
    static const struct {
        const char *v;
        bool want;
    } cases[] = {{"true", true}, {"1", true}, {"false", false}, {"0", false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config cfg;
        struct loaded l;
        LOAD_OK(&cfg, &l, "--client-publish", cases[i].v, NULL);
        assert_int_equal(cfg.client_publish, cases[i].want);
        config_free(&cfg);
        setenv("CHORUS_CLIENT_PUBLISH", cases[i].v, 1);
        LOAD_OK(&cfg, &l, NULL);
        assert_int_equal(cfg.client_publish, cases[i].want);
        config_free(&cfg);
        unsetenv("CHORUS_CLIENT_PUBLISH");
    }
}

static void test_allowed_origins_from_a_later_source_replace_earlier_ones(void **state)
{
    (void)state;
    const char *path = write_file("{\"allowed_origin\": [\"https://file.example\"]}");
    struct config cfg;
    struct loaded l;
    LOAD_OK(&cfg, &l, "--config", path, NULL);
    assert_int_equal(cfg.n_allowed_origin, 1);
    assert_string_equal(cfg.allowed_origin[0], "https://file.example");
    config_free(&cfg);

    setenv("CHORUS_ALLOWED_ORIGIN", "https://a.example, https://b.example", 1);
    LOAD_OK(&cfg, &l, "--config", path, NULL);
    assert_int_equal(cfg.n_allowed_origin, 2);
    assert_string_equal(cfg.allowed_origin[0], "https://a.example");
    assert_string_equal(cfg.allowed_origin[1], "https://b.example");
    config_free(&cfg);

    LOAD_OK(&cfg, &l, "--config", path, "--allowed-origin", "https://c.example",
            "--allowed-origin=https://d.example", NULL);
    assert_int_equal(cfg.n_allowed_origin, 2);
    assert_string_equal(cfg.allowed_origin[0], "https://c.example");
    assert_string_equal(cfg.allowed_origin[1], "https://d.example");
    config_free(&cfg);
}

/* ---------------------------------------------------- help and bad input */

static void test_help_returns_1_and_prints_usage(void **state)
{
    (void)state;
    struct config cfg;
    struct loaded l;
    load(&cfg, &l, "--help", NULL);
    assert_int_equal(l.rc, 1);
    assert_non_null(strstr(l.out, "Usage: chorusd"));
    /* The flag, env and JSON names all come from one table. */
    assert_non_null(strstr(l.out, "--max-queue-bytes"));
    assert_non_null(strstr(l.out, "CHORUS_MAX_QUEUE_BYTES"));
    config_free(&cfg);

    load(&cfg, &l, "--port", "1", "-h", NULL);
    assert_int_equal(l.rc, 1);
    config_free(&cfg);
}

static void test_version_returns_1_and_prints_the_version(void **state)
{
    (void)state;
    struct config cfg;
    struct loaded l;
    load(&cfg, &l, "--version", NULL);
    assert_int_equal(l.rc, 1);
    assert_true(!strncmp(l.out, "chorusd ", 8));
    config_free(&cfg);
}

static void test_version_names_the_commit(void **state)
{
    (void)state;
    struct config cfg;
    struct loaded l;
    load(&cfg, &l, "--version", NULL);
    assert_int_equal(l.rc, 1);
    /* "chorusd 0.1.0 (commit 1a2b3c4d5e6f)", or "(commit unknown)" outside git. */
    assert_non_null(strstr(l.out, " (commit "));
    config_free(&cfg);
}

static void test_help_is_grouped_by_topic_in_79_columns(void **state)
{
    (void)state;
    struct config cfg;
    struct loaded l;
    load(&cfg, &l, "--help", NULL);
    assert_int_equal(l.rc, 1);
    const char *topics[] = {"\nGeneral:\n", "\nListening and serving:\n", "\nLimits:\n",
                            "\nCluster:\n", "\nCommands:\n"};
    for (size_t i = 0; i < sizeof topics / sizeof topics[0]; i++)
        if (!strstr(l.out, topics[i]))
            fail_msg("--help has no topic %s", topics[i]);
    /* Every option under exactly one topic. */
    const char *p = strstr(l.out, "  --heartbeat-ms MS");
    assert_non_null(p);
    assert_null(strstr(p + 1, "  --heartbeat-ms MS"));
    assert_non_null(strstr(l.out, "--ping-interval SECONDS"));
    assert_non_null(strstr(l.out, "(default 2000 ms)"));
    assert_non_null(strstr(l.out, "--check-config"));
    assert_null(strstr(l.out, "chorusd-keygen")); /* no such tool */
    int col = 0;
    for (const char *c = l.out; *c; c++) {
        col = *c == '\n' ? 0 : col + 1;
        if (col > 79)
            fail_msg("--help has a line over 79 columns near: %.60s", c - 60);
    }
    config_free(&cfg);
}

static void test_check_config_prints_the_effective_configuration_without_secrets(void **state)
{
    (void)state;
    struct config cfg;
    struct loaded l;
    const char *path = write_file("{\"history_size\": 7, \"namespaces\": {\"chat\": {\"presence\": true}}}");
    setenv("CHORUS_MAX_CONNECTIONS", "77", 1);
    load(&cfg, &l, "--check-config", "--config", path, "--api-key", "s3cret-key", "--port", "9001",
         NULL);
    unsetenv("CHORUS_MAX_CONNECTIONS");
    assert_int_equal(l.rc, 1);
    json_error_t err;
    json_t *j = json_loads(l.out, 0, &err);
    if (!j)
        fail_msg("--check-config printed no JSON (%s): %s", err.text, l.out);
    assert_int_equal(json_integer_value(json_object_get(j, "port")), 9001);
    assert_int_equal(json_integer_value(json_object_get(j, "max_connections")), 77);
    assert_int_equal(json_integer_value(json_object_get(j, "history_size")), 7);
    assert_string_equal(json_string_value(json_object_get(j, "api_key")), "<set>");
    assert_true(json_is_null(json_object_get(j, "jwt_secret")));
    assert_true(json_is_true(json_object_get(json_object_get(json_object_get(j, "namespaces"), "chat"),
                                             "presence")));
    assert_null(strstr(l.out, "s3cret-key"));
    json_decref(j);
    config_free(&cfg);

    /* Invalid: -2 (chorusd exits 1), the reason on stderr, nothing on stdout. */
    load(&cfg, &l, "--check-config", "--port", "http", NULL);
    assert_int_equal(l.rc, -2);
    assert_non_null(strstr(l.err, "got 'http'"));
    assert_string_equal(l.out, "");
    config_free(&cfg);
    load(&cfg, &l, "--check-config", "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.pem",
         NULL);
    assert_int_equal(l.rc, -2);
    assert_non_null(strstr(l.err, "/nonexistent.pem"));
    config_free(&cfg);
    /* Raft peers may be names (resolved at each connection); a bind address
     * must be numeric IPv4, and an IPv6 literal is refused before any start. */
    load(&cfg, &l, "--check-config", "--cluster-insecure", "true", "--cluster-bind", "tcp://10.0.0.1:7000",
         "--raft-peer", "chorus-1.example:7001", "--raft-advertise", "chorus-0.example:7001", NULL);
    assert_int_equal(l.rc, 1);
    config_free(&cfg);
    load(&cfg, &l, "--check-config", "--cluster-insecure", "true", "--cluster-bind", "tcp://10.0.0.1:7000",
         "--raft-peer", "[fd00::1]:7001", NULL);
    assert_int_equal(l.rc, -2);
    assert_non_null(strstr(l.err, "got '[fd00::1]:7001'"));
    config_free(&cfg);
    load(&cfg, &l, "--check-config", "--cluster-insecure", "true", "--cluster-bind", "tcp://10.0.0.1:7000",
         "--raft-bind", "chorus-0.example:7001", NULL);
    assert_int_equal(l.rc, -2);
    assert_non_null(strstr(l.err, "got 'chorus-0.example:7001'"));
    config_free(&cfg);
    load(&cfg, &l, "--check-config", "--cluster-insecure", "true", "--cluster-bind", "tcp://10.0.0.1:7000",
         "--raft-bind", "10.0.0.1:7001", "--raft-peer", "10.0.0.2:7001", NULL);
    assert_int_equal(l.rc, 1);
    config_free(&cfg);
}

static void test_unknown_flag_returns_minus_1(void **state)
{
    (void)state;
    expect_rejected("--no-such-flag", "--no-such-flag", "1", NULL);
    expect_rejected("stray", "stray", NULL);
    expect_rejected("-p", "-p", "80", NULL);
    /* A prefix of a real flag is not that flag. */
    expect_rejected("--po", "--po", "80", NULL);
}

static void test_flag_without_a_value_returns_minus_1(void **state)
{
    (void)state;
    expect_rejected("port", "--port", NULL);
}

static void test_bad_integer_returns_minus_1(void **state)
{
    (void)state;
    expect_rejected("port", "--port", "abc", NULL);
    expect_rejected("port", "--port", "80x", NULL);
    expect_rejected("port", "--port", "", NULL);
    expect_rejected("port", "--port", "0", NULL);      /* below the minimum */
    expect_rejected("port", "--port", "65536", NULL);  /* above the maximum */
    expect_rejected("port", "--port", "99999999999999999999", NULL);
    expect_rejected("got ' 80'", "--port", " 80", NULL);
    expect_rejected("got '+80'", "--port", "+80", NULL);
    /* A number in the file must be a JSON number, not a string. */
    expect_rejected("got \"8080\"", "--config", write_file("{\"port\": \"8080\"}"), NULL);
    expect_rejected("must be a string", "--config", write_file("{\"bind\": 1}"), NULL);
    expect_rejected("max-queue-frames", "--max-queue-frames", "3", NULL);
    expect_rejected("history-size", "--history-size", "-1", NULL);
    expect_rejected("max-header-bytes", "--max-header-bytes", "65536", NULL); /* lws: unsigned short */
    expect_rejected("max-header-bytes", "--max-header-bytes", "4095", NULL);
    setenv("CHORUS_PING_INTERVAL", "soon", 1);
    expect_rejected("ping-interval", NULL);
    unsetenv("CHORUS_PING_INTERVAL");
    const char *path = write_file("{\"max_connections\": 0}");
    expect_rejected("max-connections", "--config", path, NULL);
}

static void test_bad_boolean_returns_minus_1(void **state)
{
    (void)state;
    expect_rejected("client-publish", "--client-publish", "maybe", NULL);
    /* Strict: no guessing at yes/no/on/TRUE, in any source; the value is named. */
    expect_rejected("got 'yes'", "--allow-anonymous", "yes", NULL);
    expect_rejected("got 'no'", "--client-publish", "no", NULL);
    expect_rejected("got 'TRUE'", "--cluster-insecure", "TRUE", NULL);
    expect_rejected("allow_anonymous", "--config", write_file("{\"allow_anonymous\": \"true\"}"), NULL);
    expect_rejected("client_publish", "--config", write_file("{\"client_publish\": 1}"), NULL);
}

static void test_bad_log_level_or_node_id_returns_minus_1(void **state)
{
    (void)state;
    expect_rejected("log-level", "--log-level", "loud", NULL);
    expect_rejected("node-id", "--node-id", "has space", NULL);
    expect_rejected("node-id", "--node-id", "", NULL);
    char long_id[80];
    memset(long_id, 'n', 65);
    long_id[65] = '\0';
    expect_rejected("node-id", "--node-id", long_id, NULL);
}

static void test_bad_config_files_return_minus_1(void **state)
{
    (void)state;
    char missing[600];
    snprintf(missing, sizeof missing, "%s/does-not-exist.json", tmpdir);
    expect_rejected("does-not-exist", "--config", missing, NULL);
    expect_rejected("config", "--config", write_file("{\"port\": "), NULL);
    expect_rejected("must be a JSON object", "--config", write_file("[1]"), NULL);
    expect_rejected("unknown key 'colour'", "--config", write_file("{\"colour\": 1}"), NULL);
    /* File keys use '_', not the flag spelling. */
    expect_rejected("unknown key 'max-connections'", "--config",
                    write_file("{\"max-connections\": 1}"), NULL);
    expect_rejected("unknown key 'config'", "--config", write_file("{\"config\": \"x\"}"), NULL);
    expect_rejected("config", "--config", write_file("{\"port\": 1, \"port\": 2}"), NULL);
    expect_rejected("wrong type", "--config", write_file("{\"port\": 1.5}"), NULL);
    expect_rejected("allowed-origin", "--config", write_file("{\"allowed_origin\": [1]}"), NULL);
}

/* ------------------------------------------------------------ namespaces */

static void test_namespaces_from_the_file_override_the_top_level_options(void **state)
{
    (void)state;
    const char *path = write_file(
        "{\"history_size\": 7, \"history_ttl\": 70,"
        " \"namespaces\": {"
        "   \"ticker\": {\"history_size\": 1, \"history_ttl\": 60, \"client_publish\": false},"
        "   \"chat\": {\"presence\": true}}}");
    struct config cfg;
    struct loaded l;
    LOAD_OK(&cfg, &l, "--config", path, NULL);
    assert_int_equal(cfg.n_namespaces, 2);

    const struct ns_opts *ticker = config_ns_for(&cfg, "ticker:AAPL", 11);
    assert_string_equal(ticker->name, "ticker");
    assert_int_equal(ticker->history_size, 1);
    assert_int_equal(ticker->history_ttl, 60);
    assert_false(ticker->client_publish);
    assert_false(ticker->presence);

    /* A namespace inherits whatever it does not say from the top level. */
    const struct ns_opts *chat = config_ns_for(&cfg, "chat:room", 9);
    assert_string_equal(chat->name, "chat");
    assert_int_equal(chat->history_size, 7);
    assert_int_equal(chat->history_ttl, 70);
    assert_true(chat->client_publish);
    assert_true(chat->presence);
    config_free(&cfg);
}

static void test_namespaces_inherit_top_level_options_set_by_env_and_flags(void **state)
{
    (void)state;
    const char *path = write_file("{\"namespaces\": {\"chat\": {\"presence\": true}}}");
    setenv("CHORUS_HISTORY_TTL", "45", 1);
    struct config cfg;
    struct loaded l;
    LOAD_OK(&cfg, &l, "--config", path, "--history-size", "9", NULL);
    const struct ns_opts *chat = config_ns_for(&cfg, "chat:x", 6);
    assert_string_equal(chat->name, "chat");
    assert_int_equal(chat->history_size, 9);
    assert_int_equal(chat->history_ttl, 45);
    config_free(&cfg);
}

static void test_the_idempotency_window_comes_from_flags_env_or_a_namespace(void **state)
{
    (void)state;
    const char *path = write_file(
        "{\"idempotency_keys\": 64,"
        " \"namespaces\": {\"orders\": {\"idempotency_window\": 86400, \"idempotency_keys\": 4096},"
        "                  \"chat\": {}}}");
    setenv("CHORUS_MAX_IDEMPOTENCY_KEYS", "5000", 1);
    struct config cfg;
    struct loaded l;
    LOAD_OK(&cfg, &l, "--config", path, "--idempotency-window", "30", NULL);
    assert_int_equal(cfg.max_idempotency_keys, 5000);
    const struct ns_opts *orders = config_ns_for(&cfg, "orders:1", 8);
    assert_int_equal(orders->idempotency_window, 86400);
    assert_int_equal(orders->idempotency_keys, 4096);
    const struct ns_opts *chat = config_ns_for(&cfg, "chat:1", 6);
    assert_int_equal(chat->idempotency_window, 30);
    assert_int_equal(chat->idempotency_keys, 64);
    config_free(&cfg);
}

static void test_ns_for_picks_the_namespace_or_the_default(void **state)
{
    (void)state;
    const char *path = write_file(
        "{\"namespaces\": {\"ticker\": {\"history_size\": 1}, \"t\": {\"history_size\": 2}}}");
    struct config cfg;
    struct loaded l;
    LOAD_OK(&cfg, &l, "--config", path, NULL);
    const struct ns_opts *ticker = config_ns_for(&cfg, "ticker:AAPL", 11);
    const struct ns_opts *t = config_ns_for(&cfg, "t:x", 3);
    assert_string_equal(ticker->name, "ticker");
    assert_string_equal(t->name, "t");
    assert_ptr_equal(config_ns_for(&cfg, "ticker:a:b", 10), ticker); /* first colon only */
    assert_ptr_equal(config_ns_for(&cfg, "ticker", 6), &cfg.default_ns);      /* no colon */
    assert_ptr_equal(config_ns_for(&cfg, "tick:AAPL", 9), &cfg.default_ns);   /* prefix */
    assert_ptr_equal(config_ns_for(&cfg, "tickers:AAPL", 12), &cfg.default_ns);
    assert_ptr_equal(config_ns_for(&cfg, ":AAPL", 5), &cfg.default_ns);       /* empty */
    assert_ptr_equal(config_ns_for(&cfg, "other:x", 7), &cfg.default_ns);
    /* Only len bytes count: "ticker:AAPL" cut before the colon has none. */
    assert_ptr_equal(config_ns_for(&cfg, "ticker:AAPL", 6), &cfg.default_ns);
    config_free(&cfg);
}

static void test_bad_namespaces_return_minus_1(void **state)
{
    (void)state;
    expect_rejected("namespaces", "--config", write_file("{\"namespaces\": []}"), NULL);
    expect_rejected("a:b", "--config", write_file("{\"namespaces\": {\"a:b\": {}}}"), NULL);
    expect_rejected("namespace", "--config", write_file("{\"namespaces\": {\"\": {}}}"), NULL);
    expect_rejected("ns", "--config", write_file("{\"namespaces\": {\"ns\": 1}}"), NULL);
    expect_rejected("unknown key 'colour'", "--config",
                    write_file("{\"namespaces\": {\"ns\": {\"colour\": 1}}}"), NULL);
    /* A bad value of a known key is named as such, with the value. */
    expect_rejected("history_size must be an integer in [0, 1000000], got -1", "--config",
                    write_file("{\"namespaces\": {\"ns\": {\"history_size\": -1}}}"), NULL);
    expect_rejected("presence must be true or false, got \"yes\"", "--config",
                    write_file("{\"namespaces\": {\"ns\": {\"presence\": \"yes\"}}}"), NULL);
    expect_rejected("subscribe must be", "--config",
                    write_file("{\"namespaces\": {\"ns\": {\"subscribe\": \"everyone\"}}}"), NULL);
    expect_rejected("got \"everyone\"", "--config",
                    write_file("{\"namespaces\": {\"ns\": {\"publish\": \"everyone\"}}}"), NULL);
    expect_rejected("slow_consumer must be \"close\" or \"conflate\", got \"drop\"", "--config",
                    write_file("{\"namespaces\": {\"ns\": {\"slow_consumer\": \"drop\"}}}"), NULL);
}

static void test_namespace_rules_parse_and_client_publish_stays_an_alias(void **state)
{
    (void)state;
    const char *path = write_file(
        "{\"jwt_secret\": \"a-secret-of-more-than-16-bytes\", \"presence_max_members\": 50,"
        " \"namespaces\": {"
        "   \"chat\": {\"subscribe\": \"authenticated\", \"publish\": \"members\"},"
        "   \"vip\": {\"subscribe\": \"claim\", \"presence_max_members\": 3},"
        "   \"secret\": {\"subscribe\": \"token\", \"publish\": \"nobody\"},"
        "   \"ticker\": {\"client_publish\": false, \"slow_consumer\": \"conflate\"},"
        "   \"user\": {\"personal\": true}}}");
    struct config cfg;
    struct loaded l;
    LOAD_OK(&cfg, &l, "--config", path, NULL);
    assert_string_equal(cfg.jwt_secret, "a-secret-of-more-than-16-bytes");
    const struct ns_opts *ns = config_ns_for(&cfg, "chat:a", 6);
    assert_int_equal(ns->subscribe, NS_SUB_AUTHENTICATED);
    assert_int_equal(ns->publish, NS_PUB_MEMBERS);
    assert_true(ns->client_publish);
    assert_int_equal(ns->presence_max_members, 50);
    ns = config_ns_for(&cfg, "vip:a", 5);
    assert_int_equal(ns->subscribe, NS_SUB_CLAIM);
    assert_int_equal(ns->publish, NS_PUB_ANYONE);
    assert_int_equal(ns->presence_max_members, 3);
    ns = config_ns_for(&cfg, "secret:a", 8);
    assert_int_equal(ns->subscribe, NS_SUB_TOKEN);
    assert_int_equal(ns->publish, NS_PUB_NOBODY);
    assert_false(ns->client_publish);
    ns = config_ns_for(&cfg, "ticker:a", 8);
    assert_int_equal(ns->publish, NS_PUB_NOBODY);
    assert_false(ns->client_publish);
    assert_int_equal(ns->slow_consumer, NS_SLOW_CONFLATE);
    assert_int_equal(config_ns_for(&cfg, "chat:a", 6)->slow_consumer, NS_SLOW_CLOSE);
    assert_int_equal(config_ns_for(&cfg, "plain", 5)->slow_consumer, NS_SLOW_CLOSE);
    assert_int_equal(cfg.conflate_queue_bytes, 4096);
    assert_int_equal(cfg.conflate_sndbuf_bytes, 8192);
    assert_int_equal(cfg.conflate_notsent_bytes, 1024);
    assert_true(config_ns_for(&cfg, "user:42", 7)->personal);
    ns = config_ns_for(&cfg, "plain", 5);
    assert_int_equal(ns->subscribe, NS_SUB_ANYONE);
    assert_int_equal(ns->publish, NS_PUB_ANYONE);
    assert_false(ns->personal);
    config_free(&cfg);

    /* --client-publish false makes the default namespace publish "nobody". */
    LOAD_OK(&cfg, &l, "--client-publish", "false", NULL);
    assert_int_equal(cfg.default_ns.publish, NS_PUB_NOBODY);
    config_free(&cfg);
}

static void test_auth_and_tls_settings_are_checked_together(void **state)
{
    (void)state;
    struct config cfg;
    struct loaded l;
    LOAD_OK(&cfg, &l, NULL);
    assert_true(cfg.allow_anonymous);
    assert_int_equal(cfg.jwt_leeway, 5);
    assert_int_equal(cfg.auth_timeout, 10);
    assert_int_equal(cfg.max_pub_rate, 0);
    assert_int_equal(cfg.presence_max_members, 1000);
    config_free(&cfg);
    expect_rejected("allow-anonymous", "--allow-anonymous", "false", NULL);
    expect_rejected("tls-key", "--tls-cert", "/tmp/cert.pem", NULL);
    expect_rejected("tls-cert", "--tls-key", "/tmp/key.pem", NULL);
    expect_rejected("subscribe", "--config",
                    write_file("{\"namespaces\": {\"ns\": {\"subscribe\": \"everyone\"}}}"), NULL);
    expect_rejected("publish", "--config",
                    write_file("{\"namespaces\": {\"ns\": {\"publish\": true}}}"), NULL);
    expect_rejected("client_publish", "--config",
                    write_file("{\"namespaces\": {\"ns\": {\"publish\": \"members\", \"client_publish\": true}}}"),
                    NULL);
    /* Rules only a token can satisfy need a key. */
    expect_rejected("jwt", "--config",
                    write_file("{\"namespaces\": {\"ns\": {\"subscribe\": \"authenticated\"}}}"), NULL);
    expect_rejected("jwt", "--config", write_file("{\"namespaces\": {\"ns\": {\"personal\": true}}}"), NULL);
    LOAD_OK(&cfg, &l, "--jwt-secret", "a-secret-of-more-than-16-bytes", "--allow-anonymous", "false", NULL);
    assert_false(cfg.allow_anonymous);
    config_free(&cfg);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_defaults_apply_when_nothing_is_given),
        T(test_file_overrides_defaults),
        T(test_env_overrides_file),
        T(test_flags_override_env_and_file),
        T(test_each_source_overrides_only_what_it_sets),
        T(test_the_config_file_can_be_named_by_env_or_by_an_inline_flag),
        T(test_booleans_accept_true_false_1_0),
        T(test_allowed_origins_from_a_later_source_replace_earlier_ones),
        T(test_help_returns_1_and_prints_usage),
        T(test_version_returns_1_and_prints_the_version),
        T(test_version_names_the_commit),
        T(test_help_is_grouped_by_topic_in_79_columns),
        T(test_check_config_prints_the_effective_configuration_without_secrets),
        T(test_unknown_flag_returns_minus_1),
        T(test_flag_without_a_value_returns_minus_1),
        T(test_bad_integer_returns_minus_1),
        T(test_bad_boolean_returns_minus_1),
        T(test_bad_log_level_or_node_id_returns_minus_1),
        T(test_bad_config_files_return_minus_1),
        T(test_namespaces_from_the_file_override_the_top_level_options),
        T(test_namespaces_inherit_top_level_options_set_by_env_and_flags),
        T(test_the_idempotency_window_comes_from_flags_env_or_a_namespace),
        T(test_ns_for_picks_the_namespace_or_the_default),
        T(test_bad_namespaces_return_minus_1),
        T(test_namespace_rules_parse_and_client_publish_stays_an_alias),
        T(test_auth_and_tls_settings_are_checked_together),
    };
#undef T
    return cmocka_run_group_tests_name("config", tests, group_setup, group_teardown);
}
