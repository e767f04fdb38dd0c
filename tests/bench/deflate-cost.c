/* deflate-cost: what zlib's choices cost on real frames, one line of JSON per
 * run: bytes per message on the wire with and without permessage-deflate
 * (WebSocket header included) and, under callgrind, the instructions spent
 * compressing (only the compression loop is counted). A benchmark that prints
 * figures (docs/benchmarks.md "Compression"), not a test.
 *
 *   node tests/bench/deflate-bytes.mjs --dump /tmp/frames.txt
 *   tests/bench/deflate-cost.sh /tmp/frames.txt [--op msg] [--match bench:ticker]
 *       [--level N] [--strategy default|huffman|fixed|rle] [--mem-level N]
 *       [--window-bits N] [--takeover] [--min-len N] [--max-len N]
 *
 * FRAMES: one frame a line as a subscriber read it (--dump); --op keeps the
 * frames of that op (default msg; history for the replies), --match those
 * containing that text, --min-len/--max-len bound their length. Without --takeover each
 * message is compressed alone, after deflateReset(), as chorusd does (no
 * context takeover); with it one stream carries them all, as a compressor per
 * connection would (context takeover: each message may refer to earlier ones,
 * and every connection compresses every message it is sent). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_TOGGLE_COLLECT
#endif

static size_t ws_header(size_t n)
{
    return n < 126 ? 2 : n < 65536 ? 4 : 10;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *match = NULL, *op = "msg", *strategy = "default";
    int level = 6, mem_level = 4, window_bits = 15;
    long min_len = 0, max_len = 1L << 30;
    bool takeover = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--takeover"))
            takeover = true;
        else if (!v && a[0] == '-')
            return fprintf(stderr, "deflate-cost: %s needs a value\n", a), 2;
        else if (!strcmp(a, "--op"))
            op = argv[++i];
        else if (!strcmp(a, "--match"))
            match = argv[++i];
        else if (!strcmp(a, "--strategy"))
            strategy = argv[++i];
        else if (!strcmp(a, "--level"))
            level = atoi(argv[++i]);
        else if (!strcmp(a, "--mem-level"))
            mem_level = atoi(argv[++i]);
        else if (!strcmp(a, "--window-bits"))
            window_bits = atoi(argv[++i]);
        else if (!strcmp(a, "--min-len"))
            min_len = atol(argv[++i]);
        else if (!strcmp(a, "--max-len"))
            max_len = atol(argv[++i]);
        else if (a[0] != '-' && !path)
            path = a;
        else
            return fprintf(stderr, "deflate-cost: unknown argument %s (see the header)\n", a), 2;
    }
    int strat = !strcmp(strategy, "huffman") ? Z_HUFFMAN_ONLY
              : !strcmp(strategy, "fixed")   ? Z_FIXED
              : !strcmp(strategy, "rle")     ? Z_RLE
                                             : Z_DEFAULT_STRATEGY;
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f)
        return fprintf(stderr, "deflate-cost: cannot read %s\n", path ? path : "(no file given)"), 2;

    /* Read the frames first, so the counted loop only compresses. */
    size_t n = 0, cap = 0;
    char **msg = NULL;
    size_t *len = NULL;
    char lead[64];
    snprintf(lead, sizeof lead, "{\"op\":\"%s\"", op);
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    while ((got = getline(&line, &lcap, f)) > 0) {
        size_t l = (size_t)got;
        if (line[l - 1] == '\n')
            line[--l] = 0;
        if ((long)l < min_len || (long)l > max_len || strncmp(line, lead, strlen(lead)) ||
            (match && !strstr(line, match)))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            msg = realloc(msg, cap * sizeof *msg);
            len = realloc(len, cap * sizeof *len);
            if (!msg || !len)
                return 1;
        }
        msg[n] = strdup(line);
        len[n++] = l;
    }
    fclose(f);
    free(line);
    if (!n)
        return fprintf(stderr, "deflate-cost: no frame matched\n"), 1;
    size_t max = 0;
    for (size_t i = 0; i < n; i++)
        max = len[i] > max ? len[i] : max;

    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, level, Z_DEFLATED, -window_bits, mem_level, strat) != Z_OK)
        return fprintf(stderr, "deflate-cost: zlib refused those parameters\n"), 2;
    size_t out_cap = deflateBound(&z, max) + 64;
    unsigned char *out = malloc(out_cap);
    if (!out)
        return 1;
    size_t plain = 0, wire = 0;
    CALLGRIND_TOGGLE_COLLECT;
    for (size_t i = 0; i < n; i++) {
        if (!takeover)
            deflateReset(&z);
        z.next_in = (unsigned char *)msg[i];
        z.avail_in = (uInt)len[i];
        z.next_out = out;
        z.avail_out = (uInt)out_cap;
        deflate(&z, Z_SYNC_FLUSH);
        size_t c = out_cap - z.avail_out - 4; /* less 00 00 ff ff (RFC 7692 7.2.1) */
        if (!takeover && c >= len[i])
            c = len[i]; /* chorusd sends it as it is */
        plain += len[i] + ws_header(len[i]);
        wire += c + ws_header(c);
    }
    CALLGRIND_TOGGLE_COLLECT;
    printf("{\"messages\":%zu,\"level\":%d,\"strategy\":\"%s\",\"mem_level\":%d,\"window_bits\":%d,"
           "\"takeover\":%s,\"plain_bytes_per_msg\":%.1f,\"deflate_bytes_per_msg\":%.1f,\"ratio\":%.2f}\n",
           n, level, strategy, mem_level, window_bits, takeover ? "true" : "false", (double)plain / (double)n,
           (double)wire / (double)n, (double)plain / (double)wire);
    deflateEnd(&z);
    free(out);
    for (size_t i = 0; i < n; i++)
        free(msg[i]);
    free(msg);
    free(len);
    return 0;
}
