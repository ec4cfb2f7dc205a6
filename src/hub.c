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

#include "index.h"
#include <string.h>
#include <time.h>

/* A projection shared by every subscriber with the same canonical key. */
typedef struct shared_project {
    cg_project_t *project;
    uint64_t id;
    size_t refs;
    struct shared_project *next;
} shared_project_t;

struct cg_sub {
    cg_filter_t *filter;
    shared_project_t *project; /* NULL: whole events */
    cg_index_reg_t *reg;
    const cg_sub_ops_t *ops;
    void *ctx;
    uint64_t cursor;     /* next journal entry to consider */
    bool pending;        /* position not resolved yet (waiting for the watcher to be live) */
    cg_event_t *reset;   /* a reset to deliver first (the position could not be resolved) */
    char *want_position; /* while pending: where the client asked to resume; NULL = now */
    bool heartbeats;
    int64_t heartbeat_at; /* cg_hub_now_ms() time of the next heartbeat */
    int64_t deadline_ms;
    bool parked;
    cg_sub_t *prev, *next; /* the parked list */
};

struct cg_hub {
    pthread_mutex_t lock;
    cg_journal_t *journal;
    size_t max_subscribers, n_subscribers;
    int64_t heartbeat_ms;
    bool live, stopping;
    cg_sub_t *parked; /* doubly linked, unordered */
    cg_index_t *index;
    shared_project_t *projects;
    uint64_t next_project_id;
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
    if (s->parked && !s->pending && cg_filter_match(s->filter, p->ev)) {
        s->cursor = p->ev->seq;
        unpark_sub(p->hub, s);
    }
}

void cg_hub_publish(cg_hub_t *hub, cg_event_t *ev)
{
    pthread_mutex_lock(&hub->lock);
    cg_journal_append(hub->journal, ev);
    if (ev->kind == CG_EVENT_CHANGE) {
        publish_ctx_t p = {hub, ev};
        cg_index_candidates(hub->index, ev->doc, wake_if_wanted, &p);
    } else if (ev->kind == CG_EVENT_RESET) {
        cg_sub_t *next;
        for (cg_sub_t *s = hub->parked; s; s = next) {
            next = s->next;
            if (!s->pending) {
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
    if (hub->live) /* "now" is the moment of subscribing, not of the first read */
        sub->reset = resolve_position(hub, sub);
    pthread_mutex_unlock(&hub->lock);
    *out = sub;
    return CG_HUB_OK;
}

void cg_hub_unsubscribe(cg_hub_t *hub, cg_sub_t *sub)
{
    if (!sub)
        return;
    pthread_mutex_lock(&hub->lock);
    if (sub->parked) /* cannot normally happen: front ends end parked streams first */
        unlink_parked(hub, sub);
    cg_index_remove(hub->index, sub->reg);
    release_project(hub, sub->project);
    hub->n_subscribers--;
    pthread_mutex_unlock(&hub->lock);
    cg_filter_free(sub->filter);
    cg_event_unref(sub->reset);
    bson_free(sub->want_position);
    bson_free(sub);
}

static cg_event_t *reset_here(cg_hub_t *hub, cg_sub_t *sub, const char *reason)
{
    sub->cursor = cg_journal_next_seq(hub->journal);
    return cg_event_new_reset(cg_journal_position_before(hub->journal, sub->cursor), reason);
}

/* Turns the client's requested position into a cursor. Returns a RESET event
 * when the position cannot be found (continuity cannot be proven), else NULL.
 * Called with the lock held, once the watcher is live. */
static cg_event_t *resolve_position(cg_hub_t *hub, cg_sub_t *sub)
{
    sub->pending = false;
    char *want = sub->want_position;
    sub->want_position = NULL;
    cg_event_t *reset = NULL;
    if (!want)
        sub->cursor = cg_journal_next_seq(hub->journal);
    else if (!cg_journal_find(hub->journal, want, &sub->cursor))
        reset = reset_here(hub, sub, "position_not_in_journal");
    bson_free(want);
    return reset;
}

cg_next_t cg_hub_next(cg_hub_t *hub, cg_sub_t *sub, bool park, cg_event_t **ev,
                      const cg_frames_t **frames)
{
    *ev = NULL;
    *frames = NULL;
    cg_next_t rc;
    int64_t now = cg_hub_now_ms();
    pthread_mutex_lock(&hub->lock);
    if (hub->stopping) {
        rc = CG_NEXT_END;
        goto out;
    }
    if (sub->pending && hub->live)
        sub->reset = resolve_position(hub, sub);
    if (sub->reset) {
        *ev = sub->reset;
        sub->reset = NULL;
        rc = CG_NEXT_EVENT;
        goto delivered;
    }
    if (!sub->pending) {
        if (sub->cursor < cg_journal_first_seq(hub->journal)) {
            *ev = reset_here(hub, sub, "too_slow");
            rc = CG_NEXT_EVENT;
            goto delivered;
        }
        while (sub->cursor < cg_journal_next_seq(hub->journal)) {
            cg_event_t *e = cg_journal_get(hub->journal, sub->cursor++);
            if (e->kind == CG_EVENT_RESET ||
                (e->kind == CG_EVENT_CHANGE && cg_filter_match(sub->filter, e))) {
                *ev = cg_event_ref(e);
                rc = CG_NEXT_EVENT;
                goto delivered;
            }
        }
    }
    if (sub->deadline_ms && now >= sub->deadline_ms) {
        rc = CG_NEXT_TIMEOUT;
        goto out;
    }
    if (sub->heartbeats && now >= sub->heartbeat_at) {
        rc = CG_NEXT_HEARTBEAT;
        goto delivered;
    }
    if (park) {
        park_sub(hub, sub);
        rc = CG_NEXT_PARKED;
    } else {
        rc = CG_NEXT_EMPTY;
    }
    goto out;
delivered:
    if (*ev) /* made once per (event, projection), under the lock */
        *frames = cg_event_frames(*ev, sub->project ? sub->project->project : NULL,
                                  sub->project ? sub->project->id : 0);
    sub->heartbeat_at = now + hub->heartbeat_ms;
out:
    pthread_mutex_unlock(&hub->lock);
    return rc;
}

char *cg_hub_sub_position(cg_hub_t *hub, cg_sub_t *sub)
{
    pthread_mutex_lock(&hub->lock);
    const char *p =
        sub->pending ? sub->want_position : cg_journal_position_before(hub->journal, sub->cursor);
    char *copy = p ? bson_strdup(p) : NULL;
    pthread_mutex_unlock(&hub->lock);
    return copy;
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
            if (!s->pending) /* it has seen, and not wanted, everything so far */
                s->cursor = cg_journal_next_seq(hub->journal);
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
