/* catchup.h: change streams that bring a late subscriber up to the journal.
 *
 * The hub decides when a subscriber needs one (its position is older than the
 * journal) and bounds how many are open; this module opens each as its own
 * thread with a client from a pool, resuming strictly after the position with
 * exactly the watcher's scope, pipeline and options (stream.c), and feeds the
 * events to the hub until the hub says the stream has reached the journal. */
#ifndef CG_CATCHUP_H
#define CG_CATCHUP_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "hub.h"

typedef struct cg_catchup cg_catchup_t;

/* Creates the client pool and registers with the hub (cg_hub_set_catchup).
 * cfg and hub must outlive it. NULL with err on failure. */
cg_catchup_t *cg_catchup_new(const cg_config_t *cfg, cg_hub_t *hub, char *err, size_t errlen);
/* Asks every stream to end and waits up to timeout_ms for their threads.
 * Returns true when all have ended (only then may the hub be freed). Call
 * after cg_hub_stop(). */
bool cg_catchup_stop(cg_catchup_t *cu, int timeout_ms);
/* Frees, if every thread has ended; else leaves it to the process's exit. */
void cg_catchup_free(cg_catchup_t *cu);

#endif
