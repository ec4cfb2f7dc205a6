/* index.h: subscribers indexed by the equalities their filters require.
 *
 * Each subscriber is registered under one required equality of its filter
 * (path = value, or path in [values]), chosen to be selective; an event then
 * reaches its candidates by hash look-up of the values it has at the indexed
 * paths. Subscribers whose filters require no equality are kept in a scan
 * list and are candidates for every event. Candidates still have their whole
 * filter evaluated: the index only narrows who is asked.
 *
 * The index stores opaque subscriber pointers and never dereferences them.
 * Not thread-safe: the hub serializes every call. */
#ifndef CG_INDEX_H
#define CG_INDEX_H

#include <bson/bson.h>
#include <stddef.h>

#include "match.h"

typedef struct cg_index cg_index_t;
typedef struct cg_index_reg cg_index_reg_t;

cg_index_t *cg_index_new(void);
/* All registrations must have been removed. */
void cg_index_free(cg_index_t *idx);

/* Registers sub by filter m (may be NULL: matches everything). The returned
 * registration is removed with cg_index_remove(). */
cg_index_reg_t *cg_index_add(cg_index_t *idx, void *sub, const cg_match_t *m);
void cg_index_remove(cg_index_t *idx, cg_index_reg_t *reg);

/* Calls fn(sub, ctx) for every candidate for doc: indexed subscribers whose
 * value doc has (a subscriber may be named more than once when doc has several
 * of its values), then every scanned subscriber. */
void cg_index_candidates(cg_index_t *idx, const bson_t *doc, void (*fn)(void *sub, void *ctx),
                         void *ctx);

size_t cg_index_indexed_count(const cg_index_t *idx);
size_t cg_index_scanned_count(const cg_index_t *idx);

#endif
