/* http.c - blocking POST /api/publish over one keep-alive HTTP/1.1
 * connection (see chorus/http.h).
 *
 * Deliberately small: Content-Length responses only (what chorusd sends),
 * no TLS, no redirects, no proxies. Every wait is bounded by the caller's
 * timeout through poll(). */
#include "chorus/http.h"
#include "status.h"
#include "url.h"

#include "codec.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHORUS__HTTP_MAX_RESPONSE ((size_t)1 << 20)

struct chorus_http {
    char host[256];
    char host_hdr[300];
    int port;
    char *api_key;
    int fd;                       /* the kept-alive connection, -1 when none */
};

static int64_t chorus__http_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int chorus__http_left(int64_t deadline)
{
    int64_t left = deadline - chorus__http_now_ms();
    return left > 0 ? (int)left : 0;
}

chorus_http_t *chorus_http_new(const char *url, const char *api_key)
{
    struct chorus__url u;
    chorus_http_t *h;

    if (!api_key || !*api_key || strpbrk(api_key, "\r\n") || chorus__url_parse(url, &u) != 0 ||
        u.tls)
        return NULL;
    h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->api_key = strdup(api_key);
    if (!h->api_key) {
        free(h);
        return NULL;
    }
    snprintf(h->host, sizeof h->host, "%s", u.host);
    if (strchr(u.host, ':'))
        snprintf(h->host_hdr, sizeof h->host_hdr, "[%s]:%d", u.host, u.port);
    else
        snprintf(h->host_hdr, sizeof h->host_hdr, "%s:%d", u.host, u.port);
    h->port = u.port;
    h->fd = -1;
    return h;
}

void chorus_http_free(chorus_http_t *h)
{
    if (!h)
        return;
    if (h->fd >= 0)
        close(h->fd);
    free(h->api_key);
    free(h);
}

static void chorus__http_drop(chorus_http_t *h)
{
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
}

static void chorus__http_fail(chorus_http_result_t *res, int status, const char *fmt, const char *arg)
{
    res->status = status;
    snprintf(res->err_code, sizeof res->err_code, "%s", chorus_status_name(status));
    snprintf(res->err_msg, sizeof res->err_msg, fmt, arg ? arg : "");
}

/* Non-blocking connect bounded by the deadline; 0 or -1 (errno set). */
static int chorus__http_connect(chorus_http_t *h, int64_t deadline)
{
    struct addrinfo hints, *ai = NULL, *a;
    char port[8];
    int fd = -1, rc;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%d", h->port);
    if ((rc = getaddrinfo(h->host, port, &hints, &ai)) != 0) {
        errno = EHOSTUNREACH;
        return -1;
    }
    for (a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        if (errno == EINPROGRESS) {
            struct pollfd p = {fd, POLLOUT, 0};
            int err = 0;
            socklen_t el = sizeof err;
            if (poll(&p, 1, chorus__http_left(deadline)) == 1 &&
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0)
                break;
            errno = err ? err : ETIMEDOUT;
        }
        int keep = errno;
        close(fd);
        fd = -1;
        errno = keep;
    }
    freeaddrinfo(ai);
    if (fd < 0)
        return -1;
    h->fd = fd;
    return 0;
}

static int chorus__http_send_all(int fd, const char *buf, size_t len, int64_t deadline)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {fd, POLLOUT, 0};
            if (poll(&p, 1, chorus__http_left(deadline)) <= 0) {
                errno = ETIMEDOUT;
                return -1;
            }
            continue;
        }
        return -1;
    }
    return 0;
}

/* Finds a header's value in the header block (case-insensitive name). */
static const char *chorus__http_header(const char *hdrs, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(hdrs, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (!strncasecmp(line, name, nl) && line[nl] == ':') {
            const char *v = line + nl + 1, *e = strstr(v, "\r\n");
            while (*v == ' ' || *v == '\t')
                v++;
            *vlen = e ? (size_t)(e - v) : strlen(v);
            return v;
        }
    }
    return NULL;
}

enum { CHORUS__RX_OK, CHORUS__RX_EMPTY, CHORUS__RX_TIMEOUT, CHORUS__RX_BAD };

