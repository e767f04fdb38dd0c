/* log.c - logfmt lines on stderr, with libwebsockets' logs folded in. */
#include "log.h"

#include <libwebsockets.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static enum log_level current = LOG_INFO;
static const char *const names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, names[i]))
            return i;
    return -1;
}

void log_set_level(enum log_level level) { current = level; }
enum log_level log_get_level(void) { return current; }

void log_at(enum log_level level, const char *fmt, ...)
{
    if (level < current)
        return;
    char line[1024];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)(tv.tv_usec / 1000), names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : ((size_t)m < sizeof line - (size_t)n - 1 ? (size_t)m : sizeof line - (size_t)n - 2));
    line[len++] = '\n';
    /* One write per line keeps lines whole when several processes share stderr. */
    fwrite(line, 1, len, stderr);
    fflush(stderr);
}

const char *log_quote(char *out, size_t cap, const char *s, size_t len)
{
    size_t o = 0;
    if (cap < 3)
        return "\"\"";
    out[o++] = '"';
    for (size_t i = 0; i < len && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

static void lws_emit(int lws_level, const char *line)
{
    enum log_level level = lws_level == LLL_ERR ? LOG_ERROR : lws_level == LLL_WARN ? LOG_WARN
                           : lws_level == LLL_USER ? LOG_INFO : LOG_DEBUG;
    /* lws lines carry their own timestamp prefix "[date] X: "; keep the text after it. */
    const char *p = strstr(line, "]: ");
    p = p ? p + 3 : line;
    char q[600];
    size_t len = strlen(p);
    while (len && (p[len - 1] == '\n' || p[len - 1] == '\r'))
        len--;
    log_at(level, "component=lws msg=%s", log_quote(q, sizeof q, p, len));
}

void log_install_lws(enum log_level level)
{
    int mask = LLL_ERR | LLL_WARN;
    if (level <= LOG_DEBUG)
        mask |= LLL_NOTICE | LLL_INFO;
    lws_set_log_level(mask, lws_emit);
}
