/* fuzz_codec.c - libFuzzer target for the protocol v1 codec.
 *
 * Feeds arbitrary bytes to codec_decode_request() as one client text frame.
 * A decode either fails with a valid error code and a bounded message and
 * owns nothing, or yields a request whose fields keep the documented
 * invariants. A decoded `pub` is then encoded with codec_encode_msg() the way
 * channel_publish() does it: measured into too small a heap buffer (ASan sees
 * any write past it), then written into an exact one, which must parse back
 * as JSON with the same fields and data. Everything is freed, so LeakSanitizer
 * catches a leak on any path. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

/* Reports a broken invariant as a crash so libFuzzer saves the input. */
#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "fuzz_codec: %s:%d: check failed: %s\n", __FILE__,      \
                    __LINE__, #cond);                                               \
            abort();                                                                \
        }                                                                           \
    } while (0)

static void check_error(const struct codec_request *req, const struct codec_error *err)
{
    CHECK((unsigned)err->code < CHORUS_ERR__COUNT);
    CHECK(err->code == CHORUS_ERR_BAD_REQUEST || err->code == CHORUS_ERR_UNKNOWN_OP ||
          err->code == CHORUS_ERR_BAD_CHANNEL);
    CHECK(memchr(err->msg, '\0', sizeof err->msg) != NULL);
    CHECK(err->msg[0] != '\0');
    CHECK(req->root == NULL);
    CHECK(!req->has_id || (req->id >= 0 && req->id <= CODEC_ID_MAX));
}

static void check_request(const struct codec_request *req)
{
    CHECK(json_is_object(req->root));
    CHECK(!req->has_id || (req->id >= 0 && req->id <= CODEC_ID_MAX));
    if (req->op == CODEC_OP_PING || req->op == CODEC_OP_AUTH) {
        CHECK(req->ch == NULL);
    } else {
        CHECK(req->ch != NULL);
        CHECK(codec_channel_valid(req->ch, req->ch_len));
        CHECK(strlen(req->ch) == req->ch_len);
    }
    CHECK((req->op == CODEC_OP_PUB) == (req->data != NULL));
    if (req->has_since) {
        CHECK(req->op == CODEC_OP_SUB || req->op == CODEC_OP_HISTORY);
        CHECK(memchr(req->since_epoch, '\0', sizeof req->since_epoch) != NULL);
    }
    if (req->has_limit) {
        CHECK(req->op == CODEC_OP_HISTORY);
        CHECK(req->limit >= 0);
    }
}

/* Encodes the pub as the broker would and checks the frame. */
static void check_encode(const struct codec_request *req, const uint8_t *data, size_t size)
{
    /* Vary seq, ts and the client id with the input so they get exercised too. */
    uint64_t seq = 1 + (size > 0 ? data[0] : 0) * 977u;
    int64_t ts = 1795000000000LL + (int64_t)size;
    const char *client = (size & 1) ? "c5f1e2a0000001" : NULL;

    size_t need = codec_encode_msg(NULL, 0, req->ch, req->ch_len, seq, ts, client, req->data);
    CHECK(need > 0);

    /* Too small by a varying amount: must report the same size, write nothing past cap. */
    size_t cap = need > 1 ? (size_t)(data[size / 2] % need) : 0;
    char *small = malloc(cap ? cap : 1);
    CHECK(small != NULL);
    CHECK(codec_encode_msg(small, cap, req->ch, req->ch_len, seq, ts, client, req->data) == need);
    free(small);

    char *out = malloc(need);
    CHECK(out != NULL);
    CHECK(codec_encode_msg(out, need, req->ch, req->ch_len, seq, ts, client, req->data) == need);

    json_error_t jerr;
    json_t *msg = json_loadb(out, need, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!msg)
        fprintf(stderr, "fuzz_codec: encoded msg does not parse (%s): %.*s\n", jerr.text,
                (int)need, out);
    CHECK(msg != NULL);
    CHECK(json_is_object(msg));
    CHECK(!strcmp(json_string_value(json_object_get(msg, "op")), "msg"));
    json_t *ch = json_object_get(msg, "ch");
    CHECK(json_is_string(ch) && json_string_length(ch) == req->ch_len &&
          !memcmp(json_string_value(ch), req->ch, req->ch_len));
    CHECK((uint64_t)json_integer_value(json_object_get(msg, "seq")) == seq);
    CHECK(json_integer_value(json_object_get(msg, "ts")) == ts);
    json_t *cl = json_object_get(msg, "client");
    CHECK(client ? json_is_string(cl) && !strcmp(json_string_value(cl), client) : cl == NULL);
    CHECK(json_equal(json_object_get(msg, "data"), req->data));
    json_decref(msg);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct codec_request req;
    struct codec_error err;

    /* Poison both so a field the decoder forgot to set is noticed. */
    memset(&req, 0xa5, sizeof req);
    memset(&err, 0xa5, sizeof err);
    if (!codec_decode_request((const char *)data, size, &req, &err)) {
        check_error(&req, &err);
        return 0;
    }
    check_request(&req);
    if (req.op == CODEC_OP_PUB)
        check_encode(&req, data, size);
    codec_request_free(&req);
    CHECK(req.root == NULL);
    return 0;
}
