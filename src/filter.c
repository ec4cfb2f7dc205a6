/* filter.c: turning the subscriber's parameters into one query tree. */
#include "filter.h"

#include <bson/bson.h>
#include <stdio.h>
#include <string.h>

#define MAX_ID_JSON 1024

typedef struct {
    char *db;
    char *coll; /* NULL: the whole database */
} ns_entry_t;

struct cg_filter {
    ns_entry_t *ns;
    size_t n_ns;
    char **ops;
    size_t n_ops;
    bson_t
        *ids; /* {"0": v0, "1": v1, ...}: the id values (a pointer: bson_t is 128-byte aligned) */
    uint32_t n_ids;
    cg_match_t *query; /* the `filter` parameter, until compiled in */
    bool has_query;
    char *query_json;  /* its text, until compiled: compiled again into `index` */
    cg_match_t *match; /* the whole tree, after cg_filter_compile() */
    /* The authorization rule (cg_filter_set_rule), evaluated on the event's
     * subject view rather than on the event, so it cannot join `match`. */
    cg_match_t *rule;
    bson_t *rule_query; /* until compiled: compiled again into `index` */
    /* With a rule: rule AND the user's filter, as one tree, only for the
     * matching index's required equalities (never evaluated). */
    cg_match_t *index;
    /* Nothing to check: every change matches. Most subscribers of a broad
     * feed are like this, and each event is matched once per subscriber. */
    bool everything;
};

/* The operation types MongoDB 6.0 emits (with showExpandedEvents for the DDL ones). */
static const char *const known_ops[] = {"insert",
                                        "update",
                                        "replace",
                                        "delete",
                                        "drop",
                                        "rename",
                                        "dropDatabase",
                                        "invalidate",
                                        "create",
                                        "createIndexes",
                                        "dropIndexes",
                                        "modify",
                                        "shardCollection",
                                        "refineCollectionShardKey",
                                        "reshardCollection",
                                        NULL};

cg_filter_t *cg_filter_new(void)
{
    cg_filter_t *f = bson_malloc0(sizeof(cg_filter_t));
    f->ids = bson_new();
    return f;
}

void cg_filter_free(cg_filter_t *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_ns; i++) {
        bson_free(f->ns[i].db);
        bson_free(f->ns[i].coll);
    }
    bson_free(f->ns);
    for (size_t i = 0; i < f->n_ops; i++)
        bson_free(f->ops[i]);
    bson_free(f->ops);
    bson_destroy(f->ids);
    cg_match_free(f->query);
    bson_free(f->query_json);
    cg_match_free(f->match);
    cg_match_free(f->rule);
    if (f->rule_query)
        bson_destroy(f->rule_query);
    cg_match_free(f->index);
    bson_free(f);
}

/* Calls add(item) for each comma-separated item of csv; empty items are errors. */
static int each_item(cg_filter_t *f, const char *csv, const char *what,
                     int (*add)(cg_filter_t *, const char *, char *, size_t), char *err,
                     size_t errlen)
{
    const char *p = csv;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0) {
            snprintf(err, errlen, "%s has an empty entry", what);
            return -1;
        }
        char *item = bson_strndup(p, len);
        int rc = add(f, item, err, errlen);
        bson_free(item);
        if (rc != 0)
            return -1;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

static int add_one_ns(cg_filter_t *f, const char *item, char *err, size_t errlen)
{
    const char *dot = strchr(item, '.');
    size_t dblen = dot ? (size_t)(dot - item) : strlen(item);
    if (dblen == 0 || (dot && dot[1] == '\0')) {
        snprintf(err, errlen, "ns entry '%s' must be DB or DB.COLL", item);
        return -1;
    }
    for (size_t i = 0; i < dblen; i++) {
        if (strchr("/\\ \"$", item[i])) {
            snprintf(err, errlen, "ns entry '%s' has a character not allowed in a database name",
                     item);
            return -1;
        }
    }
    f->ns = bson_realloc(f->ns, (f->n_ns + 1) * sizeof *f->ns);
    f->ns[f->n_ns].db = bson_strndup(item, dblen);
    f->ns[f->n_ns].coll = dot ? bson_strdup(dot + 1) : NULL;
    f->n_ns++;
    return 0;
}

