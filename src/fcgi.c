/* fcgi.c: the FastCGI front end (see fcgi.h).
 *
 * Threads. FCGI_SHARDS threads of ours each run an epoll loop over the
 * listening sockets (EPOLLEXCLUSIVE: one shard takes each new connection) and
 * the connections they accepted, which they alone own from then on. The hub's
 * wake callback is the one cross-thread hand-off: it queues the woken request
 * on its shard (under the shard's lock) and signals the shard's eventfd; the
 * shard then pulls the request's next events from the hub.
 *
 * Requests. The web server sends each HTTP request as a FastCGI request on one
 * of its connections (fcgi_proto.c parses them). A request is answered at
 * once (errors, /healthz, /metrics), or subscribes to the hub: a stream
 * (SSE, NDJSON) that never ends by itself, or a long-poll that ends with its
 * answer. A subscribed request is always in one of three states: parked (the
 * hub will wake it), blocked (its connection has HIGH_WATER bytes waiting to
 * be written; it is pumped again when they drain), or being pumped.
 *
 * Output. What a connection sends is a queue of FastCGI records. An event's
 * bytes are never copied: its record points into the event's shared frames
 * and holds a reference, and writev sends the record header and the frame
 * together. Only small things (response heads, heartbeats, management
 * records) are copied into the queue.
 *
 * Going away. The web server closing the connection is the client going
 * away: every request on it is unsubscribed at once. (nginx, lighttpd and
 * Apache close their FastCGI connection when their client leaves; none sends
 * FCGI_ABORT_REQUEST, which is handled all the same.) */
#include "fcgi.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "fcgi_proto.h"
#include "log.h"
#include "metrics.h"
#include "request.h"

#define FCGI_SHARDS 2
#define HIGH_WATER (64 * 1024)   /* a connection's queued bytes beyond which streams wait */
#define READ_CHUNK (16 * 1024)   /* bytes per read() */
#define READ_BUDGET (256 * 1024) /* per connection per loop turn, so that one cannot starve all */
#define WAKE_BUDGET 4096         /* woken requests pumped per loop turn */
#define MAX_IOV 64
#define IDLE_TIMEOUT_MS (120 * 1000) /* a connection with no request in progress */
#define SWEEP_MS 1000                /* how often timeouts are looked for */
#define MAX_LISTENERS 16             /* sockets one front end takes (fcgi:systemd) */
#define MAX_REQS_PER_CONN 64         /* multiplexed requests on one connection */
#define LINGER_MS 5000               /* see service() */
/* A connection's epoll registration: edge-triggered, for input, room to write
 * and the peer's close alike. */
#define CONN_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

enum { ITEM_WAKE, ITEM_LISTENER, ITEM_CONN };

typedef struct shard shard_t;
typedef struct conn conn_t;

/* One record (or a copied run of records) waiting to be written: head[] then
 * data. For an event's frame, head is the record header (and a comma, in a
 * long-poll answer) and data points into the event's frames, kept alive by
 * ref; for copied bytes, data points at the trailing storage. */
typedef struct out {
    struct out *next;
    uint8_t head[CG_FCGI_HEADER_LEN + 1];
    uint8_t head_len;
    const uint8_t *data;
    size_t data_len;
    cg_event_t *ref;
    size_t off; /* bytes of head + data already written */
    uint8_t copy[];
} out_t;

typedef struct req {
    conn_t *conn; /* owner */
    struct req *next;
    uint16_t id;
    cg_endpoint_t endpoint;
    bool ndjson, head_only;
    unsigned limit;     /* long-poll */
    char *origin;       /* the CORS origin its answers echo (cg_request_cors()), or NULL */
    int64_t expires_ms; /* when its token expires (a stream ends then); 0: never */
    bool origin_credentials;
    cg_sub_t *sub;
    cg_transport_t transport;
    bool blocked;
    struct req *wprev, *wnext; /* the shard's woken queue, under its lock */
    bool queued;
    int64_t since_ms;
    unsigned long long sent, sent_msgs;
} req_t;

struct conn {
    int kind; /* ITEM_CONN: first, for the epoll data pointer */
    int fd;
    shard_t *shard;
    conn_t *prev, *next; /* the shard's connections */
    cg_fcgi_conn_t *proto;
    req_t *reqs;
    out_t *out_head, *out_tail;
    size_t out_bytes;
    int64_t active_ms;    /* last bytes read, request answered or event queued */
    int64_t written_ms;   /* last progress writing, or when output began to wait */
    bool eof;             /* the peer closed its side: close once the output is written */
    int64_t linger_until; /* answered without KEEP_CONN and shut down: closed by then */
    bool failed;          /* close, without flushing */
    cg_drop_t fail_why;
};

typedef struct {
    int kind; /* ITEM_LISTENER */
    int fd;
} listener_t;

struct shard {
    cg_fcgi_t *fcgi;
    pthread_t thread;
    bool running;
    int epfd, wake_fd;
    int wake_kind;        /* ITEM_WAKE: the eventfd's epoll data points here */
    pthread_mutex_t lock; /* guards the woken queue */
    req_t *woken_head, *woken_tail;
    conn_t *conns; /* the shard's thread only */
    int64_t next_sweep_ms, accept_paused_until;
    bool accepting;
};

struct cg_fcgi {
    shard_t shards[FCGI_SHARDS];
    listener_t listeners[MAX_LISTENERS];
    size_t n_listeners;
    char *unix_path; /* a Unix socket we created: removed on quiesce */
    ino_t unix_ino;
    atomic_bool stop, quiesced;
    const cg_config_t *cfg;
    cg_hub_t *hub;
    cg_watcher_t *watcher;
    const cg_access_t *access;
    cg_fcgi_limits_t limits;
    char *spec;
};

/* ---- output ---- */

