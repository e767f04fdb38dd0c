/* deflate.c - permessage-deflate (RFC 7692), one compression per message.
 *
 * lws 4.1.6's own permessage-deflate compresses for each connection with its
 * own zlib context (~300 KB each) and its own copy of every message, so a
 * fan-out to N subscribers would compress N times. Here lws is used only to
 * negotiate: the extension registered below passes every payload through
 * untouched, and being active on a connection is what makes lws accept RSV1
 * on the frames it reads (roles/ws/ops-ws.c, "rsv bits"). The rest is ours:
 *
 * - Sending: a message is compressed once, without context takeover, the
 *   first time a connection that negotiated the extension is about to send
 *   it; the compressed copy hangs off the shared frame (frame.h `z`) and is
 *   written, RSV1 set, by every such connection, then freed with the frame.
 *   conn.c writes frames itself (LWS_WRITE_RAW), which lws never shows to an
 *   extension.
 * - Negotiating: the response always says server_no_context_takeover (true
 *   of a shared compressor) and client_no_context_takeover, which a server
 *   may add unasked (RFC 7692 7.1.1.2), so that every client message is
 *   self-contained and one inflater serves all connections. lws echoes only
 *   the parameters a client offered (server-ws.c,
 *   lws_extension_server_handshake), so deflate_add_headers() completes the
 *   header line lws has just written.
 * - Receiving: ws.c gathers a compressed message as it does any other and
 *   inflates it here, at most --max-frame-bytes of output: a compression
 *   bomb costs that much work and gets too_large. */
#include "deflate.h"
#include "config.h"
#include "conn.h"
#include "frame.h"
#include "log.h"
#include "runtime.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define EXT_NAME "permessage-deflate"
/* What the response adds to the name (RFC 7692 7.1). */
#define EXT_PARAMS "; server_no_context_takeover; client_no_context_takeover"

/* Sliding window, memory level and level of the shared compressor: it works
 * once per message, not per delivery, so zlib's default level. The window
 * is the full 32 KB that every client accepts unless it offers
 * server_max_window_bits (declined, below). deflateReset() clears the hash
 * table, 2^(memLevel + 8) bytes, for every message: at zlib's default 8 that
 * 64 KB memset cost more than compressing a ticker quote, while level 4
 * (4 KB) compresses messages up to tens of KB as well (docs/benchmarks.md). */
#define Z_WINDOW_BITS 15
#define Z_MEM_LEVEL 4
#define Z_LEVEL 6

/* Short messages (--compression-huffman-max-bytes) go through a second
 * compressor with Z_HUFFMAN_ONLY. zlib builds Huffman trees for every block
 * whatever the strategy (even Z_FIXED), and on a ~160-byte quote that is
 * most of its ~67,000 instructions; string matching and its hash table add
 * the rest, yet find little in so few bytes: Huffman codes alone cost ~44,000
 * and come out about as small (quotes the same, 12-word chat lines 2% larger;
 * 200-byte order books 2% larger, 250-byte ones 10%: docs/benchmarks.md). No
 * matching, so the smallest window; memLevel 3 allows 511 symbols per block,
 * so such a message is one block (one set of trees). */
#define Z_SMALL_WINDOW_BITS 9
#define Z_SMALL_MEM_LEVEL 3

/* ------------------------------------------------------------ negotiation */

/* No options for lws to parse or echo: the offer is checked in
 * deflate_confirm() and the response written by deflate_add_headers(). */
static const struct lws_ext_options no_options[] = {{NULL, EXTARG_NONE}};

static int ext_callback(struct lws_context *context, const struct lws_extension *ext,
                        struct lws *wsi, enum lws_extension_callback_reasons reason, void *user,
                        void *in, size_t len)
{
    (void)context;
    (void)ext;
    (void)len;
    if (reason == LWS_EXT_CB_CONSTRUCT) {
        struct conn *c = lws_wsi_user(wsi);
        *(void **)user = NULL;
        if (in)
            *(const struct lws_ext_options **)in = no_options;
        if (c)
            c->deflate = true;
    }
    /* 0 everywhere else: LWS_EXT_CB_PAYLOAD_RX/TX leave the payload as it
     * is (lws' PMDR_UNKNOWN, the same as no extension). */
    return 0;
}

const struct lws_extension deflate_extensions[] = {
    {EXT_NAME, ext_callback, EXT_NAME},
    {NULL, NULL, NULL},
};

