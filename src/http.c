/* http.c: libmicrohttpd front end.
 *
 * libmicrohttpd parses every request, and this file routes and validates it
 * (request.c, access.c). Short answers (errors, /healthz, /metrics, HEAD) and
 * long-polls are libmicrohttpd responses. An admitted stream (SSE, NDJSON) is
 * not: its socket goes to the outlet (outlet.c), which writes the whole answer
 * itself, so that a stream costs no libmicrohttpd pool and its events are
 * written with writev from their shared frames as soon as the hub has them.
 *
 * Long-polls suspend in the access handler, before any response is queued;
 * the hub resumes them (the wake callback) from whichever thread publishes
 * the next wanted event or reaches their deadline, and libmicrohttpd calls
 * the handler again after the resume. Suspending under the hub lock is what
 * makes a wake impossible to lose and a double resume impossible.
 *
 * Connections arrive through the gate (gate.c), which hands each one to a
 * shard: one of HTTP_SHARDS daemons with a small per-connection pool, or the
 * one daemon with a large pool for long request heads. Each shard runs its
 * daemon's loop in a thread of ours (see shard_loop()). */
#include "http.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gate.h"
#include "log.h"
#include "metrics.h"
#include "outlet.h"
#include "request.h"

#define POLL_BLOCK_SIZE 8192 /* bytes per content-reader call of a long-poll answer */
/* Per-connection pools (libmicrohttpd's default is 32 KiB). The gate sends a
 * head to the small pool when its cost is at most half of it: the other half
 * is for the answer's headers and the write buffer. The large pool takes the
 * longest head the gate lets through (gate.h) with room to spare. */
#define SMALL_POOL (16 * 1024)
#define LARGE_POOL (256 * 1024)
#define IDLE_TIMEOUT_S 120 /* only for connections that are not suspended */
#define HTTP_SHARDS 4      /* small-pool daemons per listener: see cg_http_start() */
#define LOOP_WAIT_MS 20    /* the longest a shard sleeps: see shard_loop() */

/* A connection the gate has passed, on its way to a shard. */
typedef struct {
    int fd;
    struct sockaddr_storage addr;
    socklen_t addrlen;
} arrival_t;

/* One libmicrohttpd daemon and the thread that runs its loop. The gate's
 * thread queues arrivals; only the shard's thread adds them to its daemon,
 * because libmicrohttpd's external loop is not safe against another thread
 * adding connections while it runs. */
typedef struct {
    struct MHD_Daemon *daemon;
    pthread_t thread;
    bool running;
    cg_http_t *http;
    int epfd;             /* the shard sleeps here: on the daemon's epoll fd and wake_fd */
    int wake_fd;          /* eventfd: arrivals queued, or stopping */
    pthread_mutex_t lock; /* guards the arrivals */
    arrival_t *arrivals;
    size_t n_arrivals, cap_arrivals;
} shard_t;

struct cg_http {
    shard_t shards[HTTP_SHARDS + 1]; /* the last one has the large pool */
    cg_gate_t *gate;
    atomic_uint next_shard;
    atomic_bool stop;
    const cg_config_t *cfg;
    cg_hub_t *hub;
    cg_watcher_t *watcher;
    const cg_access_t *access;
    cg_outlet_t *outlet; /* the streams, once admitted */
    char *spec;
};

/* Per-request state, owned by the connection (freed on completion). */
typedef struct {
    cg_http_t *http;
    shard_t *shard;
    struct MHD_Connection *conn;
    cg_request_t req;
    cg_sub_t *sub;
    bool begun;                         /* routed, and answered or subscribed */
    cg_transport_t transport;           /* subscribed: how (for /metrics) */
    int64_t since_ms;                   /* subscribed: when */
    unsigned long long sent, sent_msgs; /* subscribed: body bytes and messages sent */
    int64_t expires_ms; /* subscribed: when its token expires (streams end then); 0: never */
    int watch_fd;       /* subscribed: its socket, in the shard's epoll set for hang-ups; else -1 */
    bool hangup;        /* the client closed its side: end the stream, answer the poll now */
} conn_ctx_t;