static void out_push(conn_t *c, out_t *o)
{
    if (!c->out_head)
        c->written_ms = cg_hub_now_ms();
    o->next = NULL;
    if (c->out_tail)
        c->out_tail->next = o;
    else
        c->out_head = o;
    c->out_tail = o;
    c->out_bytes += o->head_len + o->data_len;
}

/* Queues a copy of bytes that are already whole records. */
static void queue_raw(conn_t *c, const void *bytes, size_t len)
{
    out_t *o = bson_malloc0(sizeof *o + len);
    memcpy(o->copy, bytes, len);
    o->data = o->copy;
    o->data_len = len;
    out_push(c, o);
}

/* Queues len bytes as request id's STDOUT, copied. */
static void queue_stdout_copy(conn_t *c, uint16_t id, const void *bytes, size_t len)
{
    size_t total = cg_fcgi_encode_stdout(NULL, 0, id, bytes, len, false);
    out_t *o = bson_malloc0(sizeof *o + total);
    cg_fcgi_encode_stdout(o->copy, total, id, bytes, len, false);
    o->data = o->copy;
    o->data_len = total;
    out_push(c, o);
}

/* Queues len bytes of an event's frames as request id's STDOUT without
 * copying them: one record per 65535 bytes, each holding a reference. With
 * comma, a ',' goes first (between the events of a long-poll answer). */
static void queue_frame(conn_t *c, uint16_t id, cg_event_t *ev, const char *bytes, size_t len,
                        bool comma)
{
    const uint8_t *p = (const uint8_t *)bytes;
    while (len || comma) {
        size_t room = CG_FCGI_MAX_CONTENT - (comma ? 1 : 0);
        size_t k = len < room ? len : room;
        out_t *o = bson_malloc0(sizeof *o);
        cg_fcgi_stdout_header(o->head, id, (uint16_t)(k + (comma ? 1 : 0)), false);
        o->head_len = CG_FCGI_HEADER_LEN;
        if (comma)
            o->head[o->head_len++] = ',';
        o->data = p;
        o->data_len = k;
        o->ref = cg_event_ref(ev);
        out_push(c, o);
        p += k;
        len -= k;
        comma = false;
    }
}

static void out_free(out_t *o)
{
    cg_event_unref(o->ref);
    bson_free(o);
}

/* Writes what the socket takes now. Marks the connection failed when the
 * peer is gone. */
static void flush(conn_t *c)
{
    while (c->out_head && !c->failed) {
        struct iovec iov[MAX_IOV];
        int n = 0;
        for (out_t *o = c->out_head; o && n + 2 <= MAX_IOV; o = o->next) {
            size_t off = o->off;
            if (off < o->head_len) {
                iov[n++] = (struct iovec){o->head + off, o->head_len - off};
                off = o->head_len;
            }
            if (o->data_len)
                iov[n++] = (struct iovec){(void *)(o->data + (off - o->head_len)),
                                          o->data_len - (off - o->head_len)};
        }
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                c->failed = true;
                c->fail_why = CG_DROP_CLIENT_GONE;
            }
            return; /* EPOLLOUT (edge-triggered) brings us back */
        }
        c->written_ms = cg_hub_now_ms();
        size_t left = (size_t)w;
        c->out_bytes -= left;
        while (left) {
            out_t *o = c->out_head;
            size_t rest = o->head_len + o->data_len - o->off;
            if (left < rest) {
                o->off += left;
                break;
            }
            left -= rest;
            c->out_head = o->next;
            if (!c->out_head)
                c->out_tail = NULL;
            out_free(o);
        }
    }
}

/* ---- answers ---- */

