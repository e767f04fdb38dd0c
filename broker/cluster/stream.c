/* stream.c - channel streams on the fabric (stream.h). */
#include "stream.h"
#include "channel.h"
#include "cluster.h"
#include "fabric.h"
#include "frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>
#include <utlist.h>

/* After this long without a message the owner announces the channel's
 * position once, so mirrors that lost the last messages notice. */
#define BEACON_QUIET_MS 200
#define MAX_INTEREST 4

/* A channel some other node follows (from XPUB subscriptions); kept apart
 * from channel objects so following costs no channel state here. */
struct remote_topic {
    char *name;
    UT_hash_handle hh;
};

static struct {
    struct remote_topic *remote;
    struct channel *beacons;        /* owned channels published to since their last POS */
    cluster_interest_fn *interest[MAX_INTEREST];
    int ninterest;
} st;

void cluster_on_interest(cluster_interest_fn *fn)
{
    if (st.ninterest < MAX_INTEREST)
        st.interest[st.ninterest++] = fn;
}

/* Owner published: every node subscribed to "<channel>\0" gets the frame as encoded. */
static void on_sequenced(struct channel *ch, struct frame *f, uint64_t seq, int64_t ts_ms)
{
    struct envelope e;
    cluster_env_init(&e, ENV_MSG);
    snprintf(e.epoch, sizeof e.epoch, "%s", ch->epoch);
    e.seq = seq;
    e.ts_ms = ts_ms;
    if (f->binary)
        e.flags |= ENV_FLAG_BINARY;
    struct cluster_part p = {frame_payload(f), f->len};
    cluster_send_channel(ch->name, ch->len, &e, &p, 1);
    ch->last_sequenced_ms = ts_ms;
    if (!ch->beacon) {
        ch->beacon = true;
        ch->pins++;
        DL_PREPEND2(st.beacons, ch, beacon_prev, beacon_next);
    }
}

static void send_beacons(int64_t now)
{
    struct channel *ch, *tmp;
    /* SAFE: channel_release may free ch; tmp is on the list, so pinned. */
    DL_FOREACH_SAFE2(st.beacons, ch, tmp, beacon_next) {
        if (now - ch->last_sequenced_ms < BEACON_QUIET_MS)
            continue;
        DL_DELETE2(st.beacons, ch, beacon_prev, beacon_next);
        ch->beacon_prev = ch->beacon_next = NULL;
        ch->beacon = false;
        if (!ch->mirror) {
            struct envelope e;
            cluster_env_init(&e, ENV_POS);
            snprintf(e.epoch, sizeof e.epoch, "%s", ch->epoch);
            e.seq = ch->seq;
            e.ts_ms = now;
            cluster_send_channel(ch->name, ch->len, &e, NULL, 0);
        }
        ch->pins--;
        channel_release(ch);
    }
}

static void on_created(struct channel *ch)
{
    struct remote_topic *t;
    HASH_FIND(hh, st.remote, ch->name, ch->len, t);
    ch->remote_interest = t != NULL;
}

/* Local subscribers appeared or left: follow or drop the channel's stream. */
static void on_interest(struct channel *ch, bool on)
{
    /* Without local subscribers this node stops receiving the owner's
     * stream, so a mirror's state is stale from now on. */
    if (!on)
        ch->live = false;
    for (int i = 0; i < st.ninterest; i++)
        st.interest[i](ch, on);
    fabric_subscribe(ch->name, ch->len + 1, on);
}

/* Kept apart from st, which stream_stop clears: set once at start. */
static cluster_remote_interest_fn *remote_interest_fn;

void cluster_on_remote_interest(cluster_remote_interest_fn *fn) { remote_interest_fn = fn; }

/* Another node started or stopped following a channel. */
static void on_subscription(const char *name, size_t nl, bool on)
{
    struct remote_topic *t;
    if (remote_interest_fn)
        remote_interest_fn(name, nl, on);
    struct channel *ch = channel_find(name, nl);
    HASH_FIND(hh, st.remote, name, nl, t);
    if (on && !t) {
        t = calloc(1, sizeof *t);
        if (!t || !(t->name = strndup(name, nl))) {
            free(t);
            return;
        }
        HASH_ADD_KEYPTR(hh, st.remote, t->name, nl, t);
        if (ch)
            ch->remote_interest = true;
    } else if (!on && t) {
        HASH_DEL(st.remote, t);
        free(t->name);
        free(t);
        if (ch) {
            ch->remote_interest = false;
            channel_release(ch);
        }
    }
}

void stream_start(void)
{
    static const struct channel_hooks hooks = {on_interest, on_sequenced, on_created};
    channel_set_hooks(&hooks);
    fabric_on_subscription(on_subscription);
    cluster_on_tick(send_beacons);
}

void stream_stop(void)
{
    struct channel *ch;
    while ((ch = st.beacons)) {
        DL_DELETE2(st.beacons, ch, beacon_prev, beacon_next);
        ch->beacon_prev = ch->beacon_next = NULL;
        ch->beacon = false;
        ch->pins--;
    }
    struct remote_topic *t, *ttmp;
    HASH_ITER(hh, st.remote, t, ttmp) {
        HASH_DEL(st.remote, t);
        free(t->name);
        free(t);
    }
    memset(&st, 0, sizeof st);
    channel_set_hooks(NULL);
}
