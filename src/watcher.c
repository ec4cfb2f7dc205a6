/* watcher.c: the shared change stream loop, its reconnects and its state file. */
#include "watcher.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "position.h"
#include "stream.h"

#define STATE_FILE "changegate.position"
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

struct cg_watcher {
    const cg_config_t *cfg;
    cg_hub_t *hub;
    mongoc_uri_t *uri;
    mongoc_client_t *client; /* watcher thread only */
    pthread_t thread;
    bool started, joined;

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t cond;  /* signalled on stop, to cut a backoff sleep short */
    bool stop;
    bool streaming;
    char status[512];
    char *last;              /* newest position seen (event _id or postBatchResumeToken) */
    char *saved_replay_from; /* from the state file */
    char *saved_last;
    char *written;          /* state file content last written, to skip identical writes */
    char history_lost[640]; /* why continuity was lost, when the watcher had to start from now */
    pthread_mutex_t persist_lock;
};

static char *state_path(const cg_watcher_t *w, const char *suffix)
{
    return bson_strdup_printf("%s/%s%s", w->cfg->state_dir, STATE_FILE, suffix);
}

static int load_state(cg_watcher_t *w, char *err, size_t errlen)
{
    char *path = state_path(w, "");
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        int missing = access(path, F_OK) != 0;
        if (!missing)
            snprintf(err, errlen, "cannot read %s: %s (line %d)", path, jerr.text, jerr.line);
        bson_free(path);
        return missing ? 0 : -1;
    }
    const char *replay = json_string_value(json_object_get(root, "resumeAfter"));
    const char *last = json_string_value(json_object_get(root, "position"));
    char perr[128];
    bson_t tok;
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++) {
        const char *p = i ? last : replay;
        if (!p)
            continue;
        if (cg_position_to_token(p, &tok, perr, sizeof perr) != 0) {
            snprintf(err, errlen, "%s holds an invalid position: %s", path, perr);
            rc = -1;
        } else {
            bson_destroy(&tok);
        }
    }
    if (rc == 0) {
        w->saved_replay_from = replay ? bson_strdup(replay) : NULL;
        w->saved_last = last ? bson_strdup(last) : NULL;
        w->last = last ? bson_strdup(last) : NULL;
    }
    json_decref(root);
    bson_free(path);
    return rc;
}

/* Writes the state file atomically: temp file, fsync, rename, fsync of the
 * directory. Called by the watcher thread, and by cg_watcher_stop(). */
static void persist(cg_watcher_t *w)
{
    char *replay = cg_hub_replay_from(w->hub);
    pthread_mutex_lock(&w->lock);
    char *last = w->last ? bson_strdup(w->last) : NULL;
    pthread_mutex_unlock(&w->lock);
    if (!replay && !last)
        return;
    json_t *root =
        json_pack("{s:i, s:s?, s:s?}", "version", 1, "resumeAfter", replay, "position", last);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    bson_free(replay);
    bson_free(last);

    pthread_mutex_lock(&w->persist_lock);
    if (w->written && strcmp(w->written, text) == 0)
        goto done;
    char *tmp = state_path(w, ".tmp"), *path = state_path(w, "");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t len = strlen(text);
    bool ok = fd >= 0 && write(fd, text, len) == (ssize_t)len && write(fd, "\n", 1) == 1 &&
              fsync(fd) == 0;
    if (fd >= 0)
        close(fd);
    if (ok && rename(tmp, path) == 0) {
        int dfd = open(w->cfg->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        bson_free(w->written);
        w->written = bson_strdup(text);
    } else {
        cg_log_error("cannot save the position to %s: %s", path, strerror(errno));
        unlink(tmp);
    }
    bson_free(tmp);
    bson_free(path);
done:
    pthread_mutex_unlock(&w->persist_lock);
    free(text);
}

int cg_watcher_check_state_dir(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || access(dir, W_OK | X_OK) != 0) {
        snprintf(err, errlen, "state dir %s is not a writable directory", dir);
        return -1;
    }
    return 0;
}