/* Reads one response into *out (NUL-terminated); sets *body and *close_after. */
static int chorus__http_read(chorus_http_t *h, int64_t deadline, char **out, int *status,
                             const char **body, size_t *body_len, int *close_after)
{
    size_t cap = 4096, len = 0, hdr_end = 0, need = 0;
    bool have_len = false, conn_close = false;
    char *buf = malloc(cap);

    *out = NULL;
    if (!buf)
        return CHORUS__RX_BAD;
    for (;;) {
        if (hdr_end && have_len && len >= hdr_end + need)
            break;
        if (len + 1 >= cap) {
            if (cap >= CHORUS__HTTP_MAX_RESPONSE)
                goto bad;
            char *n = realloc(buf, cap * 2);
            if (!n)
                goto bad;
            buf = n;
            cap *= 2;
        }
        struct pollfd p = {h->fd, POLLIN, 0};
        int pr = poll(&p, 1, chorus__http_left(deadline));
        if (pr == 0) {
            free(buf);
            return CHORUS__RX_TIMEOUT;
        }
        if (pr < 0 && errno == EINTR)
            continue;
        ssize_t n = pr < 0 ? -1 : recv(h->fd, buf + len, cap - len - 1, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0) {
            if (hdr_end && !have_len)
                break; /* body delimited by the end of the connection */
            free(buf);
            return len ? CHORUS__RX_BAD : CHORUS__RX_EMPTY;
        }
        len += (size_t)n;
        buf[len] = '\0';
        if (!hdr_end) {
            char *e = strstr(buf, "\r\n\r\n");
            if (!e)
                continue;
            hdr_end = (size_t)(e - buf) + 4;
            /* Look at the header block only, not at the body after it. */
            char keep = buf[hdr_end];
            size_t vl;
            buf[hdr_end] = '\0';
            const char *v = chorus__http_header(buf, "content-length", &vl);
            if (v) {
                need = strtoul(v, NULL, 10);
                have_len = true;
            }
            v = chorus__http_header(buf, "connection", &vl);
            conn_close = v && vl >= 5 && !strncasecmp(v, "close", 5);
            bool chunked = chorus__http_header(buf, "transfer-encoding", &vl) != NULL;
            buf[hdr_end] = keep;
            if (chunked || need > CHORUS__HTTP_MAX_RESPONSE)
                goto bad; /* chunked: not something chorusd sends */
        }
    }
    buf[hdr_end + (have_len ? need : len - hdr_end)] = '\0';
    if (sscanf(buf, "HTTP/1.%*d %d", status) != 1)
        goto bad;
    *close_after = !have_len || conn_close;
    *out = buf;
    *body = buf + hdr_end;
    *body_len = have_len ? need : len - hdr_end;
    return CHORUS__RX_OK;

bad:
    free(buf);
    return CHORUS__RX_BAD;
}

/* Sends req (hl bytes) and reads the response: 0 with *resp (free it),
 * *body, *body_len and *http_status set, or -1 with res filled. A request
 * that could not be sent on a reused idle connection is retried once on a
 * new one. */
static int chorus__http_roundtrip(chorus_http_t *h, const char *req, size_t hl, int timeout_ms,
                                  chorus_http_result_t *res, char **resp, const char **body,
                                  size_t *body_len, int *http_status)
{
    int close_after = 1;
    int64_t deadline = chorus__http_now_ms() + (timeout_ms > 0 ? timeout_ms : 10000);
    *resp = NULL;
    for (int attempt = 0;; attempt++) {
        bool reused = h->fd >= 0;
        if (!reused && chorus__http_connect(h, deadline) < 0) {
            chorus__http_fail(res, CHORUS_E_CONNECT, "cannot connect: %s", strerror(errno));
            return -1;
        }
        if (chorus__http_send_all(h->fd, req, hl, deadline) < 0) {
            int e = errno;
            chorus__http_drop(h);
            if (reused && attempt == 0 && e != ETIMEDOUT)
                continue;
            chorus__http_fail(res, e == ETIMEDOUT ? CHORUS_E_TIMEOUT : CHORUS_E_CONNECT,
                              "cannot send the request: %s", strerror(e));
            return -1;
        }
        int rx = chorus__http_read(h, deadline, resp, http_status, body, body_len, &close_after);
        if (rx == CHORUS__RX_OK)
            break;
        chorus__http_drop(h);
        /* A kept-alive connection the node had closed: nothing was read, so
         * the request was not processed; one retry on a new connection. */
        if (rx == CHORUS__RX_EMPTY && reused && attempt == 0)
            continue;
        if (rx == CHORUS__RX_TIMEOUT)
            chorus__http_fail(res, CHORUS_E_TIMEOUT, "no response in time%s", NULL);
        else
            chorus__http_fail(res, rx == CHORUS__RX_EMPTY ? CHORUS_E_CONNECT : CHORUS_E_PROTOCOL,
                              "%s", rx == CHORUS__RX_EMPTY ? "connection closed without a response"
                                                           : "unreadable HTTP response");
        return -1;
    }
    if (close_after)
        chorus__http_drop(h);
    res->http_status = *http_status;
    return 0;
}

/* A non-200 answer's {"code","msg"} into res. */
static void chorus__http_refused(chorus_http_result_t *res, int http_status, const json_t *reply)
{
    const char *code = json_string_value(json_object_get(reply, "code"));
    const char *msg = json_string_value(json_object_get(reply, "msg"));
    char fallback[32];
    res->status = code ? chorus__status_from_wire(code) : CHORUS_E_SERVER;
    if (!code) {
        snprintf(fallback, sizeof fallback, "http_%d", http_status);
        code = fallback;
    }
    snprintf(res->err_code, sizeof res->err_code, "%s", code);
    snprintf(res->err_msg, sizeof res->err_msg, "%s", msg ? msg : "HTTP error");
}

