/* mirror.h - channels whose owner is another node.
 *
 * A node that is not a channel's owner keeps a mirror of it for its local
 * subscribers: it joins the owner's stream (sync reply, then live messages)
 * and repairs gaps from the owner's history before delivering anything
 * later. The channel's backup node follows it the same way and holds every
 * replicated message (REPL -> REPL_ACK). Nothing here knows connections: a
 * subscriber waits for the mirror through a mirror_wait, as a publisher
 * waits through a pub_wait (publish.h). */
#ifndef CHORUS_MIRROR_H
#define CHORUS_MIRROR_H

#include "errors.h"

#include <stdbool.h>
#include <stdint.h>

struct channel;
struct frame;
struct mirror_wait;

/* Called exactly once per mirror_join unless cancelled first: err ==
 * CHORUS_ERR__COUNT when the mirror is current (the channel's epoch, seq and
 * history are the owner's), otherwise msg says why it could not be. w is
 * already unlinked, so done may free it. */
typedef void mirror_done_cb(struct mirror_wait *w, enum chorus_err err, const char *msg);

/* One waiting subscriber. Embedded in, and owned by, the caller; it must
 * stay valid until done is called or mirror_wait_cancel() returns. */
struct mirror_wait {
    mirror_done_cb *done;
    void *ud;
    /* private */
    struct channel *ch;           /* while linked in ch's join */
    struct mirror_wait *prev, *next;  /* utlist DL in the join's waiters */
};

/* Waits until the mirror of ch is current, joining the owner's stream if it
 * is not. done may run before this returns. Returns -1 when memory ran out
 * (done is never called then). */
int mirror_join(struct channel *ch, struct mirror_wait *w, mirror_done_cb *done, void *ud);
/* Forgets w; its done will not be called. */
void mirror_wait_cancel(struct mirror_wait *w);

/* Registers the MSG, POS and REPL handlers (after cluster_start). */
void mirror_start(void);
/* Frees every backup's held copies (the process is stopping). */
void mirror_stop(void);
/* Promotion: hands the copies this backup held back from its local
 * subscribers (the old owner's last messages, which it acknowledged but
 * the old owner may not have delivered) to resubmit, in seq order, after
 * ch->assigned; they must be replicated to the new backups before anyone
 * sees them (another backup may lack them). resubmit NULL (a new epoch
 * starts): forgets them. */
typedef void mirror_resubmit_fn(struct channel *ch, struct frame *f, uint64_t seq, int64_t ts_ms);
void mirror_release_tail(struct channel *ch, mirror_resubmit_fn *resubmit);

#endif