static const char *reason_phrase(unsigned status)
{
    switch (status) {
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 410:
        return "Gone";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

/* Queues a CGI response head: Status, the given headers (each ending in
 * CRLF, or NULL), the CORS headers, Cache-Control, and the blank line. */
static void queue_head(req_t *r, unsigned status, const char *headers)
{
    char *cors = NULL;
    if (r->origin)
        cors = bson_strdup_printf(
            "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n%s", r->origin,
            r->origin_credentials ? "Access-Control-Allow-Credentials: true\r\n" : "");
    char *head =
        bson_strdup_printf("Status: %u %s\r\n%sCache-Control: no-cache\r\n%s\r\n", status,
                           reason_phrase(status), headers ? headers : "", cors ? cors : "");
    queue_stdout_copy(r->conn, r->id, head, strlen(head));
    bson_free(head);
    bson_free(cors);
}

static void unlink_woken(shard_t *sh, req_t *r)
{
    if (r->wprev)
        r->wprev->wnext = r->wnext;
    else
        sh->woken_head = r->wnext;
    if (r->wnext)
        r->wnext->wprev = r->wprev;
    else
        sh->woken_tail = r->wprev;
    r->wprev = r->wnext = NULL;
    r->queued = false;
}

/* Leaves the hub and frees the request. why: a drop to count, or -1. */
static void release_req(req_t *r, int why)
{
    conn_t *c = r->conn;
    for (req_t **p = &c->reqs; *p; p = &(*p)->next) {
        if (*p == r) {
            *p = r->next;
            break;
        }
    }
    if (r->sub) {
        cg_fcgi_t *f = c->shard->fcgi;
        cg_hub_unsubscribe(f->hub, r->sub); /* no wake can come after this */
        pthread_mutex_lock(&c->shard->lock);
        if (r->queued)
            unlink_woken(c->shard, r);
        pthread_mutex_unlock(&c->shard->lock);
        cg_metrics_subscribers(r->transport, -1);
        if (why >= 0)
            cg_metrics_drop((cg_drop_t)why);
        static const char *const names[CG_TRANSPORTS] = {"SSE stream", "NDJSON stream", "poll"};
        static const char *const whys[CG_DROPS] = {"client gone", "write timeout",
                                                   "too many subscribers", "shutdown"};
        cg_log_debug("%s: %s closed after %.1f s (%s): %llu messages, %llu bytes", f->spec,
                     names[r->transport], (double)(cg_hub_now_ms() - r->since_ms) / 1000,
                     why >= 0 ? whys[why] : "completed", r->sent_msgs, r->sent);
    }
    bson_free(r->origin);
    bson_free(r);
}

/* Ends the request normally (its output, then END_REQUEST) and frees it. */
static void finish_req(req_t *r)
{
    conn_t *c = r->conn;
    c->active_ms = cg_hub_now_ms();
    cg_fcgi_conn_end_request(c->proto, r->id, 0, CG_FCGI_REQUEST_COMPLETE);
    release_req(r, -1);
}

/* Answers body (taken: free()) and ends the request. retry_after is a header
 * value, or NULL; rq, when given, adds its Allow (405) and WWW-Authenticate
 * (401) headers, as http.c's send_json() does. */
static void answer(req_t *r, const cg_request_t *rq, unsigned status, const char *ctype, char *body,
                   const char *retry_after)
{
    size_t len = strlen(body);
    char headers[512];
    int n = snprintf(headers, sizeof headers, "Content-Type: %s\r\nContent-Length: %zu\r\n", ctype,
                     len);
    if (retry_after)
        n += snprintf(headers + n, sizeof headers - (size_t)n, "Retry-After: %s\r\n", retry_after);
    if (rq && rq->allow)
        n += snprintf(headers + n, sizeof headers - (size_t)n, "Allow: %s\r\n", rq->allow);
    if (rq && rq->www_authenticate)
        snprintf(headers + n, sizeof headers - (size_t)n, "WWW-Authenticate: %s\r\n",
                 CG_ACCESS_CHALLENGE);
    queue_head(r, status, headers);
    if (!r->head_only && len)
        queue_stdout_copy(r->conn, r->id, body, len);
    free(body);
    finish_req(r);
}

static void answer_error(req_t *r, const cg_request_t *rq, const char *retry_after)
{
    answer(r, rq, (unsigned)rq->status, "application/json", cg_request_error_json(rq), retry_after);
}

/* ---- streams and long-polls ---- */

/* Queues a message made from the subscriber's position (a heartbeat, or the
 * expired notice); counts it as a delivery when `message`. */
static void queue_positioned(req_t *r, char *(*make)(bool ndjson, const char *position),
                             bool message)
{
    cg_fcgi_t *f = r->conn->shard->fcgi;
    char *position = cg_hub_sub_position(f->hub, r->sub);
    char *bytes = make(r->ndjson, position);
    size_t len = strlen(bytes);
    queue_stdout_copy(r->conn, r->id, bytes, len);
    r->sent += len;
    cg_metrics_sent(r->transport, message ? 1 : 0, len);
    bson_free(bytes);
    bson_free(position);
}

static void queue_heartbeat(req_t *r)
{
    queue_positioned(r, cg_event_heartbeat, false);
}

/* The token expired: the `expired` message ends the stream. */
static void end_expired(req_t *r)
{
    queue_positioned(r, cg_event_expired, true);
    finish_req(r);
}

/* Moves a stream's events from the hub into its connection's output until
 * the hub has nothing (parked), the output is full (blocked) or the stream
 * ends. */
static void pump_stream(req_t *r)
{
    conn_t *c = r->conn;
    cg_hub_t *hub = c->shard->fcgi->hub;
    while (c->out_bytes < HIGH_WATER) {
        /* Checked before taking the next event, so that the expired message's
         * position is the last one this client got. */
        if (r->expires_ms && cg_hub_now_ms() >= r->expires_ms) {
            end_expired(r);
            return;
        }
        cg_event_t *ev;
        const cg_frames_t *fr;
        switch (cg_hub_next(hub, r->sub, true, &ev, &fr)) {
        case CG_NEXT_EVENT: {
            const char *bytes = r->ndjson ? fr->ndjson : fr->sse;
            size_t len = r->ndjson ? fr->ndjson_len : fr->sse_len;
            queue_frame(c, r->id, ev, bytes, len, false);
            cg_event_unref(ev);
            r->sent += len;
            r->sent_msgs++;
            cg_metrics_sent(r->transport, 1, len);
            c->active_ms = cg_hub_now_ms();
            break;
        }
        case CG_NEXT_HEARTBEAT:
            queue_heartbeat(r);
            break;
        case CG_NEXT_PARKED:
            return;
        case CG_NEXT_TIMEOUT: /* a stream's only deadline is its token's expiry */
            end_expired(r);
            return;
        case CG_NEXT_END:
        case CG_NEXT_EMPTY:
            finish_req(r);
            return;
        }
    }
    r->blocked = true;
}

static const char POLL_PREFIX[] = CG_POLL_PREFIX;

/* A long-poll: waits (parked) for its first event, then answers with up to
 * limit events, read straight from their shared JSON bytes. */
static void pump_poll(req_t *r)
{
    conn_t *c = r->conn;
    cg_hub_t *hub = c->shard->fcgi->hub;
    size_t n = 0;
    cg_event_t **events = bson_malloc(r->limit * sizeof *events);
    const cg_frames_t **frames = bson_malloc(r->limit * sizeof *frames);
    for (;;) {
        cg_event_t *ev;
        const cg_frames_t *fr;
        cg_next_t rc = cg_hub_next(hub, r->sub, n == 0, &ev, &fr);
        if (rc == CG_NEXT_PARKED)
            goto out; /* woken later */
        if (rc == CG_NEXT_EVENT && ev->kind == CG_EVENT_RESET) {
            if (n == 0) {
                answer(r, NULL, 410, "application/json",
                       cg_request_history_lost_json(ev->reason, ev->position), NULL);
                cg_event_unref(ev);
                goto out;
            }
            cg_event_unref(ev); /* the next poll meets it again */
            break;
        }
        if (rc != CG_NEXT_EVENT)
            break;
        events[n] = ev;
        frames[n++] = fr;
        if (n == r->limit)
            break;
    }
    char *last = n ? bson_strdup(events[n - 1]->position) : cg_hub_sub_position(hub, r->sub);
    char *suffix = cg_request_poll_suffix(last);
    size_t total = cg_request_poll_length(frames, n, suffix);
    char headers[128];
    snprintf(headers, sizeof headers, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
             total);
    queue_head(r, 200, headers);
    if (!r->head_only) {
        queue_stdout_copy(c, r->id, POLL_PREFIX, sizeof POLL_PREFIX - 1);
        for (size_t i = 0; i < n; i++)
            queue_frame(c, r->id, events[i], frames[i]->json, frames[i]->json_len, i > 0);
        queue_stdout_copy(c, r->id, suffix, strlen(suffix));
    }
    r->sent += total;
    r->sent_msgs += n;
    cg_metrics_sent(CG_TRANSPORT_POLL, n, total);
    for (size_t i = 0; i < n; i++)
        cg_event_unref(events[i]);
    bson_free(last);
    bson_free(suffix);
    finish_req(r);
out:
    bson_free(events);
    bson_free(frames);
}

static void pump(req_t *r)
{
    r->blocked = false;
    if (r->endpoint == CG_EP_POLL)
        pump_poll(r);
    else
        pump_stream(r);
}

/* The hub's callbacks, under its lock. park: nothing to do, the shard knows
 * from CG_NEXT_PARKED. wake: any thread; hands the request to its shard. */
static void on_park(void *ctx)
{
    (void)ctx;
}

static void on_wake(void *ctx)
{
    req_t *r = ctx;
    shard_t *sh = r->conn->shard;
    pthread_mutex_lock(&sh->lock);
    bool was_empty = !sh->woken_head;
    if (!r->queued) {
        r->queued = true;
        r->wprev = sh->woken_tail;
        r->wnext = NULL;
        if (sh->woken_tail)
            sh->woken_tail->wnext = r;
        else
            sh->woken_head = r;
        sh->woken_tail = r;
    }
    pthread_mutex_unlock(&sh->lock);
    if (was_empty) {
        uint64_t one = 1;
        ssize_t w = write(sh->wake_fd, &one, sizeof one);
        (void)w; /* fails only when the counter is huge, which wakes the shard anyway */
    }
}

static const cg_sub_ops_t sub_ops = {on_park, on_wake};

/* ---- routing ---- */

/* A header's value (HTTP_LAST_EVENT_ID...), or NULL; a value holding a NUL
 * byte fails the request with a 400 of the given code. */
static const char *header(const cg_fcgi_params_t *params, cg_request_t *rq, const char *name,
                          const char *code)
{
    size_t len;
    const char *v = cg_fcgi_params_get(params, name, &len);
    if (v && strlen(v) != len) {
        cg_request_fail(rq, 400, code, "header %s holds a NUL byte", name + 5);
        return NULL;
    }
    return v;
}

/* The head of a stream's answer; a HEAD's says it has no body, as over HTTP. */
static void queue_stream_head(req_t *r)
{
    char headers[160];
    snprintf(headers, sizeof headers, "Content-Type: %s\r\nX-Accel-Buffering: no\r\n%s",
             r->ndjson ? "application/x-ndjson" : "text/event-stream",
             r->head_only ? "Content-Length: 0\r\n" : "");
    queue_head(r, 200, headers);
}

static void start_stream(req_t *r)
{
    queue_stream_head(r);
    /* As over HTTP: the SSE preamble, or an NDJSON heartbeat with the position
     * the stream starts from. */
    if (!r->ndjson) {
        queue_stdout_copy(r->conn, r->id, CG_SSE_PREAMBLE, sizeof CG_SSE_PREAMBLE - 1);
        r->sent += sizeof CG_SSE_PREAMBLE - 1;
        cg_metrics_sent(r->transport, 0, sizeof CG_SSE_PREAMBLE - 1);
    } else {
        queue_heartbeat(r);
    }
    pump_stream(r);
}

static void send_preflight(req_t *r)
{
    queue_head(r, 204,
               "Allow: GET, HEAD, OPTIONS\r\n"
               "Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n"
               "Access-Control-Allow-Headers: Last-Event-ID, Accept, Cache-Control, "
               "Authorization\r\n"
               "Access-Control-Max-Age: 600\r\n");
    finish_req(r);
}

static void send_metrics(req_t *r)
{
    cg_fcgi_t *f = r->conn->shard->fcgi;
    char *text = cg_metrics_render(f->hub, f->watcher);
    answer(r, NULL, 200, "text/plain; version=0.0.4; charset=utf-8", strdup(text), NULL);
    bson_free(text);
}

/* Routes a ready request the way http.c's begin_request() does. The path is
 * matched on its last segment, so the web server may mount changegate under
 * any prefix (/changegate/events). */
static void route(req_t *r, const cg_fcgi_params_t *params)
{
    cg_fcgi_t *f = r->conn->shard->fcgi;
    cg_request_t rq;
    memset(&rq, 0, sizeof rq);
    cg_fcgi_target_t t;
    char err[256];
    if (cg_fcgi_params_target(params, &t, err, sizeof err) != 0) {
        cg_request_fail(&rq, 400, "bad_request", "%s", err);
        answer_error(r, &rq, NULL);
        return;
    }
    const char *seg = strrchr(t.path, '/');
    bool preflight = strcmp(t.method, "OPTIONS") == 0;
    r->head_only = strcmp(t.method, "HEAD") == 0;
    if (cg_request_init(&rq, preflight ? "GET" : t.method, seg) != 0)
        goto error;
    const char *origin = header(params, &rq, "HTTP_ORIGIN", "bad_request");
    const char *last_id = header(params, &rq, "HTTP_LAST_EVENT_ID", "invalid_position");
    const char *accept = header(params, &rq, "HTTP_ACCEPT", "bad_request");
    if (rq.status || !cg_request_cors(&rq, f->cfg->cors_origins, f->cfg->n_cors_origins, origin))
        goto error;
    r->origin = rq.origin; /* the request's answers echo it, long after rq */
    r->origin_credentials = rq.origin_credentials;
    rq.origin = NULL;
    if (preflight) {
        send_preflight(r);
        goto done;
    }
    rq.access_token_ok = cg_access_query_token(f->access);
    if (cg_request_query(&rq, t.query, strlen(t.query)) != 0)
        goto error;
    if (rq.endpoint == CG_EP_HEALTHZ || rq.endpoint == CG_EP_METRICS) {
        /* The peer is the web server's client, as the web server says. */
        if (!cg_access_ops_allowed_text(f->access,
                                        cg_fcgi_params_get(params, "REMOTE_ADDR", NULL))) {
            cg_request_fail(&rq, 403, "forbidden", CG_ACCESS_OPS_REFUSED);
            goto error;
        }
    } else {
        cg_grant_t grant;
        if (cg_access_check(
                f->access, &rq, header(params, &rq, "HTTP_AUTHORIZATION", "bad_request"),
                header(params, &rq, "HTTP_COOKIE", "bad_request"), rq.access_token, &grant) != 0)
            goto error;
        r->expires_ms = grant.expires_ms;
        cg_grant_clear(&grant);
    }
    if (cg_request_finish(&rq, last_id, accept) != 0)
        goto error;
    if (rq.endpoint == CG_EP_HEALTHZ) {
        unsigned code;
        char *body = cg_metrics_health(f->hub, f->watcher, &code);
        answer(r, &rq, code, "application/json", body, code == 200 ? NULL : "1");
        goto done;
    }
    if (rq.endpoint == CG_EP_METRICS) {
        send_metrics(r);
        goto done;
    }
    bool poll = rq.endpoint == CG_EP_POLL;
    r->endpoint = rq.endpoint;
    r->ndjson = rq.ndjson;
    r->limit = rq.limit;
    if (!poll && r->head_only) { /* a stream's head, without subscribing */
        queue_stream_head(r);
        finish_req(r);
        goto done;
    }
    cg_sub_spec_t spec = {
        .filter = cg_request_take_filter(&rq),
        .project = cg_request_take_project(&rq),
        .position = rq.position,
        .heartbeats = !poll,
        .deadline_ms = cg_access_deadline(poll ? cg_hub_now_ms() + (int64_t)rq.timeout_s * 1000 : 0,
                                          r->expires_ms),
        .ops = &sub_ops,
        .ctx = r,
    };
    switch (cg_hub_subscribe(f->hub, &spec, &r->sub)) {
    case CG_HUB_FULL:
        cg_metrics_drop(CG_DROP_TOO_MANY);
        cg_request_fail(&rq, 503, "too_many_subscribers",
                        "this server has --max-subscribers %zu subscribers; retry later",
                        f->cfg->max_subscribers);
        answer_error(r, &rq, "5");
        goto done;
    case CG_HUB_STOPPING:
        cg_metrics_drop(CG_DROP_SHUTTING_DOWN);
        cg_request_fail(&rq, 503, "shutting_down", "changegate is shutting down");
        answer_error(r, &rq, "1");
        goto done;
    case CG_HUB_OK:
        break;
    }
    r->transport = poll ? CG_TRANSPORT_POLL : r->ndjson ? CG_TRANSPORT_NDJSON : CG_TRANSPORT_SSE;
    r->since_ms = cg_hub_now_ms();
    cg_metrics_subscribers(r->transport, 1);
    /* Long-lived requests need their parameters no more. */
    cg_fcgi_conn_drop_params(r->conn->proto, r->id);
    if (poll)
        pump_poll(r);
    else
        start_stream(r);
    goto done;
error:
    answer_error(r, &rq, NULL);
done:
    cg_request_clear(&rq);
    cg_fcgi_target_clear(&t);
}

/* ---- the protocol's callbacks (inside cg_fcgi_conn_feed()) ---- */

static void on_request(void *ctx, uint16_t id, const cg_fcgi_params_t *params, bool keep_conn)
{
    (void)keep_conn; /* fcgi_proto.c tracks it: cg_fcgi_conn_should_close() */
    conn_t *c = ctx;
    req_t *r = bson_malloc0(sizeof *r);
    r->conn = c;
    r->id = id;
    r->next = c->reqs;
    c->reqs = r;
    c->active_ms = cg_hub_now_ms();
    route(r, params);
}

static void on_abort(void *ctx, uint16_t id)
{
    conn_t *c = ctx;
    for (req_t *r = c->reqs; r; r = r->next) {
        if (r->id == id) {
            cg_fcgi_conn_end_request(c->proto, id, 0, CG_FCGI_REQUEST_COMPLETE);
            release_req(r, r->sub ? CG_DROP_CLIENT_GONE : -1);
            return;
        }
    }
}

static int on_write(void *ctx, const void *bytes, size_t len)
{
    queue_raw(ctx, bytes, len);
    return 0;
}

static void on_refused(void *ctx, uint16_t id, const char *why)
{
    conn_t *c = ctx;
    cg_log_debug("%s: request %u refused: %s", c->shard->fcgi->spec, id, why);
}

static const cg_fcgi_callbacks_t proto_callbacks = {on_request, on_abort, on_write, on_refused};

/* ---- connections ---- */

static void close_conn(conn_t *c, int why)
{
    shard_t *sh = c->shard;
    while (c->reqs)
        release_req(c->reqs, c->reqs->sub ? why : -1);
    while (c->out_head) {
        out_t *o = c->out_head;
        c->out_head = o->next;
        out_free(o);
    }
    cg_fcgi_conn_free(c->proto);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        sh->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    bson_free(c);
}

/* After anything happened on a connection: write what waits, pump the
 * streams that waited for room, close it when it is done or broken. */
static void service(conn_t *c)
{
    for (;;) {
        flush(c);
        if (c->failed) {
            close_conn(c, c->fail_why);
            return;
        }
        if (c->out_bytes >= HIGH_WATER)
            return; /* EPOLLOUT brings us back */
        bool pumped = false;
        for (req_t *r = c->reqs, *next; r; r = next) {
            next = r->next;
            if (r->blocked) {
                pumped = true;
                pump(r);
            }
        }
        if (!pumped)
            break;
    }
    if (c->out_head)
        return;
    if (c->eof) {
        close_conn(c, -1);
    } else if (cg_fcgi_conn_should_close(c->proto) && !c->linger_until) {
        /* A lingering close: the web server may still be sending the request's
         * last records (Apache writes its empty STDIN after the PARAMS we
         * answered), and closing with input unread would reset the connection
         * under it. So stop writing, and close at its EOF or LINGER_MS later. */
        shutdown(c->fd, SHUT_WR);
        c->linger_until = cg_hub_now_ms() + LINGER_MS;
    }
}

/* A peer that breaks the protocol is worth a warning (a client pointed at the
 * wrong port, a web server misconfigured), but one that keeps doing it must not
 * fill the log: at most one warning a minute, the rest at debug level. */
static void log_protocol_error(cg_fcgi_t *f, const char *err)
{
    static _Atomic int64_t last_warn_ms;
    int64_t now = cg_hub_now_ms(), last = atomic_load(&last_warn_ms);
    if ((last == 0 || now - last >= 60000) &&
        atomic_compare_exchange_strong(&last_warn_ms, &last, now))
        cg_log_warn("%s: closing a connection: %s (more such errors within a minute are logged "
                    "at debug level)",
                    f->spec, err);
    else
        cg_log_debug("%s: closing a connection: %s", f->spec, err);
}

/* Reads and parses what the web server sent. Returns false when the
 * connection was closed. */
static bool read_conn(conn_t *c)
{
    uint8_t buf[READ_CHUNK];
    size_t total = 0;
    while (total < READ_BUDGET) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (n < 0) {
            close_conn(c, CG_DROP_CLIENT_GONE);
            return false;
        }
        if (n == 0) {
            /* The web server closed its side: its clients are gone, but what was
             * already answered (a /healthz, say) is still written before closing. */
            if (cg_fcgi_conn_mid_record(c->proto))
                cg_log_debug("%s: the web server closed a connection in the middle of a record",
                             c->shard->fcgi->spec);
            c->eof = true;
            while (c->reqs)
                release_req(c->reqs, c->reqs->sub ? CG_DROP_CLIENT_GONE : -1);
            return true;
        }
        total += (size_t)n;
        c->active_ms = cg_hub_now_ms();
        char err[256];
        if (cg_fcgi_conn_feed(c->proto, buf, (size_t)n, err, sizeof err) != 0) {
            log_protocol_error(c->shard->fcgi, err);
            close_conn(c, CG_DROP_CLIENT_GONE);
            return false;
        }
    }
    /* Budget spent: re-arming makes epoll report the socket again if it
     * still has input (edge-triggered otherwise would not). */
    struct epoll_event ev = {.events = CONN_EVENTS, .data.ptr = c};
    epoll_ctl(c->shard->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    return true;
}

/* Takes the listening sockets out of the shard's epoll set (quiesced, or out
 * of descriptors for a moment); listen_on_shard() puts them back. */
static void unlisten_on_shard(shard_t *sh)
{
    cg_fcgi_t *f = sh->fcgi;
    for (size_t k = 0; k < f->n_listeners; k++)
        epoll_ctl(sh->epfd, EPOLL_CTL_DEL, f->listeners[k].fd, NULL);
    sh->accepting = false;
}

static void accept_conns(shard_t *sh, listener_t *l)
{
    cg_fcgi_t *f = sh->fcgi;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: stop taking connections for a moment
                 * rather than spin on a socket that stays readable. */
                cg_log_warn("%s: cannot accept a connection: %s", f->spec, strerror(errno));
                unlisten_on_shard(sh);
                sh->accept_paused_until = cg_hub_now_ms() + 200;
            }
            return; /* EAGAIN: another shard took it, or none is left */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails on Unix sockets */
        conn_t *c = bson_malloc0(sizeof *c);
        c->kind = ITEM_CONN;
        c->fd = fd;
        c->shard = sh;
        c->active_ms = cg_hub_now_ms();
        c->proto = cg_fcgi_conn_new(&f->limits, &proto_callbacks, c);
        struct epoll_event ev = {.events = CONN_EVENTS, .data.ptr = c};
        if (!c->proto || epoll_ctl(sh->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            cg_fcgi_conn_free(c->proto);
            close(fd);
            bson_free(c);
            continue;
        }
        c->next = sh->conns;
        if (sh->conns)
            sh->conns->prev = c;
        sh->conns = c;
    }
}

static void listen_on_shard(shard_t *sh)
{
    cg_fcgi_t *f = sh->fcgi;
    sh->accepting = !atomic_load(&f->quiesced);
    for (size_t k = 0; k < f->n_listeners && sh->accepting; k++) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &f->listeners[k]};
        epoll_ctl(sh->epfd, EPOLL_CTL_ADD, f->listeners[k].fd, &ev);
    }
}

