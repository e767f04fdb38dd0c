/* test_codec.c - the protocol v1 codec: request decoding, channel names, msg
 * encoding and the error table (PROTOCOL.md sections 2 and 3).
 *
 * Every decode test checks the exact error code, because the code is the part
 * of an `err` frame clients are allowed to depend on, and that a failed decode
 * leaves the request owning nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "envelope.h"

/* ------------------------------------------------------------- helpers */

/* Decodes a NUL-terminated frame that is expected to succeed. */
static void decode_ok(const char *text, struct codec_request *req)
{
    struct codec_error err;
    memset(&err, 0, sizeof err);
    bool ok = codec_decode_request(text, strlen(text), req, &err);
    if (!ok)
        fail_msg("decoding %s failed: %s: %s", text, chorus_err_str(err.code), err.msg);
    assert_non_null(req->root);
}

/* Decodes len bytes that must fail with `code`; returns the error and leaves
 * the (ownerless) request in *req so callers can inspect has_id/id. */
static struct codec_error decode_fails_len(const char *buf, size_t len, enum chorus_err code,
                                           struct codec_request *req)
{
    struct codec_error err;
    memset(&err, 0, sizeof err);
    bool ok = codec_decode_request(buf, len, req, &err);
    if (ok) {
        codec_request_free(req);
        fail_msg("decoding %.*s succeeded, expected %s", (int)(len > 200 ? 200 : len), buf,
                 chorus_err_str(code));
    }
    if (err.code != code)
        fail_msg("decoding %.*s: expected %s, got %s (%s)", (int)(len > 200 ? 200 : len), buf,
                 chorus_err_str(code), chorus_err_str(err.code), err.msg);
    /* A failed decode owns nothing, and the message is a bounded C string. */
    assert_null(req->root);
    assert_non_null(memchr(err.msg, '\0', sizeof err.msg));
    assert_true(strlen(err.msg) > 0);
    return err;
}

static struct codec_error decode_fails(const char *text, enum chorus_err code,
                                       struct codec_request *req)
{
    return decode_fails_len(text, strlen(text), code, req);
}

static void expect_error(const char *text, enum chorus_err code)
{
    struct codec_request req;
    decode_fails(text, code, &req);
}

/* "{\"op\":\"sub\",\"ch\":\"aaaa...\"}" with a channel of n copies of c. */
static char *sub_frame_with_channel(size_t n, char c)
{
    char *ch = malloc(n + 1);
    memset(ch, c, n);
    ch[n] = '\0';
    size_t cap = n + 64;
    char *frame = malloc(cap);
    snprintf(frame, cap, "{\"op\":\"sub\",\"id\":3,\"ch\":\"%s\"}", ch);
    free(ch);
    return frame;
}

/* -------------------------------------------------------- every op decodes */

static void test_sub_decodes_channel_and_id(void **state)
{
    (void)state;
    struct codec_request req;
    decode_ok("{\"op\":\"sub\",\"id\":1,\"ch\":\"room:lobby\"}", &req);
    assert_int_equal(req.op, CODEC_OP_SUB);
    assert_true(req.has_id);
    assert_int_equal(req.id, 1);
    assert_int_equal(req.ch_len, strlen("room:lobby"));
    assert_string_equal(req.ch, "room:lobby");
    assert_false(req.has_since);
    assert_false(req.has_limit);
    assert_null(req.data);
    codec_request_free(&req);
    assert_null(req.root);
}

static void test_sub_with_since_parses_epoch_and_seq(void **state)
{
    (void)state;
    struct codec_request req;
    decode_ok("{\"op\":\"sub\",\"id\":2,\"ch\":\"room:lobby\","
              "\"since\":{\"epoch\":\"mi2x5f0b-1\",\"seq\":38}}",
              &req);
    assert_int_equal(req.op, CODEC_OP_SUB);
    assert_true(req.has_since);
    assert_string_equal(req.since_epoch, "mi2x5f0b-1");
    assert_int_equal(req.since_seq, 38);
    codec_request_free(&req);
}

static void test_since_epoch_of_64_bytes_is_accepted(void **state)
{
    (void)state;
    char frame[256];
    char epoch[CODEC_EPOCH_MAX + 1];
    memset(epoch, 'e', CODEC_EPOCH_MAX);
    epoch[CODEC_EPOCH_MAX] = '\0';
    snprintf(frame, sizeof frame,
             "{\"op\":\"sub\",\"ch\":\"a\",\"since\":{\"epoch\":\"%s\",\"seq\":0}}", epoch);
    struct codec_request req;
    decode_ok(frame, &req);
    assert_true(req.has_since);
    assert_string_equal(req.since_epoch, epoch);
    assert_int_equal(req.since_seq, 0);
    codec_request_free(&req);
}

static void test_unsub_decodes_channel(void **state)
{
    (void)state;
    struct codec_request req;
    decode_ok("{\"op\":\"unsub\",\"id\":3,\"ch\":\"room:lobby\"}", &req);
    assert_int_equal(req.op, CODEC_OP_UNSUB);
    assert_string_equal(req.ch, "room:lobby");
    assert_int_equal(req.id, 3);
    codec_request_free(&req);
}

static void test_pub_decodes_data_by_reference_into_root(void **state)
{
    (void)state;
    struct codec_request req;
    decode_ok("{\"op\":\"pub\",\"id\":4,\"ch\":\"room:lobby\","
              "\"data\":{\"text\":\"hi\",\"from\":\"ann\"}}",
              &req);
    assert_int_equal(req.op, CODEC_OP_PUB);
    assert_string_equal(req.ch, "room:lobby");
    assert_non_null(req.data);
    assert_true(json_is_object(req.data));
    assert_ptr_equal(req.data, json_object_get(req.root, "data"));
    assert_string_equal(json_string_value(json_object_get(req.data, "text")), "hi");
    assert_string_equal(json_string_value(json_object_get(req.data, "from")), "ann");
    codec_request_free(&req);
}

