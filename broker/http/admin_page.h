/* admin_page.h - the read-only operator page at /admin (README "Admin page").
 *
 * Everything under /admin is behind HTTP Basic authentication whose password
 * is --admin-secret (any user name), a credential apart from the API key:
 * it opens the page's files and two read-only views of the server API,
 * GET /admin/api/info and GET /admin/api/channels, never a publish. The
 * browser asks for the password once and sends it with every request under
 * /admin/ by itself, so the page holds no secret. Without --admin-secret
 * /admin answers 404. /metrics and /healthz stay public as before. */
#ifndef CHORUS_ADMIN_PAGE_H
#define CHORUS_ADMIN_PAGE_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>

#define ADMIN_PAGE_CHALLENGE "Basic realm=\"chorus admin\", charset=\"UTF-8\""

enum admin_page_route {
    ADMIN_PAGE_DISABLED,      /* no --admin-secret: 404 */
    ADMIN_PAGE_UNAUTHORIZED,  /* 401 with ADMIN_PAGE_CHALLENGE */
    ADMIN_PAGE_FILE,          /* one of the page's files (admin_page_file) */
    ADMIN_PAGE_INFO,          /* /api/info, answered without the API key */
    ADMIN_PAGE_CHANNELS,      /* /api/channels, the same */
    ADMIN_PAGE_NOT_FOUND,
};

/* Is uri /admin or under /admin/? */
bool admin_page_owns(const char *uri);
/* What a request for uri (admin_page_owns) gets, its credentials checked. */
enum admin_page_route admin_page_route(struct lws *wsi, const char *uri);
/* The file uri names, read from the static directory's admin/ folder into a
 * malloc'd *body (caller frees). Returns 0, or -1 when there is none. */
int admin_page_file(const char *uri, char **body, size_t *len, const char **ctype);

#endif