/* Once a second: connections whose output has not moved for --write-timeout
 * (a client that stopped reading, behind a web server that stopped too),
 * lingering ones past their time, and connections idle with no request for
 * IDLE_TIMEOUT_MS. */
static void sweep(shard_t *sh, int64_t now)
{
    int64_t write_ms = (int64_t)sh->fcgi->cfg->write_timeout * 1000;
    for (conn_t *c = sh->conns, *next; c; c = next) {
        next = c->next;
        if (c->out_head && now - c->written_ms > write_ms)
            close_conn(c, CG_DROP_WRITE_TIMEOUT);
        else if (c->linger_until && now > c->linger_until)
            close_conn(c, -1);
        else if (!c->reqs && now - c->active_ms > IDLE_TIMEOUT_MS)
            close_conn(c, -1);
    }
}

/* Pumps the requests the hub woke. Returns true when some are left for the
 * next turn. */
static bool run_woken(shard_t *sh)
{
    uint64_t count;
    ssize_t rd = read(sh->wake_fd, &count, sizeof count);
    (void)rd; /* EAGAIN: nothing signalled; the queue is looked at anyway */
    for (int i = 0; i < WAKE_BUDGET; i++) {
        pthread_mutex_lock(&sh->lock);
        req_t *r = sh->woken_head;
        if (r)
            unlink_woken(sh, r);
        pthread_mutex_unlock(&sh->lock);
        if (!r)
            return false;
        conn_t *c = r->conn;
        pump(r);
        service(c);
    }
    return true;
}

