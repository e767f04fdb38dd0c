/* occupancy.c - is a channel occupied anywhere in the cluster, and which
 * node says so (occupancy.h).
 *
 * A channel is occupied while some node has a subscriber to it. Every node
 * can tell: its own subscribers (the channel layer's 0 <-> 1 hook), and
 * whether any other node follows the channel (its XPUB's subscribe and
 * unsubscribe, which ZeroMQ reports once for the first follower and once
 * for the last). Every node tracks the same state; only the channel's
 * owner emits the change, so each happens once per cluster. Limits: a
 * change that happens while ownership moves, or while the owner is down,
 * may be missed or (for one change) reported by both owners; with a
 * forwarder instead of a mesh the other nodes' interest is not seen. */
#include "occupancy.h"
#include "channel.h"
#include "cluster.h"
#include "webhook.h"

#include <stdlib.h>
#include <string.h>
#include <uthash.h>

struct occ {
    char *name;
    bool local;                   /* this node has subscribers */
    bool remote;                  /* some other node has */
    bool reported;                /* occupied, as last decided */
    UT_hash_handle hh;
};

static struct occ *table;

static void update(const char *name, size_t len, bool local, bool on)
{
    struct occ *o;
    HASH_FIND(hh, table, name, len, o);
    if (!o) {
        if (!on)
            return;
        o = calloc(1, sizeof *o);
        if (!o || !(o->name = strndup(name, len))) {
            free(o);
            return;
        }
        HASH_ADD_KEYPTR(hh, table, o->name, len, o);
    }
    if (local)
        o->local = on;
    else
        o->remote = on;
    bool occupied = o->local || o->remote;
    if (occupied != o->reported) {
        o->reported = occupied;
        if (cluster_is_owner(name, len))
            webhook_emit(occupied ? "channel_occupied" : "channel_vacated", o->name, NULL);
    }
    if (!occupied) {
        HASH_DEL(table, o);
        free(o->name);
        free(o);
    }
}

static void on_local(struct channel *ch, bool on) { update(ch->name, ch->len, true, on); }

static void on_remote(const char *name, size_t len, bool on) { update(name, len, false, on); }

void occupancy_start(void)
{
    if (!webhook_enabled())
        return;
    channel_on_occupancy(on_local);
    cluster_on_remote_interest(on_remote);
}

void occupancy_stop(void)
{
    struct occ *o, *tmp;
    HASH_ITER(hh, table, o, tmp) {
        HASH_DEL(table, o);
        free(o->name);
        free(o);
    }
    channel_on_occupancy(NULL);
    cluster_on_remote_interest(NULL);
}
