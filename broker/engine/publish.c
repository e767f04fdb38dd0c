/* publish.c - route a publish to its owner, deduplicate by key, sequence,
 * replicate, and tell the submitter once it is delivered. */
#include "publish.h"
#include "channel.h"
#include "frame.h"
#include "replica.h"
#include "runtime.h"

#include <stdio.h>
#include <string.h>

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

void publish_submit(const char *name, size_t len, const char *data, size_t data_len, bool binary,
                    const char *client, const char *key, struct pub_wait *w, pub_done_cb *done,
                    void *ud)
{
    memset(w, 0, sizeof *w);
    w->done = done;
    w->ud = ud;
    snprintf(w->ch, sizeof w->ch, "%.*s", (int)len, name);

    if (!cluster_is_owner(name, len)) {
        if (cluster_forward_publish(name, len, data, data_len, binary, client, key, &w->call,
                                    on_forwarded, w) < 0) {
            done(w, CHORUS_ERR_UNAVAILABLE, "the channel's owner is unreachable", NULL, 0, false);
            return;
        }
        w->forwarded = true;
        return;
    }

    if (!cluster_can_act()) {
        /* Without a lease this node may have been replaced as owner already:
         * sequencing now could clash with its successor. */
        done(w, CHORUS_ERR_UNAVAILABLE,
             "this node is cut off from the cluster majority (no lease); retry", NULL, 0, false);
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
    if (channel_sequence(ch, data, data_len, binary, client, now, &f, &seq) < 0) {
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
    if (w->forwarded) {
        cluster_call_cancel(&w->call);
        w->forwarded = false;
    }
    replica_cancel(w);
}
