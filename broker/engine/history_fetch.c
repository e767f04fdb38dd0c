/* history_fetch.c - history replies from here or from the owner
 * (history_fetch.h). */
#include "history_fetch.h"
#include "replica.h"
#include "channel.h"
#include "frame.h"
#include "history.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* From an owner's SYNC_REP (parts: channel, then (seq+ts, msg) pairs),
 * keeping the newest `limit`. */
static struct frame *from_sync(const char *name, bool has_id, long long id,
                                const struct envelope *rep, const struct cluster_part *parts,
                                int n, long long limit)
{
    size_t total = n > 1 ? (size_t)(n - 1) / 2 : 0, first = 0;
    if (limit >= 0 && total > (size_t)limit)
        first = total - (size_t)limit;
    struct history_item *items = malloc(sizeof *items * (total - first + 1));
    struct frame **bins = calloc(total - first + 1, sizeof *bins);
    struct frame *f = NULL;
    if (!items || !bins)
        goto out;
    for (size_t i = first; i < total; i++) {
        const struct cluster_part *meta = &parts[1 + 2 * i], *msg = &parts[2 + 2 * i];
        items[i - first] = (struct history_item){msg->data, msg->len};
        uint64_t seq;
        int64_t ts;
        uint8_t flags;
        if (envelope_get_sync_item(meta->data, meta->len, &seq, &ts, &flags) &&
            (flags & ENV_FLAG_BINARY)) {
            /* A binary message shows as JSON with its bytes in base64 (binmsg.h). */
            struct frame *b = frame_from(msg->data, msg->len), *view = NULL;
            if (b) {
                b->binary = true;
                view = history_json_view(b);
            }
            bins[i - first] = b;
            if (!view)
                goto out;
            items[i - first] = (struct history_item){frame_payload(view), view->len};
        }
    }
    f = history_splice(name, has_id, id, rep->epoch, rep->seq, items, total - first);
out:
    for (size_t i = 0; bins && i < total - first; i++)
        frame_unref(bins[i]);
    free(bins);
    free(items);
    return f;
}

static void on_owner_reply(struct cluster_call *call, const struct envelope *rep,
                           const struct cluster_part *parts, int n)
{
    struct history_fetch *h = call->ud;
    h->pending = false;
    enum chorus_err code = cluster_reply_code(rep);
    if (code != CHORUS_ERR__COUNT) {
        char msg[200];
        cluster_reply_text(rep, parts, n, msg, sizeof msg);
        h->done(h, NULL, code, msg);
        return;
    }
    struct frame *f = from_sync(h->ch, h->has_id, h->id, rep, parts, n, h->limit);
    if (f)
        h->done(h, f, CHORUS_ERR__COUNT, NULL);
    else
        h->done(h, NULL, CHORUS_ERR_UNAVAILABLE, "out of memory");
}

void history_fetch(struct history_fetch *h, const char *name, size_t len, bool has_id, long long id,
                   bool has_since, const char *since_epoch, uint64_t since_seq, long long limit,
                   history_done_cb *done, void *ud)
{
    memset(h, 0, sizeof *h);
    h->done = done;
    h->ud = ud;
    h->has_id = has_id;
    h->id = id;
    h->limit = limit;
    memcpy(h->ch, name, len);
    h->ch[len] = '\0';

    struct channel *ch = channel_find(name, len);
    bool owner = cluster_is_owner(name, len);
    if (owner || (ch && ch->live && !ch->sync)) {
        if (ch && owner)
            replica_claim(ch);
        struct frame *f = history_local(ch, h->ch, has_id, id, has_since, since_epoch, since_seq,
                                        limit);
        if (f)
            done(h, f, CHORUS_ERR__COUNT, NULL);
        else
            done(h, NULL, CHORUS_ERR_UNAVAILABLE, "out of memory");
        return;
    }
    if (cluster_sync(name, len, has_since, since_epoch, since_seq,
                     has_since ? CLUSTER_SYNC_ALL : (uint32_t)limit, false, &h->call,
                     on_owner_reply, h) < 0) {
        done(h, NULL, CHORUS_ERR_UNAVAILABLE, "the channel's owner is unreachable");
        return;
    }
    h->pending = true;
}

void history_fetch_cancel(struct history_fetch *h)
{
    if (h->pending)
        cluster_call_cancel(&h->call);
    h->pending = false;
}