static void *shard_loop(void *arg)
{
    shard_t *sh = arg;
    cg_fcgi_t *f = sh->fcgi;
    struct epoll_event evs[256];
    bool more = false;
    while (!atomic_load(&f->stop)) {
        int64_t now = cg_hub_now_ms();
        int wait_ms = more ? 0 : (int)(sh->next_sweep_ms > now ? sh->next_sweep_ms - now : 0);
        int n = epoll_wait(sh->epfd, evs, 256, wait_ms);
        for (int i = 0; i < n; i++) {
            int kind = *(int *)evs[i].data.ptr;
            if (kind == ITEM_LISTENER) {
                if (sh->accepting)
                    accept_conns(sh, evs[i].data.ptr);
                continue;
            }
            if (kind != ITEM_CONN)
                continue; /* the wake eventfd: run_woken() below */
            conn_t *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLERR) {
                close_conn(c, CG_DROP_CLIENT_GONE);
                continue;
            }
            if ((evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) && !read_conn(c))
                continue;
            service(c);
        }
        more = run_woken(sh);
        now = cg_hub_now_ms();
        if (now >= sh->next_sweep_ms) {
            sweep(sh, now);
            sh->next_sweep_ms = now + SWEEP_MS;
            if (!sh->accepting && now >= sh->accept_paused_until && !atomic_load(&f->quiesced))
                listen_on_shard(sh);
        }
        if (atomic_load(&f->quiesced) && sh->accepting)
            unlisten_on_shard(sh);
    }
    /* Stopping: whatever is still open ends now. */
    while (sh->conns) {
        flush(sh->conns);
        close_conn(sh->conns, CG_DROP_SHUTTING_DOWN);
    }
    return NULL;
}

