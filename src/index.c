/* index.c: a chained hash table keyed by (indexed path, value hash), plus the
 * scan list. Paths are few (what subscribers filter on), so they live in a
 * small array with reference counts. */
#include "index.h"

#include <string.h>

typedef struct entry {
    uint64_t key; /* mix of path id and value hash */
    uint32_t path_id;
    void *sub;
    struct entry *bucket_next;
    struct entry *reg_next; /* the registration's other entries */
} entry_t;

struct cg_index_reg {
    entry_t *entries; /* NULL when scanned */
    uint32_t path_id;
    void *sub;
    cg_index_reg_t *prev, *next; /* the scan list, when scanned */
};

typedef struct {
    char *path;
    size_t refs;
} path_t;

struct cg_index {
    entry_t **buckets;
    size_t n_buckets, n_entries; /* n_buckets: a power of two */
    path_t *paths;
    size_t n_paths;
    cg_index_reg_t *scan;
    size_t n_indexed, n_scanned;
};

/* Paths that almost every event has with few distinct values: indexing by them
 * narrows little, so another equality is preferred when a filter has one. */
static bool low_selectivity(const char *path)
{
    return strcmp(path, "operationType") == 0 || strcmp(path, "ns.db") == 0 ||
           strcmp(path, "ns.coll") == 0;
}

static uint64_t mix(uint32_t path_id, uint64_t hash)
{
    uint64_t k = hash ^ ((uint64_t)path_id * 0x9E3779B97F4A7C15ULL);
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return k;
}

cg_index_t *cg_index_new(void)
{
    cg_index_t *idx = bson_malloc0(sizeof *idx);
    idx->n_buckets = 64;
    idx->buckets = bson_malloc0(idx->n_buckets * sizeof *idx->buckets);
    return idx;
}

void cg_index_free(cg_index_t *idx)
{
    if (!idx)
        return;
    for (size_t i = 0; i < idx->n_paths; i++)
        bson_free(idx->paths[i].path);
    bson_free(idx->paths);
    bson_free(idx->buckets);
    bson_free(idx);
}

static uint32_t path_ref(cg_index_t *idx, const char *path)
{
    size_t free_slot = idx->n_paths;
    for (size_t i = 0; i < idx->n_paths; i++) {
        if (idx->paths[i].refs && strcmp(idx->paths[i].path, path) == 0) {
            idx->paths[i].refs++;
            return (uint32_t)i;
        }
        if (!idx->paths[i].refs && free_slot == idx->n_paths)
            free_slot = i;
    }
    if (free_slot == idx->n_paths) {
        idx->paths = bson_realloc(idx->paths, (idx->n_paths + 1) * sizeof *idx->paths);
        idx->paths[idx->n_paths++] = (path_t){NULL, 0};
    }
    bson_free(idx->paths[free_slot].path);
    idx->paths[free_slot].path = bson_strdup(path);
    idx->paths[free_slot].refs = 1;
    return (uint32_t)free_slot;
}

static void grow(cg_index_t *idx)
{
    size_t n = idx->n_buckets * 2;
    entry_t **b = bson_malloc0(n * sizeof *b);
    for (size_t i = 0; i < idx->n_buckets; i++) {
        entry_t *e = idx->buckets[i], *next;
        for (; e; e = next) {
            next = e->bucket_next;
            e->bucket_next = b[e->key & (n - 1)];
            b[e->key & (n - 1)] = e;
        }
    }
    bson_free(idx->buckets);
    idx->buckets = b;
    idx->n_buckets = n;
}

/* Picks the equality to index by: not a low-selectivity path when there is a
 * choice, then the fewest values (each value is one entry). */
static const cg_match_eq_t *choose(const cg_match_eq_t *eqs, size_t n)
{
    const cg_match_eq_t *best = NULL;
    for (size_t i = 0; i < n; i++) {
        const cg_match_eq_t *e = &eqs[i];
        if (!best) {
            best = e;
            continue;
        }
        bool e_low = low_selectivity(e->path), b_low = low_selectivity(best->path);
        if ((b_low && !e_low) || (b_low == e_low && e->n_values < best->n_values))
            best = e;
    }
    return best;
}