static void on_park(void *ctx)
{
    MHD_suspend_connection(((conn_ctx_t *)ctx)->conn);
}

static void on_wake(void *ctx)
{
    MHD_resume_connection(((conn_ctx_t *)ctx)->conn);
}

static const cg_sub_ops_t sub_ops = {on_park, on_wake};

/* The headers every answer carries (Cache-Control, and CORS when the request
 * came from an allowed origin): up to COMMON_HEADERS name/value pairs added at
 * name[n], value[n]; returns the new n. Both libmicrohttpd answers and the
 * outlet's stream heads are made from it. */
#define COMMON_HEADERS 4
static size_t common_headers(const conn_ctx_t *c, const char *name[], const char *value[], size_t n)
{
#define PAIR(k, v) (name[n] = (k), value[n++] = (v))
    PAIR("Cache-Control", "no-cache");
    if (c->req.origin) {
        PAIR("Access-Control-Allow-Origin", c->req.origin);
        PAIR("Vary", "Origin");
        if (c->req.origin_credentials)
            PAIR("Access-Control-Allow-Credentials", "true");
    }
#undef PAIR
    return n;
}

static void add_common_headers(conn_ctx_t *c, struct MHD_Response *r)
{
    const char *name[COMMON_HEADERS], *value[COMMON_HEADERS];
    for (size_t i = 0, n = common_headers(c, name, value, 0); i < n; i++)
        MHD_add_response_header(r, name[i], value[i]);
}

