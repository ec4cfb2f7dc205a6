/* watcher.h: the ONE shared change stream, on its own thread.
 *
 * The watcher owns its mongoc client (libmongoc clients are not thread-safe,
 * so nothing else touches it), reads change events, turns each into a
 * cg_event_t once and publishes it to the hub. It reconnects with backoff,
 * and keeps its position in STATE_DIR/changegate.position, written atomically
 * at least once a second while it changes and at shutdown.
 *
 * What is persisted is two positions: `position`, the newest one seen, and
 * `resumeAfter`, the position just before the oldest journal entry. On start
 * the watcher resumes after `resumeAfter`, so the journal is refilled with the
 * events clients may still resume from, and it is "live" (new subscribers
 * start from now) once it is back at `position` or MongoDB has nothing newer. */
#ifndef CG_WATCHER_H
#define CG_WATCHER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "hub.h"

typedef struct cg_watcher cg_watcher_t;

/* Whether dir can hold the watcher's state: 0, or -1 with a message in err.
 * Used at start and by --check-config, so both say the same. */
int cg_watcher_check_state_dir(const char *dir, char *err, size_t errlen);

/* Checks the state directory and reads any saved position. The watcher keeps
 * pointers into cfg and hub: both must outlive it. Returns NULL with err. */
cg_watcher_t *cg_watcher_new(const cg_config_t *cfg, cg_hub_t *hub, char *err, size_t errlen);
int cg_watcher_start(cg_watcher_t *w, char *err, size_t errlen);
/* Asks the thread to stop and waits up to timeout_ms for it; then persists
 * the position whether or not the thread has ended (a thread stuck in a
 * MongoDB call is left to die with the process). */
void cg_watcher_stop(cg_watcher_t *w, int timeout_ms);
/* Frees the watcher if its thread has ended and returns true; a thread still
 * stuck in a MongoDB call is left alone (false), and so must be the hub. */
bool cg_watcher_free(cg_watcher_t *w);

/* True when the watcher could not resume from its position (saved, or held
 * through an outage) and started from now; msg says what happened. */
bool cg_watcher_history_lost(cg_watcher_t *w, char *msg, size_t len);

/* The watcher's newest position (an event's, or MongoDB's postBatchResumeToken
 * on a quiet stream): a new string, or NULL before it has one. */
char *cg_watcher_position(cg_watcher_t *w);

/* True when streaming; msg gets a one-line human description either way. */
bool cg_watcher_status(cg_watcher_t *w, char *msg, size_t len);

#endif
