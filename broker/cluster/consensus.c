/* consensus.c - Raft on the lws loop, and the shard map as its state
 * machine (consensus.h). */
#include "consensus.h"
#include "endpoint.h"
#include "log.h"
#include "runtime.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
#define ADDR_MAX 280 /* a DNS name (253), ":", a port */
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

/* A node's Raft address is a string in the Raft configuration, and its
 * Raft id is derived from it; libraft 0.15 can change neither for a
 * server (src/uv_send.c asserts the address of a known id never changes).
 * So a peer given by name keeps its name there, "HOST:PORT", and the
 * transport resolves it at each connection attempt (resolving_connect):
 * a node that comes back on a new address keeps its id and is reached
 * there. Raft 0.15's TCP transport connects to numeric IPv4 only. */

/* HOST of "HOST:PORT" resolved to one IPv4 address; -1 when it does not. */
static int resolve4(const char *addr, struct in_addr *out, int *port)
{
    char host[ADDR_MAX];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host || atoi(colon + 1) <= 0 ||
        atoi(colon + 1) > 65535)
        return -1;
    snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
    *port = atoi(colon + 1);
    if (inet_pton(AF_INET, host, out) == 1)
        return out->s_addr != 0 ? 0 : -1;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return -1;
    *out = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
    freeaddrinfo(res);
    return out->s_addr != 0 ? 0 : -1;
}

/* Does the name in "HOST:PORT" resolve to ip:port (any of its addresses)? */
static bool names_self(const char *addr, const char *self_numeric)
{
    char host[ADDR_MAX], want[ADDR_MAX];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host)
        return false;
    snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0)
        return false;
    bool hit = false;
    for (struct addrinfo *a = res; a && !hit; a = a->ai_next) {
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &((struct sockaddr_in *)a->ai_addr)->sin_addr, ip, sizeof ip);
        snprintf(want, sizeof want, "%s:%s", ip, colon + 1);
        hit = !strcmp(want, self_numeric);
    }
    freeaddrinfo(res);
    return hit;
}

/* "tcp://HOST:PORT" -> "HOST:PORT+1", the name kept (see above). */
static int derive_name(const char *endpoint, char out[ADDR_MAX])
{
    char host[256], portstr[16];
    if (!endpoint_split(endpoint, host, sizeof host, portstr, sizeof portstr) || strchr(host, ':'))
        return -1;
    int port = atoi(portstr);
    if (port <= 0 || port >= 65535)
        return -1;
    return snprintf(out, ADDR_MAX, "%s:%d", host, port + 1) < ADDR_MAX ? 0 : -1;
}

/* "tcp://HOST:PORT" -> "IPV4:PORT+1": this node's own listening address. */
static int derive(const char *endpoint, char out[ADDR_MAX])
{
    char name[ADDR_MAX];
    struct in_addr a;
    int port;
    if (derive_name(endpoint, name) < 0 || resolve4(name, &a, &port) < 0)
        return -1;
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a, ip, sizeof ip);
    snprintf(out, ADDR_MAX, "%s:%d", ip, port);
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

/* HOST:PORT with a HOST that is a name or an IPv4 address. */
static int well_formed(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || atoi(colon + 1) <= 0 || atoi(colon + 1) > 65535)
        return -1;
    for (const char *c = addr; c < colon; c++)
        if (*c == ':' || *c == '[' || *c == '/' || *c == ' ')
            return -1;
    return 0;
}

/* The last address each named peer resolved to, to log a change once. */
static struct {
    char name[ADDR_MAX];
    struct in_addr ip;
} seen_addr[CONFIG_MAX_PEERS + 1];

static int (*tcp_connect)(struct raft_uv_transport *, struct raft_uv_connect *, raft_id,
                          const char *, raft_uv_connect_cb);
static raft_uv_connect_cb raft_connected;   /* libraft's own callback: one function */
static unsigned user_timeout_ms;

/* A peer whose address vanished (a pod gone with its IP) answers nothing,
 * not even a reset: libraft's client keeps writing into the kernel buffer
 * for the many minutes TCP retransmits, or (dialling the old address
 * before the name changed) sends SYNs for two minutes, and never dials the
 * new address. Every TCP socket of Raft's loop (only Raft uses it) gets a
 * bound instead: unacknowledged data older than user_timeout_ms, or a SYN
 * unanswered after one retry (about 3 s), ends the attempt; libraft then
 * reconnects, resolving the name again. libraft gives no hook before its
 * connect(), so the sockets are found right after it. */
static void bound_timeouts(uv_handle_t *h, void *arg)
{
    (void)arg;
    uv_os_fd_t fd;
    int syncnt = 1;
    if (h->type != UV_TCP || uv_is_closing(h) || uv_fileno(h, &fd) != 0)
        return;
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
    setsockopt(fd, IPPROTO_TCP, TCP_SYNCNT, &syncnt, sizeof syncnt);
}

static void connected(struct raft_uv_connect *req, struct uv_stream_s *stream, int status)
{
    if (status == 0 && stream)
        bound_timeouts((uv_handle_t *)stream, NULL); /* accepted ones inherit the listener's */
    raft_connected(req, stream, status);
}