/* Queues `body` (taken: freed with free()) as a JSON answer. */
static enum MHD_Result send_json(conn_ctx_t *c, unsigned status, char *body,
                                 const char *retry_after)
{
    size_t len = strlen(body);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (retry_after)
        MHD_add_response_header(r, "Retry-After", retry_after);
    if (c->req.allow)
        MHD_add_response_header(r, "Allow", c->req.allow);
    if (c->req.www_authenticate)
        MHD_add_response_header(r, "WWW-Authenticate", CG_ACCESS_CHALLENGE);
    add_common_headers(c, r);
    enum MHD_Result ret = MHD_queue_response(c->conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_error(conn_ctx_t *c, const char *retry_after)
{
    return send_json(c, (unsigned)c->req.status, cg_request_error_json(&c->req), retry_after);
}

/* ---- streams (SSE and NDJSON) ---- */

/* A stream answer's headers, for the HEAD answer here and the outlet's head
 * alike: up to STREAM_HEADERS name/value pairs. */
#define STREAM_HEADERS (2 + COMMON_HEADERS)
static size_t stream_headers(const conn_ctx_t *c, const char *name[], const char *value[])
{
    name[0] = "Content-Type";
    value[0] = c->req.ndjson ? "application/x-ndjson" : "text/event-stream";
    name[1] = "X-Accel-Buffering";
    value[1] = "no";
    return common_headers(c, name, value, 2);
}

/* HEAD on a stream: its head and nothing else, without subscribing. (A
 * streaming response would make libmicrohttpd 0.9.75 send the chunked body's
 * end marker after the head, which a keep-alive client reads as the start of
 * its next answer.) */
static enum MHD_Result send_stream_head(conn_ctx_t *c)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    const char *name[STREAM_HEADERS], *value[STREAM_HEADERS];
    for (size_t i = 0, n = stream_headers(c, name, value); i < n; i++)
        MHD_add_response_header(r, name[i], value[i]);
    enum MHD_Result ret = MHD_queue_response(c->conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* Set on a shard's thread when a stream was just handed over, so that
 * libmicrohttpd's log line about the access handler's MHD_NO is not taken
 * for an error. */
static _Thread_local bool handed_over;

/* Subscribes a stream and gives its socket to the outlet (outlet.h), which
 * writes the whole answer. libmicrohttpd then closes its own descriptor of the
 * socket: MHD_USE_TURBO keeps it from shutting the socket down first. */
static cg_hub_rc_t hand_over(conn_ctx_t *c, cg_sub_spec_t *spec, const char *version)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!info) {
        cg_filter_free(spec->filter);
        cg_project_free(spec->project);
        return CG_HUB_STOPPING;
    }
    const char *name[STREAM_HEADERS], *value[STREAM_HEADERS];
    size_t n = stream_headers(c, name, value);
    bson_string_t *lines = bson_string_new(NULL);
    for (size_t i = 0; i < n; i++)
        bson_string_append_printf(lines, "%s: %s\r\n", name[i], value[i]);
    cg_outlet_stream_t st = {
        .ndjson = c->req.ndjson,
        .http10 = strcmp(version, MHD_HTTP_VERSION_1_0) == 0,
        .headers = lines->str,
        .expires_ms = c->expires_ms,
    };
    cg_hub_rc_t rc = cg_outlet_take(c->http->outlet, info->connect_fd, spec, &st);
    bson_string_free(lines, true);
    return rc;
}

/* ---- long-poll ---- */

/* A long-poll answer: {"events":[...],"lastEventId":...}, read straight from
 * the events' shared JSON bytes. (An iovec response would avoid even this
 * copy, but libmicrohttpd 0.9.75 copies the iovec array into the small
 * per-connection pool, which a 1,000-event answer does not fit.) */
typedef struct {
    cg_event_t **events;        /* references held until the answer is sent */
    const cg_frames_t **frames; /* their bytes under the poller's projection */
    size_t n;
    char *suffix;
    size_t part, off; /* reader: part 0 is the prefix, 1..n the events, n+1 the suffix */
} poll_body_t;

static const char POLL_PREFIX[] = CG_POLL_PREFIX;

static void free_poll_body(void *cls)
{
    poll_body_t *b = cls;
    for (size_t i = 0; i < b->n; i++)
        cg_event_unref(b->events[i]);
    bson_free(b->events);
    bson_free(b->frames);
    bson_free(b->suffix);
    bson_free(b);
}

/* The bytes of one part of the body; events after the first get a comma. */
static const char *poll_part(const poll_body_t *b, size_t part, size_t *len, bool *comma)
{
    *comma = false;
    if (part == 0) {
        *len = sizeof POLL_PREFIX - 1;
        return POLL_PREFIX;
    }
    if (part <= b->n) {
        *comma = part > 1;
        *len = b->frames[part - 1]->json_len;
        return b->frames[part - 1]->json;
    }
    *len = strlen(b->suffix);
    return b->suffix;
}

static ssize_t poll_body_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    poll_body_t *b = cls;
    size_t n = 0;
    while (n < max && b->part <= b->n + 1) {
        size_t len;
        bool comma;
        const char *bytes = poll_part(b, b->part, &len, &comma);
        size_t lead = comma ? 1 : 0; /* a part with a comma is one byte longer */
        if (b->off < lead) {
            buf[n++] = ',';
            b->off = 1;
            continue;
        }
        size_t from = b->off - lead;
        size_t k = len - from < max - n ? len - from : max - n;
        memcpy(buf + n, bytes + from, k);
        n += k;
        b->off += k;
        if (b->off == len + lead) {
            b->part++;
            b->off = 0;
        }
    }
    if (!n)
        return MHD_CONTENT_READER_END_OF_STREAM;
    cg_metrics_sent(CG_TRANSPORT_POLL, 0, n);
    return (ssize_t)n;
}

/* Answers {"events":[...],"lastEventId":...}. Takes events (and their
 * references) and frames. */
