/* filter.h: what a subscriber wants, evaluated on journal events.
 *
 * This version knows the `ns` and `op` shorthands; every condition that is
 * set must hold (ns entries are alternatives among themselves, ops too).
 * An empty filter matches every change event. */
#ifndef CG_FILTER_H
#define CG_FILTER_H

#include <stdbool.h>
#include <stddef.h>

#include "event.h"

typedef struct cg_filter cg_filter_t;

cg_filter_t *cg_filter_new(void);
void cg_filter_free(cg_filter_t *f);

/* Adds comma-separated "DB" or "DB.COLL" entries. Returns 0, or -1 with err. */
int cg_filter_add_ns(cg_filter_t *f, const char *csv, char *err, size_t errlen);
/* Adds comma-separated operation types (insert, update, ...). Returns 0 or -1. */
int cg_filter_add_ops(cg_filter_t *f, const char *csv, char *err, size_t errlen);

/* True when a CHANGE event is wanted. (RESET is for everyone; MARK for no one:
 * the hub decides those, not the filter.) */
bool cg_filter_match(const cg_filter_t *f, const cg_event_t *ev);

#endif
