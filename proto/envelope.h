/* envelope.h - the node-to-node envelope carried over ZeroMQ (PROTOCOL.md section 7).
 *
 * A cluster message is multipart: a topic frame, this fixed-layout header
 * frame, then payload frames whose meaning depends on the type. The header is
 * binary and big-endian so nodes never parse JSON to route a message; a
 * decoder rejects any header that is short, long, or out of range. */
#ifndef CHORUS_PROTO_ENVELOPE_H
#define CHORUS_PROTO_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENVELOPE_VERSION 1
#define ENVELOPE_ID_MAX 64
#define ENVELOPE_EPOCH_MAX 40
#define ENVELOPE_HEADER_MAX (1 + 1 + 1 + ENVELOPE_ID_MAX + 1 + ENVELOPE_EPOCH_MAX + 8 + 8 + 8 + 4 + 2 + 1)

enum envelope_type {
    ENV_MSG = 1,       /* a sequenced channel message; payload: the encoded msg frame */
    ENV_HEARTBEAT = 2, /* membership; no payload */
    ENV_PUB_REQ = 3,   /* to the owner; payload: channel, data JSON, client id, key */
    ENV_PUB_REP = 4,   /* to the requester; payload: error text when status != 0 */
    ENV_SYNC_REQ = 5,  /* to the owner; payload: channel */
    ENV_SYNC_REP = 6,  /* to the requester; payload: channel, then one msg frame per message */
    ENV_REPL = 7,      /* owner to backup; payload: channel, msg frame, idempotency key */
    ENV_REPL_ACK = 8,  /* backup to owner; payload: channel; seq = highest contiguous held */
    ENV_POS = 9,       /* owner, on the channel topic after a quiet spell: epoch/seq = its position */
    ENV_PRES = 10,     /* presence; status = join/leave/full/ask; payload: channel, (key, member)... */
    ENV_LEASE_REQ = 11,   /* to the Raft leader; seq = applied map version, req_id = request id; payload: node ref */
    ENV_LEASE_GRANT = 12, /* to the requester; req_id echoed, seq = leader's map version; status != 0: refused */
    ENV_SHARD_REQ = 13,   /* backup to owner; seq = shard, limit = most names; payload: the last name already listed */
    ENV_SHARD_REP = 14,   /* to the requester; seq = shard; flags MORE: another page follows; payload: channel names */
    ENV_API_REQ = 15,     /* server API, to every peer; payload: the request as JSON text */
    ENV_API_REP = 16,     /* to the requester; req_id echoed; payload: what this node did, JSON text */
    ENV_TYPE_COUNT        /* every type is below this */
};

#define ENV_FLAG_RECOVERED 0x01  /* SYNC_REP: every message after `since` is included */
#define ENV_FLAG_HAS_SINCE 0x02  /* SYNC_REQ: epoch/seq hold the requester's position */
#define ENV_FLAG_DUPLICATE 0x04  /* PUB_REP: the idempotency key matched an earlier publish */
#define ENV_FLAG_BINARY 0x08     /* MSG, REPL, PUB_REQ: the payload is a binary message */
#define ENV_FLAG_JOIN 0x10       /* SYNC_REQ: the requester is starting to follow the channel */
#define ENV_FLAG_MORE 0x20       /* SHARD_REP: names after the last one listed remain */
#define ENV_FLAG_KEYS 0x40       /* SYNC_REQ: send the idempotency keys too; SYNC_REP: the last frame holds them */

/* In a SYNC_REP each message's frame is preceded by this one: seq and ts_ms
 * (8 bytes each, big-endian), then flags (ENV_FLAG_BINARY). */
#define ENV_SYNC_ITEM_LEN 17

struct envelope {
    uint8_t type;
    char origin[ENVELOPE_ID_MAX + 1];   /* sending node id */
    char epoch[ENVELOPE_EPOCH_MAX + 1];
    uint64_t seq;
    int64_t ts_ms;
    uint64_t req_id;                    /* correlates REQ and REP; 0 otherwise */
    uint32_t limit;                     /* SYNC_REQ: most messages wanted */
    uint16_t status;                    /* REP: 0 ok, else 1 + enum chorus_err */
    uint8_t flags;
};

/* Writes the header into out (at least ENVELOPE_HEADER_MAX bytes); returns its length. */
size_t envelope_encode(const struct envelope *e, unsigned char *out);
/* Parses a header; false when it is malformed or of another version. */
bool envelope_decode(const unsigned char *in, size_t len, struct envelope *e);

/* Writes a SYNC_REP message prefix (ENV_SYNC_ITEM_LEN bytes) into out. */
void envelope_put_sync_item(unsigned char *out, uint64_t seq, int64_t ts_ms, uint8_t flags);
/* Reads one back; false when len is not ENV_SYNC_ITEM_LEN. */
bool envelope_get_sync_item(const unsigned char *p, size_t len, uint64_t *seq, int64_t *ts_ms,
                            uint8_t *flags);

#endif