static void test_pub_accepts_every_json_type_as_data(void **state)
{
    (void)state;
    static const char *const values[] = {"[1,2]", "\"s\"", "3", "-2.5", "true", "false", "{}"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char frame[128];
        snprintf(frame, sizeof frame, "{\"op\":\"pub\",\"ch\":\"a\",\"data\":%s}", values[i]);
        struct codec_request req;
        decode_ok(frame, &req);
        json_t *want = json_loads(values[i], JSON_DECODE_ANY, NULL);
        assert_non_null(want);
        assert_true(json_equal(req.data, want));
        json_decref(want);
        codec_request_free(&req);
    }
}

static void test_pub_with_null_data_is_accepted(void **state)
{
    (void)state;
    struct codec_request req;
    decode_ok("{\"op\":\"pub\",\"ch\":\"a\",\"data\":null}", &req);
    assert_int_equal(req.op, CODEC_OP_PUB);
    /* data is the JSON null, not a missing value. */
    assert_non_null(req.data);
    assert_true(json_is_null(req.data));
    assert_false(req.has_id);
    codec_request_free(&req);
}

static void test_history_decodes_limit_and_since(void **state)
{
    (void)state;
    struct codec_request req;
    decode_ok("{\"op\":\"history\",\"id\":5,\"ch\":\"room:lobby\",\"limit\":2,"
              "\"since\":{\"epoch\":\"e-1\",\"seq\":7}}",
              &req);
    assert_int_equal(req.op, CODEC_OP_HISTORY);
    assert_true(req.has_limit);
    assert_int_equal(req.limit, 2);
    assert_true(req.has_since);
    assert_string_equal(req.since_epoch, "e-1");
    assert_int_equal(req.since_seq, 7);
    codec_request_free(&req);
}

static void test_history_without_limit_has_no_limit(void **state)
{
    (void)state;
    struct codec_request req;
    decode_ok("{\"op\":\"history\",\"ch\":\"a\"}", &req);
    assert_int_equal(req.op, CODEC_OP_HISTORY);
    assert_false(req.has_limit);
    assert_false(req.has_since);
    codec_request_free(&req);
}

static void test_history_limit_zero_is_accepted(void **state)
{
    (void)state;
    struct codec_request req;
    decode_ok("{\"op\":\"history\",\"ch\":\"a\",\"limit\":0}", &req);
    assert_true(req.has_limit);
    assert_int_equal(req.limit, 0);
    codec_request_free(&req);
}

static void test_presence_decodes_channel(void **state)
{
    (void)state;
    struct codec_request req;
    decode_ok("{\"op\":\"presence\",\"id\":6,\"ch\":\"room:lobby\"}", &req);
    assert_int_equal(req.op, CODEC_OP_PRESENCE);
    assert_string_equal(req.ch, "room:lobby");
    codec_request_free(&req);
}

static void test_ping_needs_no_channel(void **state)
{
    (void)state;
    struct codec_request req;
    decode_ok("{\"op\":\"ping\",\"id\":7}", &req);
    assert_int_equal(req.op, CODEC_OP_PING);
    assert_int_equal(req.id, 7);
    assert_null(req.ch);
    codec_request_free(&req);
}

static void test_request_without_id_has_no_id(void **state)
{
    (void)state;
    struct codec_request req;
    decode_ok("{\"op\":\"ping\"}", &req);
    assert_false(req.has_id);
    codec_request_free(&req);
}

static void test_unknown_fields_are_ignored(void **state)
{
    (void)state;
    struct codec_request req;
    decode_ok("{\"op\":\"sub\",\"ch\":\"a\",\"extra\":[1,{\"x\":null}],\"v\":2}", &req);
    assert_int_equal(req.op, CODEC_OP_SUB);
    codec_request_free(&req);
}

static void test_since_and_limit_are_ignored_on_ops_that_do_not_take_them(void **state)
{
    (void)state;
    struct codec_request req;
    /* Malformed since/limit on pub would be an error on sub/history. */
    decode_ok("{\"op\":\"pub\",\"ch\":\"a\",\"data\":1,\"since\":5,\"limit\":-1}", &req);
    assert_false(req.has_since);
    assert_false(req.has_limit);
    codec_request_free(&req);
    decode_ok("{\"op\":\"sub\",\"ch\":\"a\",\"limit\":-1}", &req);
    assert_false(req.has_limit);
    codec_request_free(&req);
}

static void test_id_bounds_zero_and_two_pow_53_minus_one_are_accepted(void **state)
{
    (void)state;
    struct codec_request req;
    decode_ok("{\"op\":\"ping\",\"id\":0}", &req);
    assert_true(req.has_id);
    assert_int_equal(req.id, 0);
    codec_request_free(&req);
    decode_ok("{\"op\":\"ping\",\"id\":9007199254740991}", &req);
    assert_true(req.has_id);
    assert_true(req.id == CODEC_ID_MAX);
    codec_request_free(&req);
}

/* ------------------------------------------------------- malformed frames */

static void test_not_json_is_bad_request(void **state)
{
    (void)state;
    struct codec_request req;
    struct codec_error err = decode_fails("x", CHORUS_ERR_BAD_REQUEST, &req);
    assert_non_null(strstr(err.msg, "invalid JSON"));
    expect_error("", CHORUS_ERR_BAD_REQUEST);
    expect_error("{\"op\":\"ping\"", CHORUS_ERR_BAD_REQUEST);
    expect_error("{'op':'ping'}", CHORUS_ERR_BAD_REQUEST);
}

