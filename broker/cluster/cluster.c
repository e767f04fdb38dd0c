/* cluster.c - the cluster layer's start and stop order, and its metrics.
 *
 * The layer's files, lowest first: endpoint (address strings), membership
 * (who is up, who owns what), fabric (sockets, dispatch, tick), peers (DNS
 * discovery), rpc (calls to owners), stream (channel streams and interest).
 * The layers above register handlers for the envelope types they serve. */
#include "cluster.h"
#include "consensus.h"
#include "lease.h"
#include "fabric.h"
#include "log.h"
#include "membership.h"
#include "metrics.h"
#include "peers.h"
#include "rpc.h"
#include "runtime.h"
#include "stream.h"

#include <stdio.h>
#include <stdlib.h>

static void render_metrics(struct sbuf *b);

#define MAX_MAP_HOOKS 8
static cluster_map_fn *map_hooks[MAX_MAP_HOOKS];
static int nmap_hooks;

void cluster_on_map(cluster_map_fn *fn)
{
    if (nmap_hooks == MAX_MAP_HOOKS) {
        log_error("event=bug msg=\"too many cluster map hooks; raise MAX_MAP_HOOKS\"");
        abort();
    }
    map_hooks[nmap_hooks++] = fn;
}

static void map_changed(const struct shardmap *before, const struct shardmap *now)
{
    (void)before;
    membership_map_changed(now);
    for (int i = 0; i < nmap_hooks; i++)
        map_hooks[i]();
}

int64_t cluster_lease_lost_ms(void) { return cluster_enabled() ? lease_lost_ms() : 0; }

bool cluster_can_act(void) { return !cluster_enabled() || lease_valid(); }

void cluster_leave(void)
{
    if (cluster_enabled())
        lease_leave();
}

bool cluster_left(void) { return !cluster_enabled() || !membership_in_map() || !lease_valid(); }

void cluster_step_down(void)
{
    if (cluster_enabled())
        consensus_transfer();
}

bool cluster_ready(void)
{
    return !cluster_enabled() ||
           (membership_map_current() && lease_valid() && membership_joined(runtime_now_ms()));
}

bool cluster_backup_accepts(const char *ch, size_t len, const char *origin, uint64_t gen)
{
    return membership_backup_of(ch, len, origin, gen) && lease_valid();
}

int cluster_start(const struct config *cfg, struct lws_vhost *vh)
{
    if (!cfg->cluster_bind && !cfg->forwarder_connect)
        return 0;
    if (fabric_start(cfg, vh) < 0 || peers_start(cfg) < 0) {
        cluster_stop();
        return -1;
    }
    membership_start(cfg, runtime_now_ms());
    consensus_on_map(map_changed);
    if (consensus_start(cfg, vh) < 0) {
        cluster_stop();
        return -1;
    }
    lease_start(cfg, membership_self_ref());
    rpc_start(cfg);
    stream_start();
    metrics_set_extra(render_metrics);
    peers_resolve_now(runtime_now_ms());
    fabric_run();
    log_info("event=cluster_started node=%s bind=%s forwarder=%s peers=%d curve=%s", cfg->node_id,
             cfg->cluster_bind ? cfg->cluster_bind : "-",
             cfg->forwarder_connect ? cfg->forwarder_connect : "-", peers_count(),
             cfg->cluster_curve_secret ? "on" : "off");
    return 0;
}

void cluster_stop(void)
{
    lease_stop();
    consensus_stop();
    nmap_hooks = 0;
    stream_stop();
    rpc_stop();
    peers_stop();
    fabric_stop();
    membership_stop();
}