static int resolving_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                             const char *address, raft_uv_connect_cb cb)
{
    struct in_addr a;
    int port;
    char numeric_addr[ADDR_MAX], ip[INET_ADDRSTRLEN];
    if (resolve4(address, &a, &port) < 0) {
        log_debug("event=raft_resolve_failed addr=%s", address);
        return RAFT_NOCONNECTION; /* libraft tries again after its retry delay */
    }
    inet_ntop(AF_INET, &a, ip, sizeof ip);
    snprintf(numeric_addr, sizeof numeric_addr, "%s:%d", ip, port);
    if (strcmp(numeric_addr, address) != 0)
        for (size_t i = 0; i < sizeof seen_addr / sizeof seen_addr[0]; i++) {
            if (*seen_addr[i].name && strcmp(seen_addr[i].name, address) != 0)
                continue;
            if (!*seen_addr[i].name || seen_addr[i].ip.s_addr != a.s_addr)
                log_info("event=raft_peer_address addr=%s ip=%s", address, ip);
            snprintf(seen_addr[i].name, sizeof seen_addr[i].name, "%s", address);
            seen_addr[i].ip = a;
            break;
        }
    raft_connected = cb;
    int rv = tcp_connect(t, req, id, numeric_addr, connected);
    if (rv == 0)
        uv_walk(&cs.loop, bound_timeouts, NULL);
    return rv;
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
    /* bind: where this node listens (numeric); self: the address its peers
     * know it by (the same string as in their configurations). */
    char bind[ADDR_MAX], self[ADDR_MAX], addrs[CONFIG_MAX_PEERS][ADDR_MAX], dir[1024];
    int n = 0;
    if (cfg->raft_bind)
        snprintf(bind, sizeof bind, "%s", cfg->raft_bind);
    else if (!cfg->cluster_bind || derive(cfg->cluster_bind, bind) < 0) {
        log_error("event=raft_failed msg=\"give --raft-bind IPV4:PORT: this node's Raft address "
                  "cannot be derived from --cluster-bind (a wildcard or unresolvable host)\"");
        return -1;
    }
    if (numeric(bind) < 0) {
        log_error("event=raft_failed addr=%s msg=\"a Raft bind address must be IPV4:PORT\"", bind);
        return -1;
    }
    if (cfg->n_raft_peer) {
        for (int i = 0; i < cfg->n_raft_peer; i++)
            snprintf(addrs[n++], ADDR_MAX, "%s", cfg->raft_peer[i]);
    } else {
        for (int i = 0; i < cfg->n_peer; i++)
            if (derive_name(cfg->peer[i], addrs[n]) < 0) {
                log_error("event=raft_failed peer=%s msg=\"cannot derive its Raft address; give "
                          "--raft-peer HOST:PORT for every peer\"", cfg->peer[i]);
                return -1;
            } else {
                n++;
            }
    }
    /* This node among the peers: the entry that is its bind address, or a
     * name that resolves to it; peers name it so in their configurations. */
    snprintf(self, sizeof self, "%s", cfg->raft_advertise ? cfg->raft_advertise : bind);
    int named = 0;
    for (int i = 0; i < n; i++) {
        bool is_self = !strcmp(addrs[i], self) || !strcmp(addrs[i], bind) ||
                       (!cfg->raft_advertise && numeric(addrs[i]) < 0 && names_self(addrs[i], bind));
        named += numeric(addrs[i]) < 0;
        if (is_self) {
            if (!cfg->raft_advertise)
                snprintf(self, sizeof self, "%s", addrs[i]);
            memmove(addrs[i], addrs[n - 1], ADDR_MAX);
            n--;
            i--;
        }
    }
    if (named && !cfg->raft_advertise && !strcmp(self, bind))
        log_warn("event=raft_self_unnamed addr=%s msg=\"peers are named by DNS but none of the "
                 "names resolves to this node's Raft address: if the peers name this node, give "
                 "--raft-advertise HOST:PORT (their name for it), or it joins under another id\"",
                 self);
    for (int i = 0; i < n; i++)
        if (well_formed(addrs[i]) < 0) {
            log_error("event=raft_failed addr=%s msg=\"a Raft address must be HOST:PORT\"", addrs[i]);
            return -1;
        }
    if (well_formed(self) < 0) {
        log_error("event=raft_failed addr=%s msg=\"a Raft address must be HOST:PORT\"", self);
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
    memset(seen_addr, 0, sizeof seen_addr);
    tcp_connect = cs.transport.connect;
    user_timeout_ms = (unsigned)(2 * cfg->election_timeout_ms > 1000 ? 2 * cfg->election_timeout_ms : 1000);
    cs.transport.connect = resolving_connect;
    /* It listens on the bind address; self (maybe a name) is what it tells the peers it dials. */
    if ((rv = raft_uv_tcp_set_bind_address(&cs.transport, bind)) != 0)
        goto fail;
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
    log_info("event=raft_started id=%llx addr=%s bind=%s voters=%d dir=%s",
             (unsigned long long)cs.self_id, self, bind, cs.voters, dir);
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

/* libraft 0.15 queues &req->send while it dials the transferee and reads
 * req->send.cb when it cancels that send at raft_close, after the transfer
 * itself has ended: the request must outlive the Raft instance, so it is
 * static (and outside cs, which consensus_stop clears). One transfer per
 * process: the one before stopping. */
static struct raft_transfer transfer_req;
static bool transfer_started;

void consensus_transfer(void)
{
    if (!consensus_is_leader() || transfer_started)
        return;
    int rv = raft_transfer(&cs.raft, &transfer_req, 0, NULL);
    if (rv != 0) {
        log_warn("event=raft_transfer_failed error=\"%s\"", raft_strerror(rv));
        return;
    }
    transfer_started = true;
    log_info("event=raft_transfer to=%llx msg=\"handing leadership over before stopping\"",
             (unsigned long long)transfer_req.id);
    /* Let the TimeoutNow message leave before the loop stops running Raft. */
    run_uv();
}
