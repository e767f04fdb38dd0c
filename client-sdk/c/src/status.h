/* status.h - mapping the protocol's wire error codes to chorus_status. */
#ifndef CHORUS_CLIENT_STATUS_H
#define CHORUS_CLIENT_STATUS_H

/* The chorus_status of a wire code ("bad_channel"); CHORUS_E_SERVER when the
 * code is unknown or NULL. */
int chorus__status_from_wire(const char *code);

#endif
