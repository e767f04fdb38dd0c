/* histogram.c - rendering of histogram.h's fixed-bucket histograms. */
#include "histogram.h"
#include "expo.h"

void histogram_render(struct sbuf *b, const char *name, const char *help, const struct histogram *h)
{
    uint64_t cum = 0;
    family(b, name, "histogram", help);
    for (int i = 0; i < HISTOGRAM_BUCKETS; i++) {
        cum += h->counts[i];
        put(b, "%s_bucket{le=\"%.6f\"} %llu\n", name, (double)(1u << (HISTOGRAM_SHIFT + i)) / 1e6, (unsigned long long)cum);
    }
    cum += h->counts[HISTOGRAM_BUCKETS];
    put(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    put(b, "%s_sum %.6f\n", name, (double)h->sum_us / 1e6);
    put(b, "%s_count %llu\n", name, (unsigned long long)cum);
}