static void test_trailing_bytes_after_the_object_are_bad_request(void **state)
{
    (void)state;
    expect_error("{\"op\":\"ping\"} x", CHORUS_ERR_BAD_REQUEST);
    expect_error("{\"op\":\"ping\"}{\"op\":\"ping\"}", CHORUS_ERR_BAD_REQUEST);
}

static void test_json_that_is_not_an_object_is_bad_request(void **state)
{
    (void)state;
    expect_error("[{\"op\":\"ping\"}]", CHORUS_ERR_BAD_REQUEST);
    expect_error("\"ping\"", CHORUS_ERR_BAD_REQUEST);
    expect_error("42", CHORUS_ERR_BAD_REQUEST);
    expect_error("null", CHORUS_ERR_BAD_REQUEST);
}

static void test_invalid_utf8_is_bad_request(void **state)
{
    (void)state;
    expect_error("{\"op\":\"pub\",\"ch\":\"a\",\"data\":\"\xff\xfe\"}", CHORUS_ERR_BAD_REQUEST);
    /* An overlong encoding of '/' and a lone continuation byte. */
    expect_error("{\"op\":\"pub\",\"ch\":\"a\",\"data\":\"\xc0\xaf\"}", CHORUS_ERR_BAD_REQUEST);
    expect_error("{\"op\":\"ping\",\"x\":\"\x80\"}", CHORUS_ERR_BAD_REQUEST);
}

static void test_raw_nul_byte_in_the_frame_is_bad_request(void **state)
{
    (void)state;
    static const char frame[] = "{\"op\":\"ping\",\"x\":\"a\0b\"}";
    struct codec_request req;
    decode_fails_len(frame, sizeof frame - 1, CHORUS_ERR_BAD_REQUEST, &req);
}

static void test_ten_thousand_nested_brackets_are_bad_request(void **state)
{
    (void)state;
    size_t depth = 10000;
    char *frame = malloc(depth * 2 + 64);
    size_t n = (size_t)sprintf(frame, "{\"op\":\"pub\",\"ch\":\"a\",\"data\":");
    memset(frame + n, '[', depth);
    n += depth;
    memset(frame + n, ']', depth);
    n += depth;
    frame[n++] = '}';
    struct codec_request req;
    decode_fails_len(frame, n, CHORUS_ERR_BAD_REQUEST, &req);
    /* Unbalanced, as a fuzzer or attacker would send it. */
    memset(frame, '[', depth);
    decode_fails_len(frame, depth, CHORUS_ERR_BAD_REQUEST, &req);
    free(frame);
}

static void test_duplicate_keys_are_rejected(void **state)
{
    (void)state;
    expect_error("{\"op\":\"ping\",\"op\":\"ping\"}", CHORUS_ERR_BAD_REQUEST);
    /* The dangerous case: two readers could disagree about the channel. */
    expect_error("{\"op\":\"pub\",\"ch\":\"a\",\"ch\":\"b\",\"data\":1}", CHORUS_ERR_BAD_REQUEST);
    expect_error("{\"op\":\"ping\",\"id\":1,\"id\":2}", CHORUS_ERR_BAD_REQUEST);
}

/* ----------------------------------------------------------------- the id */

static void test_id_that_is_not_an_integer_is_bad_request(void **state)
{
    (void)state;
    struct codec_request req;
    decode_fails("{\"op\":\"ping\",\"id\":\"1\"}", CHORUS_ERR_BAD_REQUEST, &req);
    assert_false(req.has_id);
    expect_error("{\"op\":\"ping\",\"id\":1.5}", CHORUS_ERR_BAD_REQUEST);
    expect_error("{\"op\":\"ping\",\"id\":1.0}", CHORUS_ERR_BAD_REQUEST);
    expect_error("{\"op\":\"ping\",\"id\":true}", CHORUS_ERR_BAD_REQUEST);
    expect_error("{\"op\":\"ping\",\"id\":null}", CHORUS_ERR_BAD_REQUEST);
    expect_error("{\"op\":\"ping\",\"id\":[1]}", CHORUS_ERR_BAD_REQUEST);
}

static void test_negative_id_is_bad_request(void **state)
{
    (void)state;
    struct codec_request req;
    decode_fails("{\"op\":\"ping\",\"id\":-1}", CHORUS_ERR_BAD_REQUEST, &req);
    assert_false(req.has_id);
}

static void test_id_above_two_pow_53_minus_one_is_bad_request(void **state)
{
    (void)state;
    struct codec_request req;
    decode_fails("{\"op\":\"ping\",\"id\":9007199254740992}", CHORUS_ERR_BAD_REQUEST, &req);
    assert_false(req.has_id);
    expect_error("{\"op\":\"ping\",\"id\":9223372036854775807}", CHORUS_ERR_BAD_REQUEST);
    /* Too big for any integer type. */
    expect_error("{\"op\":\"ping\",\"id\":99999999999999999999999}", CHORUS_ERR_BAD_REQUEST);
}

static void test_id_is_kept_when_the_op_is_unknown(void **state)
{
    (void)state;
    struct codec_request req;
    struct codec_error err =
        decode_fails("{\"op\":\"subscribe\",\"id\":9}", CHORUS_ERR_UNKNOWN_OP, &req);
    assert_true(req.has_id);
    assert_int_equal(req.id, 9);
    assert_non_null(strstr(err.msg, "subscribe"));
}

