/* hub.c: subscriber cursors, parking and waking.
 *
 * Cross-thread hand-off happens here and only here: hub->lock guards the
 * journal, every subscriber's state and the parked list.
 *
 * A parked subscriber's cursor is implicitly "the end of the journal": every
 * event appended while it is parked is tested against its filter in
 * cg_hub_publish(), and the first one that matches unparks it with its cursor
 * set to that event. So a subscriber with a narrow filter never falls out of
 * the journal merely because it is quiet. */
#include "hub.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

#include "index.h"
#include "metrics.h"

#define CATCHUP_RING 1024 /* events a catch-up source keeps for its readers */

/* A projection shared by every subscriber with the same canonical key. */
typedef struct shared_project {
    cg_project_t *project;
    uint64_t id;
    size_t refs;
    struct shared_project *next;
} shared_project_t;

/* A catch-up stream's events. Its ring starts with a MARK at the position the
 * stream resumes after, so a subscriber asking for that position finds it. */
struct cg_source {
    cg_journal_t *ring;
    enum { SRC_RUNNING, SRC_JOINED, SRC_FAILED } state;
    uint64_t seam;      /* JOINED: the journal cursor right after the ring's last event */
    const char *reason; /* FAILED: the reset code */
    uint64_t start;     /* the journal's next cursor when the stream was opened */
    bool stream_open;   /* until cg_hub_catchup_end() */
    int64_t full_since; /* when the ring became full of unread events; 0: it is not */
    cg_sub_t *subs;     /* its readers (linked through src_prev/src_next) */
    size_t n_subs;
    cg_source_t *prev, *next; /* hub->sources */
};

struct cg_sub {
    cg_filter_t *filter;
    shared_project_t *project; /* NULL: whole events */
    cg_index_reg_t *reg;
    const cg_sub_ops_t *ops;
    void *ctx;
    uint64_t cursor;      /* next journal entry to consider */
    bool pending;         /* position not resolved yet (waiting for the watcher to be live) */
    cg_event_t *reset;    /* a reset to deliver first (the position could not be resolved) */
    char *want_position;  /* while pending: where the client asked to resume; NULL = now */
    uint64_t arrived_seq; /* the journal's next seq when it subscribed ("now", for NULL) */
    bool heartbeats;
    int64_t heartbeat_at; /* cg_hub_now_ms() time of the next heartbeat */
    int64_t deadline_ms;
    bool parked;
    cg_sub_t *prev, *next; /* the parked list */
    /* The newest entry considered (delivered or skipped), a reference: where
     * the subscriber would resume, even once the journal has moved past it. */
    cg_event_t *last;
    cg_source_t *src; /* reading a catch-up source (cursor is into its ring), or NULL */
    cg_sub_t *src_prev, *src_next;
    bool waiting; /* for a catch-up slot (on hub->waiting) */
    cg_sub_t *wait_prev, *wait_next;
};

struct cg_hub {
    pthread_mutex_t lock;
    cg_journal_t *journal;
    size_t max_subscribers, n_subscribers;
    int64_t heartbeat_ms;
    bool live, stopping;
    uint64_t live_seq; /* the journal's next seq when the watcher went live */
    cg_sub_t *parked;  /* doubly linked, unordered */
    cg_index_t *index;
    shared_project_t *projects;
    uint64_t next_project_id;
    const cg_catchup_ops_t *catchup_ops; /* NULL: no catch-up */
    void *catchup_ctx;
    size_t max_catchup, catchup_active, catchup_peak, n_waiting;
    cg_source_t *sources;
    cg_sub_t *waiting, *waiting_tail; /* FIFO */
};

int64_t cg_hub_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

cg_hub_t *cg_hub_new(cg_journal_t *journal, size_t max_subscribers, unsigned heartbeat_s)
{
    cg_hub_t *hub = bson_malloc0(sizeof *hub);
    pthread_mutex_init(&hub->lock, NULL);
    hub->journal = journal;
    hub->max_subscribers = max_subscribers;
    hub->heartbeat_ms = (int64_t)heartbeat_s * 1000;
    hub->index = cg_index_new();
    hub->next_project_id = 1;
    return hub;
}

