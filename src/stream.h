/* stream.h: opening a change stream the way changegate watches, and reading
 * MongoDB's verdict on a failed one. Shared by the watcher (the one shared
 * stream) and catch-up streams (catchup.c), which must see exactly the same
 * events and positions: same scope, pipeline and options. */
#ifndef CG_STREAM_H
#define CG_STREAM_H

#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <time.h>

#include "config.h"

#define CG_STREAM_AWAIT_MS 500 /* getMore wait: bounds how long a stop request waits */

/* Opens cfg's change stream on client, after `resume` (a position; NULL:
 * from now), with startAfter instead of resumeAfter when start_after (after
 * an invalidate; also tried by itself when MongoDB says the position is an
 * invalidate). Check mongoc_change_stream_error_document() on the result. */
mongoc_change_stream_t *cg_stream_open(mongoc_client_t *client, const cg_config_t *cfg,
                                       const char *resume, bool start_after);

/* Opens cfg's change stream at operation time (t, i): startAtOperationTime. */
mongoc_change_stream_t *cg_stream_open_at(mongoc_client_t *client, const cg_config_t *cfg,
                                          uint32_t t, uint32_t i);

/* An error after which resuming from the same position can never work: the
 * history is gone or the token is unusable. Everything else (network, server
 * selection, resumable and non-resumable server errors) may be retried from
 * the position. */
bool cg_stream_error_is_fatal(const bson_error_t *error);

/* A server error that is not about the position and that retrying will not
 * cure by itself: the user lacks a privilege (13 Unauthorized), the
 * deployment is not a replica set, the pipeline is invalid... It is
 * neither fatal for the position nor resumable (no ResumableChangeStreamError
 * label, not one of the change-stream spec's resumable codes). Callers retry
 * with backoff anyway (someone may fix it) but must say so loudly. */
bool cg_stream_error_is_refusal(const bson_error_t *error, const bson_t *reply);

typedef enum {
    CG_CLOCK_OK,      /* the position is not ahead of MongoDB's cluster time */
    CG_CLOCK_FUTURE,  /* it is: MongoDB never issued it */
    CG_CLOCK_UNKNOWN, /* no reply, or no time to compare: ask again later */
} cg_clock_t;

/* Compares a position's clusterTime with MongoDB's (gossiped in replies, so
 * one ping), which it also returns in (now_t, now_i) (0 when unknown). A
 * stream resuming after a position from the future just waits (mongod only
 * fails at the first event after it, maybe years away), so callers check
 * positions nothing has proven yet. A position merely ahead of this
 * instance's watcher passes. On CG_CLOCK_FUTURE, `why` says so for a person.
 * Positions without a readable time (old token shapes) are CG_CLOCK_OK. */
cg_clock_t cg_stream_check_clock(mongoc_client_t *client, const char *position, uint32_t *now_t,
                                 uint32_t *now_i, char *why, size_t whylen);

/* The stream's current resume token as a position: a new string, or NULL. */
char *cg_stream_position(mongoc_change_stream_t *stream);

/* A new mongoc URI for cfg->mongo_uri with changegate's defaults (short
 * connect and server-selection timeouts so stops are quick, an appname), or
 * NULL with err. */
mongoc_uri_t *cg_stream_uri(const cg_config_t *cfg, char *err, size_t errlen);

/* The CLOCK_REALTIME instant ms from now, as pthread's timed waits want it:
 * the threads that talk to MongoDB (watcher, catch-up) nap with it. */
struct timespec cg_stream_realtime_in(int ms);

#endif
