/* fabric_stub.c - the cluster layer as the engine sees it, for unit tests of
 * the engine: a node "n1" whose backup for every channel is `stub_backup`,
 * envelopes sent recorded instead of sent, handlers kept so a test can
 * deliver replies itself. Linked ahead of the cluster library, so none of
 * its objects (sockets, membership) is pulled in. */
#include "fabric_stub.h"

#include <stdio.h>
#include <string.h>

const char *stub_backup;
bool stub_not_owner;
uint64_t stub_gen;
const char *stub_owner;
bool stub_no_lease;
bool stub_continues;
bool stub_is_backup;
bool stub_handing_off;
uint64_t stub_quiesced;
cluster_map_fn *stub_map_hook;
cluster_interest_fn *stub_interest;
struct stub_sync stub_syncs[STUB_SYNC_MAX];
int stub_nsyncs;
struct stub_sent stub_sent[STUB_SENT_MAX];
int stub_nsent;
cluster_handler_fn *stub_handlers[16];
cluster_tick_fn *stub_tick;

void stub_reset(void)
{
    stub_backup = NULL;
    stub_not_owner = false;
    stub_gen = 7;
    stub_owner = NULL;
    stub_no_lease = false;
    stub_continues = true;
    stub_is_backup = false;
    stub_handing_off = false;
    stub_quiesced = 0;
    stub_map_hook = NULL;
    stub_nsyncs = 0;
    stub_nsent = 0;
    memset(stub_handlers, 0, sizeof stub_handlers);
    stub_tick = NULL;
}

bool cluster_enabled(void) { return true; }
bool cluster_is_owner(const char *ch, size_t len) { (void)ch; (void)len; return !stub_not_owner; }
int cluster_backups_of(const char *ch, size_t len, const char **out, int max, uint64_t *gen)
{
    (void)ch, (void)len;
    *gen = stub_gen;
    if (!stub_backup || max < 1)
        return 0;
    out[0] = stub_backup;
    return 1;
}
uint64_t cluster_shard_gen(const char *ch, size_t len) { (void)ch, (void)len; return stub_gen; }
bool cluster_can_act(void) { return !stub_no_lease; }
/* "n1" (this node) unless another node owns: stub_owner, or "n9". */
const char *cluster_owner_of(const char *ch, size_t len)
{
    (void)ch, (void)len;
    return !stub_not_owner ? "n1" : stub_owner ? stub_owner : "n9";
}
bool cluster_continues(const char *ch, size_t len, uint64_t repl_gen)
{
    (void)ch, (void)len, (void)repl_gen;
    return stub_continues;
}
/* The test plays the owner: REPL is accepted from anyone at stub_gen. */
bool cluster_backup_accepts(const char *ch, size_t len, const char *origin, uint64_t gen)
{
    (void)ch, (void)len, (void)origin;
    return stub_not_owner && !stub_no_lease && gen == stub_gen;
}
unsigned cluster_shard_of(const char *ch, size_t len) { (void)ch, (void)len; return 0; }
enum cluster_role cluster_shard_role(unsigned shard, uint64_t *since, const char **owner)
{
    (void)shard;
    *since = stub_gen;
    *owner = cluster_owner_of("", 0);
    return !stub_not_owner ? CLUSTER_ROLE_OWNER : stub_is_backup ? CLUSTER_ROLE_BACKUP
                                                                 : CLUSTER_ROLE_NONE;
}
bool cluster_handing_off(const char *ch, size_t len) { (void)ch, (void)len; return stub_handing_off; }
bool cluster_shard_handing_off(unsigned shard) { return stub_handing_off && shard == 0; }
void cluster_set_quiesced(uint64_t mask) { stub_quiesced = mask; }
void cluster_on_map(cluster_map_fn *fn) { stub_map_hook = fn; }
void cluster_on_interest(cluster_interest_fn *fn) { stub_interest = fn; }

void cluster_env_init(struct envelope *e, uint8_t type)
{
    memset(e, 0, sizeof *e);
    e->type = type;
    snprintf(e->origin, sizeof e->origin, "n1");
}

int cluster_send_to(const char *node, const struct envelope *env, const struct cluster_part *parts,
                    int nparts)
{
    if (stub_nsent == STUB_SENT_MAX)
        return -1;
    struct stub_sent *s = &stub_sent[stub_nsent++];
    snprintf(s->node, sizeof s->node, "%s", node);
    s->env = *env;
    s->ch[0] = '\0';
    if (nparts > 0 && parts[0].len < sizeof s->ch) {
        memcpy(s->ch, parts[0].data, parts[0].len);
        s->ch[parts[0].len] = '\0';
    }
    return 0;
}

void cluster_handle(uint8_t type, cluster_handler_fn *fn)
{
    if (type < 16)
        stub_handlers[type] = fn;
}

void cluster_on_tick(cluster_tick_fn *fn) { stub_tick = fn; }

/* A single "n1" owns everything: nothing is forwarded. */
int cluster_forward_publish(const char *ch, size_t len, const char *data, size_t data_len,
                            uint8_t flags, const char *client, const char *attr, const char *key,
                            struct cluster_call *call, cluster_call_cb *cb, void *ud)
{
    (void)ch, (void)len, (void)data, (void)data_len, (void)flags, (void)client, (void)key, (void)attr;
    (void)call, (void)cb, (void)ud;
    return -1;
}

void cluster_call_cancel(struct cluster_call *call) { (void)call; }

int cluster_sync(const char *ch, size_t len, bool has_since, const char *epoch, uint64_t seq,
                 uint32_t limit, bool join, struct cluster_call *call, cluster_call_cb *cb,
                 void *ud)
{
    (void)ch, (void)len, (void)epoch, (void)limit;
    if (stub_nsyncs == STUB_SYNC_MAX)
        return -1;
    call->cb = cb;
    call->ud = ud;
    stub_syncs[stub_nsyncs++] = (struct stub_sync){call, has_since, seq, join};
    return 0;
}

enum chorus_err cluster_reply_code(const struct envelope *rep)
{
    if (!rep)
        return CHORUS_ERR_UNAVAILABLE;
    return rep->status ? (enum chorus_err)(rep->status - 1) : CHORUS_ERR__COUNT;
}

void cluster_reply_text(const struct envelope *rep, const struct cluster_part *parts, int n,
                        char *out, size_t cap)
{
    (void)rep, (void)parts, (void)n;
    snprintf(out, cap, "refused");
}
