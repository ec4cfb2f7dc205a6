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
 * an invalidate). Check mongoc_change_stream_error_document() on the result. */
mongoc_change_stream_t *cg_stream_open(mongoc_client_t *client, const cg_config_t *cfg,
                                       const char *resume, bool start_after);

/* An error after which resuming from the same position can never work: the
 * history is gone or the token is unusable. Everything else (network, server
 * selection, resumable server errors) may be retried from the position. */
bool cg_stream_error_is_fatal(const bson_error_t *error, const bson_t *reply);

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
