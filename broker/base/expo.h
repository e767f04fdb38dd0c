/* expo.h - the text buffer the Prometheus exposition is written into, shared
 * by metrics.c and the modules that render their own families (histogram,
 * procstat, the cluster's extra families). */
#ifndef CHORUS_EXPO_H
#define CHORUS_EXPO_H

#include <stddef.h>

/* A growing text buffer for the exposition. */
struct sbuf {
    char *p;
    size_t len, cap;
};
void put(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void family(struct sbuf *b, const char *name, const char *type, const char *help);

#endif
