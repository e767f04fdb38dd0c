/* tls_reload.h - SIGHUP reloads the TLS certificate and key in place.
 *
 * lws 4.1.6 can replace a running vhost's certificate: lws_tls_cert_updated()
 * loads the files again into the vhost's SSL_CTX (the one every new
 * handshake uses), given the same paths the vhost was created with. It
 * reports no failure, and a key that does not match the new certificate
 * would leave the vhost serving a pair that fails every handshake, so the
 * pair is checked first in a scratch SSL_CTX. Connections already open keep
 * the session they negotiated. The paths themselves cannot change without a
 * restart (config_reload refuses tls-cert and tls-key). */
#ifndef CHORUS_TLS_RELOAD_H
#define CHORUS_TLS_RELOAD_H

#include <libwebsockets.h>

#include "config.h"

/* Remembers the files' contents at start (nothing without --tls-cert). */
void tls_reload_init(const struct config *cfg);
/* Reads the files again; when they changed and form a valid pair, the
 * vhost serves them from the next handshake on (event=reload_changed
 * key=tls-cert). 1 changed, 0 unchanged or no TLS, -1 refused (logged:
 * the running certificate stays). */
int tls_reload(struct lws_context *ctx, const struct config *cfg);
void tls_reload_free(void);

#endif
