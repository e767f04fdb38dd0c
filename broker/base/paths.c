/* paths.c - default data directories relative to the running executable. */
#include "paths.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *paths_data_dir(const char *rel, const char *probe, const char *fallback)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            char dir[PATH_MAX], file[PATH_MAX];
            char real[PATH_MAX];
            int len = snprintf(dir, sizeof dir, "%s/%s", exe, rel);
            if (len > 0 && (size_t)len < sizeof dir &&
                snprintf(file, sizeof file, "%s/%s", dir, probe) < (int)sizeof file &&
                access(file, R_OK) == 0)
                /* "/usr/bin/../share/chorus/www" logs as "/usr/share/chorus/www". */
                return strdup(realpath(dir, real) ? real : dir);
        }
    }
    return strdup(fallback);
}