void cg_hub_free(cg_hub_t *hub)
{
    if (!hub)
        return;
    while (hub->sources) { /* their streams have ended; their readers are gone */
        cg_source_t *src = hub->sources;
        hub->sources = src->next;
        cg_journal_free(src->ring);
        bson_free(src);
    }
    cg_journal_free(hub->journal);
    cg_index_free(hub->index);
    pthread_mutex_destroy(&hub->lock);
    bson_free(hub);
}

static void park_sub(cg_hub_t *hub, cg_sub_t *sub)
{
    sub->parked = true;
    sub->prev = NULL;
    sub->next = hub->parked;
    if (hub->parked)
        hub->parked->prev = sub;
    hub->parked = sub;
    sub->ops->park(sub->ctx);
}

static void unlink_parked(cg_hub_t *hub, cg_sub_t *sub)
{
    if (sub->prev)
        sub->prev->next = sub->next;
    else
        hub->parked = sub->next;
    if (sub->next)
        sub->next->prev = sub->prev;
    sub->prev = sub->next = NULL;
    sub->parked = false;
}

/* Takes sub off the parked list and wakes it: the only place wake is called,
 * so one park gets exactly one wake. */
static void unpark_sub(cg_hub_t *hub, cg_sub_t *sub)
{
    unlink_parked(hub, sub);
    sub->ops->wake(sub->ctx);
}

typedef struct {
    cg_hub_t *hub;
    cg_event_t *ev;
} publish_ctx_t;

static void wake_if_wanted(void *sub_ptr, void *arg)
{
    cg_sub_t *s = sub_ptr;
    publish_ctx_t *p = arg;
    if (s->parked && !s->pending && !s->src && !s->waiting && cg_filter_match(s->filter, p->ev)) {
        s->cursor = p->ev->seq;
        unpark_sub(p->hub, s);
    }
}

static void set_last(cg_sub_t *sub, cg_event_t *ev)
{
    if (ev && ev != sub->last && ev->position) {
        cg_event_unref(sub->last);
        sub->last = cg_event_ref(ev);
    }
}

static const char *last_position(const cg_sub_t *sub)
{
    return sub->last ? sub->last->position : NULL;
}

/* The newest entry of src's ring (never empty: it starts with a MARK). */
static cg_event_t *ring_newest(const cg_source_t *src)
{
    return cg_journal_get(src->ring, cg_journal_next_seq(src->ring) - 1);
}

static void wake_source_readers(cg_hub_t *hub, cg_source_t *src)
{
    for (cg_sub_t *s = src->subs; s; s = s->src_next)
        if (s->parked)
            unpark_sub(hub, s);
}

/* The source has reached the journal: its readers continue at `seam`. */
static void join_source(cg_hub_t *hub, cg_source_t *src, uint64_t seam)
{
    src->state = SRC_JOINED;
    src->seam = seam;
    wake_source_readers(hub, src);
}

/* A catch-up stream that is ahead of the watcher (a position from another
 * instance) joins when the watcher publishes the stream's newest event. */
static void join_sources_at(cg_hub_t *hub, const cg_event_t *ev)
{
    for (cg_source_t *src = hub->sources; src; src = src->next) {
        if (src->state != SRC_RUNNING)
            continue;
        cg_event_t *newest = ring_newest(src);
        if (newest && newest->position && strcmp(newest->position, ev->position) == 0)
            join_source(hub, src, ev->seq + 1);
    }
}

void cg_hub_publish(cg_hub_t *hub, cg_event_t *ev)
{
    pthread_mutex_lock(&hub->lock);
    cg_journal_append(hub->journal, ev);
    if (ev->kind == CG_EVENT_CHANGE) {
        publish_ctx_t p = {hub, ev};
        /* Candidates are looked up on the event's subject view when it has
         * one (cg_event_subject: fullDocument replaced by the pre-image when
         * fullDocument is missing or null), because subscribers with an auth
         * rule are indexed by the rule's equalities, which hold there. This
         * misses no subscriber the event matches. One indexed by its rule:
         * the rule matched the subject view, so the view has the value. One
         * indexed by its own filter: that equality holds on the real event,
         * and the view differs from it only in fullDocument, and only where
         * the event's fullDocument is missing or null; there no path under
         * fullDocument reaches a value, and indexed values are never null,
         * so that equality is not on such a path, and every other path has
         * the same values in both. With no view (neither document), rules
         * match nothing and the event itself is used. The only cost is false
         * positives (an equality on fullDocument.x found in the pre-image of
         * a delete): candidates are still decided by cg_filter_match(). */
        const bson_t *subject = cg_event_subject(ev);
        cg_index_candidates(hub->index, subject ? subject : ev->doc, wake_if_wanted, &p);
        if (hub->sources && ev->position)
            join_sources_at(hub, ev);
    } else if (ev->kind == CG_EVENT_RESET) {
        cg_metrics_reset(ev->reason);
        cg_sub_t *next;
        for (cg_sub_t *s = hub->parked; s; s = next) {
            next = s->next;
            if (!s->pending && !s->src && !s->waiting) {
                s->cursor = ev->seq;
                unpark_sub(hub, s);
            }
        }
    }
    pthread_mutex_unlock(&hub->lock);
}