static enum MHD_Result send_poll_answer(conn_ctx_t *c, cg_event_t **events,
                                        const cg_frames_t **frames, size_t n, const char *last)
{
    poll_body_t *b = bson_malloc0(sizeof *b);
    b->events = events;
    b->frames = frames;
    b->n = n;
    b->suffix = cg_request_poll_suffix(last);
    uint64_t total = cg_request_poll_length(frames, n, b->suffix);
    c->sent += total;
    c->sent_msgs += n;
    cg_metrics_sent(CG_TRANSPORT_POLL, n, 0);
    struct MHD_Response *r = MHD_create_response_from_callback(total, POLL_BLOCK_SIZE,
                                                               poll_body_reader, b, free_poll_body);
    MHD_add_response_header(r, "Content-Type", "application/json");
    add_common_headers(c, r);
    enum MHD_Result ret = MHD_queue_response(c->conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_history_lost(conn_ctx_t *c, const cg_event_t *reset)
{
    return send_json(c, MHD_HTTP_GONE, cg_request_history_lost_json(reset->reason, reset->position),
                     NULL);
}

static enum MHD_Result poll_step(conn_ctx_t *c)
{
    size_t limit = c->req.limit, n = 0;
    cg_event_t **events = bson_malloc(limit * sizeof *events);
    const cg_frames_t **frames = bson_malloc(limit * sizeof *frames);
    enum MHD_Result ret;
    for (;;) {
        cg_event_t *ev;
        const cg_frames_t *fr;
        cg_next_t rc = cg_hub_next(c->http->hub, c->sub, n == 0 && !c->hangup, &ev, &fr);
        if (rc == CG_NEXT_PARKED) {
            ret = MHD_YES; /* suspended; the handler runs again on wake */
            goto discard;
        }
        if (rc == CG_NEXT_EVENT && ev->kind == CG_EVENT_RESET) {
            if (n == 0) {
                ret = send_history_lost(c, ev);
                cg_event_unref(ev);
                goto discard;
            }
            /* Answer what came before it; the next poll meets the reset again. */
            cg_event_unref(ev);
            break;
        }
        if (rc != CG_NEXT_EVENT)
            break; /* EMPTY after some events, TIMEOUT, END */
        events[n] = ev;
        frames[n++] = fr;
        if (n == limit)
            break;
    }
    char *last =
        n ? bson_strdup(events[n - 1]->position) : cg_hub_sub_position(c->http->hub, c->sub);
    ret = send_poll_answer(c, events, frames, n, last);
    bson_free(last);
    return ret;
discard:
    bson_free(events);
    bson_free(frames);
    return ret;
}

/* ---- health ---- */

static enum MHD_Result send_health(conn_ctx_t *c)
{
    unsigned code;
    char *text = cg_metrics_health(c->http->hub, c->http->watcher, &code);
    return send_json(c, code, text, code == MHD_HTTP_OK ? NULL : "1");
}

static enum MHD_Result send_metrics(conn_ctx_t *c)
{
    char *text = cg_metrics_render(c->http->hub, c->http->watcher);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_COPY);
    bson_free(text);
    MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    add_common_headers(c, r);
    enum MHD_Result ret = MHD_queue_response(c->conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- routing ---- */

/* With the lengths: a %00 in a parameter would otherwise cut its value
 * silently ("ns=app%00x" read as "ns=app"). */
static enum MHD_Result collect_param(void *cls, enum MHD_ValueKind kind, const char *key,
                                     size_t key_size, const char *value, size_t value_size)
{
    conn_ctx_t *c = cls;
    return cg_request_param_n(&c->req, key, key_size, value, value_size) == 0 ? MHD_YES : MHD_NO;
}

static enum MHD_Result send_preflight(conn_ctx_t *c)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Allow", "GET, HEAD, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, HEAD, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Headers",
                            "Last-Event-ID, Accept, Cache-Control, Authorization");
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    add_common_headers(c, r);
    enum MHD_Result ret = MHD_queue_response(c->conn, MHD_HTTP_NO_CONTENT, r);
    MHD_destroy_response(r);
    return ret;
}

/* A suspended connection never learns that its client left: libmicrohttpd
 * stops polling its socket. So each subscriber's socket is also in the
 * shard's own epoll set, for EPOLLRDHUP only, once: a long-poll whose client
 * is gone is cleaned up at once instead of at its deadline, and a parked
 * stream at once instead of at its next heartbeat. (A client that merely
 * shut down its sending side gets the same: its poll answered now, its
 * stream ended cleanly; EventSource and curl never do that.) */
static void watch_hangup(conn_ctx_t *c)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLONESHOT, .data.ptr = c};
    if (info && epoll_ctl(c->shard->epfd, EPOLL_CTL_ADD, info->connect_fd, &ev) == 0)
        c->watch_fd = info->connect_fd;
}

