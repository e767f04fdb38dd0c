/* consensus.c - Raft on the lws loop, and the shard map as its state
 * machine (consensus.h). */
#include "consensus.h"
#include "endpoint.h"
#include "log.h"
#include "runtime.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define MAX_HOOKS 4
#define ADDR_MAX 64
/* uv registers new watchers with epoll only at its next run, which its
 * backend fd cannot announce: run it at least this often. */
#define UV_POLL_US (50 * LWS_US_PER_MS)

static struct {
    bool started;
    uv_loop_t loop;
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    bool raft_inited, io_inited, transport_inited, closed;
    struct lws *wsi;
    lws_sorted_usec_list_t timer;
    uint64_t self_id;
    int voters;
    struct shardmap map;
    struct raft_apply req;
    bool proposing;
    consensus_map_fn *hooks[MAX_HOOKS];
    int nhooks;
    int last_state;
    int lock_fd;                  /* flock on the data dir; -1 when none */
} cs = {.lock_fd = -1};

/* libraft 0.15's segment files need every entry's length to be a multiple
 * of 8 (src/uv_segment.c; a shorter one is written fine and read back as a
 * corrupt log: canonical/raft#304). JSON ignores the trailing blanks. */
static void *padded_copy(const char *json, size_t len, size_t *out_len)
{
    size_t padded = (len + 7) & ~(size_t)7;
    char *copy = raft_malloc(padded ? padded : 8);
    if (!copy)
        return NULL;
    memcpy(copy, json, len);
    memset(copy + len, ' ', padded - len);
    *out_len = padded;
    return copy;
}

/* ---------------------------------------------------------------- the FSM */

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    (void)fsm;
    *result = NULL;
    struct shardmap before = cs.map;
    if (!shardmap_entry_apply(&cs.map, buf->base, buf->len))
        return 0; /* a deposed leader's entry: the map it was based on is gone */
    log_info("event=shard_map_committed version=%llu", (unsigned long long)cs.map.version);
    for (int i = 0; i < cs.nhooks; i++)
        cs.hooks[i](&before, &cs.map);
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
    (void)fsm;
    size_t len;
    char *json = shardmap_encode(&cs.map, &len);
    struct raft_buffer *b = raft_malloc(sizeof *b);
    void *copy = json ? padded_copy(json, len, &len) : NULL;
    free(json);
    if (!b || !copy) {
        raft_free(b);
        raft_free(copy);
        return RAFT_NOMEM;
    }
    b->base = copy;
    b->len = len;
    *bufs = b;
    *n = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    (void)fsm;
    struct shardmap before = cs.map, m;
    int rc = shardmap_decode(&m, buf->base, buf->len);
    raft_free(buf->base);
    if (rc < 0)
        return RAFT_MALFORMED;
    cs.map = m;
    for (int i = 0; i < cs.nhooks; i++)
        cs.hooks[i](&before, &cs.map);
    return 0;
}

/* ----------------------------------------------------------- addresses */

/* "tcp://HOST:PORT" -> "IPV4:PORT+1" (Raft 0.15 connects to numeric IPv4 only). */
static int derive(const char *endpoint, char out[ADDR_MAX])
{
    char host[256], portstr[16];
    if (!endpoint_split(endpoint, host, sizeof host, portstr, sizeof portstr))
        return -1;
    int port = atoi(portstr);
    if (port <= 0 || port >= 65535)
        return -1;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return -1;
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip, sizeof ip);
    freeaddrinfo(res);
    if (!strcmp(ip, "0.0.0.0"))
        return -1;
    snprintf(out, ADDR_MAX, "%s:%d", ip, port + 1);
    return 0;
}

static int numeric(const char *addr)
{
    char ip[ADDR_MAX];
    const char *colon = strrchr(addr, ':');
    struct in_addr a;
    if (!colon || (size_t)(colon - addr) >= sizeof ip || atoi(colon + 1) <= 0 || atoi(colon + 1) > 65535)
        return -1;
    snprintf(ip, sizeof ip, "%.*s", (int)(colon - addr), addr);
    return inet_pton(AF_INET, ip, &a) == 1 && a.s_addr != 0 ? 0 : -1;
}