void cg_hub_set_live(cg_hub_t *hub)
{
    pthread_mutex_lock(&hub->lock);
    if (!hub->live) {
        hub->live = true;
        hub->live_seq = cg_journal_next_seq(hub->journal);
        cg_sub_t *next;
        for (cg_sub_t *s = hub->parked; s; s = next) {
            next = s->next;
            if (s->pending)
                unpark_sub(hub, s);
        }
    }
    pthread_mutex_unlock(&hub->lock);
}

bool cg_hub_is_live(cg_hub_t *hub)
{
    pthread_mutex_lock(&hub->lock);
    bool live = hub->live;
    pthread_mutex_unlock(&hub->lock);
    return live;
}

bool cg_hub_journal_empty(cg_hub_t *hub)
{
    pthread_mutex_lock(&hub->lock);
    bool empty = cg_journal_count(hub->journal) == 0;
    pthread_mutex_unlock(&hub->lock);
    return empty;
}

char *cg_hub_replay_from(cg_hub_t *hub)
{
    pthread_mutex_lock(&hub->lock);
    const char *p = cg_journal_replay_from(hub->journal);
    char *copy = p ? bson_strdup(p) : NULL;
    pthread_mutex_unlock(&hub->lock);
    return copy;
}

char *cg_hub_last_position(cg_hub_t *hub)
{
    pthread_mutex_lock(&hub->lock);
    const char *p = cg_journal_position_before(hub->journal, cg_journal_next_seq(hub->journal));
    char *copy = p ? bson_strdup(p) : NULL;
    pthread_mutex_unlock(&hub->lock);
    return copy;
}

static cg_event_t *resolve_position(cg_hub_t *hub, cg_sub_t *sub);

/* Takes project; returns the shared copy with its key (or NULL). Locked. */
static shared_project_t *share_project(cg_hub_t *hub, cg_project_t *project)
{
    if (!project)
        return NULL;
    for (shared_project_t *p = hub->projects; p; p = p->next) {
        if (strcmp(cg_project_key(p->project), cg_project_key(project)) == 0) {
            cg_project_free(project);
            p->refs++;
            return p;
        }
    }
    shared_project_t *p = bson_malloc0(sizeof *p);
    p->project = project;
    p->id = hub->next_project_id++;
    p->refs = 1;
    p->next = hub->projects;
    hub->projects = p;
    return p;
}

static void release_project(cg_hub_t *hub, shared_project_t *sp)
{
    if (!sp || --sp->refs > 0)
        return;
    for (shared_project_t **p = &hub->projects; *p; p = &(*p)->next) {
        if (*p == sp) {
            *p = sp->next;
            break;
        }
    }
    cg_project_free(sp->project);
    bson_free(sp);
}