/* On the shard's thread, between two MHD_run()s: c is alive. */
static void on_hangup(conn_ctx_t *c)
{
    c->hangup = true;
    cg_hub_kick(c->http->hub, c->sub);
}

static enum MHD_Result begin_request(conn_ctx_t *c, const char *url, const char *method,
                                     const char *version)
{
    cg_http_t *http = c->http;
    bool preflight = strcmp(method, "OPTIONS") == 0;
    if (cg_request_init(&c->req, preflight ? "GET" : method, url) != 0)
        return send_error(c, NULL);
    const char *origin = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Origin");
    if (!cg_request_cors(&c->req, http->cfg->cors_origins, http->cfg->n_cors_origins, origin))
        return send_error(c, NULL);
    if (preflight)
        return send_preflight(c);
    c->req.access_token_ok = cg_access_query_token(http->access);
    MHD_get_connection_values_n(c->conn, MHD_GET_ARGUMENT_KIND, collect_param, c);
    if (c->req.status)
        return send_error(c, NULL);
    bool ops = c->req.endpoint == CG_EP_HEALTHZ || c->req.endpoint == CG_EP_METRICS;
    if (ops) {
        const union MHD_ConnectionInfo *peer =
            MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (!cg_access_ops_allowed(http->access, peer ? peer->client_addr : NULL)) {
            cg_request_fail(&c->req, 403, "forbidden", CG_ACCESS_OPS_REFUSED);
            return send_error(c, NULL);
        }
    } else {
        cg_grant_t grant;
        if (cg_access_check(http->access, &c->req,
                            MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Authorization"),
                            MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Cookie"),
                            c->req.access_token, &grant) != 0)
            return send_error(c, NULL);
        c->expires_ms = grant.expires_ms;
        cg_grant_clear(&grant);
    }
    const char *last_id = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Last-Event-ID");
    const char *accept = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Accept");
    if (cg_request_finish(&c->req, last_id, accept) != 0)
        return send_error(c, NULL);
    if (c->req.endpoint == CG_EP_HEALTHZ)
        return send_health(c);
    if (c->req.endpoint == CG_EP_METRICS)
        return send_metrics(c);

    bool poll = c->req.endpoint == CG_EP_POLL;
    if (!poll && strcmp(method, "HEAD") == 0)
        return send_stream_head(c);
    cg_sub_spec_t spec = {
        .filter = cg_request_take_filter(&c->req),
        .project = cg_request_take_project(&c->req),
        .position = c->req.position,
        .heartbeats = !poll,
        .deadline_ms = cg_access_deadline(
            poll ? cg_hub_now_ms() + (int64_t)c->req.timeout_s * 1000 : 0, c->expires_ms),
        .ops = &sub_ops,
        .ctx = c,
    };
    switch (poll ? cg_hub_subscribe(http->hub, &spec, &c->sub) : hand_over(c, &spec, version)) {
    case CG_HUB_FULL:
        cg_metrics_drop(CG_DROP_TOO_MANY);
        cg_request_fail(&c->req, 503, "too_many_subscribers",
                        "this server has --max-subscribers %zu subscribers; retry later",
                        http->cfg->max_subscribers);
        return send_error(c, "5");
    case CG_HUB_STOPPING:
        cg_metrics_drop(CG_DROP_SHUTTING_DOWN);
        cg_request_fail(&c->req, 503, "shutting_down", "changegate is shutting down");
        return send_error(c, "1");
    case CG_HUB_OK:
        break;
    }
    if (!poll) {
        handed_over = true;
        return MHD_NO; /* the outlet has the stream: libmicrohttpd lets go of the connection */
    }
    c->transport = CG_TRANSPORT_POLL;
    c->since_ms = cg_hub_now_ms();
    cg_metrics_subscribers(c->transport, 1);
    watch_hangup(c);
    return poll_step(c);
}

