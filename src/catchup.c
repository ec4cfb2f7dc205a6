/* catchup.c: see catchup.h.
 *
 * Threads are detached; `running` counts them so that a stop can wait for
 * the last one, which is what makes freeing the hub afterwards safe. */
#include "catchup.h"

#include <mongoc/mongoc.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "stream.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define FULL_RETRY_MS 5 /* readers are behind: offer the event again after this */

struct cg_catchup {
    const cg_config_t *cfg;
    cg_hub_t *hub;
    mongoc_client_pool_t *pool;
    pthread_mutex_t lock; /* guards the two below */
    pthread_cond_t cond;  /* signalled when a thread ends, and on stop */
    size_t running;
    bool stop;
};

typedef struct {
    cg_catchup_t *cu;
    cg_source_t *src;
    char *resume; /* where the stream resumes next (after each event read) */
    mongoc_client_t *client;
    bool clock_checked; /* the first position is not ahead of MongoDB's clock */
} job_t;

static bool stopping(cg_catchup_t *cu)
{
    pthread_mutex_lock(&cu->lock);
    bool stop = cu->stop;
    pthread_mutex_unlock(&cu->lock);
    return stop;
}

/* Waits ms, or less when stopping. */
static void nap(cg_catchup_t *cu, int ms)
{
    struct timespec until = cg_stream_realtime_in(ms);
    pthread_mutex_lock(&cu->lock);
    while (!cu->stop && pthread_cond_timedwait(&cu->cond, &cu->lock, &until) == 0)
        ;
    pthread_mutex_unlock(&cu->lock);
}

/* MongoDB refused the position for good: its readers get a reset. */
static void give_up(job_t *job, const bson_error_t *error)
{
    cg_log_info("catch-up: MongoDB cannot resume after %s: %s", job->resume, error->message);
    cg_hub_catchup_fail(job->cu->hub, job->src, "history_lost");
}

/* A stream resuming after a position from MongoDB's future waits for it
 * (mongod does, and only fails at the first event after it, which may be
 * years away): such a position was never issued, so its readers get a reset
 * now. A position that is merely ahead of this instance's watcher (another
 * instance gave it) is not ahead of the cluster time and passes. Returns
 * false when the hub has been told. */
static bool check_clock(job_t *job)
{
    char why[256];
    uint32_t t, i;
    cg_clock_t c = cg_stream_check_clock(job->client, job->resume, &t, &i, why, sizeof why);
    if (c == CG_CLOCK_UNKNOWN)
        return true; /* try again after the next empty batch */
    job->clock_checked = true;
    if (c == CG_CLOCK_OK)
        return true;
    cg_log_info("catch-up: %s", why);
    cg_hub_catchup_fail(job->cu->hub, job->src, "history_lost");
    return false;
}

/* Reads one stream until it is not needed. Returns false when MongoDB
 * refused the position for good (the hub has been told). */
static bool read_stream(job_t *job, mongoc_change_stream_t *stream, bool *start_after, bool *done)
{
    cg_catchup_t *cu = job->cu;
    const bson_t *doc, *reply;
    bson_error_t error;
    while (!stopping(cu)) {
        if (mongoc_change_stream_next(stream, &doc)) {
            char err[256];
            cg_event_t *ev = cg_event_new_change(doc, err, sizeof err);
            if (!ev) {
                cg_log_error("catch-up: a change event cannot be represented: %s", err);
                cg_hub_catchup_fail(cu->hub, job->src, "event_not_representable");
                *done = true;
                return false;
            }
            bool invalidate = ev->op && strcmp(ev->op, "invalidate") == 0;
            bson_free(job->resume);
            job->resume = bson_strdup(ev->position);
            job->clock_checked = true;
            *start_after = invalidate; /* resumeAfter an invalidate is an error */
            cg_metrics_catchup_event();
            cg_feed_t fed;
            while ((fed = cg_hub_catchup_push(cu->hub, job->src, ev)) == CG_FEED_FULL &&
                   !stopping(cu))
                nap(cu, FULL_RETRY_MS);
            if (fed != CG_FEED_MORE) { /* STOP, or FULL when stopping */
                if (fed == CG_FEED_FULL)
                    cg_event_unref(ev);
                *done = true;
                return true;
            }
            if (invalidate)
                return true; /* reopen with startAfter, as the watcher does */
        } else if (mongoc_change_stream_error_document(stream, &error, &reply)) {
            if (cg_stream_error_is_fatal(&error)) {
                give_up(job, &error);
                *done = true;
                return false;
            }
            cg_log_debug("catch-up: stream error, reopening: %s", error.message);
            return true;
        } else if (!job->clock_checked && !check_clock(job)) {
            *done = true;
            return false;
        } else if (!cg_hub_catchup_wanted(cu->hub, job->src)) {
            *done = true;
            return true;
        }
    }
    *done = true;
    return true;
}

