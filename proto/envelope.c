/* envelope.c - big-endian encoding of the node-to-node header. */
#include "envelope.h"

#include <string.h>

static unsigned char *put_u(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        *p++ = (unsigned char)(v >> (8 * i));
    return p;
}

static unsigned char *put_str(unsigned char *p, const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    *p++ = (unsigned char)n;
    memcpy(p, s, n);
    return p + n;
}

size_t envelope_encode(const struct envelope *e, unsigned char *out)
{
    unsigned char *p = out;
    *p++ = ENVELOPE_VERSION;
    *p++ = e->type;
    p = put_str(p, e->origin, ENVELOPE_ID_MAX);
    p = put_str(p, e->epoch, ENVELOPE_EPOCH_MAX);
    p = put_u(p, e->seq, 8);
    p = put_u(p, (uint64_t)e->ts_ms, 8);
    p = put_u(p, e->req_id, 8);
    p = put_u(p, e->limit, 4);
    p = put_u(p, e->status, 2);
    *p++ = e->flags;
    return (size_t)(p - out);
}

struct reader {
    const unsigned char *p, *end;
    bool ok;
};

static uint64_t get_u(struct reader *r, int bytes)
{
    uint64_t v = 0;
    if (r->end - r->p < bytes) {
        r->ok = false;
        return 0;
    }
    for (int i = 0; i < bytes; i++)
        v = v << 8 | *r->p++;
    return v;
}

static void get_str(struct reader *r, char *out, size_t max)
{
    size_t n = (size_t)get_u(r, 1);
    if (!r->ok || n > max || (size_t)(r->end - r->p) < n) {
        r->ok = false;
        out[0] = '\0';
        return;
    }
    memcpy(out, r->p, n);
    out[n] = '\0';
    if (memchr(out, '\0', n))
        r->ok = false; /* ids and epochs are text */
    r->p += n;
}

bool envelope_decode(const unsigned char *in, size_t len, struct envelope *e)
{
    struct reader r = {in, in + len, true};
    memset(e, 0, sizeof *e);
    if (get_u(&r, 1) != ENVELOPE_VERSION)
        return false;
    e->type = (uint8_t)get_u(&r, 1);
    get_str(&r, e->origin, ENVELOPE_ID_MAX);
    get_str(&r, e->epoch, ENVELOPE_EPOCH_MAX);
    e->seq = get_u(&r, 8);
    e->ts_ms = (int64_t)get_u(&r, 8);
    e->req_id = get_u(&r, 8);
    e->limit = (uint32_t)get_u(&r, 4);
    e->status = (uint16_t)get_u(&r, 2);
    e->flags = (uint8_t)get_u(&r, 1);
    return r.ok && r.p == r.end && e->type >= ENV_MSG && e->type < ENV_TYPE_COUNT;
}

void envelope_put_sync_item(unsigned char *out, uint64_t seq, int64_t ts_ms, uint8_t flags)
{
    out = put_u(out, seq, 8);
    out = put_u(out, (uint64_t)ts_ms, 8);
    *out = flags;
}

bool envelope_get_sync_item(const unsigned char *p, size_t len, uint64_t *seq, int64_t *ts_ms,
                            uint8_t *flags)
{
    if (len != ENV_SYNC_ITEM_LEN)
        return false;
    struct reader r = {p, p + len, true};
    *seq = get_u(&r, 8);
    *ts_ms = (int64_t)get_u(&r, 8);
    *flags = (uint8_t)get_u(&r, 1);
    return r.ok;
}