static int add_one_op(cg_filter_t *f, const char *item, char *err, size_t errlen)
{
    for (const char *const *k = known_ops; *k; k++) {
        if (strcmp(*k, item) == 0) {
            f->ops = bson_realloc(f->ops, (f->n_ops + 1) * sizeof *f->ops);
            f->ops[f->n_ops++] = bson_strdup(item);
            return 0;
        }
    }
    snprintf(err, errlen,
             "op '%s' is not an operation type (insert, update, replace, delete, drop, rename, "
             "dropDatabase, invalidate, create, createIndexes, dropIndexes, modify, ...)",
             item);
    return -1;
}

int cg_filter_add_ns(cg_filter_t *f, const char *csv, char *err, size_t errlen)
{
    return each_item(f, csv, "ns", add_one_ns, err, errlen);
}

int cg_filter_add_ops(cg_filter_t *f, const char *csv, char *err, size_t errlen)
{
    return each_item(f, csv, "op", add_one_op, err, errlen);
}

int cg_filter_add_id(cg_filter_t *f, const char *json, char *err, size_t errlen)
{
    size_t len = strlen(json);
    if (len == 0 || len > MAX_ID_JSON) {
        snprintf(err, errlen, "id must be an Extended JSON value of 1 to %d characters",
                 MAX_ID_JSON);
        return -1;
    }
    /* libbson parses documents only: wrap the value as {"v": ...}. */
    char *wrapped = bson_strdup_printf("{\"v\": %s}", json);
    bson_t doc;
    bson_error_t berr;
    bool ok = bson_init_from_json(&doc, wrapped, -1, &berr);
    bson_free(wrapped);
    bson_iter_t it;
    if (!ok || !bson_iter_init_find(&it, &doc, "v") || bson_iter_next(&it)) {
        if (ok)
            bson_destroy(&doc);
        snprintf(err, errlen,
                 "id is not one Extended JSON value (a string needs quotes: id=\"abc\"; an "
                 "ObjectId is id={\"$oid\":\"...\"})");
        return -1;
    }
    bson_iter_init_find(&it, &doc, "v");
    if (BSON_ITER_HOLDS_REGEX(&it)) {
        bson_destroy(&doc);
        snprintf(err, errlen, "id cannot be a regular expression");
        return -1;
    }
    char key[24];
    snprintf(key, sizeof key, "%u", f->n_ids++);
    bson_append_iter(f->ids, key, -1, &it);
    bson_destroy(&doc);
    return 0;
}

int cg_filter_set_query(cg_filter_t *f, const char *json, char *err, size_t errlen)
{
    if (f->has_query) {
        snprintf(err, errlen, "filter is given more than once");
        return -1;
    }
    f->query = cg_match_compile_json(json, strlen(json), "filter", err, errlen);
    if (!f->query)
        return -1;
    f->has_query = true;
    f->query_json = bson_strdup(json);
    return 0;
}

int cg_filter_set_rule(cg_filter_t *f, const bson_t *rule, char *err, size_t errlen)
{
    if (f->rule || f->match) {
        snprintf(err, errlen, "auth rule is given more than once, or after compiling");
        return -1;
    }
    f->rule = cg_match_compile(rule, "auth rule", err, errlen);
    if (!f->rule)
        return -1;
    f->rule_query = bson_copy(rule);
    return 0;
}

/* Opens the next element of the $and array being built. */
static void and_next(bson_t *and_arr, unsigned *n, bson_t *cond)
{
    char key[24];
    snprintf(key, sizeof key, "%u", (*n)++);
    bson_append_document_begin(and_arr, key, -1, cond);
}

