/* binmsg.c - publishing binary messages and showing them in history.
 *
 * A binary publish takes the same path as a JSON one (ops_publish): the
 * owner sequences and replicates it and the cluster carries it with
 * ENV_FLAG_BINARY, so it is delivered as a binary frame on every node. */
#include "binmsg.h"
#include "auth_ws.h"
#include "channel.h"
#include "cluster.h"
#include "codec.h"
#include "conn.h"
#include "ops.h"
#include "frame.h"
#include "metrics.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void bad(struct conn *c, bool has_id, long long id, const char *msg)
{
    conn_send_err(c, has_id, id, CHORUS_ERR_BAD_REQUEST, msg);
}

/* [H]{"op":"pub","id"?,"ch","key"?}<bytes> -> ack {ch,epoch,seq,duplicate?} */
void binmsg_handle(struct conn *c, const unsigned char *buf, size_t len)
{
    if (!auth_ws_gate(c, NULL))
        return;
    if (len < 4) {
        bad(c, false, 0, "a binary message starts with a 4-byte header length");
        return;
    }
    uint32_t hl = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
    if (hl == 0 || hl > BINMSG_HEADER_MAX || hl > len - 4) {
        bad(c, false, 0, "binary message header length out of range (1-1024 bytes, within the frame)");
        return;
    }
    json_error_t jerr;
    json_t *h = json_loadb((const char *)buf + 4, hl, JSON_REJECT_DUPLICATES, &jerr);
    bool has_id = false;
    long long id = 0;
    json_t *jid = json_object_get(h, "id");
    if (json_is_integer(jid) && json_integer_value(jid) >= 0 && json_integer_value(jid) <= CODEC_ID_MAX) {
        has_id = true;
        id = json_integer_value(jid);
    }
    json_t *op = json_object_get(h, "op");
    json_t *jch = json_object_get(h, "ch");
    if (!json_is_object(h) || (jid && !has_id)) {
        bad(c, false, 0, "binary message header must be a JSON object {\"op\":\"pub\",\"id\"?,\"ch\"}");
        goto out;
    }
    if (!json_is_string(op) || strcmp(json_string_value(op), "pub") != 0) {
        bad(c, has_id, id, "binary messages carry only {\"op\":\"pub\"}");
        goto out;
    }
    const char *name = json_string_value(jch);
    size_t nlen = json_string_length(jch);
    if (!json_is_string(jch) || !codec_channel_valid(name, nlen)) {
        conn_send_err(c, has_id, id, CHORUS_ERR_BAD_CHANNEL, "'ch' must be 1-255 bytes of [A-Za-z0-9_.:@/-]");
        goto out;
    }
    /* The same idempotency key as a JSON pub (PROTOCOL.md 2.3): a client
     * retrying a binary publish after `unavailable` must not duplicate it. */
    json_t *jkey = json_object_get(h, "key");
    if (jkey && (!json_is_string(jkey) || json_string_length(jkey) == 0 ||
                 json_string_length(jkey) > CODEC_KEY_MAX ||
                 memchr(json_string_value(jkey), '\0', json_string_length(jkey)))) {
        bad(c, has_id, id, "'key' must be a string of 1-64 bytes");
        goto out;
    }
    if (rt.shutting_down) {
        conn_send_err(c, has_id, id, CHORUS_ERR_UNAVAILABLE, "node is shutting down");
        goto out;
    }
    if (!auth_ws_may_publish(c, name, nlen, has_id, id))
        goto out;

    metrics.published_binary++;
    ops_publish(c, has_id, id, name, nlen, (const char *)buf + 4 + hl, len - 4 - hl, true,
                jkey ? json_string_value(jkey) : NULL);
out:
    json_decref(h);
}
