/* sync_items.c - reading a SYNC_REP's messages (cluster.h), apart from
 * rpc.c so that engine tests with a stub cluster can link it alone. */
#include "cluster.h"
#include "frame.h"

void cluster_sync_each(const struct cluster_part *parts, int n, cluster_sync_item_fn *fn, void *ud)
{
    for (int i = 1; i + 1 < n; i += 2) {
        uint64_t seq;
        int64_t ts;
        uint8_t flags;
        if (!envelope_get_sync_item(parts[i].data, parts[i].len, &seq, &ts, &flags))
            continue;
        struct frame *f = frame_from(parts[i + 1].data, parts[i + 1].len);
        if (!f)
            continue;
        f->binary = flags & ENV_FLAG_BINARY;
        fn(f, seq, ts, ud);
        frame_unref(f);
    }
}
