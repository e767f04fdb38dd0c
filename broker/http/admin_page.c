/* admin_page.c - /admin: its Basic authentication, its routes and its files
 * (admin_page.h). */
#include "admin_page.h"
#include "auth.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool admin_page_owns(const char *uri)
{
    return !strncmp(uri, "/admin", 6) && (uri[6] == '\0' || uri[6] == '/');
}

/* "Authorization: Basic base64(user:password)" with password == secret. */
static bool authorized(struct lws *wsi, const char *secret)
{
    char hdr[512], creds[384];
    int n = lws_hdr_copy(wsi, hdr, sizeof hdr, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (n <= 6 || strncasecmp(hdr, "basic ", 6) != 0)
        return false;
    const char *b64 = hdr + 6;
    while (*b64 == ' ')
        b64++;
    n = lws_b64_decode_string(b64, creds, (int)sizeof creds - 1);
    if (n <= 0)
        return false;
    creds[n] = '\0';
    const char *colon = memchr(creds, ':', (size_t)n);
    if (!colon)
        return false;
    const char *pw = colon + 1;
    bool ok = auth_secret_equal(pw, (size_t)(creds + n - pw), secret);
    explicit_bzero(creds, sizeof creds);
    return ok;
}

enum admin_page_route admin_page_route(struct lws *wsi, const char *uri)
{
    const char *secret = rt.cfg->admin_secret;
    if (!secret || !*secret)
        return ADMIN_PAGE_DISABLED;
    if (!authorized(wsi, secret))
        return ADMIN_PAGE_UNAUTHORIZED;
    if (!strcmp(uri, "/admin/api/info"))
        return ADMIN_PAGE_INFO;
    if (!strcmp(uri, "/admin/api/channels"))
        return ADMIN_PAGE_CHANNELS;
    const char *ctype;
    return admin_page_file(uri, NULL, NULL, &ctype) == 0 ? ADMIN_PAGE_FILE : ADMIN_PAGE_NOT_FOUND;
}

/* The page's files: a fixed list, so no request names anything else. */
static const struct {
    const char *uri, *file, *ctype;
} files[] = {
    {"/admin", "index.html", "text/html; charset=utf-8"},
    {"/admin/", "index.html", "text/html; charset=utf-8"},
    {"/admin/index.html", "index.html", "text/html; charset=utf-8"},
    {"/admin/admin.js", "admin.js", "text/javascript; charset=utf-8"},
    {"/admin/admin.css", "admin.css", "text/css; charset=utf-8"},
};

int admin_page_file(const char *uri, char **body, size_t *len, const char **ctype)
{
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (strcmp(uri, files[i].uri) != 0)
            continue;
        *ctype = files[i].ctype;
        if (!body)
            return 0;
        char path[4096];
        snprintf(path, sizeof path, "%s/admin/%s", rt.cfg->static_dir, files[i].file);
        FILE *f = fopen(path, "rb");
        if (!f)
            return -1;
        char *buf = NULL;
        long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
        if (n >= 0 && n < (1 << 20) && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) &&
            fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
        fclose(f);
        if (!buf)
            return -1;
        *body = buf;
        *len = (size_t)n;
        return 0;
    }
    return -1;
}
