/* procstat.c - process_* metrics, named as the Prometheus client libraries
 * name them so that stock dashboards and alerts work unchanged. */
#include "procstat.h"
#include "expo.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void memory(long *virt, long *rss)
{
    long pages_total = 0, pages_rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages_total, &pages_rss) != 2)
            pages_total = pages_rss = 0;
        fclose(f);
    }
    long page = sysconf(_SC_PAGESIZE);
    *virt = pages_total * page;
    *rss = pages_rss * page;
}

static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    long n = 0;
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

/* Seconds since the epoch when this process started: the boot time
 * (/proc/stat btime) plus the process' start in clock ticks after boot
 * (/proc/self/stat field 22). It cannot change, so it is read once. */
static double start_time(void)
{
    static double cached;
    if (cached)
        return cached;
    char line[1024];
    unsigned long long btime = 0, ticks = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "btime %llu", &btime) == 1)
            break;
    fclose(f);
    f = fopen("/proc/self/stat", "r");
    if (!f)
        return 0;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    /* The command name (field 2) may hold spaces and parentheses: fields
     * are counted from the last ')'. */
    char *p = strrchr(line, ')');
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                     &ticks) != 1)
        return 0;
    cached = (double)btime + (double)ticks / (double)sysconf(_SC_CLK_TCK);
    return cached;
}

void procstat_render(struct sbuf *b)
{
    struct rusage ru;
    double cpu = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
              ru.ru_stime.tv_usec / 1e6;
    struct rlimit rl;
    long max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (long)rl.rlim_cur : 0;
    long virt, rss;
    memory(&virt, &rss);

    family(b, "process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.");
    put(b, "process_cpu_seconds_total %.3f\n", cpu);
    family(b, "process_open_fds", "gauge", "Open file descriptors.");
    put(b, "process_open_fds %ld\n", open_fds());
    family(b, "process_max_fds", "gauge", "The limit on open file descriptors (RLIMIT_NOFILE, soft).");
    put(b, "process_max_fds %ld\n", max_fds);
    family(b, "process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds.");
    put(b, "process_start_time_seconds %.2f\n", start_time());
    family(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size of the process.");
    put(b, "process_virtual_memory_bytes %ld\n", virt);
    family(b, "process_resident_memory_bytes", "gauge", "Resident memory of the process.");
    put(b, "process_resident_memory_bytes %ld\n", rss);
}
