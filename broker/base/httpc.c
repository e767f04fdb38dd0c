/* httpc.c - libcurl's multi interface driven by the lws loop (httpc.h).
 *
 * curl tells us which sockets to watch (socket callback) and when to wake it
 * (timer callback); we keep the sockets, and a timerfd for the timer, in an
 * epoll set whose fd lws polls. Every curl call happens on the loop thread
 * and none of them blocks: DNS goes through curl's threaded resolver.
 *
 * Why a timerfd and not an lws_sul: curl often finishes a transfer from its
 * timer ("run again now"), and what the answer schedules (a connection's
 * flush, a 1 us sul) was then scheduled from inside lws' sul service. With
 * the libev loop lws 4.1.6 then re-arms its one ev_timer with
 * ev_timer_start(), a no-op on an active timer, so that sul waited for the
 * next timer already armed: publishes through a hook took up to 250 ms
 * more in 5% of cases. Everything here now runs from an fd event. */
#include "httpc.h"
#include "log.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <utlist.h>

struct httpc_req {
    CURL *easy;
    struct curl_slist *headers;
    char *body;                   /* what we send (curl does not copy POSTFIELDS) */
    char *ans;                    /* what came back, NUL-terminated */
    size_t ans_len, ans_cap;
    bool too_long;
    httpc_done_fn *done;
    void *ud;
    struct httpc_req *prev, *next; /* every request in flight (utlist DL) */
};

static struct {
    CURLM *multi;
    int epfd;
    struct lws *wsi;              /* the adopted dup of epfd */
    int tfd;                      /* curl's timer, in the epoll set */
    size_t max_body;
    struct httpc_req *all;
    bool started;
} hc = {.epfd = -1, .tfd = -1};

static void req_free(struct httpc_req *r)
{
    DL_DELETE(hc.all, r);
    curl_multi_remove_handle(hc.multi, r->easy);
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    free(r->body);
    free(r->ans);
    free(r);
}

static void check_done(void)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(hc.multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct httpc_req *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode rc = m->data.result;
        long status = 0;
        const char *err = NULL;
        if (rc == CURLE_OK)
            curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        else
            err = r->too_long ? "answer too long" : curl_easy_strerror(rc);
        curl_multi_remove_handle(hc.multi, r->easy);
        if (r->done)
            r->done(r->ud, status, r->ans ? r->ans : "", r->ans_len, err);
        req_free(r);
    }
}

/* curl: wake me in timeout_ms (-1: never; 0: as soon as the loop can). */
static int timer_cb(CURLM *multi, long timeout_ms, void *ud)
{
    (void)multi;
    (void)ud;
    struct itimerspec its = {0};
    if (timeout_ms >= 0) {
        /* An all-zero it_value disarms: "now" is 1 ns. */
        its.it_value.tv_sec = timeout_ms / 1000;
        its.it_value.tv_nsec = timeout_ms ? (timeout_ms % 1000) * 1000000L : 1;
    }
    timerfd_settime(hc.tfd, 0, &its, NULL);
    return 0;
}

/* curl: watch s for what = IN/OUT/INOUT, or stop (REMOVE). */
static int socket_cb(CURL *easy, curl_socket_t s, int what, void *ud, void *sock_ud)
{
    (void)easy;
    (void)ud;
    (void)sock_ud;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(hc.epfd, EPOLL_CTL_DEL, s, NULL); /* curl may have closed it already */
        return 0;
    }
    struct epoll_event ev = {0};
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    ev.data.fd = s;
    if (epoll_ctl(hc.epfd, EPOLL_CTL_MOD, s, &ev) < 0 && errno == ENOENT)
        epoll_ctl(hc.epfd, EPOLL_CTL_ADD, s, &ev);
    return 0;
}

/* lws saw the epoll fd readable: some curl socket is ready. The set is
 * level-triggered, so what is not handled in this batch wakes us again. */
