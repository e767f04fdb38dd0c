/* history.c - build history replies by splicing stored frames. */
#include "history.h"
#include "binmsg.h"
#include "channel.h"
#include "frame.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct item {
    const unsigned char *data;
    size_t len;
};

static struct frame *splice(const char *name, bool has_id, long long id, const char *epoch,
                            uint64_t seq, const struct item *items, size_t n)
{
    char head[512], idpart[40] = "";
    if (has_id)
        snprintf(idpart, sizeof idpart, "\"id\":%lld,", id);
    int hl = snprintf(head, sizeof head,
                      "{\"op\":\"history\",%s\"ch\":\"%s\",\"epoch\":\"%s\",\"seq\":%llu,\"msgs\":[",
                      idpart, name, epoch, (unsigned long long)seq);
    if (hl < 0 || (size_t)hl >= sizeof head)
        return NULL;
    size_t len = (size_t)hl + 2;
    for (size_t i = 0; i < n; i++)
        len += items[i].len + 1;
    struct frame *f = frame_new(len);
    if (!f)
        return NULL;
    unsigned char *p = frame_payload(f);
    size_t o = (size_t)hl;
    memcpy(p, head, o);
    for (size_t i = 0; i < n; i++) {
        if (i)
            p[o++] = ',';
        memcpy(p + o, items[i].data, items[i].len);
        o += items[i].len;
    }
    memcpy(p + o, "]}", 2);
    f->len = (uint32_t)(o + 2);
    return f;
}

struct collect {
    struct item *items;
    size_t n, cap;
};

static void collect_entry(const struct hist_entry *e, void *ud)
{
    struct collect *c = ud;
    /* A binary message shows as JSON with its bytes in base64 (binmsg.h). */
    struct frame *f = e->f->binary ? binmsg_json_view(e->f) : e->f;
    if (f && c->n < c->cap)
        c->items[c->n++] = (struct item){frame_payload(f), f->len};
}

struct frame *history_local(struct channel *ch, const char *name, bool has_id, long long id,
                            bool has_since, const char *since_epoch, uint64_t since_seq,
                            long long limit)
{
    struct collect c = {NULL, 0, 0};
    bool none = !ch || (has_since && strcmp(since_epoch, ch->epoch) != 0);
    if (!none && ch->hist_count) {
        c.cap = ch->hist_count;
        c.items = malloc(sizeof *c.items * c.cap);
        if (!c.items)
            return NULL;
        channel_history_each(ch, has_since ? since_seq : 0, limit, runtime_now_ms(), collect_entry, &c);
    }
    struct frame *f = splice(name, has_id, id, ch ? ch->epoch : "", ch ? ch->seq : 0, c.items, c.n);
    free(c.items);
    return f;
}

struct frame *history_from_sync(const char *name, bool has_id, long long id,
                                const struct envelope *rep, const struct cluster_part *parts,
                                int n, long long limit)
{
    size_t total = n > 1 ? (size_t)(n - 1) / 2 : 0, first = 0;
    if (limit >= 0 && total > (size_t)limit)
        first = total - (size_t)limit;
    struct item *items = malloc(sizeof *items * (total - first + 1));
    struct frame **bins = calloc(total - first + 1, sizeof *bins);
    struct frame *f = NULL;
    if (!items || !bins)
        goto out;
    for (size_t i = first; i < total; i++) {
        const struct cluster_part *meta = &parts[1 + 2 * i], *msg = &parts[2 + 2 * i];
        items[i - first] = (struct item){msg->data, msg->len};
        uint64_t seq;
        int64_t ts;
        uint8_t flags;
        if (envelope_get_sync_item(meta->data, meta->len, &seq, &ts, &flags) &&
            (flags & ENV_FLAG_BINARY)) {
            /* A binary message shows as JSON with its bytes in base64 (binmsg.h). */
            struct frame *b = frame_from(msg->data, msg->len), *view = NULL;
            if (b) {
                b->binary = true;
                view = binmsg_json_view(b);
            }
            bins[i - first] = b;
            if (!view)
                goto out;
            items[i - first] = (struct item){frame_payload(view), view->len};
        }
    }
    f = splice(name, has_id, id, rep->epoch, rep->seq, items, total - first);
out:
    for (size_t i = 0; bins && i < total - first; i++)
        frame_unref(bins[i]);
    free(bins);
    free(items);
    return f;
}
