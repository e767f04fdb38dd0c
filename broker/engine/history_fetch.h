/* history_fetch.h - the one way to answer a history request, wherever the
 * channel's owner is: from this node's copy when it is the owner or a
 * current mirror, otherwise from the owner (SYNC_REQ without join). The
 * WebSocket op and GET /api/history both come here. */
#ifndef CHORUS_HISTORY_FETCH_H
#define CHORUS_HISTORY_FETCH_H

#include <stdbool.h>
#include <stdint.h>

#include "cluster.h"
#include "codec.h"
#include "errors.h"

struct frame;
struct history_fetch;

/* Called exactly once per history_fetch unless cancelled first: with the
 * reply frame f (one reference, now the callee's) or with f NULL and err,
 * msg. */
typedef void history_done_cb(struct history_fetch *h, struct frame *f, enum chorus_err err,
                             const char *msg);

/* A history request in flight. Embedded in, and owned by, the caller; it
 * must stay valid until done is called or history_fetch_cancel() returns. */
struct history_fetch {
    history_done_cb *done;
    void *ud;
    /* private */
    struct cluster_call call;
    bool pending;                 /* waiting for the owner */
    bool has_id;
    long long id;
    long long limit;
    char ch[CODEC_CHANNEL_MAX + 1];
};

/* The history reply (PROTOCOL.md 2.4) for channel ch (valid), with id when
 * has_id: messages after (since_epoch, since_seq) when has_since, else the
 * newest `limit` (already capped by the namespace's history size). done may
 * run before this returns. */
void history_fetch(struct history_fetch *h, const char *ch, size_t len, bool has_id, long long id,
                   bool has_since, const char *since_epoch, uint64_t since_seq, long long limit,
                   history_done_cb *done, void *ud);
/* Forgets h; its done will not be called. */
void history_fetch_cancel(struct history_fetch *h);

#endif