static void on_ready(void)
{
    struct epoll_event evs[64];
    int n = epoll_wait(hc.epfd, evs, 64, 0);
    for (int i = 0; i < n; i++) {
        int running;
        if (evs[i].data.fd == hc.tfd) {
            uint64_t ticks;
            if (read(hc.tfd, &ticks, sizeof ticks) == (ssize_t)sizeof ticks)
                curl_multi_socket_action(hc.multi, CURL_SOCKET_TIMEOUT, 0, &running);
            continue;
        }
        int mask = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                   (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                   (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
        curl_multi_socket_action(hc.multi, evs[i].data.fd, mask, &running);
    }
    check_done();
}

int httpc_lws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        if (hc.started)
            on_ready();
        return 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (wsi == hc.wsi)
            hc.wsi = NULL;
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct httpc_req *r = ud;
    size_t len = size * n;
    if (r->ans_len + len > hc.max_body) {
        r->too_long = true;
        return 0; /* curl fails the transfer (CURLE_WRITE_ERROR) */
    }
    if (r->ans_len + len + 1 > r->ans_cap) {
        size_t cap = r->ans_cap ? r->ans_cap : 512;
        while (cap < r->ans_len + len + 1)
            cap *= 2;
        char *np = realloc(r->ans, cap);
        if (!np)
            return 0;
        r->ans = np;
        r->ans_cap = cap;
    }
    memcpy(r->ans + r->ans_len, p, len);
    r->ans_len += len;
    r->ans[r->ans_len] = '\0';
    return len;
}

struct httpc_req *httpc_post(const char *url, const char *body, size_t len,
                             const char *const *headers, long timeout_ms, httpc_done_fn *done,
                             void *ud)
{
    if (!hc.started)
        return NULL;
    struct httpc_req *r = calloc(1, sizeof *r);
    if (!r || !(r->easy = curl_easy_init()) || !(r->body = malloc(len + 1)))
        goto fail;
    memcpy(r->body, body, len);
    r->body[len] = '\0';
    r->done = done;
    r->ud = ud;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    /* curl would otherwise wait a second for a "100 Continue" on large bodies. */
    h = h ? curl_slist_append(h, "Expect:") : NULL;
    for (int i = 0; h && headers && headers[i]; i++)
        h = curl_slist_append(h, headers[i]);
    if (!h)
        goto fail;
    r->headers = h;
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "chorusd");
    if (curl_multi_add_handle(hc.multi, e) != CURLM_OK)
        goto fail;
    DL_APPEND(hc.all, r);
    return r;
fail:
    if (r) {
        if (r->easy)
            curl_easy_cleanup(r->easy);
        curl_slist_free_all(r->headers);
        free(r->body);
        free(r);
    }
    return NULL;
}

void httpc_cancel(struct httpc_req *r)
{
    /* Removing a handle from inside a curl callback is not allowed; done
     * callbacks run after curl has returned, so this is safe there too.
     * The transfer is dropped at once and its memory freed. */
    req_free(r);
}

int httpc_start(struct lws_vhost *vh, long max_conns, size_t max_body)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    hc.max_body = max_body;
    hc.epfd = epoll_create1(EPOLL_CLOEXEC);
    hc.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    hc.multi = curl_multi_init();
    struct epoll_event tev = {.events = EPOLLIN, .data.fd = hc.tfd};
    if (hc.epfd < 0 || hc.tfd < 0 || !hc.multi || epoll_ctl(hc.epfd, EPOLL_CTL_ADD, hc.tfd, &tev) < 0)
        goto fail;
    curl_multi_setopt(hc.multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(hc.multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(hc.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, max_conns);
    curl_multi_setopt(hc.multi, CURLMOPT_MAXCONNECTS, max_conns);
    /* lws closes what it adopts; the epoll set must outlive it until
     * httpc_stop, so lws gets a dup. */
    lws_sock_file_fd_type u;
    u.filefd = dup(hc.epfd);
    if (u.filefd < 0)
        goto fail;
    hc.wsi = lws_adopt_descriptor_vhost(vh, LWS_ADOPT_RAW_FILE_DESC, u, "chorus-httpc", NULL);
    if (!hc.wsi) {
        close(u.filefd);
        goto fail;
    }
    hc.started = true;
    return 0;
fail:
    log_error("event=httpc_failed msg=\"cannot start the HTTP client (curl or epoll)\"");
    if (hc.multi)
        curl_multi_cleanup(hc.multi);
    if (hc.epfd >= 0)
        close(hc.epfd);
    if (hc.tfd >= 0)
        close(hc.tfd);
    hc.multi = NULL;
    hc.epfd = hc.tfd = -1;
    curl_global_cleanup();
    return -1;
}

void httpc_stop(void)
{
    if (!hc.started)
        return;
    hc.started = false;
    while (hc.all)
        req_free(hc.all);
    curl_multi_cleanup(hc.multi);
    hc.multi = NULL;
    close(hc.epfd);
    close(hc.tfd);
    hc.epfd = hc.tfd = -1;
    curl_global_cleanup();
}