cg_watcher_t *cg_watcher_new(const cg_config_t *cfg, cg_hub_t *hub, char *err, size_t errlen)
{
    if (cg_watcher_check_state_dir(cfg->state_dir, err, errlen) != 0)
        return NULL;
    mongoc_uri_t *uri = cg_stream_uri(cfg, err, errlen);
    if (!uri)
        return NULL;

    cg_watcher_t *w = bson_malloc0(sizeof *w);
    w->cfg = cfg;
    w->hub = hub;
    w->uri = uri;
    pthread_mutex_init(&w->lock, NULL);
    pthread_mutex_init(&w->persist_lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    snprintf(w->status, sizeof w->status, "connecting to MongoDB");
    if (load_state(w, err, errlen) != 0) {
        w->joined = true;
        cg_watcher_free(w);
        return NULL;
    }
    return w;
}

static bool should_stop(cg_watcher_t *w)
{
    pthread_mutex_lock(&w->lock);
    bool stop = w->stop;
    pthread_mutex_unlock(&w->lock);
    return stop;
}

static void sleep_ms(cg_watcher_t *w, int ms)
{
    struct timespec until = cg_stream_realtime_in(ms);
    pthread_mutex_lock(&w->lock);
    while (!w->stop && pthread_cond_timedwait(&w->cond, &w->lock, &until) == 0)
        ;
    pthread_mutex_unlock(&w->lock);
}

/* Records the watcher's state for /healthz, logging only changes (at
 * `level` when not streaming). */
static void set_status(cg_watcher_t *w, bool streaming, cg_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_status(cg_watcher_t *w, bool streaming, cg_log_level_t level, const char *fmt, ...)
{
    char msg[sizeof w->status];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&w->lock);
    bool changed = w->streaming != streaming || strcmp(w->status, msg) != 0;
    w->streaming = streaming;
    memcpy(w->status, msg, sizeof msg);
    pthread_mutex_unlock(&w->lock);
    if (changed) {
        cg_log(streaming ? CG_LOG_INFO : level, "watcher: %s", msg);
    }
}

static void set_last(cg_watcher_t *w, const char *position)
{
    pthread_mutex_lock(&w->lock);
    if (!w->last || strcmp(w->last, position) != 0) {
        bson_free(w->last);
        w->last = bson_strdup(position);
    }
    pthread_mutex_unlock(&w->lock);
}

/* The state the watcher loop carries between stream (re)openings. */
typedef struct {
    char *resume;         /* resume after this position; NULL: from now */
    bool start_after;     /* resume with startAfter (after an invalidate) */
    bool replay_fallback; /* resume is the saved replay point: on failure try saved_last */
    const char *replay_until;
    const char *reset_reason;    /* continuity was lost: publish a RESET on the next open */
    bool unverified;             /* resume comes from the state file: no event has proven it */
    const char *proving;         /* while unverified: the saved position (owned by w) */
    uint32_t opened_t, opened_i; /* MongoDB's cluster time when an unverified resume opened */
    uint32_t at_t, at_i;         /* resume is NULL: start at this operation time (0: now) */
} loop_state_t;

static void set_resume(loop_state_t *st, const char *position)
{
    bson_free(st->resume);
    st->resume = position ? bson_strdup(position) : NULL;
}

/* A stream could not be opened or broke: decides where to resume next.
 * Returns true when MongoDB could not be reached, so the caller should, once
 * the stream is destroyed, drop the client and back off (back_off()). */
static bool on_stream_error(cg_watcher_t *w, loop_state_t *st, const bson_error_t *error,
                            const bson_t *reply)
{
    if (cg_stream_error_is_fatal(error)) {
        /* An unproven saved position is what MongoDB refused, even if
         * postBatchResumeTokens have moved the stream on since. */
        const char *from = st->unverified && st->proving ? st->proving
                           : st->resume                  ? st->resume
                                                         : "(now)";
        cg_log_warn("watcher: cannot resume after %s: %s", from, error->message);
        if (st->replay_fallback && w->saved_last && strcmp(st->resume, w->saved_last) != 0) {
            /* The journal cannot be refilled, but the watcher can still continue. */
            set_resume(st, w->saved_last);
            st->proving = w->saved_last;
        } else {
            /* MongoDB may refuse a never-issued position only at the first
             * event after it: start where the refused stream began, so that
             * event (and any after it) is not skipped. */
            st->at_t = st->unverified ? st->opened_t : 0;
            st->at_i = st->unverified ? st->opened_i : 0;
            char since[128] = "from now, and events in between were not seen";
            if (st->at_t)
                snprintf(since, sizeof since,
                         "again from cluster time (%u, %u), when it had opened; events before "
                         "that were not seen",
                         st->at_t, st->at_i);
            pthread_mutex_lock(&w->lock);
            snprintf(w->history_lost, sizeof w->history_lost,
                     "MongoDB could not resume after %.200s (%.200s): the watcher started %s", from,
                     error->message, since);
            cg_log_error("watcher: %s", w->history_lost);
            pthread_mutex_unlock(&w->lock);
            cg_metrics_set_watcher_history_lost(true);
            set_resume(st, NULL);
            st->unverified = false;
            st->reset_reason = "history_lost";
            st->replay_until = NULL;
        }
        st->replay_fallback = false;
        st->start_after = false;
        return false;
    }
    if (cg_stream_error_is_refusal(error, reply))
        set_status(w, false, CG_LOG_ERROR,
                   "MongoDB refused the change stream on %s (error %u%s): %s; retrying",
                   w->cfg->watch, error->code,
                   error->code == 13 ? ", Unauthorized: the MongoDB user needs the changeStream "
                                       "and find actions on what is watched"
                                     : "",
                   error->message);
    else
        set_status(w, false, CG_LOG_WARN, "cannot reach MongoDB: %s", error->message);
    return true;
}

/* Drops the client (its streams must be destroyed already) and waits. A fresh
 * client re-discovers the server at once instead of waiting out the
 * single-threaded client's 5 s reconnect cool-down. */
static void back_off(cg_watcher_t *w, int *backoff)
{
    mongoc_client_destroy(w->client);
    w->client = NULL;
    sleep_ms(w, *backoff);
    *backoff = *backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *backoff * 2;
}

/* Whether position a is at a later cluster time than b; false when either
 * has no cluster time to compare. Events of one transaction share a cluster
 * time, so equal times are not "later". */
static bool later_than(const char *a, const char *b)
{
    uint32_t at, ai, bt, bi;
    if (!cg_position_cluster_time(a, &at, &ai) || !cg_position_cluster_time(b, &bt, &bi))
        return false;
    return at > bt || (at == bt && ai > bi);
}

/* Turns one change event into a cg_event_t and publishes it; moves the
 * watcher's position to it and notices the end of a restart's replay. */
static void publish_change(cg_watcher_t *w, loop_state_t *st, const bson_t *doc, bool *invalidated)
{
    char err[256];
    cg_event_t *ev = cg_event_new_change(doc, err, sizeof err);
    if (!ev) {
        /* Never drop silently: subscribers learn continuity was broken here. */
        cg_log_error("watcher: skipping a change event: %s", err);
        char *pos = NULL;
        pthread_mutex_lock(&w->lock);
        pos = w->last ? bson_strdup(w->last) : NULL;
        pthread_mutex_unlock(&w->lock);
        cg_hub_publish(w->hub, cg_event_new_reset(pos, "event_not_representable"));
        bson_free(pos);
        return;
    }
    char *position = bson_strdup(ev->position);
    bool reached_live = st->replay_until && strcmp(position, st->replay_until) == 0;
    if (st->replay_until && !reached_live && later_than(position, st->replay_until)) {
        /* The replay ended at a position no event carries (a quiet stream's
         * postBatchResumeToken): this event is the first new one, and
         * subscribers waiting for "now" must get it. */
        st->replay_until = NULL;
        cg_hub_set_live(w->hub);
    }
    *invalidated = ev->op && strcmp(ev->op, "invalidate") == 0;
    cg_metrics_event_in();
    cg_hub_publish(w->hub, ev);
    set_last(w, position);
    set_resume(st, position);
    st->start_after = *invalidated; /* resumeAfter an invalidate is an error; startAfter is not */
    if (reached_live) {
        st->replay_until = NULL;
        cg_hub_set_live(w->hub);
    }
    bson_free(position);
}

/* A saved position nothing has proven yet is checked against MongoDB's
 * clock as soon as its stream opens: one from the future (a state directory
 * that belongs to another deployment?) would make the stream wait silently,
 * maybe for years, so it is treated as lost. Returns false then (the caller
 * reopens from now). Also notes when the stream opened, for a refusal at the
 * first event. */
static bool verify_resume(cg_watcher_t *w, loop_state_t *st, bson_error_t *error)
{
    char why[256];
    cg_clock_t c =
        cg_stream_check_clock(w->client, st->resume, &st->opened_t, &st->opened_i, why, sizeof why);
    if (c != CG_CLOCK_FUTURE)
        return true;
    bson_set_error(error, MONGOC_ERROR_SERVER, 280, "%s", why);
    on_stream_error(w, st, error, NULL);
    return false;
}

static void *watcher_main(void *arg)
{
    cg_watcher_t *w = arg;
    loop_state_t st = {0};
    if (w->saved_replay_from) {
        set_resume(&st, w->saved_replay_from);
        st.replay_fallback = true;
    } else if (w->saved_last) {
        set_resume(&st, w->saved_last);
    }
    st.replay_until = w->saved_last;
    st.unverified = st.resume != NULL;
    st.proving = w->saved_replay_from ? w->saved_replay_from : w->saved_last;
    int backoff = BACKOFF_MIN_MS;
    int64_t persisted_at = 0;
    bson_error_t error;
    const bson_t *reply;

    while (!should_stop(w)) {
        if (!w->client) {
            w->client = mongoc_client_new_from_uri_with_error(w->uri, &error);
            if (!w->client) {
                set_status(w, false, CG_LOG_ERROR, "cannot create a MongoDB client: %s",
                           error.message);
                sleep_ms(w, BACKOFF_MAX_MS);
                continue;
            }
            mongoc_client_set_error_api(w->client, MONGOC_ERROR_API_VERSION_2);
        }
        mongoc_change_stream_t *stream =
            st.resume || !st.at_t ? cg_stream_open(w->client, w->cfg, st.resume, st.start_after)
                                  : cg_stream_open_at(w->client, w->cfg, st.at_t, st.at_i);
        bool unreachable = false;
        if (mongoc_change_stream_error_document(stream, &error, &reply)) {
            unreachable = on_stream_error(w, &st, &error, reply);
            mongoc_change_stream_destroy(stream);
            if (unreachable)
                back_off(w, &backoff);
            continue;
        }
        if (st.unverified && st.resume && !verify_resume(w, &st, &error)) {
            mongoc_change_stream_destroy(stream);
            continue;
        }
        backoff = BACKOFF_MIN_MS;
        set_status(w, true, CG_LOG_INFO, "streaming from %s", w->cfg->watch);
        char *opened_at = st.resume ? bson_strdup(st.resume) : cg_stream_position(stream);
        if (cg_hub_journal_empty(w->hub))
            cg_hub_publish(w->hub, cg_event_new_mark(opened_at)); /* makes opened_at resumable */
        else if (st.reset_reason)
            cg_hub_publish(w->hub, cg_event_new_reset(opened_at, st.reset_reason));
        if (opened_at)
            set_last(w, opened_at);
        bson_free(opened_at);
        /* With no saved position to replay up to, this stream starts at "now":
         * every event it brings is new, so subscribers waiting for the hub to be
         * live start here. Waiting for the first empty batch instead would put
         * their "now" after the events of the first batches, which they would
         * never see (a subscriber that came during a slow first getMore). */
        if (!st.replay_until)
            cg_hub_set_live(w->hub);
        st.reset_reason = NULL;
        st.replay_fallback = false;

        while (!should_stop(w)) {
            const bson_t *doc;
            if (mongoc_change_stream_next(stream, &doc)) {
                bool invalidated = false;
                st.unverified = false;
                publish_change(w, &st, doc, &invalidated);
                if (invalidated)
                    break;
            } else if (mongoc_change_stream_error_document(stream, &error, &reply)) {
                unreachable = on_stream_error(w, &st, &error, reply);
                break;
            } else {
                /* An empty batch: MongoDB has nothing newer, so we are live. */
                st.replay_until = NULL;
                cg_hub_set_live(w->hub);
                char *pbrt = cg_stream_position(stream);
                if (pbrt) {
                    set_last(w, pbrt);
                    set_resume(&st, pbrt);
                    st.start_after = false;
                }
                bson_free(pbrt);
            }
            int64_t now = cg_hub_now_ms();
            if (now - persisted_at >= 1000) {
                persist(w);
                persisted_at = now;
            }
        }
        mongoc_change_stream_destroy(stream);
        if (unreachable)
            back_off(w, &backoff);
    }
    persist(w);
    bson_free(st.resume);
    if (w->client) {
        mongoc_client_destroy(w->client);
        w->client = NULL;
    }
    return NULL;
}

int cg_watcher_start(cg_watcher_t *w, char *err, size_t errlen)
{
    int rc = pthread_create(&w->thread, NULL, watcher_main, w);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the watcher thread: %s", strerror(rc));
        return -1;
    }
    w->started = true;
    return 0;
}

