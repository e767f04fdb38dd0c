/* publish.c - route a publish to its owner, deduplicate by key, sequence,
 * replicate, and tell the submitter once it is delivered. */
#include "publish.h"
#include "channel.h"
#include "frame.h"
#include "replica.h"
#include "runtime.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

/* ------------------------------------------------------------- handoff
 * While this node hands a shard to another (PROTOCOL.md 7.4, planned
 * moves), publishes to its channels wait here instead of being sequenced,
 * so that nothing is pending when the owners switch; once the map moved
 * the shard they go to the new owner (or are sequenced here, if the move
 * was withdrawn), in the order they came. Bounded in number and time. */

#define PARKED_MAX 4096

struct parked_pub {
    struct pub_wait *w;
    int64_t deadline_ms;
    bool binary;
    size_t len, data_len;
    char *client, *key, *attr;   /* NULL when absent; point into bytes */
    struct parked_pub *prev, *next;
    char bytes[];                /* name, NUL, data, NUL, client, NUL, key, NUL, attr, NUL */
};

static struct parked_pub *parked;
static int nparked;
static const struct config *cfg;

static bool park(const char *name, size_t len, const char *data, size_t data_len, bool binary,
                 const char *client, const char *key, const char *attr, struct pub_wait *w)
{
    size_t cl = client ? strlen(client) : 0, kl = key ? strlen(key) : 0;
    size_t al = attr ? strlen(attr) : 0;
    struct parked_pub *p =
        nparked < PARKED_MAX ? malloc(sizeof *p + len + data_len + cl + kl + al + 5) : NULL;
    if (!p)
        return false;
    char *b = p->bytes;
    memcpy(b, name, len);
    b[len] = '\0';
    memcpy(b + len + 1, data, data_len);
    b[len + 1 + data_len] = '\0';
    char *c = b + len + data_len + 2;
    memcpy(c, client ? client : "", cl + 1);
    char *k = c + cl + 1;
    memcpy(k, key ? key : "", kl + 1);
    char *a = k + kl + 1;
    memcpy(a, attr ? attr : "", al + 1);
    *p = (struct parked_pub){w, runtime_now_ms() + (cfg ? cfg->cluster_timeout_ms : 2000), binary, len, data_len,
                             client ? c : NULL, key ? k : NULL, attr ? a : NULL, NULL, NULL};
    w->parked = p;
    DL_APPEND(parked, p);
    nparked++;
    log_debug("event=publish_held ch=%s held=%d", p->bytes, nparked);
    return true;
}

/* Serves every held-back publish again, oldest first; those still held are
 * kept (in order) unless their time is up. */
static void release(void)
{
    struct parked_pub *list = parked, *p, *tmp;
    parked = NULL;
    nparked = 0;
    int64_t now = runtime_now_ms();
    DL_FOREACH_SAFE(list, p, tmp) {
        DL_DELETE(list, p);
        struct pub_wait *w = p->w;
        w->parked = NULL;
        if (now >= p->deadline_ms && cluster_handing_off(p->bytes, p->len)) {
            w->done(w, CHORUS_ERR_UNAVAILABLE, "the channel's shard is moving; retry", NULL, 0,
                    false);
        } else {
            log_debug("event=publish_released ch=%s owner=%s", p->bytes,
                      cluster_owner_of(p->bytes, p->len) ? cluster_owner_of(p->bytes, p->len) : "-");
            int64_t deadline = p->deadline_ms;
            publish_submit_as(p->bytes, p->len, p->bytes + p->len + 1, p->data_len, p->binary,
                              p->client, p->attr, p->key, w, w->done, w->ud);
            if (w->parked)
                w->parked->deadline_ms = deadline; /* held again: keeps its first deadline */
        }
        free(p);
    }
}

/* A map change releases everything; the tick only answers what waited its
 * whole time (oldest first: deadlines are in arrival order). */
static void on_tick(int64_t now)
{
    (void)now;
    if (parked && runtime_now_ms() >= parked->deadline_ms)
        release();
}

void publish_start(const struct config *config)
{
    cfg = config;
    if (!cluster_enabled())
        return;
    cluster_on_map(release);
    cluster_on_tick(on_tick);
}

void publish_stop(void)
{
    struct parked_pub *p, *tmp;
    DL_FOREACH_SAFE(parked, p, tmp) {
        DL_DELETE(parked, p);
        p->w->parked = NULL;
        p->w->done(p->w, CHORUS_ERR_UNAVAILABLE, "the node is stopping", NULL, 0, false);
        free(p);
    }
    nparked = 0;
}

