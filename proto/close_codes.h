/* close_codes.h - the one table of WebSocket close codes the broker sends
 * (PROTOCOL.md section 5), with the reason each is sent with unless the
 * code's row there lists more specific ones (4001 says which token check
 * failed). Append only: codes are stable. */
#ifndef CHORUS_PROTO_CLOSE_CODES_H
#define CHORUS_PROTO_CLOSE_CODES_H

/*        enum name       code   reason */
#define CHORUS_CLOSE_CODES(X)                                 \
    X(SHUTDOWN,           1001,  "shutdown")                  \
    X(PROTOCOL_ERROR,     1002,  "invalid close code")        \
    X(INVALID_PAYLOAD,    1007,  "invalid UTF-8")             \
    X(AUTH,               4001,  "authentication required")   \
    X(SLOW_CONSUMER,      4008,  "slow consumer")              \
    X(DISCONNECTED,       4009,  "disconnected by the server")  \
    X(CUT_OFF,            4013,  "this node is cut off from the cluster majority; reconnect") \
    X(HOOK_UNAVAILABLE,   1013,  "backend unavailable; try again later") \
    X(HOOK_REFUSED,       4003,  "refused by the backend")

enum chorus_close {
#define CHORUS__CLOSE_ENUM(name, code, reason) CHORUS_CLOSE_##name = code,
    CHORUS_CLOSE_CODES(CHORUS__CLOSE_ENUM)
#undef CHORUS__CLOSE_ENUM
};

/* The reason sent with each code by default. */
#define CHORUS__CLOSE_REASON(name, code, reason) static const char CHORUS_CLOSE_REASON_##name[] = reason;
CHORUS_CLOSE_CODES(CHORUS__CLOSE_REASON)
#undef CHORUS__CLOSE_REASON

#endif