cg_index_reg_t *cg_index_add(cg_index_t *idx, void *sub, const cg_match_t *m)
{
    cg_index_reg_t *reg = bson_malloc0(sizeof *reg);
    reg->sub = sub;
    const cg_match_eq_t *eqs = NULL;
    size_t n = m ? cg_match_required_equalities(m, &eqs) : 0;
    const cg_match_eq_t *eq = n ? choose(eqs, n) : NULL;
    if (!eq || eq->n_values == 0) {
        reg->next = idx->scan;
        if (idx->scan)
            idx->scan->prev = reg;
        idx->scan = reg;
        idx->n_scanned++;
        return reg;
    }
    reg->path_id = path_ref(idx, eq->path);
    for (size_t i = 0; i < eq->n_values; i++) {
        uint64_t h;
        if (!cg_match_value_hash(&eq->values[i], &h))
            continue; /* cannot happen: required equalities are hashable */
        entry_t *e = bson_malloc0(sizeof *e);
        e->key = mix(reg->path_id, h);
        e->path_id = reg->path_id;
        e->sub = sub;
        e->reg_next = reg->entries;
        reg->entries = e;
        if (++idx->n_entries > idx->n_buckets * 2)
            grow(idx);
        entry_t **b = &idx->buckets[e->key & (idx->n_buckets - 1)];
        e->bucket_next = *b;
        *b = e;
    }
    idx->n_indexed++;
    return reg;
}

void cg_index_remove(cg_index_t *idx, cg_index_reg_t *reg)
{
    if (!reg)
        return;
    if (!reg->entries) {
        if (reg->prev)
            reg->prev->next = reg->next;
        else
            idx->scan = reg->next;
        if (reg->next)
            reg->next->prev = reg->prev;
        idx->n_scanned--;
        bson_free(reg);
        return;
    }
    while (reg->entries) {
        entry_t *e = reg->entries;
        reg->entries = e->reg_next;
        entry_t **p = &idx->buckets[e->key & (idx->n_buckets - 1)];
        while (*p != e)
            p = &(*p)->bucket_next;
        *p = e->bucket_next;
        idx->n_entries--;
        bson_free(e);
    }
    idx->paths[reg->path_id].refs--;
    idx->n_indexed--;
    bson_free(reg);
}

typedef struct {
    cg_index_t *idx;
    uint32_t path_id;
    void (*fn)(void *sub, void *ctx);
    void *ctx;
} lookup_t;

static bool on_value(const bson_value_t *v, void *arg)
{
    lookup_t *l = arg;
    uint64_t h;
    if (!cg_match_value_hash(v, &h))
        return true;
    uint64_t key = mix(l->path_id, h);
    for (entry_t *e = l->idx->buckets[key & (l->idx->n_buckets - 1)]; e; e = e->bucket_next)
        if (e->key == key && e->path_id == l->path_id)
            l->fn(e->sub, l->ctx);
    return true;
}

void cg_index_candidates(cg_index_t *idx, const bson_t *doc, void (*fn)(void *sub, void *ctx),
                         void *ctx)
{
    lookup_t l = {idx, 0, fn, ctx};
    for (size_t i = 0; i < idx->n_paths; i++) {
        if (!idx->paths[i].refs)
            continue;
        l.path_id = (uint32_t)i;
        cg_match_path_values(doc, idx->paths[i].path, on_value, &l);
    }
    cg_index_reg_t *next;
    for (cg_index_reg_t *r = idx->scan; r; r = next) {
        next = r->next; /* fn may not remove, but be safe */
        fn(r->sub, ctx);
    }
}

size_t cg_index_indexed_count(const cg_index_t *idx)
{
    return idx->n_indexed;
}

size_t cg_index_scanned_count(const cg_index_t *idx)
{
    return idx->n_scanned;
}
