/* zap.h - the ZeroMQ ZAP handler that admits only the cluster's own CURVE key.
 *
 * CURVE alone admits any client that knows the server's public key; ZAP
 * (RFC 27) lets us also check the client's key. Every node and the forwarder
 * share one key pair, so the check is "the client presented that key". */
#ifndef CHORUS_ZAP_H
#define CHORUS_ZAP_H

#include <stdbool.h>
#include <stdint.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"

/* A CURVE key (32 bytes) in Z85 text, without its NUL. */
#define CURVE_Z85_LEN 40

/* Answers one ZAP request from the REP socket `sock` (recv flags: 0 or
 * ZMQ_DONTWAIT). Returns 1 when a request was answered with `*admitted` set,
 * 0 when none was waiting. */
int zap_serve_one(void *sock, int flags, const uint8_t key[32], bool *admitted);

#endif