static void render_metrics(struct sbuf *b)
{
    if (!cluster_enabled())
        return;
    static const char *const types[ENV_TYPE_COUNT] = {"", "msg", "heartbeat", "pub_req", "pub_rep", "sync_req", "sync_rep", "repl", "repl_ack", "pos", "presence", "lease_req", "lease_grant", "shard_req", "shard_rep", "api_req", "api_rep"};
    family(b, "chorus_cluster_messages_sent_total", "counter", "Node-to-node messages sent, by type.");
    for (int i = 1; i < ENV_TYPE_COUNT; i++)
        put(b, "chorus_cluster_messages_sent_total{type=\"%s\"} %llu\n", types[i],
            (unsigned long long)metrics.cluster_sent[i]);
    family(b, "chorus_cluster_messages_received_total", "counter", "Node-to-node messages received, by type.");
    for (int i = 1; i < ENV_TYPE_COUNT; i++)
        put(b, "chorus_cluster_messages_received_total{type=\"%s\"} %llu\n", types[i],
            (unsigned long long)metrics.cluster_received[i]);
    family(b, "chorus_cluster_replication_total", "counter", "Replication to backup nodes, by event.");
    put(b, "chorus_cluster_replication_total{event=\"sent\"} %llu\n", (unsigned long long)metrics.replicated);
    put(b, "chorus_cluster_replication_total{event=\"resent\"} %llu\n", (unsigned long long)metrics.replication_resends);
    put(b, "chorus_cluster_replication_total{event=\"refused\"} %llu\n", (unsigned long long)metrics.replication_refused);
    family(b, "chorus_cluster_send_drops_total", "counter", "Node-to-node messages refused at the high-water mark.");
    put(b, "chorus_cluster_send_drops_total %llu\n", (unsigned long long)metrics.cluster_send_drops);
    family(b, "chorus_cluster_unwanted_total", "counter", "Channel messages received for channels without local subscribers.");
    put(b, "chorus_cluster_unwanted_total %llu\n", (unsigned long long)metrics.cluster_unwanted);
    family(b, "chorus_cluster_bad_messages_total", "counter", "Malformed node-to-node messages dropped.");
    put(b, "chorus_cluster_bad_messages_total %llu\n", (unsigned long long)metrics.cluster_bad_messages);
    family(b, "chorus_cluster_auth_failures_total", "counter", "Node connections refused by CURVE authentication.");
    put(b, "chorus_cluster_auth_failures_total %llu\n", (unsigned long long)metrics.cluster_auth_failures);
    family(b, "chorus_cluster_forwarded_publishes_total", "counter", "Publishes forwarded to another node that owns the channel.");
    put(b, "chorus_cluster_forwarded_publishes_total %llu\n", (unsigned long long)metrics.cluster_forwarded_publishes);
    family(b, "chorus_cluster_call_timeouts_total", "counter", "Requests to channel owners that got no answer in time.");
    put(b, "chorus_cluster_call_timeouts_total %llu\n", (unsigned long long)metrics.cluster_call_timeouts);
    family(b, "chorus_cluster_gaps_total", "counter", "Sequence gaps seen in owners' streams, by outcome.");
    put(b, "chorus_cluster_gaps_total{outcome=\"detected\"} %llu\n", (unsigned long long)metrics.gaps_detected);
    put(b, "chorus_cluster_gaps_total{outcome=\"repaired\"} %llu\n", (unsigned long long)metrics.gaps_repaired);
    put(b, "chorus_cluster_gaps_total{outcome=\"unrepaired\"} %llu\n", (unsigned long long)metrics.gaps_unrepaired);
    family(b, "chorus_cluster_raft_leader", "gauge", "1 while this node is the Raft leader (it places shards and grants leases).");
    put(b, "chorus_cluster_raft_leader %d\n", consensus_is_leader() ? 1 : 0);
    family(b, "chorus_cluster_lease_valid", "gauge", "1 while this node holds a lease: it may acknowledge and deliver.");
    put(b, "chorus_cluster_lease_valid %d\n", lease_valid() ? 1 : 0);
    family(b, "chorus_cluster_map_version", "gauge", "Version of the committed shard map this node applied.");
    put(b, "chorus_cluster_map_version %llu\n", (unsigned long long)cluster_map_version());
    family(b, "chorus_cluster_shards", "gauge", "Shards of the committed map this node owns or backs up.");
    put(b, "chorus_cluster_shards{role=\"owner\"} %d\n", membership_shards(true));
    put(b, "chorus_cluster_shards{role=\"backup\"} %d\n", membership_shards(false));
    struct cluster_peer_info peers[64];
    int np = cluster_peers(peers, 64);
    family(b, "chorus_cluster_peer_up", "gauge", "1 when the peer's heartbeats arrive, else 0.");
    for (int i = 0; i < np; i++)
        put(b, "chorus_cluster_peer_up{peer=\"%s\"} %d\n", peers[i].node, peers[i].up ? 1 : 0);
}