cg_hub_rc_t cg_hub_subscribe(cg_hub_t *hub, const cg_sub_spec_t *spec, cg_sub_t **out)
{
    *out = NULL;
    pthread_mutex_lock(&hub->lock);
    cg_hub_rc_t rc = hub->stopping                                ? CG_HUB_STOPPING
                     : hub->n_subscribers >= hub->max_subscribers ? CG_HUB_FULL
                                                                  : CG_HUB_OK;
    if (rc == CG_HUB_OK)
        hub->n_subscribers++;
    pthread_mutex_unlock(&hub->lock);
    if (rc != CG_HUB_OK) {
        cg_filter_free(spec->filter);
        cg_project_free(spec->project);
        return rc;
    }
    cg_sub_t *sub = bson_malloc0(sizeof *sub);
    sub->filter = spec->filter;
    sub->ops = spec->ops;
    sub->ctx = spec->ctx;
    sub->pending = true; /* resolved below if the watcher is live, else once it is */
    sub->want_position = spec->position ? bson_strdup(spec->position) : NULL;
    sub->heartbeats = spec->heartbeats && hub->heartbeat_ms > 0;
    sub->heartbeat_at = cg_hub_now_ms() + hub->heartbeat_ms;
    sub->deadline_ms = spec->deadline_ms;
    pthread_mutex_lock(&hub->lock);
    sub->project = share_project(hub, spec->project);
    sub->reg = cg_index_add(hub->index, sub, cg_filter_tree(sub->filter));
    sub->arrived_seq = cg_journal_next_seq(hub->journal);
    if (hub->live) /* "now" is the moment of subscribing, not of the first read */
        sub->reset = resolve_position(hub, sub);
    pthread_mutex_unlock(&hub->lock);
    *out = sub;
    return CG_HUB_OK;
}

/* ---- catch-up sources ---- */

void cg_hub_set_catchup(cg_hub_t *hub, const cg_catchup_ops_t *ops, void *ctx, size_t max_catchup)
{
    pthread_mutex_lock(&hub->lock);
    hub->catchup_ops = ops;
    hub->catchup_ctx = ctx;
    hub->max_catchup = max_catchup;
    pthread_mutex_unlock(&hub->lock);
}

static void attach_source(cg_source_t *src, cg_sub_t *sub, uint64_t cursor)
{
    sub->src = src;
    sub->cursor = cursor;
    sub->src_prev = NULL;
    sub->src_next = src->subs;
    if (src->subs)
        src->subs->src_prev = sub;
    src->subs = sub;
    src->n_subs++;
}

static void free_source_if_done(cg_hub_t *hub, cg_source_t *src)
{
    if (src->stream_open || src->n_subs)
        return;
    if (src->prev)
        src->prev->next = src->next;
    else
        hub->sources = src->next;
    if (src->next)
        src->next->prev = src->prev;
    cg_journal_free(src->ring);
    bson_free(src);
}

static void detach_source(cg_hub_t *hub, cg_sub_t *sub)
{
    cg_source_t *src = sub->src;
    if (sub->src_prev)
        sub->src_prev->src_next = sub->src_next;
    else
        src->subs = sub->src_next;
    if (sub->src_next)
        sub->src_next->src_prev = sub->src_prev;
    sub->src = NULL;
    sub->src_prev = sub->src_next = NULL;
    src->n_subs--;
    free_source_if_done(hub, src);
}

static void unlink_waiting(cg_hub_t *hub, cg_sub_t *sub)
{
    if (sub->wait_prev)
        sub->wait_prev->wait_next = sub->wait_next;
    else
        hub->waiting = sub->wait_next;
    if (sub->wait_next)
        sub->wait_next->wait_prev = sub->wait_prev;
    else
        hub->waiting_tail = sub->wait_prev;
    sub->wait_prev = sub->wait_next = NULL;
    sub->waiting = false;
    hub->n_waiting--;
}

/* Gives sub a reset that continues at journal cursor `from` (or the oldest
 * entry the journal still has). Locked. */
static cg_event_t *reset_at(cg_hub_t *hub, cg_sub_t *sub, const char *reason, uint64_t from)
{
    uint64_t first = cg_journal_first_seq(hub->journal);
    sub->cursor = from < first ? first : from;
    cg_metrics_reset(reason);
    cg_event_t *reset =
        cg_event_new_reset(cg_journal_position_before(hub->journal, sub->cursor), reason);
    set_last(sub, reset);
    return reset;
}

static cg_event_t *reset_here(cg_hub_t *hub, cg_sub_t *sub, const char *reason)
{
    return reset_at(hub, sub, reason, cg_journal_next_seq(hub->journal));
}

/* When a catch-up stream fails, "now" for its readers is when it was opened:
 * MongoDB may refuse a position only at the first event after it (a token
 * that was never issued), and that event must not be skipped. A reader that
 * already got further (its last position is in the journal) continues there,
 * so nothing is repeated either. Locked. */
