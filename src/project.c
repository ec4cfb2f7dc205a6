/* project.c: parsing and applying inclusion projections. */
#include "project.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const always_kept[] = {"_id", "operationType", "ns", "documentKey",
                                          "clusterTime"};

/* A path tree: a node with no children means "keep the whole value". */
typedef struct node {
    char *name;
    struct node *children, *next;
} node_t;

struct cg_project {
    node_t root;
    char *key;
};

static void free_nodes(node_t *n)
{
    while (n) {
        node_t *next = n->next;
        free_nodes(n->children);
        bson_free(n->name);
        bson_free(n);
        n = next;
    }
}

void cg_project_free(cg_project_t *p)
{
    if (!p)
        return;
    free_nodes(p->root.children);
    bson_free(p->key);
    bson_free(p);
}

static node_t *child(node_t *parent, const char *name, size_t len, bool create)
{
    for (node_t *c = parent->children; c; c = c->next)
        if (strlen(c->name) == len && memcmp(c->name, name, len) == 0)
            return c;
    if (!create)
        return NULL;
    node_t *c = bson_malloc0(sizeof *c);
    c->name = bson_strndup(name, len);
    c->next = parent->children;
    parent->children = c;
    return c;
}

static int validate_path(const char *path, size_t len, char *err, size_t errlen)
{
    if (len == 0) {
        snprintf(err, errlen, "fields: an empty path");
        return -1;
    }
    if (len > CG_PROJECT_MAX_PATH) {
        snprintf(err, errlen, "fields: a path is longer than %d characters", CG_PROJECT_MAX_PATH);
        return -1;
    }
    const char *seg = path;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || path[i] == '.') {
            if (path + i == seg) {
                snprintf(err, errlen, "fields: '%.*s' has an empty path component", (int)len, path);
                return -1;
            }
            if (*seg == '$') {
                snprintf(err, errlen, "fields: '%.*s': a path component cannot start with '$'",
                         (int)len, path);
                return -1;
            }
            seg = path + i + 1;
        } else if ((unsigned char)path[i] < 0x20) {
            snprintf(err, errlen, "fields: a path has a control character");
            return -1;
        }
    }
    return 0;
}

/* Adds one path. A path under an existing leaf is already kept whole; a leaf
 * added over existing sub-paths replaces them. */
static void add_path(cg_project_t *p, const char *path, size_t len)
{
    node_t *n = &p->root;
    const char *seg = path, *end = path + len;
    for (;;) {
        const char *dot = memchr(seg, '.', (size_t)(end - seg));
        size_t slen = dot ? (size_t)(dot - seg) : (size_t)(end - seg);
        node_t *c = child(n, seg, slen, false);
        if (c && !c->children)
            return;
        if (!c)
            c = child(n, seg, slen, true);
        if (!dot) {
            free_nodes(c->children);
            c->children = NULL;
            return;
        }
        n = c;
        seg = dot + 1;
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collects leaf paths of the tree, for the canonical key. */
static void collect(const node_t *n, char *prefix, size_t plen, char **out, size_t *count)
{
    for (const node_t *c = n->children; c; c = c->next) {
        size_t len = plen + (plen ? 1 : 0) + strlen(c->name);
        char *path = bson_malloc(len + 1);
        snprintf(path, len + 1, "%.*s%s%s", (int)plen, prefix, plen ? "." : "", c->name);
        if (!c->children)
            out[(*count)++] = path;
        else {
            collect(c, path, len, out, count);
            bson_free(path);
        }
    }
}

static size_t count_leaves(const node_t *n)
{
    size_t k = 0;
    for (const node_t *c = n->children; c; c = c->next)
        k += c->children ? count_leaves(c) : 1;
    return k;
}

cg_project_t *cg_project_new(const char *csv, char *err, size_t errlen)
{
    cg_project_t *p = bson_malloc0(sizeof *p);
    size_t n_paths = 0;
    const char *s = csv;
    for (;;) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        if (validate_path(s, len, err, errlen) != 0 || ++n_paths > CG_PROJECT_MAX_PATHS) {
            if (n_paths > CG_PROJECT_MAX_PATHS)
                snprintf(err, errlen, "fields: more than %d paths", CG_PROJECT_MAX_PATHS);
            cg_project_free(p);
            return NULL;
        }
        add_path(p, s, len);
        if (!comma)
            break;
        s = comma + 1;
    }
    for (size_t i = 0; i < sizeof always_kept / sizeof *always_kept; i++)
        add_path(p, always_kept[i], strlen(always_kept[i]));

    size_t k = count_leaves(&p->root), count = 0;
    char **leaves = bson_malloc0(k * sizeof *leaves);
    collect(&p->root, "", 0, leaves, &count);
    qsort(leaves, count, sizeof *leaves, cmp_str);
    bson_string_t *key = bson_string_new("");
    for (size_t i = 0; i < count; i++) {
        bson_string_append_printf(key, "%s%s", i ? "," : "", leaves[i]);
        bson_free(leaves[i]);
    }
    bson_free(leaves);
    p->key = bson_string_free(key, false);
    return p;
}

const char *cg_project_key(const cg_project_t *p)
{
    return p->key;
}

static void apply_node(const node_t *n, const bson_t *doc, bson_t *out);

/* Projects the elements of an array: documents recursively, other values
 * dropped (as MongoDB does for a dotted path through an array). */
static void apply_array(const node_t *n, bson_iter_t *arr, bson_t *out)
{
    uint32_t idx = 0;
    while (bson_iter_next(arr)) {
        const char *key;
        char buf[16];
        if (BSON_ITER_HOLDS_DOCUMENT(arr)) {
            uint32_t len;
            const uint8_t *data;
            bson_t sub, child_out;
            bson_iter_document(arr, &len, &data);
            if (!bson_init_static(&sub, data, len))
                continue;
            bson_uint32_to_string(idx++, &key, buf, sizeof buf);
            bson_append_document_begin(out, key, -1, &child_out);
            apply_node(n, &sub, &child_out);
            bson_append_document_end(out, &child_out);
        } else if (BSON_ITER_HOLDS_ARRAY(arr)) {
            bson_iter_t inner;
            bson_t child_out;
            bson_iter_recurse(arr, &inner);
            bson_uint32_to_string(idx++, &key, buf, sizeof buf);
            bson_append_array_begin(out, key, -1, &child_out);
            apply_array(n, &inner, &child_out);
            bson_append_array_end(out, &child_out);
        }
    }
}

static void apply_node(const node_t *n, const bson_t *doc, bson_t *out)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, doc))
        return;
    while (bson_iter_next(&it)) {
        const char *name = bson_iter_key(&it);
        const node_t *c = child((node_t *)n, name, strlen(name), false);
        if (!c)
            continue;
        if (!c->children) {
            bson_append_iter(out, name, -1, &it);
        } else if (BSON_ITER_HOLDS_DOCUMENT(&it)) {
            uint32_t len;
            const uint8_t *data;
            bson_t sub, child_out;
            bson_iter_document(&it, &len, &data);
            if (!bson_init_static(&sub, data, len))
                continue;
            bson_append_document_begin(out, name, -1, &child_out);
            apply_node(c, &sub, &child_out);
            bson_append_document_end(out, &child_out);
        } else if (BSON_ITER_HOLDS_ARRAY(&it)) {
            bson_iter_t arr;
            bson_t child_out;
            bson_iter_recurse(&it, &arr);
            bson_append_array_begin(out, name, -1, &child_out);
            apply_array(c, &arr, &child_out);
            bson_append_array_end(out, &child_out);
        }
        /* a scalar where a sub-path was asked for: omitted, as MongoDB does */
    }
}

