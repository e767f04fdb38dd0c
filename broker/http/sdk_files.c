/* sdk_files.c - CORS and content types of the JavaScript SDK's files.
 *
 * lws serves the files itself (a LWSMPRO_FILE mount); binding the mount to
 * this protocol is how lws 4.1.6 lets an application add a header to a
 * static file's response (LWS_CALLBACK_ADD_HEADERS). Only /sdk gets
 * "Access-Control-Allow-Origin: *": the files are public code, while the
 * demo pages and the HTTP API keep the same-origin default. */
#include "sdk_files.h"

#include <string.h>

/* lws matches each name against the end of the file name, in list order. */
const struct lws_protocol_vhost_options sdk_files_mimetypes[] = {
    {&sdk_files_mimetypes[1], NULL, ".d.ts", "application/typescript"},
    {&sdk_files_mimetypes[2], NULL, ".cjs", "text/javascript"},
    {&sdk_files_mimetypes[3], NULL, ".mjs", "text/javascript"},
    {NULL, NULL, ".md", "text/markdown; charset=utf-8"},
};

int sdk_files_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    if (reason == LWS_CALLBACK_ADD_HEADERS) {
        struct lws_process_html_args *args = in;
        static const char star[] = "*";
        if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_ACCESS_CONTROL_ALLOW_ORIGIN,
                                         (const unsigned char *)star, (int)strlen(star),
                                         (unsigned char **)&args->p,
                                         (unsigned char *)args->p + args->max_len))
            return 1;
        return 0;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}