static cg_event_t *reset_after_source(cg_hub_t *hub, cg_sub_t *sub, const char *reason,
                                      uint64_t start)
{
    uint64_t at;
    const char *last = last_position(sub);
    if (last && cg_journal_find(hub->journal, last, &at) && at > start)
        start = at;
    return reset_at(hub, sub, reason, start);
}

/* A source a reader at `position` can join, with its cursor there: one whose
 * ring holds the position and that still leads somewhere. A joined source
 * only does while the journal still holds its seam: else its readers would be
 * handed back to a journal that has moved on, and round they would go (a
 * livelock under the lock). Locked. */
static cg_source_t *find_source(cg_hub_t *hub, const char *position, uint64_t *cursor)
{
    for (cg_source_t *src = hub->sources; src; src = src->next) {
        bool usable =
            (src->state == SRC_JOINED && src->seam >= cg_journal_first_seq(hub->journal)) ||
            (src->state == SRC_RUNNING && src->stream_open);
        if (usable && cg_journal_find(src->ring, position, cursor))
            return src;
    }
    return NULL;
}

/* Puts sub on a catch-up source that resumes strictly after its last
 * position: a running one whose ring holds that position, else a new one if
 * fewer than max_catchup are open, else the waiting line. Returns false when
 * sub has no known position (the caller resets it). Locked. */
static bool start_catchup(cg_hub_t *hub, cg_sub_t *sub)
{
    const char *position = last_position(sub);
    if (!position)
        return false;
    uint64_t cursor;
    cg_source_t *found = find_source(hub, position, &cursor);
    if (found) {
        attach_source(found, sub, cursor);
        return true;
    }
    if (hub->catchup_active >= hub->max_catchup) {
        sub->waiting = true;
        sub->wait_next = NULL;
        sub->wait_prev = hub->waiting_tail;
        if (hub->waiting_tail)
            hub->waiting_tail->wait_next = sub;
        else
            hub->waiting = sub;
        hub->waiting_tail = sub;
        hub->n_waiting++;
        return true;
    }
    cg_source_t *src = bson_malloc0(sizeof *src);
    src->ring = cg_journal_new(CATCHUP_RING);
    cg_journal_append(src->ring, cg_event_new_mark(position));
    src->state = SRC_RUNNING;
    src->start = cg_journal_next_seq(hub->journal);
    src->stream_open = true;
    src->next = hub->sources;
    if (hub->sources)
        hub->sources->prev = src;
    hub->sources = src;
    if (++hub->catchup_active > hub->catchup_peak)
        hub->catchup_peak = hub->catchup_active;
    attach_source(src, sub, cg_journal_next_seq(src->ring));
    if (!hub->catchup_ops->start(hub->catchup_ctx, src, position)) {
        src->stream_open = false;
        src->state = SRC_FAILED;
        hub->catchup_active--;
        detach_source(hub, sub); /* frees src */
        return false;
    }
    return true;
}

/* A catch-up slot came free: give it to waiting subscribers, in order. */
static void serve_waiting(cg_hub_t *hub)
{
    cg_sub_t *next;
    for (cg_sub_t *s = hub->waiting; s && hub->catchup_active < hub->max_catchup; s = next) {
        next = s->wait_next;
        unlink_waiting(hub, s);
        if (!start_catchup(hub, s))
            s->reset = reset_here(hub, s, "too_slow");
        if (s->parked)
            unpark_sub(hub, s);
    }
    /* Others may now find their position in the new sources' rings. */
    for (cg_sub_t *s = hub->waiting; s; s = next) {
        next = s->wait_next;
        uint64_t cursor;
        cg_source_t *src = find_source(hub, last_position(s), &cursor);
        if (src) {
            unlink_waiting(hub, s);
            attach_source(src, s, cursor);
            if (s->parked)
                unpark_sub(hub, s);
        }
    }
}

/* Whether appending to src's ring now would evict an event some reader has
 * not read. Such a reader holds the stream back for at most CG_HUB_STUCK_MS;
 * after that the ring moves on and it starts over from its own position when
 * it next reads. Locked. */