static void test_id_is_kept_when_the_op_is_missing_or_the_channel_is_bad(void **state)
{
    (void)state;
    struct codec_request req;
    decode_fails("{\"id\":11}", CHORUS_ERR_BAD_REQUEST, &req);
    assert_true(req.has_id);
    assert_int_equal(req.id, 11);
    decode_fails("{\"id\":12,\"op\":\"sub\",\"ch\":\"bad channel\"}", CHORUS_ERR_BAD_CHANNEL, &req);
    assert_true(req.has_id);
    assert_int_equal(req.id, 12);
    decode_fails("{\"id\":13,\"op\":\"pub\",\"ch\":\"a\"}", CHORUS_ERR_BAD_REQUEST, &req);
    assert_true(req.has_id);
    assert_int_equal(req.id, 13);
    decode_fails("{\"id\":14,\"op\":\"history\",\"ch\":\"a\",\"limit\":-1}", CHORUS_ERR_BAD_REQUEST,
                 &req);
    assert_true(req.has_id);
    assert_int_equal(req.id, 14);
}

/* ----------------------------------------------------------------- the op */

static void test_missing_op_is_bad_request(void **state)
{
    (void)state;
    struct codec_request req;
    decode_fails("{\"ch\":\"a\"}", CHORUS_ERR_BAD_REQUEST, &req);
    assert_false(req.has_id);
    expect_error("{}", CHORUS_ERR_BAD_REQUEST);
}

static void test_op_that_is_not_a_string_is_bad_request(void **state)
{
    (void)state;
    expect_error("{\"op\":1}", CHORUS_ERR_BAD_REQUEST);
    expect_error("{\"op\":null}", CHORUS_ERR_BAD_REQUEST);
    expect_error("{\"op\":[\"ping\"]}", CHORUS_ERR_BAD_REQUEST);
    expect_error("{\"op\":{\"ping\":1}}", CHORUS_ERR_BAD_REQUEST);
}

static void test_unknown_op_is_unknown_op(void **state)
{
    (void)state;
    expect_error("{\"op\":\"subscribe\"}", CHORUS_ERR_UNKNOWN_OP);
    expect_error("{\"op\":\"\"}", CHORUS_ERR_UNKNOWN_OP);
    expect_error("{\"op\":\"PING\"}", CHORUS_ERR_UNKNOWN_OP);
    /* Prefixes and extensions of real ops are not those ops. */
    expect_error("{\"op\":\"pin\"}", CHORUS_ERR_UNKNOWN_OP);
    expect_error("{\"op\":\"pings\"}", CHORUS_ERR_UNKNOWN_OP);
    /* An embedded NUL must not truncate the comparison. */
    expect_error("{\"op\":\"ping\\u0000\"}", CHORUS_ERR_UNKNOWN_OP);
}

static void test_unknown_op_message_is_truncated_for_long_names(void **state)
{
    (void)state;
    char frame[1200];
    char op[1001];
    memset(op, 'z', 1000);
    op[1000] = '\0';
    snprintf(frame, sizeof frame, "{\"op\":\"%s\",\"id\":1}", op);
    struct codec_request req;
    struct codec_error err = decode_fails(frame, CHORUS_ERR_UNKNOWN_OP, &req);
    assert_true(strlen(err.msg) < 100);
    assert_non_null(strstr(err.msg, "zzzz"));
    assert_true(req.has_id);
}

/* ------------------------------------------------------------ the channel */

static void test_missing_channel_is_bad_channel(void **state)
{
    (void)state;
    static const char *const ops[] = {"sub", "unsub", "pub", "history", "presence"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        char frame[128];
        snprintf(frame, sizeof frame, "{\"op\":\"%s\",\"data\":1}", ops[i]);
        expect_error(frame, CHORUS_ERR_BAD_CHANNEL);
    }
}

static void test_channel_that_is_not_a_string_is_bad_channel(void **state)
{
    (void)state;
    expect_error("{\"op\":\"sub\",\"ch\":1}", CHORUS_ERR_BAD_CHANNEL);
    expect_error("{\"op\":\"sub\",\"ch\":null}", CHORUS_ERR_BAD_CHANNEL);
    expect_error("{\"op\":\"sub\",\"ch\":[\"a\"]}", CHORUS_ERR_BAD_CHANNEL);
}

static void test_empty_channel_is_bad_channel(void **state)
{
    (void)state;
    expect_error("{\"op\":\"sub\",\"ch\":\"\"}", CHORUS_ERR_BAD_CHANNEL);
}

static void test_channel_of_255_bytes_is_accepted(void **state)
{
    (void)state;
    char *frame = sub_frame_with_channel(255, 'c');
    struct codec_request req;
    decode_ok(frame, &req);
    assert_int_equal(req.ch_len, 255);
    assert_int_equal(strlen(req.ch), 255);
    codec_request_free(&req);
    free(frame);
}

static void test_channel_of_256_bytes_is_bad_channel(void **state)
{
    (void)state;
    char *frame = sub_frame_with_channel(256, 'c');
    struct codec_request req;
    decode_fails(frame, CHORUS_ERR_BAD_CHANNEL, &req);
    assert_true(req.has_id);
    assert_int_equal(req.id, 3);
    free(frame);
}

static void test_channel_with_a_byte_outside_the_alphabet_is_bad_channel(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "room lobby", "room\\\"x", "a*", "a#b", "caf\xc3\xa9", "a\\u0000b", "a\\n", "a,b", "a+b",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char frame[128];
        snprintf(frame, sizeof frame, "{\"op\":\"sub\",\"ch\":\"%s\"}", bad[i]);
        expect_error(frame, CHORUS_ERR_BAD_CHANNEL);
    }
}

static void test_channel_with_every_allowed_punctuation_is_accepted(void **state)
{
    (void)state;
    struct codec_request req;
    decode_ok("{\"op\":\"sub\",\"ch\":\"Az09_.:@/-\"}", &req);
    assert_string_equal(req.ch, "Az09_.:@/-");
    codec_request_free(&req);
}