/* Is one "name[=value]" parameter of an offer acceptable, and which bit
 * marks it seen (a repeated one makes the offer invalid, RFC 7692 7). */
static int offer_param(const char *p, size_t n)
{
    while (n && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    const char *eq = memchr(p, '=', n);
    size_t kl = eq ? (size_t)(eq - p) : n;
    if (kl == 26 && !memcmp(p, "server_no_context_takeover", 26) && !eq)
        return 1;
    if (kl == 26 && !memcmp(p, "client_no_context_takeover", 26) && !eq)
        return 2;
    if (kl == 22 && !memcmp(p, "client_max_window_bits", 22)) {
        /* The client may limit its own window; the inflater takes any. */
        if (!eq)
            return 4;
        const char *v = eq + 1;
        size_t vl = n - kl - 1;
        if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"')
            v++, vl -= 2;
        if ((vl == 1 && v[0] >= '8' && v[0] <= '9') ||
            (vl == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5'))
            return 4;
        return -1;
    }
    /* server_max_window_bits would bind the one compressor every connection
     * shares to a smaller window; such an offer is declined, as is any
     * parameter this server does not know. */
    return -1;
}

/* The k-th (from 0) permessage-deflate offer in the header: lws asks about
 * each in turn until one is accepted. */
static bool offer_acceptable(const char *h, size_t hl, int k)
{
    const char *end = h + hl;
    for (const char *o = h; o < end;) {
        const char *oe = memchr(o, ',', (size_t)(end - o));
        if (!oe)
            oe = end;
        const char *semi = memchr(o, ';', (size_t)(oe - o));
        const char *ne = semi ? semi : oe;
        while (o < ne && (*o == ' ' || *o == '\t'))
            o++;
        size_t nl = (size_t)(ne - o);
        while (nl && (o[nl - 1] == ' ' || o[nl - 1] == '\t'))
            nl--;
        if (nl == sizeof EXT_NAME - 1 && !memcmp(o, EXT_NAME, nl) && k-- == 0) {
            int seen = 0;
            for (const char *p = semi; p && p < oe;) {
                p++;
                const char *pe = memchr(p, ';', (size_t)(oe - p));
                if (!pe)
                    pe = oe;
                int bit = offer_param(p, (size_t)(pe - p));
                if (bit < 0 || (seen & bit))
                    return false;
                seen |= bit;
                p = pe;
            }
            return true;
        }
        o = oe + 1;
    }
    return false;
}

int deflate_confirm(struct conn *c, struct lws *wsi, const char *ext_name)
{
    if (!c || !ext_name || strcmp(ext_name, EXT_NAME))
        return 1;
    int k = c->deflate_offers++;
    char h[512];
    int n = lws_hdr_copy(wsi, h, sizeof h, WSI_TOKEN_EXTENSIONS);
    if (n <= 0 || !offer_acceptable(h, (size_t)n, k)) {
        log_info("event=deflate_declined offer=%d", k);
        return 1;
    }
    return 0;
}

int deflate_add_headers(struct conn *c, void *in)
{
    struct lws_process_html_args *args = in;
    if (!c || !c->deflate || !args || !args->p)
        return 0;
    /* lws 4.1.6's handshake_0405 has just written
     * "Sec-WebSocket-Extensions: permessage-deflate\r\n" (no parameters:
     * no_options echoes none) and hands us the end of it. */
    static const char tail[] = EXT_NAME "\r\n";
    const size_t tl = sizeof tail - 1, add = sizeof EXT_PARAMS - 1;
    char *p = args->p;
    if ((size_t)args->max_len < add + 2 || memcmp(p - tl, tail, tl)) {
        log_error("event=deflate_response_unexpected msg=\"lws did not end the upgrade response "
                  "with the extension header: upgrade refused\"");
        return -1;
    }
    p -= 2;
    memcpy(p, EXT_PARAMS "\r\n", add + 2);
    args->p = p + add + 2;
    args->max_len -= (int)add;
    return 0;
}

/* ------------------------------------------------------------ compression */

struct compressor {
    z_stream s;
    bool ready;
};
static struct compressor zc, zc_small;

/* The compressor for a message of len bytes, reset for it; NULL if zlib
 * cannot set one up (the message then goes uncompressed). */
static z_stream *compressor_for(uint32_t len)
{
    bool small = len <= (uint32_t)rt.cfg->compression_huffman_max_bytes;
    struct compressor *c = small ? &zc_small : &zc;
    if (!c->ready) {
        int rc = small ? deflateInit2(&c->s, Z_LEVEL, Z_DEFLATED, -Z_SMALL_WINDOW_BITS,
                                      Z_SMALL_MEM_LEVEL, Z_HUFFMAN_ONLY)
                       : deflateInit2(&c->s, Z_LEVEL, Z_DEFLATED, -Z_WINDOW_BITS, Z_MEM_LEVEL,
                                      Z_DEFAULT_STRATEGY);
        if (rc != Z_OK)
            return NULL;
        c->ready = true;
    } else if (deflateReset(&c->s) != Z_OK) {
        return NULL;
    }
    return &c->s;
}

struct frame *deflate_frame_make(struct frame *f)
{
    f->z_tried = true;
    if (f->plain || f->opcode || f->len < (uint32_t)rt.cfg->compression_min_bytes)
        return NULL;
    z_stream *zs = compressor_for(f->len);
    if (!zs)
        return NULL;
    /* A sync flush adds up to 5 bytes (and 5 more per stored block). */
    size_t cap = deflateBound(zs, f->len) + 16;
    struct frame *z = frame_new(cap);
    if (!z)
        return NULL;
    zs->next_in = frame_payload(f);
    zs->avail_in = f->len;
    zs->next_out = frame_payload(z);
    zs->avail_out = (uInt)cap;
    int rc = deflate(zs, Z_SYNC_FLUSH);
    size_t n = cap - zs->avail_out;
    /* RFC 7692 7.2.1: the flush's empty stored block ends 00 00 ff ff,
     * which is left off. Not worth it unless it is smaller. */
    if (rc != Z_OK || zs->avail_in || n < 4 || memcmp(frame_payload(z) + n - 4, "\0\0\xff\xff", 4) ||
        n - 4 >= f->len) {
        frame_unref(z);
        return NULL;
    }
    z->len = (uint32_t)(n - 4);
    z->binary = f->binary;
    struct frame *fit = realloc(z, sizeof *z + FRAME_PRE + z->len);
    f->z = fit ? fit : z;
    return f->z;
}

/* -------------------------------------------------------------- inflation */

static z_stream zi;
static bool zi_ready;
static unsigned char *zi_out;
static size_t zi_cap;

int deflate_inflate(const unsigned char *in, size_t len, size_t max, const unsigned char **out,
                    size_t *out_len)
{
    static const unsigned char trailer[4] = {0, 0, 0xff, 0xff};
    if (!zi_ready) {
        if (inflateInit2(&zi, -15) != Z_OK)
            return -1;
        zi_ready = true;
    } else if (inflateReset(&zi) != Z_OK) {
        return -1;
    }
    /* One byte past max tells "exactly max" from "more". Grown as needed, up
     * to the limit, and kept: one buffer for the whole server. */
    size_t want = len * 4 + 256 < max + 1 ? len * 4 + 256 : max + 1;
    if (zi_cap < want) {
        unsigned char *n = realloc(zi_out, want);
        if (!n)
            return 1;
        zi_out = n;
        zi_cap = want;
    }
    size_t done = 0;
    for (int part = 0; part < 2; part++) {
        zi.next_in = (unsigned char *)(part ? trailer : in);
        zi.avail_in = (uInt)(part ? sizeof trailer : len);
        for (;;) {
            if (done == zi_cap) {
                if (zi_cap >= max + 1)
                    return 1; /* more than max: the rest is not inflated */
                size_t ncap = zi_cap * 2 < max + 1 ? zi_cap * 2 : max + 1;
                unsigned char *n = realloc(zi_out, ncap);
                if (!n)
                    return 1;
                zi_out = n;
                zi_cap = ncap;
            }
            zi.next_out = zi_out + done;
            zi.avail_out = (uInt)(zi_cap - done);
            int rc = inflate(&zi, Z_SYNC_FLUSH);
            done = zi_cap - zi.avail_out;
            if (rc == Z_STREAM_END)
                goto finished; /* a final block: what follows it is ignored */
            if (rc == Z_BUF_ERROR)
                break;         /* no progress with room to write: the input is used up */
            if (rc != Z_OK)
                return -1;
            if (!zi.avail_in && zi.avail_out)
                break;         /* all used and nothing left pending */
        }
    }
finished:
    if (done > max)
        return 1;
    *out = zi_out;
    *out_len = done;
    return 0;
}