static bool ring_blocked(cg_source_t *src)
{
    if (cg_journal_count(src->ring) < cg_journal_capacity(src->ring)) {
        src->full_since = 0;
        return false;
    }
    uint64_t oldest = cg_journal_first_seq(src->ring);
    bool behind = false;
    for (cg_sub_t *s = src->subs; s && !behind; s = s->src_next)
        behind = s->cursor <= oldest;
    if (!behind) {
        src->full_since = 0;
        return false;
    }
    int64_t now = cg_hub_now_ms();
    if (!src->full_since)
        src->full_since = now;
    return now - src->full_since < CG_HUB_STUCK_MS;
}

cg_feed_t cg_hub_catchup_push(cg_hub_t *hub, cg_source_t *src, cg_event_t *ev)
{
    cg_feed_t rc = CG_FEED_MORE;
    pthread_mutex_lock(&hub->lock);
    cg_event_t *newest = ring_newest(src);
    uint64_t seam;
    if (src->state != SRC_RUNNING || !src->n_subs || hub->stopping) {
        rc = CG_FEED_STOP;
    } else if (newest->position && cg_journal_find(hub->journal, newest->position, &seam)) {
        join_source(hub, src, seam); /* the journal has everything after the ring */
        rc = CG_FEED_STOP;
    } else if (ring_blocked(src)) {
        pthread_mutex_unlock(&hub->lock);
        return CG_FEED_FULL; /* the caller keeps its reference */
    } else {
        cg_journal_append(src->ring, cg_event_ref(ev));
        wake_source_readers(hub, src);
    }
    pthread_mutex_unlock(&hub->lock);
    cg_event_unref(ev);
    return rc;
}

bool cg_hub_catchup_wanted(cg_hub_t *hub, cg_source_t *src)
{
    pthread_mutex_lock(&hub->lock);
    bool wanted = src->state == SRC_RUNNING && src->n_subs && !hub->stopping;
    pthread_mutex_unlock(&hub->lock);
    return wanted;
}

void cg_hub_catchup_fail(cg_hub_t *hub, cg_source_t *src, const char *reason)
{
    pthread_mutex_lock(&hub->lock);
    if (src->state == SRC_RUNNING) {
        src->state = SRC_FAILED;
        src->reason = reason;
        wake_source_readers(hub, src);
    }
    pthread_mutex_unlock(&hub->lock);
}

void cg_hub_catchup_end(cg_hub_t *hub, cg_source_t *src)
{
    pthread_mutex_lock(&hub->lock);
    src->stream_open = false;
    hub->catchup_active--;
    if (src->state == SRC_RUNNING && src->n_subs && !hub->stopping) {
        /* It ended because nobody read it, and readers came meanwhile: they
         * start over (detaching the last one frees src). */
        for (size_t i = 0, n = src->n_subs; i < n; i++) {
            cg_sub_t *s = src->subs;
            detach_source(hub, s);
            if (!start_catchup(hub, s))
                s->reset = reset_here(hub, s, "too_slow");
            if (s->parked)
                unpark_sub(hub, s);
        }
    } else {
        free_source_if_done(hub, src);
    }
    if (!hub->stopping)
        serve_waiting(hub);
    pthread_mutex_unlock(&hub->lock);
}

void cg_hub_stats(cg_hub_t *hub, cg_hub_stats_t *out)
{
    pthread_mutex_lock(&hub->lock);
    out->subscribers = hub->n_subscribers;
    out->journal_count = cg_journal_count(hub->journal);
    out->journal_capacity = cg_journal_capacity(hub->journal);
    out->catchup_active = hub->catchup_active;
    out->catchup_peak = hub->catchup_peak;
    out->catchup_waiting = hub->n_waiting;
    pthread_mutex_unlock(&hub->lock);
}

/* ---- subscribers ---- */

void cg_hub_unsubscribe(cg_hub_t *hub, cg_sub_t *sub)
{
    if (!sub)
        return;
    pthread_mutex_lock(&hub->lock);
    if (sub->parked) /* cannot normally happen: front ends end parked streams first */
        unlink_parked(hub, sub);
    if (sub->src)
        detach_source(hub, sub);
    if (sub->waiting)
        unlink_waiting(hub, sub);
    cg_index_remove(hub->index, sub->reg);
    release_project(hub, sub->project);
    hub->n_subscribers--;
    pthread_mutex_unlock(&hub->lock);
    cg_filter_free(sub->filter);
    cg_event_unref(sub->reset);
    cg_event_unref(sub->last);
    bson_free(sub->want_position);
    bson_free(sub);
}