/* ------------------------------------------------------- other bad fields */

static void test_pub_without_data_is_bad_request(void **state)
{
    (void)state;
    struct codec_request req;
    struct codec_error err =
        decode_fails("{\"op\":\"pub\",\"id\":4,\"ch\":\"a\"}", CHORUS_ERR_BAD_REQUEST, &req);
    assert_non_null(strstr(err.msg, "data"));
}

static void test_malformed_since_is_bad_request(void **state)
{
    (void)state;
    static const char *const since[] = {
        "5",
        "\"e-1\"",
        "null",
        "[\"e-1\",3]",
        "{}",
        "{\"epoch\":\"e-1\"}",
        "{\"seq\":3}",
        "{\"epoch\":1,\"seq\":3}",
        "{\"epoch\":\"e-1\",\"seq\":\"3\"}",
        "{\"epoch\":\"e-1\",\"seq\":3.5}",
        "{\"epoch\":\"e-1\",\"seq\":-1}",
        /* 65 bytes: one more than CODEC_EPOCH_MAX. */
        "{\"epoch\":\"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\",\"seq\":1}",
    };
    for (size_t i = 0; i < sizeof since / sizeof since[0]; i++) {
        char frame[256];
        snprintf(frame, sizeof frame, "{\"op\":\"sub\",\"id\":5,\"ch\":\"a\",\"since\":%s}",
                 since[i]);
        struct codec_request req;
        decode_fails(frame, CHORUS_ERR_BAD_REQUEST, &req);
        assert_true(req.has_id);
        snprintf(frame, sizeof frame, "{\"op\":\"history\",\"ch\":\"a\",\"since\":%s}", since[i]);
        expect_error(frame, CHORUS_ERR_BAD_REQUEST);
    }
}

static void test_negative_or_mistyped_limit_is_bad_request(void **state)
{
    (void)state;
    expect_error("{\"op\":\"history\",\"ch\":\"a\",\"limit\":-1}", CHORUS_ERR_BAD_REQUEST);
    expect_error("{\"op\":\"history\",\"ch\":\"a\",\"limit\":\"2\"}", CHORUS_ERR_BAD_REQUEST);
    expect_error("{\"op\":\"history\",\"ch\":\"a\",\"limit\":2.5}", CHORUS_ERR_BAD_REQUEST);
    expect_error("{\"op\":\"history\",\"ch\":\"a\",\"limit\":null}", CHORUS_ERR_BAD_REQUEST);
}

/* ---------------------------------------------------------- channel names */

static void test_channel_valid_accepts_one_to_255_allowed_bytes(void **state)
{
    (void)state;
    char name[300];
    memset(name, 'a', sizeof name);
    assert_true(codec_channel_valid("a", 1));
    assert_true(codec_channel_valid(name, 255));
    assert_false(codec_channel_valid(name, 256));
    assert_false(codec_channel_valid("", 0));
    assert_false(codec_channel_valid(NULL, 3));
    assert_true(codec_channel_valid("room:lobby/x@y.z-1_2", strlen("room:lobby/x@y.z-1_2")));
    /* Only len bytes are looked at. */
    assert_true(codec_channel_valid("ab cd", 2));
    assert_false(codec_channel_valid("ab cd", 3));
}

static void test_channel_valid_checks_every_byte_value(void **state)
{
    (void)state;
    static const char allowed[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:@/-";
    for (int b = 0; b < 256; b++) {
        char name[3] = {'x', (char)b, 'y'};
        bool want = b != 0 && strchr(allowed, b) != NULL;
        if (codec_channel_valid(name, 3) != want)
            fail_msg("byte 0x%02x: expected %s", b, want ? "valid" : "invalid");
    }
}

static void test_channel_ns_len_is_the_length_before_the_first_colon(void **state)
{
    (void)state;
    assert_int_equal(codec_channel_ns_len("room:lobby", 10), 4);
    assert_int_equal(codec_channel_ns_len("a:b:c", 5), 1);
    assert_int_equal(codec_channel_ns_len("lobby", 5), 0);
    assert_int_equal(codec_channel_ns_len(":x", 2), 0);
    /* A colon past len does not count. */
    assert_int_equal(codec_channel_ns_len("room:lobby", 4), 0);
}

/* ------------------------------------------------------------ msg frames */

static json_t *parse_exact(const char *buf, size_t len)
{
    json_error_t jerr;
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!j)
        fail_msg("encoded frame does not parse: %s: %.*s", jerr.text, (int)len, buf);
    return j;
}

static void test_encode_msg_parses_back_to_the_right_fields(void **state)
{
    (void)state;
    json_t *data = json_pack("{s:s, s:[i, b, n], s:s}", "text", "hi \"there\"\n\\", "list", 1, 1,
                             "u", "caf\xc3\xa9 </script>");
    char out[512];
    size_t n = codec_encode_msg(out, sizeof out, "room:lobby", 10, 42, 1795000000999LL,
                                "c5f1e2a0000001", data);
    assert_true(n > 0 && n <= sizeof out);
    json_t *msg = parse_exact(out, n);
    assert_int_equal(json_object_size(msg), 6);
    assert_string_equal(json_string_value(json_object_get(msg, "op")), "msg");
    assert_string_equal(json_string_value(json_object_get(msg, "ch")), "room:lobby");
    assert_true(json_integer_value(json_object_get(msg, "seq")) == 42);
    assert_true(json_integer_value(json_object_get(msg, "ts")) == 1795000000999LL);
    assert_string_equal(json_string_value(json_object_get(msg, "client")), "c5f1e2a0000001");
    assert_true(json_equal(json_object_get(msg, "data"), data));
    json_decref(msg);
    json_decref(data);
}

