/* binmsg.h - binary messages: raw bytes published and delivered in binary
 * WebSocket frames, with the same channels, sequence, history, limits and
 * permissions as JSON messages (PROTOCOL.md section 9).
 *
 * Wire format, both directions: a 4-byte big-endian length H, then H bytes of
 * a JSON object (the header), then the payload bytes up to the end of the
 * WebSocket message:
 *
 *   C: [H]{"op":"pub","id"?,"ch"}<bytes>      -> text ack {"op":"ack",id,ch,epoch,seq}
 *   S: [H]{"op":"msg","ch","seq","ts","client"?}<bytes>
 *
 * In a JSON `history` reply a binary message appears as its header object with
 * the bytes base64-encoded in "bin" (history.h builds that form). */
#ifndef CHORUS_BINMSG_H
#define CHORUS_BINMSG_H

#include <stddef.h>

struct conn;

/* Largest header accepted from a client. */
#define BINMSG_HEADER_MAX 1024

/* Handles one complete binary WebSocket message from c. */
void binmsg_handle(struct conn *c, const unsigned char *buf, size_t len);

#endif
