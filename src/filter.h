/* filter.h: what a subscriber wants, compiled into one MongoDB query tree.
 *
 * The shorthands `ns` (DB or DB.COLL), `op` (operation types) and `id`
 * (documentKey._id values, Extended JSON) and the `filter` query are ANDed
 * into a single cg_match_t, evaluated on each change event's BSON. An empty
 * filter matches every change event. Build it with the add/set calls, then
 * cg_filter_compile() once; it is immutable afterwards.
 *
 * An authorization rule (issue 7: auth.c makes one per verified token) is
 * ANDed with all that, but evaluated on the event's subject view
 * (cg_event_subject(): the document the event is about, so deletes are
 * covered), not on the event itself. */
#ifndef CG_FILTER_H
#define CG_FILTER_H

#include <stdbool.h>
#include <stddef.h>

#include "event.h"
#include "match.h"

typedef struct cg_filter cg_filter_t;

cg_filter_t *cg_filter_new(void);
void cg_filter_free(cg_filter_t *f);

/* Each returns 0, or -1 with a message in err naming the parameter. */
int cg_filter_add_ns(cg_filter_t *f, const char *csv, char *err, size_t errlen);
int cg_filter_add_ops(cg_filter_t *f, const char *csv, char *err, size_t errlen);
/* One documentKey._id value as Extended JSON (42, "abc", {"$oid": "..."}). */
int cg_filter_add_id(cg_filter_t *f, const char *json, char *err, size_t errlen);
/* The `filter` query (Extended JSON object); at most once. */
int cg_filter_set_query(cg_filter_t *f, const char *json, char *err, size_t errlen);
/* The authorization rule (a query, copied); at most once, before compiling.
 * cg_filter_match() then also requires it to match cg_event_subject(ev), and
 * an event with no subject view matches no filter that has a rule. */
int cg_filter_set_rule(cg_filter_t *f, const bson_t *rule, char *err, size_t errlen);
/* Calls fn with every field path the `filter` query looks at (before
 * cg_filter_compile()), operators' arguments included ($elemMatch's
 * conditions count as their array's path). Stops and returns false when fn
 * does. The ns/op/id shorthands look at ns, operationType and documentKey. */
bool cg_filter_query_paths(const cg_filter_t *f, bool (*fn)(const char *path, void *ctx),
                           void *ctx);
/* Builds the match tree. */
int cg_filter_compile(cg_filter_t *f, char *err, size_t errlen);

/* True when a CHANGE event is wanted. (RESET is for everyone; MARK for no one:
 * the hub decides those, not the filter.) */
bool cg_filter_match(const cg_filter_t *f, const cg_event_t *ev);
/* The tree for the matching index: the whole filter, ANDed with the rule
 * when there is one (rule first). Its required equalities hold on the event
 * (the user's) or on its subject view (the rule's): hub.c looks candidates up
 * on the subject view and says why that misses no one. Never evaluate it. */
const cg_match_t *cg_filter_tree(const cg_filter_t *f);

#endif
