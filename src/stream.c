/* stream.c: see stream.h. */
#include "stream.h"

#include <stdio.h>
#include <string.h>

#include "position.h"

/* An answer from MongoDB itself, as opposed to a network or driver error. */
static bool is_server_error(const bson_error_t *error)
{
    return error->domain == MONGOC_ERROR_SERVER || error->domain == MONGOC_ERROR_QUERY;
}

/* resume: after it (startAfter or resumeAfter); else at_t != 0: at that
 * operation time; else from now. */
static mongoc_change_stream_t *open_stream(mongoc_client_t *client, const cg_config_t *cfg,
                                           const char *resume, bool start_after, uint32_t at_t,
                                           uint32_t at_i)
{
    bson_t opts = BSON_INITIALIZER;
    if (strcmp(cfg->full_document, "default") != 0)
        BSON_APPEND_UTF8(&opts, "fullDocument", cfg->full_document);
    if (strcmp(cfg->full_document_before_change, "off") != 0)
        BSON_APPEND_UTF8(&opts, "fullDocumentBeforeChange", cfg->full_document_before_change);
    BSON_APPEND_INT64(&opts, "maxAwaitTimeMS", CG_STREAM_AWAIT_MS);
    if (resume) {
        bson_t token;
        char perr[128];
        if (cg_position_to_token(resume, &token, perr, sizeof perr) == 0) {
            BSON_APPEND_DOCUMENT(&opts, start_after ? "startAfter" : "resumeAfter", &token);
            bson_destroy(&token);
        }
    } else if (at_t) {
        BSON_APPEND_TIMESTAMP(&opts, "startAtOperationTime", at_t, at_i);
    }
    mongoc_change_stream_t *stream;
    if (!cfg->watch_db) {
        stream = mongoc_client_watch(client, cfg->pipeline, &opts);
    } else if (!cfg->watch_coll) {
        mongoc_database_t *db = mongoc_client_get_database(client, cfg->watch_db);
        stream = mongoc_database_watch(db, cfg->pipeline, &opts);
        mongoc_database_destroy(db);
    } else {
        mongoc_collection_t *coll =
            mongoc_client_get_collection(client, cfg->watch_db, cfg->watch_coll);
        stream = mongoc_collection_watch(coll, cfg->pipeline, &opts);
        mongoc_collection_destroy(coll);
    }
    bson_destroy(&opts);
    return stream;
}

/* A position that names an invalidate (the last event of a collection's
 * stream before a drop) cannot be resumed after, only started after: MongoDB
 * answers resumeAfter with 260 InvalidResumeToken. So a 260 is retried once
 * with startAfter, which means the same for any other token. That is what
 * lets a client, a catch-up stream or a restarted watcher continue from an
 * invalidate it was given. */
mongoc_change_stream_t *cg_stream_open(mongoc_client_t *client, const cg_config_t *cfg,
                                       const char *resume, bool start_after)
{
    mongoc_change_stream_t *stream = open_stream(client, cfg, resume, start_after, 0, 0);
    bson_error_t error;
    if (resume && !start_after && mongoc_change_stream_error_document(stream, &error, NULL) &&
        is_server_error(&error) && error.code == 260) {
        mongoc_change_stream_destroy(stream);
        stream = open_stream(client, cfg, resume, true, 0, 0);
    }
    return stream;
}

mongoc_change_stream_t *cg_stream_open_at(mongoc_client_t *client, const cg_config_t *cfg,
                                          uint32_t t, uint32_t i)
{
    return open_stream(client, cfg, NULL, false, t, i);
}

bool cg_stream_error_is_fatal(const bson_error_t *error)
{
    if (!is_server_error(error))
        return false;
    switch (error->code) {
    case 286: /* ChangeStreamHistoryLost */
    case 280: /* ChangeStreamFatalError */
    case 260: /* InvalidResumeToken */
    case 136: /* CappedPositionLost */
    /* The token itself cannot be parsed (mongod's resume_token.cpp and
     * key_string.cpp): retrying the same token can only fail again. */
    case 9:  /* FailedToParse: not hex */
    case 14: /* TypeMismatch */
    case 15: /* Overflow: truncated */
    case 40646:
    case 40647:
    case 40648:
    case 40649:
    case 50793:
    case 50794:
    case 50795:
    case 50796:
    case 50811:
    case 50854:
    case 50855:
    case 50870:
    case 50872:
    case 51055:
    case 51056:
    case 51057:
        return true;
    default:
        /* Not even with a NonResumableChangeStreamError label: that tells
         * drivers not to resume by themselves; reopening from the saved
         * position is still right, and if the position really is gone,
         * MongoDB says so then with one of the codes above. */
        return false;
    }
}