/* Appends {path: {$in: [values]}} to the $and array. */
static void and_in_strings(bson_t *and_arr, unsigned *n, const char *path,
                           const char *const *values, size_t count)
{
    bson_t cond, sub, in;
    char key[24];
    and_next(and_arr, n, &cond);
    bson_append_document_begin(&cond, path, -1, &sub);
    bson_append_array_begin(&sub, "$in", -1, &in);
    for (size_t i = 0; i < count; i++) {
        snprintf(key, sizeof key, "%zu", i);
        BSON_APPEND_UTF8(&in, key, values[i]);
    }
    bson_append_array_end(&sub, &in);
    bson_append_document_end(&cond, &sub);
    bson_append_document_end(and_arr, &cond);
}

/* The shorthands as a query: ns.db $in [dbs] (a necessary condition, there
 * for the index) AND $or of each ns entry, operationType $in [ops], and
 * documentKey._id $in [ids]. Returns false when there are none. */
static bool shorthand_query(const cg_filter_t *f, bson_t *q)
{
    bson_t and_arr, cond, sub, alt, alts;
    unsigned n = 0;
    char key[24];
    bson_init(q);
    bson_append_array_begin(q, "$and", -1, &and_arr);
    if (f->n_ns) {
        const char **dbs = bson_malloc(f->n_ns * sizeof *dbs);
        for (size_t i = 0; i < f->n_ns; i++)
            dbs[i] = f->ns[i].db;
        and_in_strings(&and_arr, &n, "ns.db", dbs, f->n_ns);
        bson_free(dbs);

        and_next(&and_arr, &n, &cond);
        bson_append_array_begin(&cond, "$or", -1, &alts);
        for (size_t i = 0; i < f->n_ns; i++) {
            snprintf(key, sizeof key, "%zu", i);
            bson_append_document_begin(&alts, key, -1, &alt);
            BSON_APPEND_UTF8(&alt, "ns.db", f->ns[i].db);
            if (f->ns[i].coll)
                BSON_APPEND_UTF8(&alt, "ns.coll", f->ns[i].coll);
            bson_append_document_end(&alts, &alt);
        }
        bson_append_array_end(&cond, &alts);
        bson_append_document_end(&and_arr, &cond);
    }
    if (f->n_ops)
        and_in_strings(&and_arr, &n, "operationType", (const char *const *)f->ops, f->n_ops);
    if (f->n_ids) {
        and_next(&and_arr, &n, &cond);
        bson_append_document_begin(&cond, "documentKey._id", -1, &sub);
        BSON_APPEND_ARRAY(&sub, "$in", f->ids);
        bson_append_document_end(&cond, &sub);
        bson_append_document_end(&and_arr, &cond);
    }
    bson_append_array_end(q, &and_arr);
    return n > 0;
}

/* The shorthands compiled (an always-true tree when there are none). */
static cg_match_t *shorthand_tree(const cg_filter_t *f, char *err, size_t errlen)
{
    bson_t q;
    cg_match_t *m;
    if (shorthand_query(f, &q)) {
        m = cg_match_compile(&q, "ns/op/id", err, errlen);
    } else {
        bson_t empty = BSON_INITIALIZER;
        m = cg_match_compile(&empty, "filter", err, errlen);
    }
    bson_destroy(&q);
    return m;
}

/* The index tree: the rule first, so that on a tie (index.c's choice) the
 * rule's equality wins: it is bound to one token, so it is usually the most
 * selective ("fullDocument.owner_id" = this user), where the user's own
 * equalities are often shared by many subscribers. Compiled anew from the
 * texts because a compiled tree cannot be copied or shared. */
