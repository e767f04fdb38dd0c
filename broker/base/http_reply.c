/* http_reply.c - see http_reply.h.
 *
 * lws_return_http_status() is not used for these: before lws has read the
 * request line into its HTTP action (upgrade filters run earlier) it writes
 * an `HTTP/1.0` status line, which clients such as Python's websockets
 * cannot read, and it leaves the connection open for another request. */
#include "http_reply.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *reason_phrase(unsigned int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default:  return status < 500 ? "Client Error" : "Server Error";
    }
}

int http_reply_close(struct lws *wsi, unsigned int status, const char *content_type,
                     const char *body)
{
    unsigned char buf[LWS_PRE + 1024];
    char *out = (char *)buf + LWS_PRE;
    size_t cap = sizeof buf - LWS_PRE;
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(out, cap,
                     "HTTP/1.1 %u %s\r\n"
                     "content-type: %s\r\n"
                     "content-length: %zu\r\n"
                     "cache-control: no-store\r\n"
                     "x-content-type-options: nosniff\r\n"
                     "connection: close\r\n"
                     "\r\n%s",
                     status, reason_phrase(status), content_type ? content_type : "text/plain",
                     blen, body ? body : "");
    if (n > 0 && (size_t)n < cap)
        lws_write(wsi, buf + LWS_PRE, (size_t)n, LWS_WRITE_RAW);
    return 1;
}

/* A Content-Length value RFC 9110 8.6 allows: digits only, at most 18 of
 * them (no sign, no list, no spaces inside). */
static bool plain_length(const char *v)
{
    size_t n = strspn(v, "0123456789");
    return n > 0 && n <= 18 && v[n] == '\0';
}

unsigned int http_framing_check(struct lws *wsi, const char **why)
{
    bool has_te = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
    bool has_cl = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0;
    char cl[32];

    if (has_te && has_cl) {
        *why = "Transfer-Encoding and Content-Length together are ambiguous";
        return 400;
    }
    if (has_te) {
        *why = "chunked request bodies are not accepted: send Content-Length";
        return 411;
    }
    if (!has_cl)
        return 0;
    /* lws keeps a repeated header as a second fragment of the same token. */
    if (lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, 1) > 0) {
        *why = "more than one Content-Length";
        return 400;
    }
    if (lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0 ||
        !plain_length(cl)) {
        *why = "Content-Length must be a decimal number";
        return 400;
    }
    return 0;
}

int http_framing_refuse(struct lws *wsi)
{
    const char *why = NULL;
    unsigned int status = http_framing_check(wsi, &why);
    if (!status)
        return 0;
    return http_reply_close(wsi, status, "text/plain", why);
}

/* Only the /api/ endpoints read a body. lws serves files without reading
 * one, so a body sent with a file request would be parsed as the next
 * request, and when it was pipelined lws 4.1.6 loops on it forever (the
 * file mounts' callbacks are lws' own, which body_is_own_request cannot
 * guard). */
int http_body_refuse(struct lws *wsi, const char *uri)
{
    char cl[32];
    if (lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0 || atoll(cl) == 0)
        return 0;
    if (uri && !strncmp(uri, "/api/", 5))
        return 0;
    return http_reply_close(wsi, 400, "text/plain", "only the /api/ endpoints take a request body");
}
