/* history.c - build history replies by splicing stored frames. */
#include "history.h"
#include "channel.h"
#include "frame.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------ binary messages */

/* Writes the JSON form of binary message frame f to out, or only measures it
 * when out is NULL; returns its length. */
static size_t binary_json(struct frame *f, unsigned char *out)
{
    const unsigned char *p = frame_payload(f);
    uint32_t hl = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    const unsigned char *bytes = p + 4 + hl;
    size_t n = f->len - 4 - hl;
    size_t enc = (n + 2) / 3 * 4;
    size_t total = (hl - 1) + 8 + enc + 2;       /* head without '}' ,"bin":" ... "} */
    if (!out)
        return total;
    memcpy(out, p + 4, hl - 1);
    out += hl - 1;
    memcpy(out, ",\"bin\":\"", 8);
    out += 8;
    /* lws writes a NUL after the text; the closing quote overwrites it. */
    lws_b64_encode_string((const char *)bytes, (int)n, (char *)out, (int)enc + 1);
    memcpy(out + enc, "\"}", 2);
    return total;
}

struct frame *history_json_view(struct frame *f)
{
    if (!f->alt) {
        f->alt = frame_new(binary_json(f, NULL));
        if (f->alt)
            binary_json(f, frame_payload(f->alt));
    }
    return f->alt;
}

/* ---------------------------------------------------------------- splice */

struct frame *history_splice(const char *name, bool has_id, long long id, const char *epoch,
                            uint64_t seq, const struct history_item *items, size_t n)
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
    struct history_item *items;
    size_t n, cap;
};

static void collect_entry(const struct hist_entry *e, void *ud)
{
    struct collect *c = ud;
    /* A binary message shows as JSON with its bytes in base64 (binmsg.h). */
    struct frame *f = e->f->binary ? history_json_view(e->f) : e->f;
    if (f && c->n < c->cap)
        c->items[c->n++] = (struct history_item){frame_payload(f), f->len};
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
    struct frame *f = history_splice(name, has_id, id, ch ? ch->epoch : "", ch ? ch->seq : 0, c.items, c.n);
    free(c.items);
    return f;
}
