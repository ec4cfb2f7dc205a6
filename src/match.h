/* match.h: MongoDB query filters, compiled once, evaluated on BSON directly.
 *
 * A filter is a MongoDB query document (the `filter` parameter, Extended JSON
 * v2) evaluated against a change event, with MongoDB's semantics: dotted paths
 * reach into sub-documents and arrays, a condition on a scalar matches any
 * element of an array, null matches a missing field, comparisons follow BSON's
 * type order and compare int32/int64/double/decimal128 numerically.
 *
 * Supported: implicit equality, $eq $ne $gt $gte $lt $lte $in $nin, $and $or
 * $nor $not, $exists $type, $all $elemMatch $size, $regex with $options
 * (PCRE2), $mod. Refused (no code runs on the gateway): $where $expr
 * $function $accumulator $jsonSchema, and anything unknown.
 *
 * A compiled cg_match_t is immutable and may be evaluated from many threads. */
#ifndef CG_MATCH_H
#define CG_MATCH_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>

#define CG_MATCH_MAX_DEPTH 32         /* nesting of documents/arrays in a filter */
#define CG_MATCH_MAX_JSON (16 * 1024) /* bytes of filter text */

typedef struct cg_match cg_match_t;

/* Compiles a query. On failure returns NULL and writes into err a message that
 * names the problem and its path, prefixed with `what` (e.g. "filter"):
 * "filter.fullDocument.qty: $gt needs one value", "filter: $where is not
 * allowed (no code runs on the gateway)", "filter.name: invalid regex ...". */
cg_match_t *cg_match_compile(const bson_t *query, const char *what, char *err, size_t errlen);
/* The same from (Extended) JSON text: refuses text over CG_MATCH_MAX_JSON
 * bytes, text that is not one JSON object, and nesting over CG_MATCH_MAX_DEPTH. */
cg_match_t *cg_match_compile_json(const char *json, size_t len, const char *what, char *err,
                                  size_t errlen);
/* The first half of cg_match_compile_json(): the checked, parsed query
 * document (bson_destroy()), for callers that rewrite a query before
 * compiling it (auth.c's rule templates, a token's own filter). Keys that
 * libbson would read as legacy Extended JSON ($type, $regex, $options) stay
 * query operators, as in `filter`. NULL with err as above. */
bson_t *cg_match_parse_json(const char *json, size_t len, const char *what, char *err,
                            size_t errlen);
void cg_match_free(cg_match_t *m);

bool cg_match_eval(const cg_match_t *m, const bson_t *doc);

/* ANDs b into a (both compiled); takes ownership of b. Used to combine the
 * ns/op/id shorthands with `filter`. Returns a. */
cg_match_t *cg_match_and(cg_match_t *a, cg_match_t *b);

/* ---- what the matching index needs ---- */

/* One equality every match must satisfy: the value at `path` equals one of
 * `values` (from a top-level {path: literal}, {path: {$eq: literal}} or
 * {path: {$in: [literals]}}, possibly inside a top-level $and). Only literals
 * that can be hashed are reported: strings, numbers, ObjectIds, booleans,
 * dates; never null, regexes, arrays or documents (their equality semantics
 * are not a plain look-up). Borrowed from m. */
typedef struct cg_match_eq {
    const char *path;
    const bson_value_t *values;
    size_t n_values;
} cg_match_eq_t;

/* Returns the number of required equalities and sets *out to them (borrowed). */
size_t cg_match_required_equalities(const cg_match_t *m, const cg_match_eq_t **out);

/* Calls fn for every value the dotted path reaches in doc, with MongoDB's
 * array traversal (each element of an array on the way, and the leaf array's
 * elements). Stops early when fn returns false. */
void cg_match_path_values(const bson_t *doc, const char *path,
                          bool (*fn)(const bson_value_t *v, void *ctx), void *ctx);

/* A hash of a hashable value such that values MongoDB's $eq finds equal hash
 * equally (5, 5L, 5.0 and NumberDecimal("5") alike). Returns false for values
 * that are not hashable (see cg_match_eq_t). */
bool cg_match_value_hash(const bson_value_t *v, uint64_t *hash);
/* MongoDB equality of two values (numbers across types, documents and arrays
 * field by field). */
bool cg_match_value_equal(const bson_value_t *a, const bson_value_t *b);

#endif
