/* conflate.c - replacing a lagging connection's queued msg by its
 * channel's newest, and writing the "skipped" count into the copy that goes
 * to the socket. */
#include "conflate.h"
#include "channel.h"
#include "conn.h"
#include "frame.h"
#include "metrics.h"
#include "outq.h"
#include "runtime.h"
#include "tcpstat.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* A connection lags once its queue passes the threshold, or half of either
 * bound (tiny messages, or a threshold set above the bound, would reach that
 * first), so conflation always starts before a 4008. Below it, every message
 * is delivered as usual: a reader that keeps up never sees "skipped". Its
 * socket's unsent bytes being capped (--conflate-notsent-bytes), what its
 * reader has not taken waits here, where the threshold counts it. Not from
 * the first message a full socket holds back: a reader a tenth of a second
 * behind (its TCP window closes that soon) would lose quotes it reads. */
static bool lagging(const struct outq *q)
{
    const struct config *cfg = rt.cfg;
    return q->bytes >= (size_t)cfg->conflate_queue_bytes ||
           q->bytes >= (size_t)cfg->max_queue_bytes / 2 ||
           q->count >= (uint32_t)cfg->max_queue_frames / 2;
}

void conflate_cap_sndbuf(struct conn *c)
{
    c->sndbuf_capped = true;
    int bytes = rt.cfg->conflate_sndbuf_bytes;
    /* Setting it turns off the kernel's autotuning for this socket. */
    if (bytes > 0 && c->wsi)
        setsockopt(lws_get_socket_fd(c->wsi), SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
    /* POLLOUT (so WRITEABLE) then comes only once fewer bytes than this
     * are unsent, and a send() stops taking more at about that much. */
    int low = rt.cfg->conflate_notsent_bytes;
    if (low > 0 && c->wsi)
        setsockopt(lws_get_socket_fd(c->wsi), IPPROTO_TCP, TCP_NOTSENT_LOWAT, &low, sizeof low);
}

size_t conflate_write_room(struct conn *c)
{
    int low = rt.cfg->conflate_notsent_bytes;
    int unsent = low > 0 ? tcpstat_unsent(c->wsi) : -1;
    if (unsent < 0)
        return CONN_WRITE_BATCH;
    if (unsent >= low) {
        /* What holds it back: the reader's window (it is behind: small
         * writes from now on), or only the congestion window (a burst of
         * small writes to a reader that delays its ACKs waits a round trip:
         * that reader keeps up and goes on getting whole batches). */
        if (tcpstat_peer_window_full(c->wsi))
            c->tx_blocked = true;
        return 0;
    }
    /* Caught up: nothing unsent and the queue fits in one small write. */
    if (!unsent && c->q.bytes <= (size_t)low)
        c->tx_blocked = false;
    /* Behind, a write of only what fits below the mark: the rest would wait
     * in lws' or the kernel's buffers, past conflation's reach. */
    return c->tx_blocked ? (size_t)(low - unsent) : CONN_WRITE_BATCH;
}

int conflate_replace(struct outq *q, struct sub *s, struct frame *f)
{
    if (s->ch->ns->slow_consumer != NS_SLOW_CONFLATE || !s->queued || !lagging(q))
        return 0;
    struct outq_entry *e = outq_at(q, s->queued - 1);
    /* Gone (written), or not older than f (a replay racing a live msg). */
    if (!e || !e->f->seq || e->f->seq >= f->seq)
        return 0;
    if (outq_replace(q, e, f, (size_t)rt.cfg->max_queue_bytes) < 0)
        return -1;
    metrics.conflated++;
    return 1;
}

/* Where the field goes: after the leading {"op":"msg", when the encoder put
 * it first (it always does), else right after the '{'. */
static size_t splice_at(const unsigned char *json, size_t len)
{
    static const char lead[] = "{\"op\":\"msg\",";
    return len >= sizeof lead - 1 && !memcmp(json, lead, sizeof lead - 1) ? sizeof lead - 1 : 1;
}

static int field(char *buf, size_t cap, uint32_t skipped)
{
    return snprintf(buf, cap, "\"skipped\":%u,", skipped);
}

size_t conflate_payload_len(const struct frame *f, uint32_t skipped)
{
    char buf[32];
    return f->len + (size_t)field(buf, sizeof buf, skipped);
}

void conflate_payload(unsigned char *out, const struct frame *f, uint32_t skipped)
{
    const unsigned char *p = f->buf + FRAME_PRE;
    char fld[32];
    size_t n = (size_t)field(fld, sizeof fld, skipped);
    size_t off = 0, jlen = f->len;
    if (f->binary) {
        /* [4-byte header length H][H bytes of JSON header][payload]: the
         * field goes into the header, whose length grows by n. */
        size_t h = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        size_t nh = h + n;
        out[0] = (unsigned char)(nh >> 24);
        out[1] = (unsigned char)(nh >> 16);
        out[2] = (unsigned char)(nh >> 8);
        out[3] = (unsigned char)nh;
        off = 4;
        jlen = h;
    }
    size_t at = splice_at(p + off, jlen);
    memcpy(out + off, p + off, at);
    memcpy(out + off + at, fld, n);
    memcpy(out + off + at + n, p + off + at, f->len - off - at);
}
