/* errors.h - the one table of protocol error codes (PROTOCOL.md section 3).
 *
 * Broker and SDKs generate their enum, wire strings and HTTP statuses from this
 * X-macro so the list is written exactly once. Append only: codes are stable. */
#ifndef CHORUS_PROTO_ERRORS_H
#define CHORUS_PROTO_ERRORS_H

/*        enum name        wire string        HTTP status */
#define CHORUS_ERRORS(X)                                   \
    X(BAD_REQUEST,         "bad_request",         400)     \
    X(UNKNOWN_OP,          "unknown_op",          400)     \
    X(BAD_CHANNEL,         "bad_channel",         400)     \
    X(TOO_LARGE,           "too_large",           413)     \
    X(FORBIDDEN,           "forbidden",           403)     \
    X(NOT_SUBSCRIBED,      "not_subscribed",      400)     \
    X(LIMIT_REACHED,       "limit_reached",       429)     \
    X(RATE_LIMITED,        "rate_limited",        429)     \
    X(UNAVAILABLE,         "unavailable",         503)     \
    X(UNAUTHORIZED,        "unauthorized",        401)     \
    X(NOT_FOUND,           "not_found",           404)     \
    X(METHOD_NOT_ALLOWED,  "method_not_allowed",  405)

enum chorus_err {
#define CHORUS__ERR_ENUM(name, str, http) CHORUS_ERR_##name,
    CHORUS_ERRORS(CHORUS__ERR_ENUM)
#undef CHORUS__ERR_ENUM
    CHORUS_ERR__COUNT
};

/* Wire string of an error code ("bad_request"); never NULL for a valid code. */
const char *chorus_err_str(enum chorus_err code);
/* HTTP status that the HTTP API answers for this code. */
int chorus_err_http_status(enum chorus_err code);

#endif