/* ---- listening sockets ---- */

static int listen_tcp(const cg_listen_t *l, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    socklen_t addrlen;
    if (cg_config_listen_addr(l, &addr, &addrlen, err, errlen) != 0)
        return -1;
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&addr, addrlen) != 0 || listen(fd, 4096) != 0) {
        snprintf(err, errlen, "%s: cannot listen: %s", l->spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* A Unix socket at l->path, with --fcgi-socket-mode and -owner. A socket
 * file left by a changegate that died is replaced; one that a live process
 * answers on is not. */
static int listen_unix(cg_fcgi_t *f, const cg_listen_t *l, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", l->path);
    struct stat st;
    if (lstat(l->path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s: %s exists and is not a socket", l->spec, l->path);
            return -1;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool live = probe >= 0 && connect(probe, (struct sockaddr *)&sun, sizeof sun) == 0;
        if (probe >= 0)
            close(probe);
        if (live) {
            snprintf(err, errlen, "%s: another process is listening on %s", l->spec, l->path);
            return -1;
        }
        unlink(l->path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
        snprintf(err, errlen, "%s: cannot listen: %s", l->spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    const cg_config_t *cfg = f->cfg;
    if (chmod(l->path, cfg->fcgi_socket_mode) != 0 ||
        ((cfg->fcgi_socket_uid >= 0 || cfg->fcgi_socket_gid >= 0) &&
         chown(l->path, (uid_t)cfg->fcgi_socket_uid, (gid_t)cfg->fcgi_socket_gid) != 0) ||
        listen(fd, 4096) != 0 || stat(l->path, &st) != 0) {
        snprintf(err, errlen, "%s: cannot set up %s (mode %04o, owner %ld:%ld): %s", l->spec,
                 l->path, cfg->fcgi_socket_mode, cfg->fcgi_socket_uid, cfg->fcgi_socket_gid,
                 strerror(errno));
        close(fd);
        unlink(l->path);
        return -1;
    }
    f->unix_path = bson_strdup(l->path);
    f->unix_ino = st.st_ino;
    return fd;
}

/* Takes an inherited descriptor that must be a listening stream socket. */
static int take_inherited(const cg_listen_t *l, int fd, char *err, size_t errlen)
{
    int on = 0, type = 0;
    socklen_t len = sizeof on, tlen = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) != 0 || !on ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0 || type != SOCK_STREAM) {
        snprintf(err, errlen, "%s: descriptor %d is not a listening stream socket", l->spec, fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
}

/* sd_listen_fds(3), without libsystemd: LISTEN_PID must be us, the sockets
 * are 3 .. 3+LISTEN_FDS-1. The variables are removed so that nothing we start
 * inherits them. */
static int take_systemd(cg_fcgi_t *f, const cg_listen_t *l, char *err, size_t errlen)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    long n = fds ? strtol(fds, NULL, 10) : 0;
    if (!pid || strtol(pid, NULL, 10) != (long)getpid() || n < 1) {
        snprintf(err, errlen,
                 "%s: systemd passed no socket (LISTEN_PID/LISTEN_FDS are not set for this "
                 "process; start changegate from a unit with a .socket unit)",
                 l->spec);
        return -1;
    }
    if (n > MAX_LISTENERS) {
        snprintf(err, errlen, "%s: systemd passed %ld sockets; at most %d are taken", l->spec, n,
                 MAX_LISTENERS);
        return -1;
    }
    for (long i = 0; i < n; i++) {
        int fd = take_inherited(l, 3 + (int)i, err, errlen);
        if (fd < 0)
            return -1;
        f->listeners[f->n_listeners++] = (listener_t){ITEM_LISTENER, fd};
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return 0;
}

static int open_listeners(cg_fcgi_t *f, const cg_listen_t *l, char *err, size_t errlen)
{
    int fd;
    switch (l->kind) {
    case CG_LISTEN_FCGI_SYSTEMD:
        return take_systemd(f, l, err, errlen);
    case CG_LISTEN_FCGI_STDIN:
        fd = take_inherited(l, 0, err, errlen);
        break;
    case CG_LISTEN_FCGI_UNIX:
        fd = listen_unix(f, l, err, errlen);
        break;
    default:
        fd = listen_tcp(l, err, errlen);
        break;
    }
    if (fd < 0)
        return -1;
    f->listeners[f->n_listeners++] = (listener_t){ITEM_LISTENER, fd};
    return 0;
}

static bool start_shard(cg_fcgi_t *f, shard_t *sh)
{
    sh->fcgi = f;
    sh->wake_kind = ITEM_WAKE;
    sh->epfd = epoll_create1(EPOLL_CLOEXEC);
    sh->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&sh->lock, NULL);
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &sh->wake_kind};
    if (sh->epfd < 0 || sh->wake_fd < 0 ||
        epoll_ctl(sh->epfd, EPOLL_CTL_ADD, sh->wake_fd, &wev) != 0)
        return false;
    listen_on_shard(sh);
    if (pthread_create(&sh->thread, NULL, shard_loop, sh) != 0)
        return false;
    sh->running = true;
    return true;
}

cg_fcgi_t *cg_fcgi_start(const cg_listen_t *listen, const cg_config_t *cfg, cg_hub_t *hub,
                         cg_watcher_t *watcher, const cg_access_t *access, char *err, size_t errlen)
{
    cg_fcgi_t *f = bson_malloc0(sizeof *f);
    f->cfg = cfg;
    f->hub = hub;
    f->watcher = watcher;
    f->access = access;
    f->spec = bson_strdup(listen->spec);
    atomic_init(&f->stop, false);
    atomic_init(&f->quiesced, false);
    for (int i = 0; i < FCGI_SHARDS; i++)
        f->shards[i].epfd = f->shards[i].wake_fd = -1;
    if (open_listeners(f, listen, err, errlen) != 0) {
        cg_fcgi_stop(f);
        return NULL;
    }
    /* What GET_VALUES answers: connections as for HTTP, requests as
     * --max-subscribers. */
    unsigned conns = cg_config_max_connections(cfg);
    f->limits = (cg_fcgi_limits_t){.max_conns = conns,
                                   .max_reqs = (unsigned)cfg->max_subscribers,
                                   .max_reqs_per_conn = MAX_REQS_PER_CONN};
    for (int i = 0; i < FCGI_SHARDS; i++) {
        if (!start_shard(f, &f->shards[i])) {
            snprintf(err, errlen, "%s: cannot start its FastCGI threads: %s", listen->spec,
                     strerror(errno));
            cg_fcgi_stop(f);
            return NULL;
        }
    }
    cg_log_info("listening on %s (FastCGI, at most %u connections)", listen->spec, conns);
    return f;
}

/* Removes the socket file only if it is still ours (not one a newer
 * changegate created in its place). */
static void remove_unix_path(cg_fcgi_t *f)
{
    struct stat st;
    if (f->unix_path && stat(f->unix_path, &st) == 0 && st.st_ino == f->unix_ino)
        unlink(f->unix_path);
    bson_free(f->unix_path);
    f->unix_path = NULL;
}

void cg_fcgi_quiesce(cg_fcgi_t *f)
{
    if (!f || atomic_exchange(&f->quiesced, true))
        return;
    remove_unix_path(f);
    for (int i = 0; i < FCGI_SHARDS; i++) {
        uint64_t one = 1;
        if (f->shards[i].wake_fd >= 0) {
            ssize_t w = write(f->shards[i].wake_fd, &one, sizeof one);
            (void)w;
        }
    }
}

void cg_fcgi_stop(cg_fcgi_t *f)
{
    if (!f)
        return;
    atomic_store(&f->stop, true);
    for (int i = 0; i < FCGI_SHARDS; i++) {
        shard_t *sh = &f->shards[i];
        if (sh->running) {
            uint64_t one = 1;
            ssize_t w = write(sh->wake_fd, &one, sizeof one);
            (void)w;
            pthread_join(sh->thread, NULL);
        }
        if (sh->epfd >= 0)
            close(sh->epfd);
        if (sh->wake_fd >= 0)
            close(sh->wake_fd);
        if (sh->fcgi)
            pthread_mutex_destroy(&sh->lock);
    }
    for (size_t k = 0; k < f->n_listeners; k++)
        close(f->listeners[k].fd);
    remove_unix_path(f);
    bson_free(f->spec);
    bson_free(f);
}