/* Turns the client's requested position into a cursor: into the journal when
 * it holds the position, else a catch-up source. Returns a RESET event when
 * continuity cannot be proven that way, else NULL. Called with the lock held,
 * once the watcher is live. */
static cg_event_t *resolve_position(cg_hub_t *hub, cg_sub_t *sub)
{
    sub->pending = false;
    char *want = sub->want_position;
    sub->want_position = NULL;
    cg_event_t *reset = NULL;
    if (!want) {
        /* "Now" is when it subscribed, or, for a subscriber that came before the
         * watcher was live, when the watcher went live (what it replayed before
         * is older than the subscriber). Not when its thread first gets here:
         * events published in between are after "now" and must reach it. */
        sub->cursor = sub->arrived_seq > hub->live_seq ? sub->arrived_seq : hub->live_seq;
        set_last(sub, cg_journal_get(hub->journal, sub->cursor - 1));
    } else if (cg_journal_find(hub->journal, want, &sub->cursor)) {
        cg_event_t *before = cg_journal_get(hub->journal, sub->cursor - 1);
        if (before)
            set_last(sub, before);
        else
            sub->last = cg_event_new_mark(want); /* the journal's base */
    } else if (hub->catchup_ops) {
        sub->last = cg_event_new_mark(want);
        start_catchup(hub, sub);
    } else {
        reset = reset_here(hub, sub, "position_not_in_journal");
    }
    bson_free(want);
    return reset;
}

/* Looks for the next entry of `j` from sub's cursor that sub should get: a
 * RESET or a matching CHANGE (a reference), or NULL at the end. */
static cg_event_t *scan(cg_sub_t *sub, cg_journal_t *j)
{
    cg_event_t *e = NULL, *considered = NULL;
    while (sub->cursor < cg_journal_next_seq(j)) {
        e = cg_journal_get(j, sub->cursor++);
        considered = e;
        if (e->kind == CG_EVENT_RESET ||
            (e->kind == CG_EVENT_CHANGE && cg_filter_match(sub->filter, e))) {
            set_last(sub, e);
            return cg_event_ref(e);
        }
    }
    set_last(sub, considered);
    return NULL;
}

/* The next thing to give sub from its catch-up source or the journal:
 * an event (a reference), or NULL when it has to wait. Locked. */
static cg_event_t *next_entry(cg_hub_t *hub, cg_sub_t *sub)
{
    for (;;) {
        if (sub->pending || sub->waiting)
            return NULL;
        cg_source_t *src = sub->src;
        if (src) {
            if (sub->cursor < cg_journal_first_seq(src->ring)) { /* fell out of the ring */
                detach_source(hub, sub);
                if (!start_catchup(hub, sub))
                    return reset_here(hub, sub, "too_slow");
                continue;
            }
            cg_event_t *e = scan(sub, src->ring);
            if (e)
                return e;
            if (src->state == SRC_JOINED) {
                sub->cursor = src->seam;
                detach_source(hub, sub);
                continue;
            }
            if (src->state == SRC_FAILED) {
                const char *reason = src->reason;
                uint64_t start = src->start;
                detach_source(hub, sub);
                return reset_after_source(hub, sub, reason, start);
            }
            return NULL;
        }
        if (sub->cursor < cg_journal_first_seq(hub->journal)) { /* the journal moved past it */
            if (hub->catchup_ops && start_catchup(hub, sub))
                continue;
            return reset_here(hub, sub, "too_slow");
        }
        return scan(sub, hub->journal);
    }
}