/* libmicrohttpd calls this first with the headers, then with any body, then
 * once more with nothing: the answer is queued on that last call, because a
 * response queued on the first one is "early" and costs the keep-alive. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    conn_ctx_t *c = *con_cls;
    if (!c) {
        shard_t *sh = cls;
        c = bson_malloc0(sizeof *c);
        c->http = sh->http;
        c->shard = sh;
        c->conn = conn;
        c->watch_fd = -1;
        *con_cls = c;
        return MHD_YES;
    }
    if (*upload_data_size) { /* a body nobody asked for: discard it */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (!c->begun) {
        c->begun = true;
        return begin_request(c, url, method, version);
    }
    if (c->sub && c->req.endpoint == CG_EP_POLL)
        return poll_step(c); /* resumed after a park, or a hang-up */
    return MHD_YES;
}

/* Why a subscriber's request ended, for the log; counts drops. */
static const char *end_reason(const conn_ctx_t *c, enum MHD_RequestTerminationCode toe)
{
    if (c->hangup) {
        cg_metrics_drop(CG_DROP_CLIENT_GONE);
        return "client gone";
    }
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK:
        return "completed";
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED:
        cg_metrics_drop(CG_DROP_WRITE_TIMEOUT);
        return "write timeout";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN:
        cg_metrics_drop(CG_DROP_SHUTTING_DOWN);
        return "shutdown";
    default:
        cg_metrics_drop(CG_DROP_CLIENT_GONE);
        return "client gone";
    }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    conn_ctx_t *c = *con_cls;
    if (!c)
        return;
    cg_http_t *http = ((shard_t *)cls)->http;
    if (c->watch_fd >= 0) /* the socket is still open: closed after this callback */
        epoll_ctl(c->shard->epfd, EPOLL_CTL_DEL, c->watch_fd, NULL);
    if (c->sub) {
        const char *why = end_reason(c, toe);
        static const char *const names[CG_TRANSPORTS] = {"SSE stream", "NDJSON stream", "poll"};
        cg_log_debug("%s: %s closed after %.1f s (%s): %llu messages, %llu bytes", http->spec,
                     names[c->transport], (double)(cg_hub_now_ms() - c->since_ms) / 1000, why,
                     c->sent_msgs, c->sent);
        cg_metrics_subscribers(c->transport, -1);
        cg_hub_unsubscribe(http->hub, c->sub);
    }
    cg_request_clear(&c->req);
    bson_free(c);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (handed_over) { /* libmicrohttpd calls it an error; it is the hand-over to the outlet */
        handed_over = false;
        if (strncmp(msg, "Application reported internal error", 35) == 0)
            return;
    }
    size_t len = strlen(msg);
    while (len && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
        msg[--len] = '\0';
    cg_log_debug("libmicrohttpd: %s", msg);
}

/* Called on the gate's thread: queues the connection for its shard. */
static void on_arrival(void *ctx, int fd, const struct sockaddr *addr, socklen_t addrlen,
                       cg_gate_class_t cls)
{
    cg_http_t *http = ctx;
    shard_t *sh = cls == CG_GATE_LARGE
                      ? &http->shards[HTTP_SHARDS]
                      : &http->shards[atomic_fetch_add(&http->next_shard, 1) % HTTP_SHARDS];
    pthread_mutex_lock(&sh->lock);
    if (sh->n_arrivals == sh->cap_arrivals) {
        sh->cap_arrivals = sh->cap_arrivals ? 2 * sh->cap_arrivals : 64;
        sh->arrivals = bson_realloc(sh->arrivals, sh->cap_arrivals * sizeof *sh->arrivals);
    }
    arrival_t *a = &sh->arrivals[sh->n_arrivals++];
    a->fd = fd;
    memcpy(&a->addr, addr, addrlen);
    a->addrlen = addrlen;
    pthread_mutex_unlock(&sh->lock);
    uint64_t one = 1;
    ssize_t w = write(sh->wake_fd, &one, sizeof one);
    (void)w; /* only fails when the counter is already huge, which also wakes */
}

