/* journal.c: ring buffer plus an open-addressing position index.
 *
 * The index maps a position string to the sequence number of its entry. It
 * uses linear probing with backward-shift deletion, sized to at least twice
 * the capacity so probes stay short; keys are not copied (they are the
 * entries' own position strings, removed from the index before eviction). */
#include "journal.h"

#include <string.h>

typedef struct {
    uint64_t hash; /* 0 = empty slot */
    uint64_t seq;
} index_slot_t;

struct cg_journal {
    cg_event_t **ring;
    size_t capacity;
    uint64_t first, next; /* kept entries are [first, next) */
    index_slot_t *index;
    size_t index_mask;
    char *base; /* position of the last evicted entry, or NULL */
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h ? h : 1;
}

cg_journal_t *cg_journal_new(size_t capacity)
{
    cg_journal_t *j = bson_malloc0(sizeof *j);
    j->capacity = capacity ? capacity : 1;
    j->ring = bson_malloc0(j->capacity * sizeof *j->ring);
    j->first = j->next = 1;
    size_t n = 16;
    while (n < j->capacity * 2 + 2)
        n <<= 1;
    j->index = bson_malloc0(n * sizeof *j->index);
    j->index_mask = n - 1;
    return j;
}

void cg_journal_free(cg_journal_t *j)
{
    if (!j)
        return;
    for (uint64_t s = j->first; s < j->next; s++)
        cg_event_unref(j->ring[s % j->capacity]);
    bson_free(j->ring);
    bson_free(j->index);
    bson_free(j->base);
    bson_free(j);
}

cg_event_t *cg_journal_get(const cg_journal_t *j, uint64_t seq)
{
    if (seq < j->first || seq >= j->next)
        return NULL;
    return j->ring[seq % j->capacity];
}

static bool index_lookup(const cg_journal_t *j, const char *position, size_t *slot_out)
{
    uint64_t h = hash_str(position);
    for (size_t i = h & j->index_mask;; i = (i + 1) & j->index_mask) {
        index_slot_t *s = &j->index[i];
        if (s->hash == 0)
            return false;
        if (s->hash == h) {
            cg_event_t *ev = cg_journal_get(j, s->seq);
            if (ev && ev->position && strcmp(ev->position, position) == 0) {
                *slot_out = i;
                return true;
            }
        }
    }
}

static void index_put(cg_journal_t *j, const cg_event_t *ev)
{
    size_t i;
    if (index_lookup(j, ev->position, &i)) { /* a repeated position: the newest wins */
        j->index[i].seq = ev->seq;
        return;
    }
    uint64_t h = hash_str(ev->position);
    for (i = h & j->index_mask; j->index[i].hash != 0; i = (i + 1) & j->index_mask)
        ;
    j->index[i].hash = h;
    j->index[i].seq = ev->seq;
}

/* Removes slot i and shifts later members of its probe run back, so lookups
 * never stop early at a hole (no tombstones needed). */
static void index_delete_slot(cg_journal_t *j, size_t i)
{
    size_t hole = i;
    for (size_t k = (i + 1) & j->index_mask; j->index[k].hash != 0; k = (k + 1) & j->index_mask) {
        size_t home = j->index[k].hash & j->index_mask;
        /* Move k into the hole unless its home lies cyclically in (hole, k]. */
        bool home_between = hole <= k ? (home > hole && home <= k) : (home > hole || home <= k);
        if (!home_between) {
            j->index[hole] = j->index[k];
            hole = k;
        }
    }
    j->index[hole].hash = 0;
    j->index[hole].seq = 0;
}

static void evict_oldest(cg_journal_t *j)
{
    cg_event_t *old = j->ring[j->first % j->capacity];
    size_t i;
    if (old->position && index_lookup(j, old->position, &i) && j->index[i].seq == old->seq)
        index_delete_slot(j, i);
    if (old->position) {
        bson_free(j->base);
        j->base = bson_strdup(old->position);
    }
    j->ring[j->first % j->capacity] = NULL;
    j->first++;
    cg_event_unref(old);
}

uint64_t cg_journal_append(cg_journal_t *j, cg_event_t *ev)
{
    if (j->next - j->first == j->capacity)
        evict_oldest(j);
    ev->seq = j->next++;
    j->ring[ev->seq % j->capacity] = ev;
    if (ev->position)
        index_put(j, ev);
    return ev->seq;
}

uint64_t cg_journal_first_seq(const cg_journal_t *j)
{
    return j->first;
}

uint64_t cg_journal_next_seq(const cg_journal_t *j)
{
    return j->next;
}

size_t cg_journal_count(const cg_journal_t *j)
{
    return (size_t)(j->next - j->first);
}

size_t cg_journal_capacity(const cg_journal_t *j)
{
    return j->capacity;
}

bool cg_journal_find(const cg_journal_t *j, const char *position, uint64_t *cursor)
{
    size_t i;
    if (index_lookup(j, position, &i)) {
        *cursor = j->index[i].seq + 1;
        return true;
    }
    if (j->base && strcmp(j->base, position) == 0) {
        *cursor = j->first;
        return true;
    }
    return false;
}

const char *cg_journal_position_before(const cg_journal_t *j, uint64_t cursor)
{
    if (cursor > j->next)
        cursor = j->next;
    for (uint64_t s = cursor; s > j->first; s--) {
        cg_event_t *ev = j->ring[(s - 1) % j->capacity];
        if (ev->position)
            return ev->position;
    }
    return j->base;
}

const char *cg_journal_replay_from(const cg_journal_t *j)
{
    if (j->base)
        return j->base;
    cg_event_t *first = cg_journal_get(j, j->first);
    if (first && first->kind != CG_EVENT_CHANGE)
        return first->position;
    return NULL;
}
