/* event.h: one journal entry, serialized and framed once, shared by reference.
 *
 * An event is immutable after cg_event_new_*() except for `seq`, which the
 * journal assigns when it takes the event. Every subscriber that sends it
 * holds a reference; the bytes are never copied per subscriber. */
#ifndef CG_EVENT_H
#define CG_EVENT_H

#include <bson/bson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    CG_EVENT_CHANGE, /* a MongoDB change event: delivered to matching subscribers */
    CG_EVENT_RESET,  /* continuity lost here: delivered to every subscriber */
    CG_EVENT_MARK    /* a resumable position with no event (stream start): never delivered */
} cg_event_kind_t;

/* An event's bytes in the three wire forms. */
typedef struct cg_frames {
    char *json; /* CHANGE: the event as relaxed Extended JSON; RESET: {reason, lastEventId} */
    size_t json_len;
    char *sse; /* the SSE message, ending in a blank line */
    size_t sse_len;
    char *ndjson; /* the NDJSON line, ending in '\n' */
    size_t ndjson_len;
} cg_frames_t;

/* The frames of one projection of an event, made on first use. */
typedef struct cg_projected {
    uint64_t project_id;
    cg_frames_t frames;
    struct cg_projected *next;
} cg_projected_t;

typedef struct cg_event {
    atomic_uint refs;
    cg_event_kind_t kind;
    uint64_t seq;   /* assigned by cg_journal_append() */
    char *position; /* CHANGE: its _id; RESET/MARK: where the stream (re)starts; may be NULL */
    bson_t *doc;    /* CHANGE only: the change event */
    bson_t *subject_copy;      /* see cg_event_subject(); NULL when not needed */
    bool has_subject;          /* false: the event is about no document it carries */
    char *op;                  /* operationType, or NULL */
    int64_t cluster_time;      /* clusterTime seconds, 0 if absent */
    char *reason;              /* RESET only */
    cg_frames_t frames;        /* the whole event */
    cg_projected_t *projected; /* see cg_event_frames() */
} cg_event_t;

/* Copies `change` (a change event; its _id is the resume token). Returns an
 * event holding one reference, or NULL with a message in err. */
cg_event_t *cg_event_new_change(const bson_t *change, char *err, size_t errlen);
/* The event as seen by an authorization rule, which is about "the document
 * the event is about": ev->doc itself when it has a fullDocument (present and
 * not null); else, when it has a fullDocumentBeforeChange document (a delete,
 * an update of a document deleted since, with pre-images on), a copy of the
 * event whose fullDocument is that pre-image, made once when the event is
 * built; else NULL (the event is about no document it carries: a rule matches
 * nothing there). So a rule keeps its natural paths ("fullDocument.owner_id")
 * and also covers deletes. NULL for RESET and MARK. */
const bson_t *cg_event_subject(const cg_event_t *ev);

/* position may be NULL (no known position); reason is a short code. */
cg_event_t *cg_event_new_reset(const char *position, const char *reason);
cg_event_t *cg_event_new_mark(const char *position);

/* The frames of ev under a projection (NULL: the whole event). Projected
 * frames are made once per (event, project_id) and kept with the event.
 * Not thread-safe: the hub calls it under its lock; the frames returned are
 * immutable and live as long as the event. */
struct cg_project;
const cg_frames_t *cg_event_frames(cg_event_t *ev, const struct cg_project *project,
                                   uint64_t project_id);

/* What every SSE stream starts with: a comment, and the reconnection delay. */
#define CG_SSE_PREAMBLE ": changegate\nretry: 3000\n\n"

/* A heartbeat in a stream's form. It carries the subscriber's position (the
 * newest event it has considered, wanted or not; NULL when none is known yet)
 * so a client with a narrow filter resumes from near now: an id-only SSE
 * message moves EventSource's lastEventId without firing an event. Positions
 * are URL-safe, so they need no escaping. A new string (bson_free()). */
char *cg_event_heartbeat(bool ndjson, const char *position);

/* The message that ends a stream whose token expired: SSE `event: expired`
 * (with the position to resume from as its id, when known) or the NDJSON
 * line {"expired": {"lastEventId": ...}}. The client reconnects with a fresh
 * token and its position, and misses nothing. A new string (bson_free()). */
char *cg_event_expired(bool ndjson, const char *position);

cg_event_t *cg_event_ref(cg_event_t *ev);
void cg_event_unref(cg_event_t *ev);

#endif
