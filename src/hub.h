/* hub.h: subscribers as cursors into the journal; who gets what next.
 *
 * The hub owns the journal and every subscriber, behind one mutex. Threads:
 * the watcher publishes, front ends (HTTP now, FastCGI later) read, the main
 * thread ticks. No transport types appear here: a front end gives each
 * subscriber two callbacks, park and wake, and the hub guarantees that every
 * park is followed by exactly one wake (never two), so a front end can map
 * them onto libmicrohttpd's suspend and resume.
 *
 * A parked subscriber is not scanned again until something it wants arrives:
 * cg_hub_publish() asks the matching index (index.c) which subscribers could
 * want a new event, evaluates their filters, and wakes only those it matches.
 *
 * Subscribers with equal `fields` share one projection, so an event is
 * serialized once per distinct projection (cached on the event).
 *
 * A subscriber whose position is older than the journal (or who reads so
 * slowly that the journal moves past it) reads from a catch-up source
 * instead: the events of a change stream that resumes after its position,
 * opened by catchup.c, kept in a small ring of their own. When that stream
 * reaches an event the journal holds, the source "joins" and its subscribers
 * move on to the journal right after that event: no gap, no repeat. At most
 * max_catchup streams are open at once; subscribers beyond that wait. */
#ifndef CG_HUB_H
#define CG_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "filter.h"
#include "journal.h"
#include "project.h"

typedef struct cg_hub cg_hub_t;
typedef struct cg_sub cg_sub_t;
typedef struct cg_source cg_source_t; /* a catch-up stream's events, owned by the hub */

/* How the hub gets catch-up streams. start: open a stream that resumes
 * strictly after `position` and feeds src (cg_hub_catchup_push/_fail/_end);
 * false when it cannot (then src is never fed). Called with the hub's lock
 * held: it must not call into the hub. */
typedef struct cg_catchup_ops {
    bool (*start)(void *ctx, cg_source_t *src, const char *position);
} cg_catchup_ops_t;

typedef struct cg_hub_stats {
    size_t subscribers, journal_count, journal_capacity;
    size_t catchup_active, catchup_peak, catchup_waiting;
} cg_hub_stats_t;

typedef struct cg_sub_ops {
    /* Both are called with the hub's lock held and must not call into the hub.
     * park: in the thread running cg_hub_next(), just before it returns
     * CG_NEXT_PARKED. wake: from any thread, exactly once after each park. */
    void (*park)(void *ctx);
    void (*wake)(void *ctx);
} cg_sub_ops_t;

typedef struct cg_sub_spec {
    cg_filter_t *filter;   /* compiled; stolen by cg_hub_subscribe, whatever its result */
    cg_project_t *project; /* NULL: whole events; stolen likewise */
    const char *position;  /* resume strictly after it; NULL: from now. Copied. */
    bool heartbeats;       /* wake the subscriber when idle for the heartbeat interval */
    int64_t deadline_ms;   /* cg_hub_now_ms() time at which to give up; 0: never */
    const cg_sub_ops_t *ops;
    void *ctx;
} cg_sub_spec_t;

typedef enum {
    CG_NEXT_EVENT,     /* *ev is a CHANGE or RESET to send; the caller owns the reference */
    CG_NEXT_HEARTBEAT, /* idle for a heartbeat interval: send a keep-alive */
    CG_NEXT_TIMEOUT,   /* the deadline passed with nothing to send */
    CG_NEXT_PARKED,    /* nothing now; ops->park was called and ops->wake will follow */
    CG_NEXT_EMPTY,     /* nothing now (asked not to park) */
    CG_NEXT_END        /* the hub is stopping: end the stream */
} cg_next_t;

typedef enum { CG_HUB_OK = 0, CG_HUB_FULL, CG_HUB_STOPPING } cg_hub_rc_t;

/* Takes ownership of journal. heartbeat_s: idle interval for heartbeats. */
cg_hub_t *cg_hub_new(cg_journal_t *journal, size_t max_subscribers, unsigned heartbeat_s);
void cg_hub_free(cg_hub_t *hub);

int64_t cg_hub_now_ms(void);