/* Runs on the shard's thread: hands queued arrivals to the daemon, which from
 * then on owns (and eventually closes) each socket. */
static void take_arrivals(shard_t *sh)
{
    uint64_t count;
    ssize_t r = read(sh->wake_fd, &count, sizeof count);
    (void)r; /* EAGAIN: nothing signalled; the queue is checked anyway */
    pthread_mutex_lock(&sh->lock);
    arrival_t *batch = sh->arrivals;
    size_t n = sh->n_arrivals;
    sh->arrivals = NULL;
    sh->n_arrivals = sh->cap_arrivals = 0;
    pthread_mutex_unlock(&sh->lock);
    for (size_t i = 0; i < n; i++)
        if (MHD_add_connection(sh->daemon, batch[i].fd, (struct sockaddr *)&batch[i].addr,
                               batch[i].addrlen) != MHD_YES)
            cg_log_debug("%s: a connection was refused: %s", sh->http->spec, strerror(errno));
    bson_free(batch);
}

/* A shard's event loop: sleep on the daemon's epoll fd (readable when a
 * socket is ready or a suspended connection was resumed) and on the arrivals
 * eventfd, then let libmicrohttpd do what is due without blocking. The sleep
 * is capped at LOOP_WAIT_MS because 0.9.75 keeps connections it has not
 * finished with (just resumed, or with more to write) on an internal list
 * that neither its epoll fd nor MHD_get_timeout() reports: with a 1 s cap a
 * fast stream crawled at one step per second. MHD_run() rather than
 * MHD_run_wait() also sidesteps a 0.9.75 bug: its epoll loop repeats
 * `epoll_wait` with the full timeout while exactly 128 events came back, so a
 * burst of 256 ready connections could block it. */
static void *shard_loop(void *arg)
{
    shard_t *sh = arg;
    struct epoll_event evs[64];
    while (!atomic_load(&sh->http->stop)) {
        MHD_UNSIGNED_LONG_LONG timeout;
        int wait_ms = LOOP_WAIT_MS;
        if (MHD_get_timeout(sh->daemon, &timeout) == MHD_YES && timeout < (unsigned)wait_ms)
            wait_ms = (int)timeout;
        int n = epoll_wait(sh->epfd, evs, 64, wait_ms);
        for (int i = 0; i < n; i++)
            if (evs[i].data.ptr) /* a subscriber's socket (watch_hangup()) */
                on_hangup(evs[i].data.ptr);
        take_arrivals(sh);
        MHD_run(sh->daemon);
    }
    return NULL;
}

static bool start_shard(cg_http_t *http, shard_t *sh, unsigned flags, unsigned limit, size_t pool)
{
    sh->http = http;
    sh->epfd = sh->wake_fd = -1;
    pthread_mutex_init(&sh->lock, NULL);
    sh->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, sh, MHD_OPTION_EXTERNAL_LOGGER,
                                  on_mhd_log, http, MHD_OPTION_CONNECTION_LIMIT, limit,
                                  MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool,
                                  /* A connection that makes no progress for --write-timeout seconds
                                   * is closed: a stream whose client stopped reading, an idle
                                   * keep-alive. Parked streams are suspended and never time out;
                                   * heartbeats wake them, and a dead client then shows up here. */
                                  MHD_OPTION_CONNECTION_TIMEOUT, http->cfg->write_timeout,
                                  MHD_OPTION_NOTIFY_COMPLETED, on_completed, sh, MHD_OPTION_END);
    if (!sh->daemon)
        return false;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(sh->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    sh->epfd = epoll_create1(EPOLL_CLOEXEC);
    sh->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!info || sh->epfd < 0 || sh->wake_fd < 0)
        return false;
    struct epoll_event dev = {.events = EPOLLIN, .data.ptr = NULL};
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(sh->epfd, EPOLL_CTL_ADD, info->epoll_fd, &dev) != 0 ||
        epoll_ctl(sh->epfd, EPOLL_CTL_ADD, sh->wake_fd, &wev) != 0 ||
        pthread_create(&sh->thread, NULL, shard_loop, sh) != 0)
        return false;
    sh->running = true;
    return true;
}

