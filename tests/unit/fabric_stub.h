/* fabric_stub.h - a recording stand-in for the cluster layer (fabric_stub.c). */
#ifndef CHORUS_FABRIC_STUB_H
#define CHORUS_FABRIC_STUB_H

#include "cluster.h"

#define STUB_SENT_MAX 64

struct stub_sent {
    char node[ENVELOPE_ID_MAX + 1];
    struct envelope env;
    char ch[256];                 /* the first payload part: the channel */
};

/* A cluster_sync() call; the test answers it through call->cb. */
struct stub_sync {
    struct cluster_call *call;
    bool has_since;
    uint64_t seq;
    bool join;
};
#define STUB_SYNC_MAX 8

extern const char *stub_backup;   /* the backup of every channel; NULL: none up */
extern bool stub_not_owner;       /* another node owns every channel */
extern uint64_t stub_gen;         /* the shard gen of every channel (7 after reset) */
extern const char *stub_owner;    /* the owner when stub_not_owner ("n9" when NULL) */
extern bool stub_no_lease;        /* this node holds no lease */
extern bool stub_continues;       /* cluster_continues() answers this */
extern bool stub_is_backup;
extern bool stub_handing_off;     /* this node hands every channel's shard (0) off */
extern uint64_t stub_quiesced;    /* what cluster_set_quiesced was told last */       /* with stub_not_owner: this node backs up every channel */
extern cluster_map_fn *stub_map_hook;
extern cluster_interest_fn *stub_interest;
extern struct stub_sync stub_syncs[STUB_SYNC_MAX];
extern int stub_nsyncs;
extern struct stub_sent stub_sent[STUB_SENT_MAX];
extern int stub_nsent;
extern cluster_handler_fn *stub_handlers[16];
extern cluster_tick_fn *stub_tick;

void stub_reset(void);

#endif