int chorus_http_publish(chorus_http_t *h, const char *ch, const char *json_data, int timeout_ms,
                        chorus_http_result_t *res)
{
    chorus_http_result_t dummy;
    json_error_t jerr;
    json_t *data = NULL, *reply = NULL;
    char *req = NULL, *resp = NULL;
    const char *body;
    size_t body_len, blen;
    int hl, http_status = 0;

    if (!res)
        res = &dummy;
    memset(res, 0, sizeof *res);
    if (!h || !json_data) {
        chorus__http_fail(res, CHORUS_E_INVALID, "invalid argument%s", NULL);
        return res->status;
    }
    if (!ch || !codec_channel_valid(ch, strlen(ch))) {
        chorus__http_fail(res, CHORUS_E_BAD_CHANNEL, "%s", chorus_strerror(CHORUS_E_BAD_CHANNEL));
        return res->status;
    }
    data = json_loads(json_data, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!data) {
        chorus__http_fail(res, CHORUS_E_BAD_JSON, "data is not JSON: %s", jerr.text);
        return res->status;
    }
    json_decref(data);

    /* {"ch":"...","data":...}: the channel needs no escaping once valid. */
    blen = strlen(ch) + strlen(json_data) + 20;
    req = malloc(blen + strlen(h->api_key) + strlen(h->host_hdr) + 200);
    if (!req) {
        chorus__http_fail(res, CHORUS_E_NOMEM, "out of memory%s", NULL);
        return res->status;
    }
    blen = (size_t)snprintf(NULL, 0, "{\"ch\":\"%s\",\"data\":%s}", ch, json_data);
    hl = sprintf(req,
                 "POST /api/publish HTTP/1.1\r\nHost: %s\r\nX-API-Key: %s\r\n"
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n"
                 "{\"ch\":\"%s\",\"data\":%s}",
                 h->host_hdr, h->api_key, blen, ch, json_data);

    if (chorus__http_roundtrip(h, req, (size_t)hl, timeout_ms, res, &resp, &body, &body_len,
                               &http_status) < 0)
        goto out;
    reply = json_loadb(body, body_len, 0, &jerr);
    if (http_status == 200) {
        const char *epoch = json_string_value(json_object_get(reply, "epoch"));
        json_t *seq = json_object_get(reply, "seq");
        if (!epoch || !json_is_integer(seq)) {
            chorus__http_fail(res, CHORUS_E_PROTOCOL, "200 without epoch/seq%s", NULL);
            goto out;
        }
        snprintf(res->epoch, sizeof res->epoch, "%s", epoch);
        res->seq = (uint64_t)json_integer_value(seq);
        res->status = CHORUS_OK;
    } else {
        chorus__http_refused(res, http_status, reply);
    }

out:
    json_decref(reply);
    free(resp);
    free(req);
    return res->status;
}

int chorus_http_call(chorus_http_t *h, const char *method, const char *path, const char *json_body,
                     int timeout_ms, chorus_http_result_t *res, char **answer)
{
    chorus_http_result_t dummy;
    json_t *reply = NULL;
    char *req = NULL, *resp = NULL;
    const char *body;
    size_t body_len, blen = json_body ? strlen(json_body) : 0;
    int hl, http_status = 0;

    if (!res)
        res = &dummy;
    memset(res, 0, sizeof *res);
    if (answer)
        *answer = NULL;
    if (!h || !method || !path || path[0] != '/' || strpbrk(path, " \r\n") ||
        (strcmp(method, "GET") && strcmp(method, "POST"))) {
        chorus__http_fail(res, CHORUS_E_INVALID, "invalid argument%s", NULL);
        return res->status;
    }
    req = malloc(blen + strlen(path) + strlen(h->api_key) + strlen(h->host_hdr) + 200);
    if (!req) {
        chorus__http_fail(res, CHORUS_E_NOMEM, "out of memory%s", NULL);
        return res->status;
    }
    hl = sprintf(req, "%s %s HTTP/1.1\r\nHost: %s\r\nX-API-Key: %s\r\n", method, path,
                 h->host_hdr, h->api_key);
    if (json_body)
        hl += sprintf(req + hl, "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    hl += sprintf(req + hl, "\r\n");
    if (json_body) {
        memcpy(req + hl, json_body, blen);
        hl += (int)blen;
    }
    if (chorus__http_roundtrip(h, req, (size_t)hl, timeout_ms, res, &resp, &body, &body_len,
                               &http_status) < 0)
        goto out;
    if (http_status == 200) {
        res->status = CHORUS_OK;
        if (answer && !(*answer = strndup(body, body_len)))
            chorus__http_fail(res, CHORUS_E_NOMEM, "out of memory%s", NULL);
    } else {
        reply = json_loadb(body, body_len, 0, NULL);
        chorus__http_refused(res, http_status, reply);
    }

out:
    json_decref(reply);
    free(resp);
    free(req);
    return res->status;
}