/* Starts a listener: the gate accepting on our socket, and the shards it
 * hands connections to, each a daemon with its own thread, connections and
 * suspended list (as libmicrohttpd's own thread pool does). Sharding matters
 * because 0.9.75 walks a daemon's whole suspended list whenever one
 * connection resumes: with thousands of parked streams that walk, not the
 * work, would dominate. */
cg_http_t *cg_http_start(const cg_listen_t *listen, const cg_config_t *cfg, cg_hub_t *hub,
                         cg_watcher_t *watcher, const cg_access_t *access, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    socklen_t addrlen;
    if (cg_config_listen_addr(listen, &addr, &addrlen, err, errlen) != 0)
        return NULL;
    int fd = cg_gate_listen((struct sockaddr *)&addr, addrlen);
    bool ipv6 = addr.ss_family == AF_INET6;
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot listen: %s", listen->spec, strerror(errno));
        return NULL;
    }
    unsigned limit = cg_config_max_connections(cfg);

    cg_http_t *http = bson_malloc0(sizeof *http);
    http->cfg = cfg;
    http->hub = hub;
    http->watcher = watcher;
    http->access = access;
    http->spec = bson_strdup(listen->spec);
    atomic_init(&http->stop, false);
    atomic_init(&http->next_shard, 0);
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_NO_LISTEN_SOCKET |
                     MHD_USE_ERROR_LOG |
                     MHD_USE_TURBO; /* no shutdown() before close(): see hand_over() */
    if (ipv6)
        flags |= MHD_USE_IPv6;
    /* Each shard may take every connection: the file-descriptor limit is the
     * real bound, and no shard should refuse while others have room. */
    for (int i = 0; i <= HTTP_SHARDS; i++) {
        size_t pool = i < HTTP_SHARDS ? SMALL_POOL : LARGE_POOL;
        if (!start_shard(http, &http->shards[i], flags, limit, pool)) {
            snprintf(err, errlen, "%s: cannot start its HTTP server", listen->spec);
            close(fd);
            cg_http_stop(http);
            return NULL;
        }
    }
    http->outlet = cg_outlet_start(listen->spec, cfg, hub, err, errlen);
    if (!http->outlet) {
        close(fd);
        cg_http_stop(http);
        return NULL;
    }
    http->gate = cg_gate_start(fd, listen->spec, SMALL_POOL / 2, on_arrival, http, err, errlen);
    if (!http->gate) {
        cg_http_stop(http);
        return NULL;
    }
    cg_log_info("listening on %s (at most %u connections)", listen->spec, limit);
    return http;
}

void cg_http_quiesce(cg_http_t *http)
{
    cg_gate_close(http->gate);
}

void cg_http_stop(cg_http_t *http)
{
    if (!http)
        return;
    cg_gate_free(http->gate);
    cg_outlet_stop(http->outlet);
    atomic_store(&http->stop, true);
    for (int i = 0; i <= HTTP_SHARDS; i++) {
        shard_t *sh = &http->shards[i];
        if (!sh->http)
            continue; /* never started */
        if (sh->running) {
            uint64_t one = 1;
            ssize_t w = write(sh->wake_fd, &one, sizeof one);
            (void)w;
            pthread_join(sh->thread, NULL);
        }
        if (sh->daemon)
            MHD_stop_daemon(sh->daemon);
        for (size_t k = 0; k < sh->n_arrivals; k++)
            close(sh->arrivals[k].fd);
        bson_free(sh->arrivals);
        if (sh->epfd >= 0)
            close(sh->epfd);
        if (sh->wake_fd >= 0)
            close(sh->wake_fd);
        pthread_mutex_destroy(&sh->lock);
    }
    bson_free(http->spec);
    bson_free(http);
}