static void test_encode_msg_uses_only_ch_len_bytes_of_the_channel(void **state)
{
    (void)state;
    json_t *data = json_integer(1);
    char out[256];
    size_t n = codec_encode_msg(out, sizeof out, "room:lobbyXYZ", 10, 1, 0, NULL, data);
    json_t *msg = parse_exact(out, n);
    assert_string_equal(json_string_value(json_object_get(msg, "ch")), "room:lobby");
    json_decref(msg);
    json_decref(data);
}

static void test_encode_msg_omits_client_when_null(void **state)
{
    (void)state;
    json_t *data = json_null();
    char out[256];
    size_t n = codec_encode_msg(out, sizeof out, "a", 1, 7, 123, NULL, data);
    assert_true(n > 0 && n <= sizeof out);
    json_t *msg = parse_exact(out, n);
    assert_null(json_object_get(msg, "client"));
    assert_int_equal(json_object_size(msg), 5);
    assert_true(json_is_null(json_object_get(msg, "data")));
    assert_true(json_integer_value(json_object_get(msg, "seq")) == 7);
    json_decref(msg);
}

static void test_encode_msg_of_a_scalar_string_data_round_trips(void **state)
{
    (void)state;
    json_t *data = json_string("just text");
    char out[256];
    size_t n = codec_encode_msg(out, sizeof out, "a", 1, 1, 1, "c1", data);
    json_t *msg = parse_exact(out, n);
    assert_true(json_equal(json_object_get(msg, "data"), data));
    json_decref(msg);
    json_decref(data);
}

static void test_encode_msg_returns_the_needed_size_when_the_buffer_is_too_small(void **state)
{
    (void)state;
    json_t *data = json_pack("{s:s}", "text", "a fairly long payload so data is not tiny");
    char big[512];
    size_t need = codec_encode_msg(big, sizeof big, "room:lobby", 10, 5, 99, "c1", data);
    assert_true(need > 0 && need <= sizeof big);

    /* Every smaller capacity reports the same size and writes nothing past cap. */
    for (size_t cap = 0; cap < need; cap++) {
        char *out = malloc(cap + 16);
        memset(out, 0x5a, cap + 16);
        size_t got = codec_encode_msg(cap ? out : NULL, cap, "room:lobby", 10, 5, 99, "c1", data);
        if (got != need)
            fail_msg("cap %zu: returned %zu, expected %zu", cap, got, need);
        for (size_t i = cap; i < cap + 16; i++)
            if ((unsigned char)out[i] != 0x5a)
                fail_msg("cap %zu: byte %zu past the buffer was written", cap, i);
        free(out);
    }

    /* Exactly the needed size is enough and gives the same bytes. */
    char *exact = malloc(need);
    assert_int_equal(codec_encode_msg(exact, need, "room:lobby", 10, 5, 99, "c1", data), need);
    assert_memory_equal(exact, big, need);
    free(exact);
    json_decref(data);
}

static void test_encode_msg_returns_zero_when_the_header_cannot_fit(void **state)
{
    (void)state;
    /* The client id is documented as short ASCII; a huge one cannot be encoded. */
    char client[1024];
    memset(client, 'c', sizeof client - 1);
    client[sizeof client - 1] = '\0';
    json_t *data = json_integer(1);
    char out[4096];
    assert_int_equal(codec_encode_msg(out, sizeof out, "a", 1, 1, 1, client, data), 0);
    json_decref(data);
}

/* ----------------------------------------------------------- error table */

static void test_error_codes_map_to_their_wire_strings_and_http_statuses(void **state)
{
    (void)state;
    static const struct {
        enum chorus_err code;
        const char *str;
        int http;
    } want[] = {
        {CHORUS_ERR_BAD_REQUEST, "bad_request", 400},
        {CHORUS_ERR_UNKNOWN_OP, "unknown_op", 400},
        {CHORUS_ERR_BAD_CHANNEL, "bad_channel", 400},
        {CHORUS_ERR_TOO_LARGE, "too_large", 413},
        {CHORUS_ERR_FORBIDDEN, "forbidden", 403},
        {CHORUS_ERR_NOT_SUBSCRIBED, "not_subscribed", 400},
        {CHORUS_ERR_LIMIT_REACHED, "limit_reached", 429},
        {CHORUS_ERR_RATE_LIMITED, "rate_limited", 429},
        {CHORUS_ERR_UNAVAILABLE, "unavailable", 503},
        {CHORUS_ERR_UNAUTHORIZED, "unauthorized", 401},
        {CHORUS_ERR_NOT_FOUND, "not_found", 404},
        {CHORUS_ERR_METHOD_NOT_ALLOWED, "method_not_allowed", 405},
    };
    assert_int_equal(sizeof want / sizeof want[0], CHORUS_ERR__COUNT);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_string_equal(chorus_err_str(want[i].code), want[i].str);
        assert_int_equal(chorus_err_http_status(want[i].code), want[i].http);
    }
}

static void test_error_strings_are_distinct(void **state)
{
    (void)state;
    for (int i = 0; i < CHORUS_ERR__COUNT; i++)
        for (int j = i + 1; j < CHORUS_ERR__COUNT; j++)
            assert_string_not_equal(chorus_err_str((enum chorus_err)i),
                                    chorus_err_str((enum chorus_err)j));
}

static void test_out_of_range_error_code_is_internal_500(void **state)
{
    (void)state;
    assert_string_equal(chorus_err_str(CHORUS_ERR__COUNT), "internal");
    assert_int_equal(chorus_err_http_status(CHORUS_ERR__COUNT), 500);
    assert_string_equal(chorus_err_str((enum chorus_err)-1), "internal");
    assert_int_equal(chorus_err_http_status((enum chorus_err)-1), 500);
}

