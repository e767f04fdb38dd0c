/* log.h - structured one-line logs (logfmt) on stderr.
 *
 * Each call writes one line: `ts=... level=... <caller's key=value pairs>`.
 * Callers pass key=value text; values that come from peers must go through
 * log_quote() so a line can never be split or forged. */
#ifndef CHORUS_LOG_H
#define CHORUS_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Returns -1 for an unknown name. */
int log_level_parse(const char *name);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

void log_at(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) do { if (log_get_level() <= LOG_DEBUG) log_at(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...) log_at(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_at(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)

/* Writes `s` (len bytes) into out as a double-quoted logfmt value with
 * quotes, backslashes and control bytes escaped; truncates to fit. */
const char *log_quote(char *out, size_t cap, const char *s, size_t len);

/* Routes libwebsockets' own log lines through this logger. */
void log_install_lws(enum log_level level);

#endif
