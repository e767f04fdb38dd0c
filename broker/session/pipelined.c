/* pipelined.c - see pipelined.h. The mark is the count of bytes read from the
 * socket when the connection's previous request had been read whole, kept in
 * the connection's opaque user data (unused otherwise on server connections),
 * with bit 32 set so that a count of 0 is still a mark. */
#include "pipelined.h"
#include "http_reply.h"
#include "tcpstat.h"

#include <stdint.h>
#include <stdlib.h>

#define MARKED ((uintptr_t)1 << 32)

void pipelined_mark(struct lws *wsi)
{
    lws_set_opaque_user_data(wsi, (void *)(MARKED | tcpstat_read(wsi)));
}

bool pipelined_body(struct lws *wsi)
{
    uintptr_t mark = (uintptr_t)lws_get_opaque_user_data(wsi);
    uint32_t now = tcpstat_read(wsi);
    pipelined_mark(wsi);
    char cl[32];
    /* The first request, or the kernel would not say: as before. */
    if (!(mark & MARKED) || !now || (uint32_t)mark != now)
        return false;
    return lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 && atoll(cl) > 0;
}

int pipelined_refuse(struct lws *wsi)
{
    return http_reply_close(wsi, 400, "text/plain",
                            "a request with a body cannot follow another in the same "
                            "write: send it after the previous response");
}
