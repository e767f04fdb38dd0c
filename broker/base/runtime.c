/* runtime.c - the process's shared state and clock (runtime.h). */
#include "runtime.h"

#include <sys/time.h>

struct runtime rt;

int64_t runtime_now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}
