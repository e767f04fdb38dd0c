/* procstat.h - the standard process_* metrics (CPU, memory, descriptors,
 * start time) of this process, read from /proc and getrusage() when
 * /metrics is rendered; nothing is kept between scrapes. */
#ifndef CHORUS_PROCSTAT_H
#define CHORUS_PROCSTAT_H

struct sbuf;
void procstat_render(struct sbuf *b);

#endif
