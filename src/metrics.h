/* metrics.h: process-wide counters, and the /metrics page.
 *
 * Counters are atomics owned by this module, bumped from any thread; gauges
 * that belong to another owner (the hub's journal and catch-up streams, the
 * watcher's position) are read from it when the page is rendered. */
#ifndef CG_METRICS_H
#define CG_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "hub.h"
#include "watcher.h"

/* How a subscriber is served. Front ends (HTTP, FastCGI) report theirs. */
typedef enum {
    CG_TRANSPORT_SSE,
    CG_TRANSPORT_NDJSON,
    CG_TRANSPORT_POLL,
    CG_TRANSPORTS
} cg_transport_t;

/* Why a subscriber was dropped or refused before it asked to end. */
typedef enum {
    CG_DROP_CLIENT_GONE,   /* the client closed or reset its connection */
    CG_DROP_WRITE_TIMEOUT, /* it took nothing for --write-timeout seconds */
    CG_DROP_TOO_MANY,      /* refused: --max-subscribers reached */
    CG_DROP_SHUTTING_DOWN, /* ended or refused by a shutdown */
    CG_DROPS
} cg_drop_t;

/* A change event published by the watcher. */
void cg_metrics_event_in(void);
/* A change event read by a catch-up stream. */
void cg_metrics_catchup_event(void);
/* A reset given to a subscriber (or published for all), by reason code. */
void cg_metrics_reset(const char *reason);
/* The watcher could not resume from its saved position and started from now. */
void cg_metrics_set_watcher_history_lost(bool lost);
/* A subscriber of transport t came (+1) or went (-1). */
void cg_metrics_subscribers(cg_transport_t t, int delta);
/* Messages (events, resets) and bytes (everything, heartbeats included) sent
 * to subscribers of transport t. */
void cg_metrics_sent(cg_transport_t t, unsigned long long messages, unsigned long long bytes);
void cg_metrics_drop(cg_drop_t why);

/* The page, in Prometheus text format: a new string (bson_free()). The
 * watcher's newest position (an event's or a postBatchResumeToken) gives its
 * lag by its clusterTime. */
char *cg_metrics_render(cg_hub_t *hub, cg_watcher_t *watcher);

/* The /healthz answer: 200 with {"status":"ok",...} while the watcher streams
 * and the hub is live, else 503 with the reason. A new string (free()); its
 * HTTP status in *status. */
char *cg_metrics_health(cg_hub_t *hub, cg_watcher_t *watcher, unsigned *status);

#endif