void cg_project_apply(const cg_project_t *p, const bson_t *doc, bson_t *out)
{
    apply_node(&p->root, doc, out);
}

/* True when the path of `len` bytes is kept whole by the tree: some leaf of
 * the tree is the path itself or one of its ancestors. */
static bool covered(const node_t *root, const char *path, size_t len)
{
    const node_t *n = root;
    const char *seg = path, *end = path + len;
    for (;;) {
        const char *dot = memchr(seg, '.', (size_t)(end - seg));
        size_t slen = dot ? (size_t)(dot - seg) : (size_t)(end - seg);
        n = child((node_t *)n, seg, slen, false);
        if (!n)
            return false;
        if (!n->children)
            return true; /* a leaf: kept whole, with everything under it */
        if (!dot)
            return false; /* the path asks for more than the tree's parts of it */
        seg = dot + 1;
    }
}

static node_t *copy_nodes(const node_t *n)
{
    node_t *head = NULL, **tail = &head;
    for (; n; n = n->next) {
        node_t *c = bson_malloc0(sizeof *c);
        c->name = bson_strdup(n->name);
        c->children = copy_nodes(n->children);
        *tail = c;
        tail = &c->next;
    }
    return head;
}

static cg_project_t *copy_project(const cg_project_t *p)
{
    cg_project_t *c = bson_malloc0(sizeof *c);
    c->root.children = copy_nodes(p->root.children);
    c->key = bson_strdup(p->key);
    return c;
}

int cg_project_restrict(const cg_project_t *asked, const cg_project_t *allowed, cg_project_t **out,
                        char *err, size_t errlen)
{
    *out = NULL;
    if (!asked && !allowed)
        return 0;
    if (!allowed || !asked) {
        *out = copy_project(asked ? asked : allowed);
        return 0;
    }
    /* The key lists asked's leaves (always-kept ones included, which every
     * projection, hence allowed, has too). */
    const char *key = cg_project_key(asked);
    for (const char *s = key;;) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        if (!covered(&allowed->root, s, len)) {
            snprintf(err, errlen, "fields: '%.*s' is not within the fields the token allows",
                     (int)len, s);
            return -1;
        }
        if (!comma)
            break;
        s = comma + 1;
    }
    *out = copy_project(asked);
    return 0;
}

bool cg_project_covers(const cg_project_t *p, const char *path)
{
    return covered(&p->root, path, strlen(path));
}
