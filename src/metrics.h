/* metrics.h: process-wide counters, and the /metrics page.
 *
 * Counters are atomics owned by this module, bumped from any thread; gauges
 * that belong to another owner (subscribers, journal, catch-up streams) are
 * read from it when the page is rendered. */
#ifndef CG_METRICS_H
#define CG_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "hub.h"

/* A change event published by the watcher. */
void cg_metrics_event_in(void);
/* A change event read by a catch-up stream. */
void cg_metrics_catchup_event(void);
/* A reset given to a subscriber (or published for all), by reason code. */
void cg_metrics_reset(const char *reason);
/* The watcher could not resume from its saved position and started from now. */
void cg_metrics_set_watcher_history_lost(bool lost);

/* The page, in Prometheus text format: a new string (bson_free()). */
char *cg_metrics_render(cg_hub_t *hub, bool watcher_streaming);

#endif
