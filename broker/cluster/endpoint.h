/* endpoint.h - tcp://HOST:PORT strings, as --peer and --forwarder-connect
 * give them. Pure string work: no sockets, no state. */
#ifndef CHORUS_ENDPOINT_H
#define CHORUS_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>

/* Splits tcp://HOST:PORT (tcp://[IPV6]:PORT gives the address without its
 * brackets); false when it is not of that form. */
bool endpoint_split(const char *ep, char *host, size_t hcap, char *port, size_t pcap);
/* Rewrites tcp://HOST:PORT as tcp://HOST:PORT+delta (the forwarder's second socket). */
bool endpoint_plus(const char *ep, int delta, char *out, size_t cap);

#endif
