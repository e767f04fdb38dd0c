/* codec.h - the client protocol v1 codec shared by the broker and the C SDK.
 *
 * Decoding turns one client text frame into a validated request; nothing a
 * peer sends can make it fail other than by returning an error code and a
 * message. Encoding builds the `msg` frame that the broker encodes once per
 * publish and shares with every subscriber. */
#ifndef CHORUS_PROTO_CODEC_H
#define CHORUS_PROTO_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "errors.h"

#define CODEC_CHANNEL_MAX 255
#define CODEC_EPOCH_MAX 64
#define CODEC_KEY_MAX 64
/* Request ids must be exactly representable as a JavaScript number. */
#define CODEC_ID_MAX ((1LL << 53) - 1)

enum codec_op {
    CODEC_OP_SUB,
    CODEC_OP_UNSUB,
    CODEC_OP_PUB,
    CODEC_OP_HISTORY,
    CODEC_OP_PRESENCE,
    CODEC_OP_PING,
    CODEC_OP_AUTH,           /* {"op":"auth","token"}: the broker reads "token" from root */
};

/* One decoded client request. Pointers borrow from `root`, which the request
 * owns until codec_request_free(). */
struct codec_request {
    json_t *root;
    enum codec_op op;
    bool has_id;
    long long id;
    const char *ch;          /* validated channel name, NUL-terminated */
    size_t ch_len;
    json_t *data;            /* pub: the payload, any JSON value */
    const char *data_raw;    /* pub: the payload exactly as the client wrote it */
    size_t data_raw_len;
    char *data_owned;        /* backs data_raw when it had to be re-encoded */
    bool has_since;
    char since_epoch[CODEC_EPOCH_MAX + 1];
    uint64_t since_seq;
    bool has_limit;
    long long limit;
    const char *key;         /* pub: idempotency key, NULL when absent */
};

struct codec_error {
    enum chorus_err code;
    char msg[192];
};

/* Decodes one frame. Returns true and fills `req` on success. On failure
 * returns false, fills `err`, and still sets req->has_id/req->id when the id
 * could be read, so the error reply can carry it; req owns nothing then. */
bool codec_decode_request(const char *buf, size_t len, struct codec_request *req,
                          struct codec_error *err);
void codec_request_free(struct codec_request *req);

/* Channel names: 1-255 bytes of [A-Za-z0-9_.:@/-]. */
bool codec_channel_valid(const char *name, size_t len);
/* Length of the namespace part (before the first ':'), 0 when there is none. */
size_t codec_channel_ns_len(const char *name, size_t len);

/* Finds the raw text of top-level member `key` in buf, a valid JSON object
 * (already accepted by jansson). False when absent, or when the key is
 * written with escapes (the caller then re-encodes the parsed value). */
bool codec_find_member(const char *buf, size_t len, const char *key, const char **val,
                       size_t *vlen);

/* As codec_encode_msg, with data given as JSON text spliced in unchanged
 * (numbers keep their digits); data_raw must be one valid JSON value.
 * `attr` (may be NULL) is the publisher's attested identity as JSON object
 * members, each preceded by a comma (`,"user":"42","info":{...}`), spliced
 * in after "client"; the node builds it (codec_attr), never a client. */
size_t codec_encode_msg_raw(char *out, size_t cap, const char *ch, size_t ch_len, uint64_t seq,
                            int64_t ts_ms, const char *client, const char *attr,
                            const char *data_raw, size_t data_len);

/* Encodes a binary msg (PROTOCOL.md section 9): a 4-byte big-endian header
 * length, the header {"op":"msg","ch","seq","ts"[,"client"][,"user"[,"info"]]},
 * then the bytes.
 * Returns the size needed, like codec_encode_msg_raw. */
size_t codec_encode_binmsg(unsigned char *out, size_t cap, const char *ch, size_t ch_len,
                           uint64_t seq, int64_t ts_ms, const char *client, const char *attr,
                           const unsigned char *bytes, size_t n);

/* Builds the `attr` of an attested publisher: `,"user":USER` and, when info
 * is not NULL, `,"info":INFO`, escaped by jansson. Returns a malloc'd
 * string the caller frees, or NULL when it cannot be encoded. */
char *codec_attr(const char *user, const json_t *info);
/* True when attr is well-formed attr text (what another node sent). */
bool codec_attr_valid(const char *attr, size_t len);

/* Encodes {"op":"msg","ch":..,"seq":..,"ts":..[,"client":..],"data":..} into
 * out[0..cap). Like json_dumpb(), returns the size needed: when it is larger
 * than cap, out holds nothing usable; 0 means data could not be encoded.
 * `ch` must be a valid channel name and `client` (may be NULL) plain ASCII
 * without quotes, so neither needs escaping. */
size_t codec_encode_msg(char *out, size_t cap, const char *ch, size_t ch_len,
                        uint64_t seq, int64_t ts_ms, const char *client,
                        const json_t *data);

#endif