/* cg_hub_next()'s work, under the lock. */
static cg_next_t next_locked(cg_hub_t *hub, cg_sub_t *sub, bool park, int64_t now, cg_event_t **ev,
                             const cg_frames_t **frames)
{
    *ev = NULL;
    *frames = NULL;
    cg_next_t rc;
    if (hub->stopping)
        return CG_NEXT_END;
    if (sub->pending && hub->live)
        sub->reset = resolve_position(hub, sub);
    if (sub->reset) {
        *ev = sub->reset;
        sub->reset = NULL;
        rc = CG_NEXT_EVENT;
        goto delivered;
    }
    *ev = next_entry(hub, sub);
    if (*ev) {
        rc = CG_NEXT_EVENT;
        goto delivered;
    }
    if (sub->deadline_ms && now >= sub->deadline_ms)
        return CG_NEXT_TIMEOUT;
    if (sub->heartbeats && now >= sub->heartbeat_at) {
        rc = CG_NEXT_HEARTBEAT;
        goto delivered;
    }
    if (!park)
        return CG_NEXT_EMPTY;
    park_sub(hub, sub);
    return CG_NEXT_PARKED;
delivered:
    if (*ev) /* made once per (event, projection), under the lock */
        *frames = cg_event_frames(*ev, sub->project ? sub->project->project : NULL,
                                  sub->project ? sub->project->id : 0);
    sub->heartbeat_at = now + hub->heartbeat_ms;
    return rc;
}

cg_next_t cg_hub_next(cg_hub_t *hub, cg_sub_t *sub, bool park, cg_event_t **ev,
                      const cg_frames_t **frames)
{
    int64_t now = cg_hub_now_ms();
    pthread_mutex_lock(&hub->lock);
    cg_next_t rc = next_locked(hub, sub, park, now, ev, frames);
    pthread_mutex_unlock(&hub->lock);
    return rc;
}

cg_next_t cg_hub_next_n(cg_hub_t *hub, cg_sub_t *sub, bool park, size_t max, cg_event_t **evs,
                        const cg_frames_t **frames, size_t *n)
{
    int64_t now = cg_hub_now_ms();
    cg_next_t rc;
    *n = 0;
    pthread_mutex_lock(&hub->lock);
    do {
        rc = next_locked(hub, sub, park && *n == 0, now, &evs[*n], &frames[*n]);
        if (rc != CG_NEXT_EVENT)
            break;
    } while (++*n < max);
    pthread_mutex_unlock(&hub->lock);
    /* What ended a run of events is met again on the next call. */
    return *n ? CG_NEXT_EVENT : rc;
}

char *cg_hub_sub_position(cg_hub_t *hub, cg_sub_t *sub)
{
    pthread_mutex_lock(&hub->lock);
    const char *p = sub->pending ? sub->want_position : last_position(sub);
    char *copy = p ? bson_strdup(p) : NULL;
    pthread_mutex_unlock(&hub->lock);
    return copy;
}

void cg_hub_kick(cg_hub_t *hub, cg_sub_t *sub)
{
    pthread_mutex_lock(&hub->lock);
    if (sub->parked)
        unpark_sub(hub, sub);
    pthread_mutex_unlock(&hub->lock);
}

void cg_hub_tick(cg_hub_t *hub)
{
    int64_t now = cg_hub_now_ms();
    pthread_mutex_lock(&hub->lock);
    cg_sub_t *next;
    for (cg_sub_t *s = hub->parked; s; s = next) {
        next = s->next;
        bool due =
            (s->heartbeats && now >= s->heartbeat_at) || (s->deadline_ms && now >= s->deadline_ms);
        if (due) {
            if (!s->pending && !s->src && !s->waiting) {
                /* It has seen, and not wanted, everything so far. */
                s->cursor = cg_journal_next_seq(hub->journal);
                set_last(s, cg_journal_get(hub->journal, s->cursor - 1));
            }
            unpark_sub(hub, s);
        }
    }
    pthread_mutex_unlock(&hub->lock);
}

void cg_hub_stop(cg_hub_t *hub)
{
    pthread_mutex_lock(&hub->lock);
    hub->stopping = true;
    while (hub->parked)
        unpark_sub(hub, hub->parked);
    pthread_mutex_unlock(&hub->lock);
}

void cg_hub_index_counts(cg_hub_t *hub, size_t *indexed, size_t *scanned)
{
    pthread_mutex_lock(&hub->lock);
    *indexed = cg_index_indexed_count(hub->index);
    *scanned = cg_index_scanned_count(hub->index);
    pthread_mutex_unlock(&hub->lock);
}

size_t cg_hub_subscriber_count(cg_hub_t *hub)
{
    pthread_mutex_lock(&hub->lock);
    size_t n = hub->n_subscribers;
    pthread_mutex_unlock(&hub->lock);
    return n;
}
