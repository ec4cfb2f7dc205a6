/* log.h: one line per notable thing, to stderr, with a level.
 *
 * Thread-safe: each line is formatted into a local buffer and written with one
 * write(2), so lines from different threads never interleave. */
#ifndef CG_LOG_H
#define CG_LOG_H

typedef enum { CG_LOG_ERROR = 0, CG_LOG_WARN, CG_LOG_INFO, CG_LOG_DEBUG } cg_log_level_t;

void cg_log_set_level(cg_log_level_t level);
cg_log_level_t cg_log_get_level(void);
/* Parses "error", "warn", "info" or "debug". Returns 0, or -1 for anything else. */
int cg_log_level_parse(const char *name, cg_log_level_t *out);

void cg_log(cg_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define cg_log_error(...) cg_log(CG_LOG_ERROR, __VA_ARGS__)
#define cg_log_warn(...) cg_log(CG_LOG_WARN, __VA_ARGS__)
#define cg_log_info(...) cg_log(CG_LOG_INFO, __VA_ARGS__)
#define cg_log_debug(...) cg_log(CG_LOG_DEBUG, __VA_ARGS__)

#endif