static void on_forwarded(struct cluster_call *call, const struct envelope *rep,
                         const struct cluster_part *parts, int n)
{
    struct pub_wait *w = call->ud;
    w->forwarded = false;
    if (rep && !rep->status) {
        w->done(w, CHORUS_ERR__COUNT, NULL, rep->epoch, rep->seq, rep->flags & ENV_FLAG_DUPLICATE);
        return;
    }
    char msg[200] = "the channel's owner did not answer in time";
    if (rep && n > 0 && parts[0].len < sizeof msg) {
        memcpy(msg, parts[0].data, parts[0].len);
        msg[parts[0].len] = '\0';
    }
    w->done(w, rep ? (enum chorus_err)(rep->status - 1) : CHORUS_ERR_UNAVAILABLE, msg, NULL, 0,
            false);
}

static void forward(const char *name, size_t len, const char *data, size_t data_len,
                    uint8_t flags, const char *client, const char *attr, const char *key,
                    struct pub_wait *w)
{
    if (cluster_forward_publish(name, len, data, data_len, flags, client, attr, key, &w->call,
                                on_forwarded, w) < 0) {
        w->done(w, CHORUS_ERR_UNAVAILABLE, "the channel's owner is unreachable", NULL, 0, false);
        return;
    }
    w->forwarded = true;
}

static void wait_init(struct pub_wait *w, const char *name, size_t len, pub_done_cb *done,
                      void *ud)
{
    memset(w, 0, sizeof *w);
    w->done = done;
    w->ud = ud;
    snprintf(w->ch, sizeof w->ch, "%.*s", (int)len, name);
}

void publish_bounce(const char *name, size_t len, const char *data, size_t data_len, bool binary,
                    const char *client, const char *attr, const char *key, struct pub_wait *w,
                    pub_done_cb *done, void *ud)
{
    wait_init(w, name, len, done, ud);
    forward(name, len, data, data_len, binary ? ENV_FLAG_BINARY : 0, client, attr, key, w);
}

void publish_submit(const char *name, size_t len, const char *data, size_t data_len, bool binary,
                    const char *client, const char *key, struct pub_wait *w, pub_done_cb *done,
                    void *ud)
{
    publish_submit_as(name, len, data, data_len, binary, client, NULL, key, w, done, ud);
}

void publish_submit_as(const char *name, size_t len, const char *data, size_t data_len, bool binary,
                       const char *client, const char *attr, const char *key, struct pub_wait *w,
                       pub_done_cb *done, void *ud)
{
    wait_init(w, name, len, done, ud);

    if (!cluster_is_owner(name, len)) {
        forward(name, len, data, data_len, binary ? ENV_FLAG_BINARY : 0, client, attr, key, w);
        return;
    }

    if (!cluster_can_act()) {
        /* Without a lease this node may have been replaced as owner already:
         * sequencing now could clash with its successor. */
        done(w, CHORUS_ERR_UNAVAILABLE,
             "this node is cut off from the cluster majority (no lease); retry", NULL, 0, false);
        return;
    }
    /* Later publishes queue behind held-back ones, so order holds. */
    if (cluster_handing_off(name, len)) {
        if (!park(name, len, data, data_len, binary, client, key, attr, w))
            done(w, CHORUS_ERR_UNAVAILABLE, "the channel's shard is moving; retry", NULL, 0, false);
        return;
    }
    struct channel *ch = channel_get(name, len);
    if (!ch) {
        done(w, CHORUS_ERR_UNAVAILABLE, "out of memory", NULL, 0, false);
        return;
    }
    replica_claim(ch); /* keys a replica recorded count once it owns the channel */
    if (key) {
        uint64_t seq = channel_key_seq(ch, key, runtime_now_ms());
        /* A copy this node held as the backup may still be on its way to
         * the new backups: answer once it is delivered. */
        if (seq > ch->seq && replica_wait_seq(ch, seq, w))
            return;
        if (seq) {
            done(w, CHORUS_ERR__COUNT, NULL, ch->epoch, seq, true);
            channel_release(ch);
            return;
        }
        if (replica_wait_key(ch, key, w))
            return;
    }
    int64_t now = runtime_now_ms();
    struct frame *f;
    uint64_t seq;
    if (channel_sequence(ch, data, data_len, binary, client, attr, now, &f, &seq) < 0) {
        channel_release(ch);
        done(w, CHORUS_ERR_BAD_REQUEST, "data cannot be encoded", NULL, 0, false);
        return;
    }
    ch->pins++; /* done may run inside replica_submit */
    replica_submit(ch, f, seq, now, key, w);
    frame_unref(f);
    ch->pins--;
    channel_release(ch);
}

void publish_cancel(struct pub_wait *w)
{
    if (w->parked) {
        DL_DELETE(parked, w->parked);
        nparked--;
        free(w->parked);
        w->parked = NULL;
    }
    if (w->forwarded) {
        cluster_call_cancel(&w->call);
        w->forwarded = false;
    }
    replica_cancel(w);
}
