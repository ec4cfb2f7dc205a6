/* project.h: the `fields` projection: which parts of a change event to send.
 *
 * An inclusion projection by dotted paths, like MongoDB's find projection:
 * "fullDocument.owner" keeps fullDocument: {owner: ...}, reaching into arrays
 * of documents. _id, operationType, ns, documentKey and clusterTime are always
 * kept (the position and what the event is about). Identical field lists give
 * the same canonical key, so the hub can share one projection, and each event
 * is serialized once per distinct projection. Immutable once parsed. */
#ifndef CG_PROJECT_H
#define CG_PROJECT_H

#include <bson/bson.h>
#include <stddef.h>

#define CG_PROJECT_MAX_PATHS 64
#define CG_PROJECT_MAX_PATH 256

typedef struct cg_project cg_project_t;

/* Parses comma-separated paths. Returns NULL with err naming the problem. */
cg_project_t *cg_project_new(const char *csv, char *err, size_t errlen);
void cg_project_free(cg_project_t *p);

/* The canonical form (sorted, deduplicated paths, always-kept ones included),
 * equal for equivalent projections. Borrowed. */
const char *cg_project_key(const cg_project_t *p);

/* A subscriber's projection under a token's limit (issue 7: the token's
 * "changegate": {"fields": ...}, the most it may see). asked: the `fields`
 * parameter's projection; allowed: the token's; either may be NULL (none).
 * Sets *out to a new projection: allowed when nothing was asked, asked when
 * every asked path is within allowed (equal to an allowed path or under
 * one), NULL when neither is given. An asked path outside allowed (including
 * a parent of allowed paths, which would show more than they do) is refused,
 * not silently dropped: returns -1 with err naming it ("fields:
 * 'fullDocument' is not within the fields the token allows"), for a 403
 * field_not_allowed. The always-kept fields are within every projection. */
int cg_project_restrict(const cg_project_t *asked, const cg_project_t *allowed, cg_project_t **out,
                        char *err, size_t errlen);

/* True when p keeps the dotted path whole (the path or one of its ancestors
 * is one of p's fields): what a filter on that path may look at. */
bool cg_project_covers(const cg_project_t *p, const char *path);

/* Writes the projection of doc into out (initialised by the caller). */
void cg_project_apply(const cg_project_t *p, const bson_t *doc, bson_t *out);

#endif