bool cg_stream_error_is_refusal(const bson_error_t *error, const bson_t *reply)
{
    if (!is_server_error(error))
        return false; /* network, server selection: MongoDB was not reached */
    if (cg_stream_error_is_fatal(error) ||
        (reply && mongoc_error_has_label(reply, "ResumableChangeStreamError")))
        return false;
    switch (error->code) { /* resumable before 4.4's labels (change-streams spec) */
    case 6:                /* HostUnreachable */
    case 7:                /* HostNotFound */
    case 43:               /* CursorNotFound */
    case 63:               /* StaleShardVersion */
    case 89:               /* NetworkTimeout */
    case 91:               /* ShutdownInProgress */
    case 133:              /* FailedToSatisfyReadPreference */
    case 150:              /* StaleEpoch */
    case 189:              /* PrimarySteppedDown */
    case 234:              /* RetryChangeStream */
    case 262:              /* ExceededTimeLimit */
    case 9001:             /* SocketException */
    case 10107:            /* NotWritablePrimary */
    case 11600:            /* InterruptedAtShutdown */
    case 11602:            /* InterruptedDueToReplStateChange */
    case 13388:            /* StaleConfig */
    case 13435:            /* NotPrimaryNoSecondaryOk */
    case 13436:            /* NotPrimaryOrSecondary */
        return false;
    default:
        return true;
    }
}

cg_clock_t cg_stream_check_clock(mongoc_client_t *client, const char *position, uint32_t *now_t,
                                 uint32_t *now_i, char *why, size_t whylen)
{
    uint32_t pt = 0, pi = 0, ct = 0, ci = 0;
    *now_t = *now_i = 0;
    bool has_time = cg_position_cluster_time(position, &pt, &pi);
    bson_t cmd = BSON_INITIALIZER, reply;
    BSON_APPEND_INT32(&cmd, "ping", 1);
    bson_error_t error;
    bool ok = mongoc_client_command_simple(client, "admin", &cmd, NULL, &reply, &error);
    bson_iter_t it, t;
    bool found = ok && bson_iter_init(&it, &reply) &&
                 bson_iter_find_descendant(&it, "$clusterTime.clusterTime", &t) &&
                 BSON_ITER_HOLDS_TIMESTAMP(&t);
    if (found)
        bson_iter_timestamp(&t, &ct, &ci);
    bson_destroy(&reply);
    bson_destroy(&cmd);
    if (!found)
        return CG_CLOCK_UNKNOWN;
    *now_t = ct;
    *now_i = ci;
    if (!has_time || pt < ct || (pt == ct && pi <= ci))
        return CG_CLOCK_OK;
    snprintf(why, whylen,
             "position %.64s is ahead of MongoDB's cluster time (%u, %u): this deployment never "
             "issued it",
             position, ct, ci);
    return CG_CLOCK_FUTURE;
}

char *cg_stream_position(mongoc_change_stream_t *stream)
{
    const bson_t *tok = mongoc_change_stream_get_resume_token(stream);
    return tok ? cg_position_from_token(tok) : NULL;
}

mongoc_uri_t *cg_stream_uri(const cg_config_t *cfg, char *err, size_t errlen)
{
    bson_error_t berr;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(cfg->mongo_uri, &berr);
    if (!uri) {
        snprintf(err, errlen, "invalid --mongo-uri: %s", berr.message);
        return NULL;
    }
    /* Bound each connection attempt so a stop request is honoured quickly
     * while MongoDB is unreachable; the callers retry with backoff anyway. */
    if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 1000);
    if (!mongoc_uri_has_option(uri, MONGOC_URI_CONNECTTIMEOUTMS))
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, 1000);
    if (!mongoc_uri_has_option(uri, MONGOC_URI_APPNAME))
        mongoc_uri_set_appname(uri, "changegate");
    return uri;
}

struct timespec cg_stream_realtime_in(int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    return until;
}
