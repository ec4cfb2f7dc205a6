/* log.h: one line per notable thing, to stderr, with a level.
 *
 * Thread-safe: each line is formatted into a local buffer and written with one
 * write(2), so lines from different threads never interleave.
 *
 * On a terminal or in a file a line reads "TIME changegate[PID] LEVEL: text".
 * When stderr is the systemd journal's stream (JOURNAL_STREAM names it), the
 * journal stamps time and pid itself, so a line is "<PRIORITY>text": the
 * journal files it at that syslog priority (journalctl -p warning). */
#ifndef CG_LOG_H
#define CG_LOG_H

typedef enum { CG_LOG_ERROR = 0, CG_LOG_WARN, CG_LOG_INFO, CG_LOG_DEBUG } cg_log_level_t;

/* Looks at JOURNAL_STREAM and stderr to pick the line format. Call once at
 * start, before other threads log; without it lines use the plain format. */
void cg_log_init(void);
void cg_log_set_level(cg_log_level_t level);
cg_log_level_t cg_log_get_level(void);
const char *cg_log_level_name(cg_log_level_t level);
/* Parses "error", "warn", "info" or "debug". Returns 0, or -1 for anything else. */
int cg_log_level_parse(const char *name, cg_log_level_t *out);

void cg_log(cg_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes a message for the person at the terminal (like --check-config's
 * problems), one or more lines, unadorned; in the journal each line is filed
 * at the error priority. */
void cg_log_stderr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define cg_log_error(...) cg_log(CG_LOG_ERROR, __VA_ARGS__)
#define cg_log_warn(...) cg_log(CG_LOG_WARN, __VA_ARGS__)
#define cg_log_info(...) cg_log(CG_LOG_INFO, __VA_ARGS__)
#define cg_log_debug(...) cg_log(CG_LOG_DEBUG, __VA_ARGS__)

#endif