static cg_match_t *index_tree(const cg_filter_t *f, char *err, size_t errlen)
{
    cg_match_t *rule = cg_match_compile(f->rule_query, "auth rule", err, errlen);
    cg_match_t *user = rule ? shorthand_tree(f, err, errlen) : NULL;
    cg_match_t *query = NULL;
    if (user && f->query_json) {
        query = cg_match_compile_json(f->query_json, strlen(f->query_json), "filter", err, errlen);
        if (!query) {
            cg_match_free(user);
            user = NULL;
        }
    }
    if (!user) {
        cg_match_free(rule);
        return NULL;
    }
    return cg_match_and(rule, cg_match_and(user, query));
}

int cg_filter_compile(cg_filter_t *f, char *err, size_t errlen)
{
    f->match = shorthand_tree(f, err, errlen);
    if (!f->match)
        return -1;
    if (f->rule_query) {
        f->index = index_tree(f, err, errlen);
        if (!f->index)
            return -1;
        bson_destroy(f->rule_query);
        f->rule_query = NULL;
    }
    f->everything = !f->query && !f->rule && !f->n_ns && !f->n_ops && !f->n_ids;
    if (f->query) {
        f->match = cg_match_and(f->match, f->query);
        f->query = NULL;
    }
    bson_free(f->query_json); /* 16 KiB at most, but per subscriber: not kept */
    f->query_json = NULL;
    return 0;
}

bool cg_filter_match(const cg_filter_t *f, const cg_event_t *ev)
{
    if (f->everything)
        return ev->kind == CG_EVENT_CHANGE;
    if (ev->kind != CG_EVENT_CHANGE || !cg_match_eval(f->match, ev->doc))
        return false;
    if (!f->rule)
        return true;
    const bson_t *subject = cg_event_subject(ev);
    return subject && cg_match_eval(f->rule, subject);
}

const cg_match_t *cg_filter_tree(const cg_filter_t *f)
{
    return f->index ? f->index : f->match;
}

/* Walks a query document: field names are paths (joined to the prefix), $and
 * $or $nor take arrays of queries, other operators' arguments belong to the
 * path they stand under. */
static bool walk_paths(bson_iter_t *it, const char *prefix, bool (*fn)(const char *, void *),
                       void *ctx)
{
    while (bson_iter_next(it)) {
        const char *key = bson_iter_key(it);
        if (key[0] == '$') {
            bson_iter_t sub;
            bool logical =
                strcmp(key, "$and") == 0 || strcmp(key, "$or") == 0 || strcmp(key, "$nor") == 0;
            if (logical && BSON_ITER_HOLDS_ARRAY(it) && bson_iter_recurse(it, &sub)) {
                while (bson_iter_next(&sub)) {
                    bson_iter_t q;
                    if (BSON_ITER_HOLDS_DOCUMENT(&sub) && bson_iter_recurse(&sub, &q) &&
                        !walk_paths(&q, prefix, fn, ctx))
                        return false;
                }
            }
            continue; /* a condition of prefix, already reported */
        }
        char *path = prefix ? bson_strdup_printf("%s.%s", prefix, key) : bson_strdup(key);
        bool go = fn(path, ctx);
        bson_free(path);
        if (!go)
            return false;
    }
    return true;
}

bool cg_filter_query_paths(const cg_filter_t *f, bool (*fn)(const char *path, void *ctx), void *ctx)
{
    if ((f->n_ns && !fn("ns", ctx)) || (f->n_ops && !fn("operationType", ctx)) ||
        (f->n_ids && !fn("documentKey", ctx)))
        return false;
    if (!f->query_json)
        return true;
    char err[256];
    bson_t *q =
        cg_match_parse_json(f->query_json, strlen(f->query_json), "filter", err, sizeof err);
    bson_iter_t it;
    /* It parsed when it was set; were it not to now, nothing would be checked: refuse. */
    bool go = q && bson_iter_init(&it, q) ? walk_paths(&it, NULL, fn, ctx) : fn("", ctx);
    if (q)
        bson_destroy(q);
    return go;
}