static int mkdirs(const char *path)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0700) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(buf, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

/* ------------------------------------------------------------ the loop */

static void run_uv(void);

static void timer_cb(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    run_uv();
}

static void note_state(void)
{
    int st = raft_state(&cs.raft);
    if (st == cs.last_state)
        return;
    static const char *const names[] = {"unavailable", "follower", "candidate", "leader"};
    log_info("event=raft_state state=%s term=%llu", st >= 0 && st < 4 ? names[st] : "?",
             (unsigned long long)cs.raft.current_term);
    cs.last_state = st;
}

static void run_uv(void)
{
    if (!cs.started)
        return;
    uv_run(&cs.loop, UV_RUN_NOWAIT);
    uv_run(&cs.loop, UV_RUN_NOWAIT); /* registers watchers the first run added */
    if (cs.raft_inited)
        note_state();
    int t = uv_backend_timeout(&cs.loop);
    lws_usec_t us = t < 0 || (lws_usec_t)t * LWS_US_PER_MS > UV_POLL_US ? UV_POLL_US
                                                                        : (lws_usec_t)t * LWS_US_PER_MS;
    if (rt.ctx)
        lws_sul_schedule(rt.ctx, 0, &cs.timer, timer_cb, us ? us : 1);
}

int consensus_lws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len)
{
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        run_uv();
        return 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (wsi == cs.wsi)
            cs.wsi = NULL;
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* -------------------------------------------------------- start, stop */

int consensus_start(const struct config *cfg, struct lws_vhost *vh)
{
    char self[ADDR_MAX], addrs[CONFIG_MAX_PEERS][ADDR_MAX], dir[1024];
    int n = 0;
    if (cfg->raft_bind)
        snprintf(self, sizeof self, "%s", cfg->raft_bind);
    else if (!cfg->cluster_bind || derive(cfg->cluster_bind, self) < 0) {
        log_error("event=raft_failed msg=\"give --raft-bind IPV4:PORT: this node's Raft address "
                  "cannot be derived from --cluster-bind (a wildcard or unresolvable host)\"");
        return -1;
    }
    if (cfg->n_raft_peer) {
        for (int i = 0; i < cfg->n_raft_peer; i++)
            snprintf(addrs[n++], ADDR_MAX, "%s", cfg->raft_peer[i]);
    } else {
        for (int i = 0; i < cfg->n_peer; i++)
            if (derive(cfg->peer[i], addrs[n]) < 0) {
                log_error("event=raft_failed peer=%s msg=\"cannot derive its Raft address; give "
                          "--raft-peer IPV4:PORT for every peer\"", cfg->peer[i]);
                return -1;
            } else if (strcmp(addrs[n], self) != 0) {
                n++;
            }
    }
    if (numeric(self) < 0) {
        log_error("event=raft_failed addr=%s msg=\"a Raft address must be IPV4:PORT\"", self);
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (numeric(addrs[i]) < 0) {
            log_error("event=raft_failed addr=%s msg=\"a Raft address must be IPV4:PORT\"", addrs[i]);
            return -1;
        }
    if (cfg->data_dir)
        snprintf(dir, sizeof dir, "%s", cfg->data_dir);
    else
        snprintf(dir, sizeof dir, "chorus-data/%s", cfg->node_id);
    if (mkdirs(dir) < 0) {
        log_error("event=raft_failed dir=%s error=\"%s\"", dir, strerror(errno));
        return -1;
    }
    /* Two processes on one Raft log would corrupt it: the second one stops. */
    char lock[1100];
    snprintf(lock, sizeof lock, "%s/chorus.lock", dir);
    cs.lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (cs.lock_fd < 0 || flock(cs.lock_fd, LOCK_EX | LOCK_NB) < 0) {
        log_error("event=raft_failed dir=%s msg=\"the data dir is in use by another chorusd (or "
                  "cannot be locked): give each node its own --data-dir\"", dir);
        if (cs.lock_fd >= 0)
            close(cs.lock_fd);
        cs.lock_fd = -1;
        return -1;
    }

    shardmap_init(&cs.map);
    cs.last_state = -1;
    if (uv_loop_init(&cs.loop) != 0)
        return -1;
    cs.started = true;
    cs.self_id = raft_digest(self, 0);
    cs.fsm = (struct raft_fsm){.version = 1, .apply = fsm_apply, .snapshot = fsm_snapshot,
                               .restore = fsm_restore};
    int rv;
    if ((rv = raft_uv_tcp_init(&cs.transport, &cs.loop)) != 0)
        goto fail;
    cs.transport_inited = true;
    if ((rv = raft_uv_init(&cs.io, &cs.loop, dir, &cs.transport)) != 0)
        goto fail;
    cs.io_inited = true;
    if ((rv = raft_init(&cs.raft, &cs.io, &cs.fsm, cs.self_id, self)) != 0)
        goto fail;
    cs.raft_inited = true;
    raft_set_election_timeout(&cs.raft, (unsigned)cfg->election_timeout_ms);
    raft_set_heartbeat_timeout(&cs.raft, (unsigned)(cfg->election_timeout_ms / 10 > 20 ? cfg->election_timeout_ms / 10 : 20));
    raft_set_pre_vote(&cs.raft, true);
    raft_set_snapshot_threshold(&cs.raft, 128);
    raft_set_snapshot_trailing(&cs.raft, 64);

    struct raft_configuration conf;
    raft_configuration_init(&conf);
    rv = raft_configuration_add(&conf, cs.self_id, self, RAFT_VOTER);
    for (int i = 0; i < n && rv == 0; i++)
        rv = raft_configuration_add(&conf, raft_digest(addrs[i], 0), addrs[i], RAFT_VOTER);
    if (rv == 0) {
        rv = raft_bootstrap(&cs.raft, &conf);
        if (rv == RAFT_CANTBOOTSTRAP)
            rv = 0; /* the log already holds a configuration: a restart */
    }
    raft_configuration_close(&conf);
    if (rv != 0 || (rv = raft_start(&cs.raft)) != 0)
        goto fail;
    cs.voters = n + 1;

    lws_sock_file_fd_type u;
    u.filefd = (lws_filefd_type)dup(uv_backend_fd(&cs.loop));
    cs.wsi = lws_adopt_descriptor_vhost(vh, LWS_ADOPT_RAW_FILE_DESC, u, "chorus-raft", NULL);
    if (!cs.wsi) {
        close(u.filefd);
        log_error("event=raft_failed msg=\"cannot watch Raft's event fd\"");
        consensus_stop();
        return -1;
    }
    run_uv();
    log_info("event=raft_started id=%llx addr=%s voters=%d dir=%s", (unsigned long long)cs.self_id,
             self, cs.voters, dir);
    if (cs.voters == 2)
        log_warn("event=raft_two_voters msg=\"a 2-node cluster needs both nodes for every change "
                 "and every lease: losing either stops publishes; run 3 or more\"");
    return 0;

fail:
    log_error("event=raft_failed error=\"%s\" dir=%s", cs.raft_inited ? raft_errmsg(&cs.raft) : raft_strerror(rv), dir);
    consensus_stop();
    return -1;
}

static void closed_cb(struct raft *r)
{
    (void)r;
    raft_uv_close(&cs.io);
    raft_uv_tcp_close(&cs.transport);
    cs.closed = true;
}

void consensus_stop(void)
{
    if (!cs.started)
        return;
    lws_sul_cancel(&cs.timer);
    if (cs.raft_inited) {
        raft_close(&cs.raft, closed_cb);
    } else {
        if (cs.io_inited)
            raft_uv_close(&cs.io);
        if (cs.transport_inited)
            raft_uv_tcp_close(&cs.transport);
        cs.closed = true;
    }
    /* Bounded: the log's pending writes finish, then the handles close. */
    for (int i = 0; i < 2000 && (uv_run(&cs.loop, UV_RUN_NOWAIT) || !cs.closed); i++)
        usleep(1000);
    if (cs.wsi) {
        struct lws *w = cs.wsi;
        cs.wsi = NULL;
        lws_set_timeout(w, PENDING_TIMEOUT_CLOSE_ACK, LWS_TO_KILL_ASYNC);
    }
    uv_loop_close(&cs.loop);
    if (cs.lock_fd >= 0)
        close(cs.lock_fd);
    memset(&cs, 0, sizeof cs);
    cs.lock_fd = -1;
}

/* ------------------------------------------------------------ queries */

bool consensus_is_leader(void) { return cs.raft_inited && raft_state(&cs.raft) == RAFT_LEADER; }
uint64_t consensus_self_id(void) { return cs.self_id; }
int consensus_voters(void) { return cs.voters; }
const struct shardmap *consensus_map(void) { return &cs.map; }
bool consensus_proposing(void) { return cs.proposing; }

uint64_t consensus_leader_id(void)
{
    if (!cs.raft_inited)
        return 0;
    raft_id id = 0;
    const char *addr = NULL;
    raft_leader(&cs.raft, &id, &addr);
    return id;
}

void consensus_on_map(consensus_map_fn *fn)
{
    if (cs.nhooks < MAX_HOOKS)
        cs.hooks[cs.nhooks++] = fn;
}

static void applied_cb(struct raft_apply *req, int status, void *result)
{
    (void)req;
    (void)result;
    cs.proposing = false;
    if (status != 0)
        log_warn("event=shard_map_proposal_failed error=\"%s\"", raft_strerror(status));
}

int consensus_propose(const struct shardmap *next)
{
    if (!consensus_is_leader() || cs.proposing)
        return -1;
    size_t len;
    char *json = shardmap_entry_encode(cs.map.version, next, &len);
    void *copy = json ? padded_copy(json, len, &len) : NULL;
    free(json);
    if (!copy)
        return -1;
    struct raft_buffer buf = {copy, len};
    int rv = raft_apply(&cs.raft, &cs.req, &buf, 1, applied_cb);
    if (rv != 0) {
        if (rv == RAFT_NOTLEADER)
            raft_free(copy);
        log_warn("event=shard_map_proposal_failed error=\"%s\"", raft_strerror(rv));
        return -1;
    }
    cs.proposing = true;
    log_info("event=shard_map_proposed version=%llu", (unsigned long long)next->version);
    return 0;
}