void cg_watcher_stop(cg_watcher_t *w, int timeout_ms)
{
    pthread_mutex_lock(&w->lock);
    w->stop = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    if (w->started && !w->joined) {
        struct timespec until = cg_stream_realtime_in(timeout_ms);
        if (pthread_timedjoin_np(w->thread, NULL, &until) == 0)
            w->joined = true;
        else
            cg_log_warn("watcher: still inside a MongoDB call at shutdown; not waiting for it");
    }
    persist(w);
}

bool cg_watcher_free(cg_watcher_t *w)
{
    if (!w)
        return true;
    if (w->started && !w->joined)
        return false;
    mongoc_uri_destroy(w->uri);
    bson_free(w->last);
    bson_free(w->saved_replay_from);
    bson_free(w->saved_last);
    bson_free(w->written);
    pthread_mutex_destroy(&w->lock);
    pthread_mutex_destroy(&w->persist_lock);
    pthread_cond_destroy(&w->cond);
    bson_free(w);
    return true;
}

char *cg_watcher_position(cg_watcher_t *w)
{
    pthread_mutex_lock(&w->lock);
    char *p = w->last ? bson_strdup(w->last) : NULL;
    pthread_mutex_unlock(&w->lock);
    return p;
}

bool cg_watcher_status(cg_watcher_t *w, char *msg, size_t len)
{
    pthread_mutex_lock(&w->lock);
    bool streaming = w->streaming;
    snprintf(msg, len, "%s", w->status);
    pthread_mutex_unlock(&w->lock);
    return streaming;
}

bool cg_watcher_history_lost(cg_watcher_t *w, char *msg, size_t len)
{
    pthread_mutex_lock(&w->lock);
    bool lost = w->history_lost[0] != '\0';
    snprintf(msg, len, "%s", w->history_lost);
    pthread_mutex_unlock(&w->lock);
    return lost;
}