static void *catchup_main(void *arg)
{
    job_t *job = arg;
    cg_catchup_t *cu = job->cu;
    cg_log_debug("catch-up: resuming after %s", job->resume);
    mongoc_client_t *client = mongoc_client_pool_pop(cu->pool);
    job->client = client;
    bool start_after = false, done = false;
    int backoff = BACKOFF_MIN_MS;
    while (!done && !stopping(cu) && cg_hub_catchup_wanted(cu->hub, job->src)) {
        mongoc_change_stream_t *stream = cg_stream_open(client, cu->cfg, job->resume, start_after);
        bson_error_t error;
        const bson_t *reply;
        if (mongoc_change_stream_error_document(stream, &error, &reply)) {
            if (cg_stream_error_is_fatal(&error)) {
                give_up(job, &error);
                done = true;
            } else {
                cg_log_debug("catch-up: cannot open a stream (retrying): %s", error.message);
                nap(cu, backoff);
                backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            }
            mongoc_change_stream_destroy(stream);
            continue;
        }
        backoff = BACKOFF_MIN_MS;
        read_stream(job, stream, &start_after, &done);
        mongoc_change_stream_destroy(stream);
    }
    mongoc_client_pool_push(cu->pool, client);
    cg_log_debug("catch-up: stream after %s closed", job->resume);
    cg_hub_catchup_end(cu->hub, job->src);
    bson_free(job->resume);
    bson_free(job);
    pthread_mutex_lock(&cu->lock);
    cu->running--;
    pthread_cond_broadcast(&cu->cond);
    pthread_mutex_unlock(&cu->lock);
    return NULL;
}

/* The hub's start callback (called under the hub's lock). */
static bool start_stream(void *ctx, cg_source_t *src, const char *position)
{
    cg_catchup_t *cu = ctx;
    job_t *job = bson_malloc0(sizeof *job);
    job->cu = cu;
    job->src = src;
    job->resume = bson_strdup(position);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&cu->lock);
    cu->running++;
    pthread_mutex_unlock(&cu->lock);
    pthread_t thread;
    int rc = pthread_create(&thread, &attr, catchup_main, job);
    pthread_attr_destroy(&attr);
    if (rc == 0)
        return true;
    cg_log_error("catch-up: cannot start a thread: %s", strerror(rc));
    pthread_mutex_lock(&cu->lock);
    cu->running--;
    pthread_mutex_unlock(&cu->lock);
    bson_free(job->resume);
    bson_free(job);
    return false;
}

static const cg_catchup_ops_t catchup_ops = {start_stream};

cg_catchup_t *cg_catchup_new(const cg_config_t *cfg, cg_hub_t *hub, char *err, size_t errlen)
{
    mongoc_uri_t *uri = cg_stream_uri(cfg, err, errlen);
    if (!uri)
        return NULL;
    mongoc_client_pool_t *pool = mongoc_client_pool_new(uri);
    mongoc_uri_destroy(uri);
    if (!pool) {
        snprintf(err, errlen, "cannot create a MongoDB client pool for catch-up streams");
        return NULL;
    }
    mongoc_client_pool_set_error_api(pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_pool_max_size(pool, (uint32_t)cfg->max_catchup);
    cg_catchup_t *cu = bson_malloc0(sizeof *cu);
    cu->cfg = cfg;
    cu->hub = hub;
    cu->pool = pool;
    pthread_mutex_init(&cu->lock, NULL);
    pthread_cond_init(&cu->cond, NULL);
    cg_hub_set_catchup(hub, &catchup_ops, cu, cfg->max_catchup);
    return cu;
}

bool cg_catchup_stop(cg_catchup_t *cu, int timeout_ms)
{
    struct timespec until = cg_stream_realtime_in(timeout_ms);
    pthread_mutex_lock(&cu->lock);
    cu->stop = true;
    pthread_cond_broadcast(&cu->cond);
    while (cu->running && pthread_cond_timedwait(&cu->cond, &cu->lock, &until) == 0)
        ;
    bool ended = cu->running == 0;
    pthread_mutex_unlock(&cu->lock);
    if (!ended)
        cg_log_warn("catch-up: a stream is still inside a MongoDB call at shutdown");
    return ended;
}

void cg_catchup_free(cg_catchup_t *cu)
{
    if (!cu || cu->running)
        return;
    mongoc_client_pool_destroy(cu->pool);
    pthread_mutex_destroy(&cu->lock);
    pthread_cond_destroy(&cu->cond);
    bson_free(cu);
}
