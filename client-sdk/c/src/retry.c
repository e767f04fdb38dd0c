/* retry.c - publishing through cluster faults: the idempotency keys the SDK
 * gives publishes, and sending a publish again when the node answered
 * `unavailable` (PROTOCOL.md 2.3, 3), or when it closed the connection with
 * 4013 before answering.
 *
 * Why it is safe: a retry is the same frame, with the same key, so a node that
 * had sequenced the first attempt after all answers the retry with the first
 * seq (`duplicate`) instead of publishing twice. The frame text, its id
 * included, is kept as it was: the id was answered (or its connection is
 * gone), so no late reply can be taken for the retry's. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

static const char chorus__key_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* A per-client random prefix from the kernel: two clients (or two runs of one
 * program) never share generated keys, and each publish costs no syscall. */
void chorus__key_prefix_init(chorus_client_t *cl)
{
    unsigned char b[CHORUS__KEY_PREFIX_LEN];
    size_t got = 0;

    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    for (size_t i = got; i < sizeof b; i++)
        b[i] = (unsigned char)chorus__rand(cl); /* no getrandom(): the seeded generator */
    for (size_t i = 0; i < sizeof b; i++)
        cl->key_prefix[i] = chorus__key_alphabet[b[i] & 63];
    cl->key_prefix[CHORUS__KEY_PREFIX_LEN] = '\0';
}

/* prefix + the client's publish counter in url-safe base64 digits: at most
 * 16 + 11 characters, all of [A-Za-z0-9_-]. */
void chorus__key_generate(chorus_client_t *cl, char *out, size_t size)
{
    char digits[12];
    size_t n = 0;
    uint64_t c = ++cl->key_counter;

    do {
        digits[n++] = chorus__key_alphabet[c & 63];
        c >>= 6;
    } while (c && n < sizeof digits);
    size_t len = (size_t)snprintf(out, size, "%s", cl->key_prefix);
    while (n && len + 1 < size)
        out[len++] = digits[--n];
    out[len] = '\0';
}

static void chorus__retry_due(lws_sorted_usec_list_t *sul);

/* Sets sul_retry for the earliest retry, or cancels it when none waits. */
static void chorus__retry_schedule(chorus_client_t *cl)
{
    int64_t first = INT64_MAX, now = chorus__now_ms();

    for (struct chorus__req *r = cl->retrying.head; r; r = r->next)
        if (r->retry_at_ms < first)
            first = r->retry_at_ms;
    if (first == INT64_MAX) {
        lws_sul_cancel(&cl->sul_retry);
        return;
    }
    lws_sul_schedule(cl->ctx, 0, &cl->sul_retry, chorus__retry_due,
                     (lws_usec_t)(first > now ? first - now : 0) * LWS_US_PER_MS);
}

/* Due retries go to the front of the queue: they were accepted before what
 * was queued since. Written at once when connected, after the next hello
 * (and its resubscriptions) otherwise. */
static void chorus__retry_due(lws_sorted_usec_list_t *sul)
{
    chorus_client_t *cl = lws_container_of(sul, chorus_client_t, sul_retry);
    int64_t now = chorus__now_ms();
    struct chorus__req *r, *prev;

    if (cl->freeing)
        return;
    for (r = cl->retrying.tail; r; r = prev) {
        prev = r->prev;
        if (r->retry_at_ms > now)
            continue;
        chorus__req_unlink(&cl->retrying, r);
        chorus__req_prepend(&cl->queued, r);
    }
    chorus__retry_schedule(cl);
    chorus__kick_writer(cl);
}

/* Puts a publish that got no ack (r is on no list) on cl->retrying for
 * another attempt. False when retrying is off, the client cannot reconnect,
 * the publish has no key, or the attempt would start past the deadline: the
 * caller then completes it with its error. */
bool chorus__retry_pub(chorus_client_t *cl, struct chorus__req *r)
{
    uint64_t d = CHORUS__RETRY_MIN_MS;
    int64_t now = chorus__now_ms();

    if (r->kind != CHORUS__REQ_PUB || !r->key || cl->opts.no_publish_retry ||
        cl->state == CHORUS__DEAD || cl->freeing || cl->free_deferred)
        return false;
    for (unsigned i = 1; i < r->attempts && d < CHORUS__RETRY_MAX_MS; i++)
        d *= 2;
    if (d > CHORUS__RETRY_MAX_MS)
        d = CHORUS__RETRY_MAX_MS;
    /* Uniform in [d/2, d], so clients refused together spread out. */
    d = d / 2 + chorus__rand(cl) % (d - d / 2 + 1);
    if (now + (int64_t)d - r->created_ms > (int64_t)cl->opts.publish_retry_ms)
        return false;
    r->retry_at_ms = now + (int64_t)d;
    chorus__req_append(&cl->retrying, r);
    chorus__retry_schedule(cl);
    return true;
}

/* Moves every waiting retry onto `into` (to be failed by the caller). */
void chorus__retry_cancel_all(chorus_client_t *cl, struct chorus__req_list *into)
{
    struct chorus__req *r;

    while ((r = cl->retrying.head)) {
        chorus__req_unlink(&cl->retrying, r);
        chorus__req_append(into, r);
    }
    lws_sul_cancel(&cl->sul_retry);
}
