/* workers.c - fork and supervise worker processes; their shared listener. */
#include "workers.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 64

static volatile sig_atomic_t stop_signal, hup_signal;

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        hup_signal = 1;
    else
        stop_signal = sig;
}

static void set_str(char **slot, const char *v)
{
    free(*slot);
    *slot = strdup(v);
}

/* Worker i's ipc:// endpoint; the socket file is the rest after "ipc://". */
static void endpoint(char ep[128], pid_t parent, int i)
{
    snprintf(ep, 128, "ipc:///tmp/chorus-%d-w%d.sock", (int)parent, i);
}

/* Worker i's Raft log: kept while the supervisor runs, so a worker that
 * crashed and is started again rejoins with its vote and log. */
static void raft_dir(char dir[128], pid_t parent, int i)
{
    snprintf(dir, 128, "/tmp/chorus-%d-w%d.raft", (int)parent, i);
}

/* Raft needs TCP (libraft 0.15): one free loopback port per worker, chosen
 * once by the supervisor so every worker knows every other's. */
static int raft_ports[MAX_WORKERS];

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Turns cfg into worker i's: its own node id and ipc endpoint, every worker
 * as a peer. */
static void become_worker(struct config *cfg, int i, pid_t parent)
{
    char id[96], ep[128];
    snprintf(id, sizeof id, "%s-w%d", cfg->node_id, i);
    set_str(&cfg->node_id, id);
    endpoint(ep, parent, i);
    set_str(&cfg->cluster_bind, ep);
    for (int k = 0; k < cfg->n_peer; k++)
        free(cfg->peer[k]);
    cfg->n_peer = 0;
    for (int k = 0; k < cfg->workers && k < CONFIG_MAX_PEERS; k++) {
        endpoint(ep, parent, k);
        cfg->peer[cfg->n_peer++] = strdup(ep);
    }
    char addr[64], dir[128];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", raft_ports[i]);
    set_str(&cfg->raft_bind, addr);
    for (int k = 0; k < cfg->n_raft_peer; k++)
        free(cfg->raft_peer[k]);
    cfg->n_raft_peer = 0;
    for (int k = 0; k < cfg->workers && k < CONFIG_MAX_PEERS; k++)
        if (k != i) {
            snprintf(addr, sizeof addr, "127.0.0.1:%d", raft_ports[k]);
            cfg->raft_peer[cfg->n_raft_peer++] = strdup(addr);
        }
    raft_dir(dir, parent, i);
    set_str(&cfg->data_dir, dir);
    /* Workers of one process tree trust each other: the links never leave
     * this machine's file system. */
    cfg->cluster_insecure = true;
}

static pid_t spawn(struct config *cfg, int i, pid_t parent)
{
    pid_t pid = fork();
    if (pid == 0) {
        /* A supervisor killed outright (SIGKILL, OOM) must not leave its
         * workers serving the port on their own: they get its SIGTERM. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        /* A worker's SIGHUP (the process group's) is the parent's to report. */
        signal(SIGHUP, SIG_IGN);
        become_worker(cfg, i, parent);
    }
    return pid;
}

int workers_run(struct config *cfg)
{
    pid_t parent = getpid(), pids[MAX_WORKERS];
    int n = cfg->workers;
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    for (int i = 0; i < n; i++)
        if ((raft_ports[i] = free_port()) < 0) {
            log_error("event=workers_failed msg=\"no free loopback port for Raft\"");
            return 1;
        }

    for (int i = 0; i < n; i++) {
        pids[i] = spawn(cfg, i, parent);
        if (pids[i] == 0)
            return -1; /* the worker serves */
        if (pids[i] < 0) {
            log_error("event=worker_fork_failed error=%s", strerror(errno));
            pids[i] = 0;
        }
    }
    log_info("event=workers_started workers=%d port=%d", n, cfg->port);

    int alive = n;
    time_t last_restart = 0;
    while (alive > 0) {
        int status;
        if (stop_signal) {
            for (int i = 0; i < n; i++)
                if (pids[i] > 0)
                    kill(pids[i], SIGTERM);
            stop_signal = -1;
        }
        if (hup_signal) {
            hup_signal = 0;
            /* Workers rewrite part of their configuration (workers.h), so a
             * reload would have to tell those changes from the operator's. */
            log_warn("event=reload_refused signal=SIGHUP msg=\"--workers: reloading is not "
                     "supported; restart to apply a new configuration\"");
        }
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < n; i++) {
            if (pids[i] != pid)
                continue;
            pids[i] = 0;
            alive--;
            if (stop_signal)
                break;
            /* A worker died on its own: start another in its place, at most
             * once a second so a crash loop cannot spin. */
            log_error("event=worker_died worker=%d status=%d", i, status);
            if (time(NULL) == last_restart)
                sleep(1);
            last_restart = time(NULL);
            pids[i] = spawn(cfg, i, parent);
            if (pids[i] == 0)
                return -1;
            if (pids[i] > 0)
                alive++;
        }
    }
    for (int i = 0; i < n; i++) {
        char ep[128], dir[128];
        endpoint(ep, parent, i);
        unlink(ep + strlen("ipc://"));
        raft_dir(dir, parent, i);
        nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    }
    log_info("event=workers_stopped");
    return 0;
}

int workers_listen(const struct config *cfg)
{
    struct sockaddr_in sa;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->bind, &sa.sin_addr) != 1 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa)) {
        close(fd);
        return -1;
    }
    return fd;
}
