/* keys.c - idempotency keys bounded in time and count (keys.h).
 *
 * Invariant: a key_entry is in its channel's hash and age list and in its
 * namespace's queue, or in none of them (freed); metrics.idempotency_keys
 * counts the entries. */
#include "keys.h"
#include "channel.h"
#include "metrics.h"

#include <stdlib.h>
#include <string.h>
#include <utlist.h>

enum key_drop { DROP_WINDOW, DROP_CHANNEL, DROP_NODE };

struct key_entry {
    struct channel *ch;
    uint64_t seq;
    int64_t at_ms;                      /* when this node first saw the key */
    struct key_entry *prev, *next;      /* ch->keys_age, oldest first (utlist DL) */
    struct key_entry *qprev, *qnext;    /* its namespace's queue, oldest first */
    UT_hash_handle hh;                  /* ch->keys */
    char key[];
};

static const struct config *cfg;
static struct key_entry **queues;       /* one per namespace, the default one last */
static int nqueues;

void keys_init(const struct config *config)
{
    free(queues);
    cfg = config;
    nqueues = cfg->n_namespaces + 1;
    queues = calloc((size_t)nqueues, sizeof *queues);
    if (!queues)
        nqueues = 0;
}

void keys_free(void)
{
    free(queues);
    queues = NULL;
    nqueues = 0;
}

static struct key_entry **queue_of(const struct channel *ch)
{
    const struct ns_opts *ns = ch->ns;
    if (cfg && cfg->n_namespaces > 0 && ns >= cfg->namespaces &&
        ns < cfg->namespaces + cfg->n_namespaces &&
        ns - cfg->namespaces < nqueues - 1)
        return &queues[ns - cfg->namespaces];
    return nqueues ? &queues[nqueues - 1] : NULL;
}

static void entry_free(struct key_entry *k)
{
    struct channel *ch = k->ch;
    HASH_DEL(ch->keys, k);
    DL_DELETE(ch->keys_age, k);
    struct key_entry **q = queue_of(ch);
    if (q)
        DL_DELETE2(*q, k, qprev, qnext);
    ch->nkeys--;
    metrics.idempotency_keys--;
    free(k);
}

static void drop(struct key_entry *k, enum key_drop why)
{
    metrics.idempotency_dropped[why]++;
    entry_free(k);
}

static bool expired(const struct key_entry *k, int64_t now_ms)
{
    int window = k->ch->ns->idempotency_window;
    return window > 0 && now_ms - k->at_ms >= (int64_t)window * 1000;
}

static void queue_expire(struct key_entry **q, int64_t now_ms)
{
    while (q && *q && expired(*q, now_ms))
        drop(*q, DROP_WINDOW);
}

void keys_expire(int64_t now_ms)
{
    for (int i = 0; i < nqueues; i++)
        queue_expire(&queues[i], now_ms);
}

void keys_clear(struct channel *ch)
{
    while (ch->keys_age)
        entry_free(ch->keys_age);
}

uint64_t channel_key_seq(struct channel *ch, const char *key, int64_t now_ms)
{
    queue_expire(queue_of(ch), now_ms);
    struct key_entry *k;
    HASH_FIND_STR(ch->keys, key, k);
    if (k && expired(k, now_ms)) {
        /* Only when the namespace queue is not in time order (the clock
         * stepped back): never answer past the window. */
        drop(k, DROP_WINDOW);
        return 0;
    }
    return k ? k->seq : 0;
}

/* The node holds max_idempotency_keys: drop the oldest of all, the oldest
 * head among the namespace queues (a handful). */
static void drop_oldest_on_node(void)
{
    struct key_entry *oldest = NULL;
    for (int i = 0; i < nqueues; i++)
        if (queues[i] && (!oldest || queues[i]->at_ms < oldest->at_ms))
            oldest = queues[i];
    if (oldest)
        drop(oldest, DROP_NODE);
}

void channel_key_record(struct channel *ch, const char *key, uint64_t seq, int64_t now_ms)
{
    size_t len = key ? strlen(key) : 0;
    if (!len || len > CODEC_KEY_MAX || ch->ns->idempotency_keys <= 0)
        return;
    queue_expire(queue_of(ch), now_ms);
    struct key_entry *k;
    HASH_FIND(hh, ch->keys, key, len, k);
    if (k)
        return;
    if (ch->nkeys >= (uint32_t)ch->ns->idempotency_keys)
        drop(ch->keys_age, DROP_CHANNEL);   /* its oldest: the head, O(1) */
    if (cfg && cfg->max_idempotency_keys > 0 &&
        metrics.idempotency_keys >= cfg->max_idempotency_keys)
        drop_oldest_on_node();
    k = malloc(sizeof *k + len + 1);
    if (!k)
        return;
    memset(k, 0, sizeof *k);
    memcpy(k->key, key, len + 1);
    k->ch = ch;
    k->seq = seq;
    k->at_ms = now_ms;
    HASH_ADD_KEYPTR(hh, ch->keys, k->key, len, k);
    DL_APPEND(ch->keys_age, k);             /* O(1): the tail is head->prev */
    struct key_entry **q = queue_of(ch);
    if (q)
        DL_APPEND2(*q, k, qprev, qnext);
    ch->nkeys++;
    metrics.idempotency_keys++;
}

void channel_keys_each(struct channel *ch, void (*fn)(const char *key, uint64_t seq, void *ud),
                       void *ud)
{
    for (struct key_entry *k = ch->keys_age; k; k = k->next)
        fn(k->key, k->seq, ud);
}
