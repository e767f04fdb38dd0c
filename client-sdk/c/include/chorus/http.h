/* chorus/http.h - publishing through the node's HTTP API (POST /api/publish,
 * PROTOCOL.md section 6), and its server API, for backends that hold an API
 * key and do not want a WebSocket connection.
 *
 * Calls block, through libcurl's easy interface: one kept-alive connection
 * per chorus_http_t, reopened when the node closed it. https:// (and wss://
 * URLs) verify the node's certificate against the system trust store, or
 * the PEM file named by $CHORUS_CA_FILE. Independent of chorus_client_t and
 * of libwebsockets. One chorus_http_t must not be used by two threads at
 * once; separate objects are independent. */
#ifndef CHORUS_HTTP_H
#define CHORUS_HTTP_H

#include <stdint.h>

#include "client.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct chorus_http chorus_http_t;

/* What one publish got back. */
typedef struct chorus_http_result {
    int status;                   /* CHORUS_OK or a chorus_status code */
    int http_status;              /* 200 on success, 0 when no response arrived */
    char epoch[CHORUS_EPOCH_MAX + 1];
    uint64_t seq;
    char err_code[32];            /* e.g. "unauthorized", "connect_failed"; "" on success */
    char err_msg[256];
} chorus_http_result_t;

/* `url` is the node's address in any of these forms: http(s)://host:port,
 * ws(s)://host:port/ws (the path is ignored: requests go to /api/...).
 * `api_key` is sent as X-API-Key. Both are copied. Connects lazily.
 * Returns NULL for a bad URL, an empty key, or out of memory. */
chorus_http_t *chorus_http_new(const char *url, const char *api_key);

/* POSTs {"ch": ch, "data": <json_data>} and waits up to timeout_ms (<= 0:
 * 10000) for the answer. Returns res->status. A request that could not be
 * sent on a reused idle connection is retried once on a new one. */
int chorus_http_publish(chorus_http_t *h, const char *ch, const char *json_data, int timeout_ms,
                        chorus_http_result_t *res);

/* Calls any endpoint of the HTTP API with the key, such as the server API
 * (PROTOCOL.md 6: "GET" "/api/info", "GET" "/api/channels?prefix=chat:",
 * "POST" "/api/disconnect" with {"user":"42"}). json_body (POST, may be NULL)
 * is sent as it is. On HTTP 200 returns CHORUS_OK and, when answer is not
 * NULL, *answer is the response body (JSON text, NUL-terminated; free() it);
 * otherwise res says why, like chorus_http_publish. */
int chorus_http_call(chorus_http_t *h, const char *method, const char *path, const char *json_body,
                     int timeout_ms, chorus_http_result_t *res, char **answer);

void chorus_http_free(chorus_http_t *h);

#ifdef __cplusplus
}
#endif
#endif
