/* http.c - the HTTP API (see chorus/http.h) through libcurl's easy
 * interface: one easy handle per chorus_http_t keeps its connection alive
 * between calls, https:// (wss:// URLs) verifies the node's certificate
 * against the system trust store (or $CHORUS_CA_FILE), and every call is
 * bounded by the caller's timeout. */
#include "chorus/http.h"
#include "status.h"
#include "url.h"

#include "codec.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHORUS__HTTP_MAX_RESPONSE ((size_t)1 << 20)

struct chorus_http {
    char base[320];               /* scheme://host:port, without a path */
    char *key_hdr;                /* "X-API-Key: KEY" */
    CURL *curl;
};

static pthread_once_t chorus__curl_once = PTHREAD_ONCE_INIT;
static bool chorus__curl_ok;

/* libcurl's global init is not thread-safe everywhere: once per process. */
static void chorus__curl_init(void) { chorus__curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == 0; }

chorus_http_t *chorus_http_new(const char *url, const char *api_key)
{
    struct chorus__url u;
    chorus_http_t *h;

    if (!api_key || !*api_key || strpbrk(api_key, "\r\n") || chorus__url_parse(url, &u) != 0)
        return NULL;
    pthread_once(&chorus__curl_once, chorus__curl_init);
    if (!chorus__curl_ok || !(h = calloc(1, sizeof *h)))
        return NULL;
    size_t kl = strlen(api_key) + sizeof "X-API-Key: ";
    h->key_hdr = malloc(kl);
    h->curl = curl_easy_init();
    if (!h->key_hdr || !h->curl) {
        chorus_http_free(h);
        return NULL;
    }
    snprintf(h->key_hdr, kl, "X-API-Key: %s", api_key);
    snprintf(h->base, sizeof h->base, strchr(u.host, ':') ? "%s://[%s]:%d" : "%s://%s:%d",
             u.tls ? "https" : "http", u.host, u.port);
    return h;
}

void chorus_http_free(chorus_http_t *h)
{
    if (!h)
        return;
    if (h->curl)
        curl_easy_cleanup(h->curl);
    free(h->key_hdr);
    free(h);
}

static void chorus__http_fail(chorus_http_result_t *res, int status, const char *fmt, const char *arg)
{
    res->status = status;
    snprintf(res->err_code, sizeof res->err_code, "%s", chorus_status_name(status));
    snprintf(res->err_msg, sizeof res->err_msg, fmt, arg ? arg : "");
}

struct chorus__body {
    char *buf;
    size_t len;
    bool too_large;
};

static size_t chorus__http_collect(char *p, size_t size, size_t n, void *ud)
{
    struct chorus__body *b = ud;
    size_t add = size * n;
    if (b->len + add > CHORUS__HTTP_MAX_RESPONSE) {
        b->too_large = true;
        return 0; /* makes libcurl fail the transfer */
    }
    char *nb = realloc(b->buf, b->len + add + 1);
    if (!nb)
        return 0;
    memcpy(nb + b->len, p, add);
    b->buf = nb;
    b->len += add;
    b->buf[b->len] = '\0';
    return add;
}

/* One request: 0 with *resp (NUL-terminated, free it), *body_len and
 * *http_status set, or -1 with res filled. libcurl reuses the kept-alive
 * connection and retries a request that hit one the node had closed. */
static int chorus__http_roundtrip(chorus_http_t *h, const char *method, const char *path,
                                  const char *json_body, int timeout_ms, chorus_http_result_t *res,
                                  char **resp, size_t *body_len, int *http_status)
{
    char url[2048];
    struct chorus__body b = {0};
    struct curl_slist *hdrs = curl_slist_append(NULL, h->key_hdr);
    if (json_body && hdrs)
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    /* No "Expect: 100-continue" round trip for larger bodies. */
    if (hdrs)
        hdrs = curl_slist_append(hdrs, "Expect:");
    *resp = NULL;
    if (!hdrs || snprintf(url, sizeof url, "%s%s", h->base, path) >= (int)sizeof url) {
        curl_slist_free_all(hdrs);
        chorus__http_fail(res, CHORUS_E_INVALID, "invalid argument%s", NULL);
        return -1;
    }
    CURL *c = h->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > 0 ? timeout_ms : 10000));
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, chorus__http_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    const char *ca = getenv("CHORUS_CA_FILE");
    if (ca && *ca)
        curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    if (json_body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, json_body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(json_body));
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
    }
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        free(b.buf);
        if (b.too_large)
            chorus__http_fail(res, CHORUS_E_PROTOCOL, "response larger than 1 MiB%s", NULL);
        else if (rc == CURLE_OPERATION_TIMEDOUT)
            chorus__http_fail(res, CHORUS_E_TIMEOUT, "no response in time%s", NULL);
        else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST)
            chorus__http_fail(res, CHORUS_E_CONNECT, "cannot connect: %s", curl_easy_strerror(rc));
        else
            chorus__http_fail(res, CHORUS_E_CONNECT, "request failed: %s", curl_easy_strerror(rc));
        return -1;
    }
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    *http_status = (int)code;
    res->http_status = (int)code;
    *resp = b.buf ? b.buf : strdup("");
    *body_len = b.len;
    if (!*resp) {
        chorus__http_fail(res, CHORUS_E_NOMEM, "out of memory%s", NULL);
        return -1;
    }
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
    size_t body_len, blen;
    int http_status = 0;

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
    req = malloc(blen);
    if (!req) {
        chorus__http_fail(res, CHORUS_E_NOMEM, "out of memory%s", NULL);
        return res->status;
    }
    snprintf(req, blen, "{\"ch\":\"%s\",\"data\":%s}", ch, json_data);
    if (chorus__http_roundtrip(h, "POST", "/api/publish", req, timeout_ms, res, &resp, &body_len,
                               &http_status) < 0)
        goto out;
    reply = json_loadb(resp, body_len, 0, &jerr);
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
    char *resp = NULL;
    size_t body_len;
    int http_status = 0;

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
    if (chorus__http_roundtrip(h, method, path, json_body, timeout_ms, res, &resp, &body_len,
                               &http_status) < 0)
        return res->status;
    if (http_status == 200) {
        res->status = CHORUS_OK;
        if (answer) {
            *answer = resp;
            resp = NULL;
        }
    } else {
        reply = json_loadb(resp, body_len, 0, NULL);
        chorus__http_refused(res, http_status, reply);
    }
    json_decref(reply);
    free(resp);
    return res->status;
}
