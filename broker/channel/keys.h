/* keys.h - idempotency keys of recent publishes (PROTOCOL.md 2.3), kept per
 * channel within a window of time and count, with a bound for the node.
 *
 * A key is remembered for its namespace's idempotency_window seconds and
 * among its channel's newest idempotency_keys keys, and at most
 * max_idempotency_keys keys are held over all channels (the oldest go
 * first). A key forgotten for any reason is unknown: a publish carrying it
 * again is a new message. Keys also end with their channel's epoch.
 *
 * Every key is on two lists in arrival order: its channel's (the count
 * bound drops that head) and its namespace's (every key there has the same
 * window, so the head is always the next to expire). Expiry pops heads, so
 * it costs O(1) amortised per key; nothing scans per publish. */
#ifndef CHORUS_KEYS_H
#define CHORUS_KEYS_H

#include <stdint.h>

struct channel;
struct config;

/* The seq a key was published with in ch's current epoch; 0 when unknown
 * (never seen, or forgotten). */
uint64_t channel_key_seq(struct channel *ch, const char *key, int64_t now_ms);
/* Remembers key -> seq for ch, as of now_ms; a key already known keeps its
 * seq and its age. */
void channel_key_record(struct channel *ch, const char *key, uint64_t seq, int64_t now_ms);

/* Calls fn for every key ch holds, oldest first (a new backup fetches them,
 * engine/shardsync.c). */
void channel_keys_each(struct channel *ch, void (*fn)(const char *key, uint64_t seq, void *ud),
                       void *ud);

/* For the registry (channel.c): set up per-namespace lists for cfg, forget
 * a channel's keys (new epoch, deletion), expire old keys, free. */
void keys_init(const struct config *cfg);
void keys_clear(struct channel *ch);
void keys_expire(int64_t now_ms);
void keys_free(void);

#endif