/* ------------------------------------------------------ raw data splicing */

static void test_pub_keeps_the_clients_text_of_data(void **state)
{
    (void)state;
    const char *frame = "{\"op\":\"pub\",\"ch\":\"t\",\"data\": {\"p\":317.47, \"s\":\"a\\\"}\"} ,\"id\":1}";
    struct codec_request req;
    struct codec_error err;
    assert_true(codec_decode_request(frame, strlen(frame), &req, &err));
    assert_int_equal(req.data_raw_len, strlen("{\"p\":317.47, \"s\":\"a\\\"}\"}"));
    assert_memory_equal(req.data_raw, "{\"p\":317.47, \"s\":\"a\\\"}\"}", req.data_raw_len);
    codec_request_free(&req);
}

static void test_pub_with_an_escaped_data_key_is_re_encoded(void **state)
{
    (void)state;
    const char *frame = "{\"op\":\"pub\",\"ch\":\"t\",\"d\\u0061ta\":[1,2]}";
    struct codec_request req;
    struct codec_error err;
    assert_true(codec_decode_request(frame, strlen(frame), &req, &err));
    assert_int_equal(req.data_raw_len, 5);
    assert_memory_equal(req.data_raw, "[1,2]", 5);
    codec_request_free(&req);
}

static void test_find_member_skips_nested_values_and_strings(void **state)
{
    (void)state;
    const char *doc = "{\"a\":{\"data\":1,\"x\":[\"}\",{}]},\"b\":\"data\",\"data\":true}";
    const char *v;
    size_t n;
    assert_true(codec_find_member(doc, strlen(doc), "data", &v, &n));
    assert_int_equal(n, 4);
    assert_memory_equal(v, "true", 4);
    assert_false(codec_find_member(doc, strlen(doc), "missing", &v, &n));
}

static void test_encode_msg_raw_splices_data_unchanged(void **state)
{
    (void)state;
    char out[256];
    size_t n = codec_encode_msg_raw(out, sizeof out, "t", 1, 3, 9, NULL, NULL, "1.10", 4);
    assert_int_equal(n, strlen("{\"op\":\"msg\",\"ch\":\"t\",\"seq\":3,\"ts\":9,\"data\":1.10}"));
    assert_memory_equal(out, "{\"op\":\"msg\",\"ch\":\"t\",\"seq\":3,\"ts\":9,\"data\":1.10}", n);
    assert_int_equal(codec_encode_msg_raw(out, 10, "t", 1, 3, 9, NULL, NULL, "1.10", 4), n);
}

static void test_encode_binmsg_is_header_length_header_then_bytes(void **state)
{
    (void)state;
    const char *head = "{\"op\":\"msg\",\"ch\":\"b\",\"seq\":7,\"ts\":5,\"client\":\"c1\"}";
    const unsigned char bytes[3] = {0, 0xff, 'x'};
    unsigned char out[128];
    size_t n = codec_encode_binmsg(out, sizeof out, "b", 1, 7, 5, "c1", NULL, bytes, 3);
    size_t hl = strlen(head);
    assert_int_equal(n, 4 + hl + 3);
    assert_int_equal((size_t)out[0] << 24 | (size_t)out[1] << 16 | (size_t)out[2] << 8 | out[3], hl);
    assert_memory_equal(out + 4, head, hl);
    assert_memory_equal(out + 4 + hl, bytes, 3);
    assert_int_equal(codec_encode_binmsg(out, 8, "b", 1, 7, 5, "c1", NULL, bytes, 3), n);
}

static void test_attested_user_goes_after_client_in_text_and_binary_msgs(void **state)
{
    (void)state;
    json_t *info = json_pack("{s:s}", "name", "A\"nn");
    char *attr = codec_attr("4\"2", info);
    json_decref(info);
    assert_non_null(attr);
    assert_string_equal(attr, ",\"user\":\"4\\\"2\",\"info\":{\"name\":\"A\\\"nn\"}");
    assert_true(codec_attr_valid(attr, strlen(attr)));
    char out[256];
    size_t n = codec_encode_msg_raw(out, sizeof out, "t", 1, 3, 9, "c1", attr, "1", 1);
    json_t *m = json_loadb(out, n, 0, NULL);
    assert_non_null(m);
    assert_string_equal(json_string_value(json_object_get(m, "user")), "4\"2");
    assert_string_equal(json_string_value(json_object_get(json_object_get(m, "info"), "name")), "A\"nn");
    assert_int_equal(json_integer_value(json_object_get(m, "data")), 1);
    json_decref(m);
    unsigned char bin[256];
    n = codec_encode_binmsg(bin, sizeof bin, "b", 1, 7, 5, NULL, attr, (const unsigned char *)"xy", 2);
    size_t hl = (size_t)bin[0] << 24 | (size_t)bin[1] << 16 | (size_t)bin[2] << 8 | bin[3];
    assert_int_equal(n, 4 + hl + 2);
    m = json_loadb((const char *)bin + 4, hl, 0, NULL);
    assert_non_null(m);
    assert_string_equal(json_string_value(json_object_get(m, "user")), "4\"2");
    json_decref(m);
    free(attr);
    assert_false(codec_attr_valid(",\"data\":1", 9));
    assert_false(codec_attr_valid("\"user\":\"x\"", 10));
    assert_false(codec_attr_valid(",\"user\":\"x\"}, {", 15));
}

