/* filter.c: the ns / op shorthands. */
#include "filter.h"

#include <bson/bson.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    char *db;
    char *coll; /* NULL: the whole database */
} ns_entry_t;

struct cg_filter {
    ns_entry_t *ns;
    size_t n_ns;
    char **ops;
    size_t n_ops;
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
    return bson_malloc0(sizeof(cg_filter_t));
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

static bool ns_match(const cg_filter_t *f, const cg_event_t *ev)
{
    if (f->n_ns == 0)
        return true;
    if (!ev->db)
        return false;
    for (size_t i = 0; i < f->n_ns; i++) {
        if (strcmp(f->ns[i].db, ev->db) != 0)
            continue;
        if (!f->ns[i].coll || (ev->coll && strcmp(f->ns[i].coll, ev->coll) == 0))
            return true;
    }
    return false;
}

static bool op_match(const cg_filter_t *f, const cg_event_t *ev)
{
    if (f->n_ops == 0)
        return true;
    if (!ev->op)
        return false;
    for (size_t i = 0; i < f->n_ops; i++)
        if (strcmp(f->ops[i], ev->op) == 0)
            return true;
    return false;
}

bool cg_filter_match(const cg_filter_t *f, const cg_event_t *ev)
{
    return ev->kind == CG_EVENT_CHANGE && ns_match(f, ev) && op_match(f, ev);
}
