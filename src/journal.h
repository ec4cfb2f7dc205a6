/* journal.h: the bounded ring of recent events, and position -> slot look-up.
 *
 * Entries get consecutive sequence numbers starting at 1; the journal keeps
 * [first, next). A subscriber's cursor is the sequence number of the next entry
 * it has not yet considered. Positions are found in O(1) through a hash table
 * over the entries' position strings.
 *
 * Not thread-safe: the hub serializes every call (see hub.c). */
#ifndef CG_JOURNAL_H
#define CG_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"

typedef struct cg_journal cg_journal_t;

cg_journal_t *cg_journal_new(size_t capacity);
void cg_journal_free(cg_journal_t *j);

/* Takes the caller's reference to ev, assigns ev->seq, evicts the oldest
 * entry when full. Returns ev->seq. */
uint64_t cg_journal_append(cg_journal_t *j, cg_event_t *ev);

uint64_t cg_journal_first_seq(const cg_journal_t *j); /* oldest kept entry */
uint64_t cg_journal_next_seq(const cg_journal_t *j);  /* what the next append gets */
size_t cg_journal_count(const cg_journal_t *j);
size_t cg_journal_capacity(const cg_journal_t *j);

/* The entry with that sequence number (borrowed), or NULL when not kept. */
cg_event_t *cg_journal_get(const cg_journal_t *j, uint64_t seq);

/* Finds the cursor that resumes strictly after `position`: true and *cursor
 * set when the position is that of a kept entry, or of the last evicted
 * entry (the base), whose successors are all kept. */
bool cg_journal_find(const cg_journal_t *j, const char *position, uint64_t *cursor);

/* The position of the entry just before `cursor` (or the base), i.e. what a
 * subscriber at `cursor` would resume from; NULL when none is known. Borrowed. */
const char *cg_journal_position_before(const cg_journal_t *j, uint64_t cursor);

/* Where to resume a change stream so that it yields every kept entry again
 * (the base, else the first entry's position when it is a MARK or RESET);
 * NULL when unknown. Borrowed. */
const char *cg_journal_replay_from(const cg_journal_t *j);

#endif