static void test_sync_item_round_trips_and_checks_its_length(void **state)
{
    (void)state;
    unsigned char p[ENV_SYNC_ITEM_LEN];
    envelope_put_sync_item(p, 0x0102030405060708ull, 1700000000123, ENV_FLAG_BINARY);
    assert_int_equal(p[0], 0x01);
    assert_int_equal(p[7], 0x08);
    uint64_t seq;
    int64_t ts;
    uint8_t flags;
    assert_true(envelope_get_sync_item(p, sizeof p, &seq, &ts, &flags));
    assert_true(seq == 0x0102030405060708ull);
    assert_true(ts == 1700000000123);
    assert_int_equal(flags, ENV_FLAG_BINARY);
    assert_false(envelope_get_sync_item(p, sizeof p - 1, &seq, &ts, &flags));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sub_decodes_channel_and_id),
        cmocka_unit_test(test_sub_with_since_parses_epoch_and_seq),
        cmocka_unit_test(test_since_epoch_of_64_bytes_is_accepted),
        cmocka_unit_test(test_unsub_decodes_channel),
        cmocka_unit_test(test_pub_decodes_data_by_reference_into_root),
        cmocka_unit_test(test_pub_accepts_every_json_type_as_data),
        cmocka_unit_test(test_pub_with_null_data_is_accepted),
        cmocka_unit_test(test_history_decodes_limit_and_since),
        cmocka_unit_test(test_history_without_limit_has_no_limit),
        cmocka_unit_test(test_history_limit_zero_is_accepted),
        cmocka_unit_test(test_presence_decodes_channel),
        cmocka_unit_test(test_ping_needs_no_channel),
        cmocka_unit_test(test_request_without_id_has_no_id),
        cmocka_unit_test(test_unknown_fields_are_ignored),
        cmocka_unit_test(test_since_and_limit_are_ignored_on_ops_that_do_not_take_them),
        cmocka_unit_test(test_id_bounds_zero_and_two_pow_53_minus_one_are_accepted),
        cmocka_unit_test(test_not_json_is_bad_request),
        cmocka_unit_test(test_trailing_bytes_after_the_object_are_bad_request),
        cmocka_unit_test(test_json_that_is_not_an_object_is_bad_request),
        cmocka_unit_test(test_invalid_utf8_is_bad_request),
        cmocka_unit_test(test_raw_nul_byte_in_the_frame_is_bad_request),
        cmocka_unit_test(test_ten_thousand_nested_brackets_are_bad_request),
        cmocka_unit_test(test_duplicate_keys_are_rejected),
        cmocka_unit_test(test_id_that_is_not_an_integer_is_bad_request),
        cmocka_unit_test(test_negative_id_is_bad_request),
        cmocka_unit_test(test_id_above_two_pow_53_minus_one_is_bad_request),
        cmocka_unit_test(test_id_is_kept_when_the_op_is_unknown),
        cmocka_unit_test(test_id_is_kept_when_the_op_is_missing_or_the_channel_is_bad),
        cmocka_unit_test(test_missing_op_is_bad_request),
        cmocka_unit_test(test_op_that_is_not_a_string_is_bad_request),
        cmocka_unit_test(test_unknown_op_is_unknown_op),
        cmocka_unit_test(test_unknown_op_message_is_truncated_for_long_names),
        cmocka_unit_test(test_missing_channel_is_bad_channel),
        cmocka_unit_test(test_channel_that_is_not_a_string_is_bad_channel),
        cmocka_unit_test(test_empty_channel_is_bad_channel),
        cmocka_unit_test(test_channel_of_255_bytes_is_accepted),
        cmocka_unit_test(test_channel_of_256_bytes_is_bad_channel),
        cmocka_unit_test(test_channel_with_a_byte_outside_the_alphabet_is_bad_channel),
        cmocka_unit_test(test_channel_with_every_allowed_punctuation_is_accepted),
        cmocka_unit_test(test_pub_without_data_is_bad_request),
        cmocka_unit_test(test_malformed_since_is_bad_request),
        cmocka_unit_test(test_negative_or_mistyped_limit_is_bad_request),
        cmocka_unit_test(test_channel_valid_accepts_one_to_255_allowed_bytes),
        cmocka_unit_test(test_channel_valid_checks_every_byte_value),
        cmocka_unit_test(test_channel_ns_len_is_the_length_before_the_first_colon),
        cmocka_unit_test(test_encode_msg_parses_back_to_the_right_fields),
        cmocka_unit_test(test_pub_keeps_the_clients_text_of_data),
        cmocka_unit_test(test_pub_with_an_escaped_data_key_is_re_encoded),
        cmocka_unit_test(test_find_member_skips_nested_values_and_strings),
        cmocka_unit_test(test_encode_msg_raw_splices_data_unchanged),
        cmocka_unit_test(test_encode_msg_uses_only_ch_len_bytes_of_the_channel),
        cmocka_unit_test(test_encode_msg_omits_client_when_null),
        cmocka_unit_test(test_encode_msg_of_a_scalar_string_data_round_trips),
        cmocka_unit_test(test_encode_msg_returns_the_needed_size_when_the_buffer_is_too_small),
        cmocka_unit_test(test_encode_msg_returns_zero_when_the_header_cannot_fit),
        cmocka_unit_test(test_encode_binmsg_is_header_length_header_then_bytes),
        cmocka_unit_test(test_sync_item_round_trips_and_checks_its_length),
        cmocka_unit_test(test_error_codes_map_to_their_wire_strings_and_http_statuses),
        cmocka_unit_test(test_error_strings_are_distinct),
        cmocka_unit_test(test_out_of_range_error_code_is_internal_500),
        cmocka_unit_test(test_attested_user_goes_after_client_in_text_and_binary_msgs),
    };
    return cmocka_run_group_tests_name("codec", tests, NULL, NULL);
}