/* Watcher side. publish takes the caller's reference to ev. */
void cg_hub_publish(cg_hub_t *hub, cg_event_t *ev);
/* The watcher has caught up with "now": subscribers waiting to resolve their
 * position (or to start from now) can proceed. Until then they wait. */
void cg_hub_set_live(cg_hub_t *hub);
bool cg_hub_is_live(cg_hub_t *hub);
bool cg_hub_journal_empty(cg_hub_t *hub);
/* See cg_journal_replay_from(); a new string or NULL. */
char *cg_hub_replay_from(cg_hub_t *hub);
/* The newest position in the journal; a new string or NULL. */
char *cg_hub_last_position(cg_hub_t *hub);

/* Enables catch-up (before any subscriber). Without it, a position older
 * than the journal gets a reset (position_not_in_journal, too_slow). */
void cg_hub_set_catchup(cg_hub_t *hub, const cg_catchup_ops_t *ops, void *ctx, size_t max_catchup);

#define CG_HUB_STUCK_MS 2000
typedef enum { CG_FEED_MORE, CG_FEED_FULL, CG_FEED_STOP } cg_feed_t;
/* Catch-up thread: the next event of src's stream (takes the reference).
 * CG_FEED_FULL: not taken, because src's ring is full of events a reader
 * has not read yet; offer it again a little later (a catch-up goes no faster
 * than its readers, except that a reader stuck for CG_HUB_STUCK_MS is left
 * behind to start over on its own). CG_FEED_STOP: the stream is no longer
 * needed (it reached the journal, or nobody reads it); close it and call
 * cg_hub_catchup_end(). */
cg_feed_t cg_hub_catchup_push(cg_hub_t *hub, cg_source_t *src, cg_event_t *ev);
/* Catch-up thread: whether src still needs its stream (a quiet stream asks
 * between empty batches). */
bool cg_hub_catchup_wanted(cg_hub_t *hub, cg_source_t *src);
/* Catch-up thread: MongoDB cannot resume after src's position (reason: a
 * reset code). Its subscribers get a reset and continue from now. */
void cg_hub_catchup_fail(cg_hub_t *hub, cg_source_t *src, const char *reason);
/* Catch-up thread, last call for src: its stream is closed. */
void cg_hub_catchup_end(cg_hub_t *hub, cg_source_t *src);

void cg_hub_stats(cg_hub_t *hub, cg_hub_stats_t *out);

/* Front-end side. */
cg_hub_rc_t cg_hub_subscribe(cg_hub_t *hub, const cg_sub_spec_t *spec, cg_sub_t **out);
void cg_hub_unsubscribe(cg_hub_t *hub, cg_sub_t *sub);
/* On CG_NEXT_EVENT, *frames are the bytes to send for *ev under this
 * subscriber's projection (valid while the caller holds *ev). */
cg_next_t cg_hub_next(cg_hub_t *hub, cg_sub_t *sub, bool park, cg_event_t **ev,
                      const cg_frames_t **frames);
/* Up to max events at once, under one lock: CG_NEXT_EVENT with *n of them
 * (the caller owns each reference), or, when there is none, what
 * cg_hub_next() would have returned (*n is 0). */
cg_next_t cg_hub_next_n(cg_hub_t *hub, cg_sub_t *sub, bool park, size_t max, cg_event_t **evs,
                        const cg_frames_t **frames, size_t *n);
/* Where this subscriber would resume from now: a new string, or NULL when no
 * position is known yet. */
char *cg_hub_sub_position(cg_hub_t *hub, cg_sub_t *sub);

/* Wakes sub if it is parked, so that its front end runs now (its client
 * hung up: the front end then ends it). Any thread. */
void cg_hub_kick(cg_hub_t *hub, cg_sub_t *sub);

/* Main thread, a few times a second: wakes parked subscribers whose heartbeat
 * or deadline is due. */
void cg_hub_tick(cg_hub_t *hub);
/* Refuses new subscribers and wakes every parked one; cg_hub_next then
 * returns CG_NEXT_END. */
void cg_hub_stop(cg_hub_t *hub);
size_t cg_hub_subscriber_count(cg_hub_t *hub);
/* How many subscribers the index finds by look-up, and how many it scans. */
void cg_hub_index_counts(cg_hub_t *hub, size_t *indexed, size_t *scanned);

#endif
