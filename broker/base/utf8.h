/* utf8.h - incremental UTF-8 validation (RFC 3629) for WebSocket text.
 *
 * RFC 6455 8.1 requires failing a connection with 1007 on invalid UTF-8 in a
 * text message or a close reason, also when a sequence is split across
 * fragments. lws 4.1.6's LWS_SERVER_OPTION_VALIDATE_UTF8 is not used: it
 * misses a message ending in an empty final continuation frame after an
 * incomplete sequence (ops-ws.c checks only non-empty chunks), it drops a
 * close frame with a bad reason without sending any close frame, and its
 * lws_check_utf8() is not exported by the Debian library. */
#ifndef CHORUS_UTF8_H
#define CHORUS_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Zeroed = at a character boundary. */
struct utf8_check {
    uint8_t need;                 /* continuation bytes still expected */
    uint8_t lo, hi;               /* range allowed for the next one */
};

/* Feeds n bytes; false as soon as they cannot be UTF-8. */
bool utf8_feed(struct utf8_check *u, const unsigned char *p, size_t n);
/* True when everything fed so far ends at a character boundary. */
static inline bool utf8_complete(const struct utf8_check *u) { return u->need == 0; }

#endif
