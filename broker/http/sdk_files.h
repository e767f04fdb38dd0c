/* sdk_files.h - how the JavaScript SDK is served at /sdk/ (PROTOCOL.md
 * section 6, "Static files"): any origin may load it (a page on another
 * site imports the module straight from its broker), and the type
 * declarations and the CommonJS build get their own content types, which
 * lws' table lacks. */
#ifndef CHORUS_SDK_FILES_H
#define CHORUS_SDK_FILES_H

#include <libwebsockets.h>
#include <stddef.h>

/* The "chorus-sdk" protocol callback, bound to the /sdk file mount: it adds
 * the CORS header and otherwise leaves the serving to lws. */
int sdk_files_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len);

/* Content types of the SDK's files that lws does not know (.d.ts, .cjs),
 * for the mount's extra_mimetypes. */
extern const struct lws_protocol_vhost_options sdk_files_mimetypes[];

#endif
