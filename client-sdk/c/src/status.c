/* status.c - names and descriptions of chorus_status codes.
 *
 * The protocol codes come from proto/errors.h, the one error table of the
 * project: the public enum mirrors its order, and the assertions below break
 * the build if the two ever disagree. */
#include "internal.h"

#include "errors.h"

#include <string.h>

#define CHORUS__CHECK(name, str, http)                                              \
    _Static_assert(CHORUS_E_##name == 1 + (int)CHORUS_ERR_##name,                  \
                   "client.h chorus_status is out of step with proto/errors.h: " str);
CHORUS_ERRORS(CHORUS__CHECK)
#undef CHORUS__CHECK
_Static_assert(CHORUS_E_SERVER == 1 + (int)CHORUS_ERR__COUNT,
               "proto/errors.h gained a code: add it to chorus_status in client.h");

int chorus__status_from_wire(const char *code)
{
    if (!code)
        return CHORUS_E_SERVER;
    for (int i = 0; i < (int)CHORUS_ERR__COUNT; i++)
        if (!strcmp(code, chorus_err_str((enum chorus_err)i)))
            return i + 1;
    return CHORUS_E_SERVER;
}

const char *chorus_status_name(int status)
{
    if (status > 0 && status < CHORUS_E_SERVER)
        return chorus_err_str((enum chorus_err)(status - 1));
    switch (status) {
    case CHORUS_OK: return "ok";
    case CHORUS_E_SERVER: return "server_error";
    case CHORUS_E_INVALID: return "invalid_argument";
    case CHORUS_E_NOMEM: return "out_of_memory";
    case CHORUS_E_BAD_JSON: return "bad_json";
    case CHORUS_E_QUEUE_FULL: return "queue_full";
    case CHORUS_E_DISCONNECTED: return "disconnected";
    case CHORUS_E_TIMEOUT: return "timeout";
    case CHORUS_E_CLOSED: return "closed";
    case CHORUS_E_EXISTS: return "already_subscribed";
    case CHORUS_E_CONNECT: return "connect_failed";
    case CHORUS_E_PROTOCOL: return "protocol_error";
    case CHORUS_E_BAD_URL: return "bad_url";
    }
    return "unknown";
}

const char *chorus_strerror(int status)
{
    switch (status) {
    case CHORUS_OK: return "success";
    case CHORUS_E_BAD_REQUEST: return "the server could not read the request";
    case CHORUS_E_UNKNOWN_OP: return "the server does not know this operation";
    case CHORUS_E_BAD_CHANNEL: return "channel name must be 1-255 bytes of [A-Za-z0-9_.:@/-]";
    case CHORUS_E_TOO_LARGE: return "frame too large";
    case CHORUS_E_FORBIDDEN: return "not allowed in this namespace";
    case CHORUS_E_NOT_SUBSCRIBED: return "not subscribed to this channel";
    case CHORUS_E_LIMIT_REACHED: return "too many channels on this connection";
    case CHORUS_E_RATE_LIMITED: return "rate limited";
    case CHORUS_E_UNAVAILABLE: return "the node is unavailable (shutting down)";
    case CHORUS_E_UNAUTHORIZED: return "missing or wrong API key";
    case CHORUS_E_NOT_FOUND: return "not found";
    case CHORUS_E_METHOD_NOT_ALLOWED: return "method not allowed";
    case CHORUS_E_SERVER: return "the server reported an error this SDK does not know";
    case CHORUS_E_INVALID: return "invalid argument";
    case CHORUS_E_NOMEM: return "out of memory";
    case CHORUS_E_BAD_JSON: return "data is not one valid JSON value";
    case CHORUS_E_QUEUE_FULL: return "outbound queue full";
    case CHORUS_E_DISCONNECTED: return "disconnected before the reply came";
    case CHORUS_E_TIMEOUT: return "no reply in time";
    case CHORUS_E_CLOSED: return "the client was closed";
    case CHORUS_E_EXISTS: return "already subscribed to this channel";
    case CHORUS_E_CONNECT: return "could not connect to the server";
    case CHORUS_E_PROTOCOL: return "the server sent something this SDK cannot read";
    case CHORUS_E_BAD_URL: return "bad URL (expected ws://host:port/ws or wss://...)";
    }
    return "unknown status";
}
