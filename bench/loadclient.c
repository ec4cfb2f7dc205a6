/* loadclient: many concurrent Server-Sent Events subscribers in one process (epoll).
 *
 * Opens N HTTP/1.1 connections to HOST:PORT PATH, parses each response as an SSE
 * stream (chunked or not), and for every data message takes "seq" and "ts_us" from the
 * data (a change event whose fullDocument was written by bench/writer.py). It measures
 * latency = time of receipt - ts_us, and per connection counts gaps and repeats by seq.
 * It stops after --duration seconds, or as soon as every connection has received
 * --expect events, and prints one line of JSON.
 *
 *   cc -O2 -o bench/loadclient bench/loadclient.c
 *   bench/loadclient --port 8080 --connections 1000 --expect 10000 --duration 60 \
 *       --ready-file /tmp/ready
 *
 * The ready file is created once every connection has its response headers and the
 * stream's first comment (": changegate"), so a writer can start without losing events.
 *
 * For filtered fan-out, "{i}" in --path is replaced by each connection's index, and
 * --stride K says connection i receives exactly the seqs congruent to i modulo K (the
 * writer's --owners K puts owner "u<seq % K>" in each document): its seqs then go up by
 * K, and an event with another residue is counted as misrouted. Instead of --expect
 * (the same count for every connection), --events N says the writer writes N events
 * (seqs from --first-seq): each connection then expects those of its residue, which may
 * be none when N is below K (it is complete once streaming).
 *
 * Tokens (--tokens FILE): one token a line; connection i sends line i (0-based) as
 * "Authorization: Bearer <token>", or with --token-param NAME as the query parameter
 * NAME (appended to the path with "?" or "&"), for servers that authenticate each
 * subscriber (changegate --auth jwt). The file must have a line per connection.
 *
 * Holding (--hold S): once every connection is streaming, keep them all open S seconds
 * more whatever --expect says (--duration then only bounds the time to connect), then
 * close them all at once and print. A connection the server closes before then fails
 * the run. Heartbeats (comment lines ": heartbeat", sent by changegate on an idle
 * stream) are counted per connection in every mode; --min-heartbeats K fails the run
 * unless every connection got at least K.
 *
 * Nchan (the nginx module) as the server: its EventSource subscriber needs nothing
 * special, only its --path. It opens a stream with the comment ": hi", sends each
 * published body as one data message, and its pings (nchan_eventsource_ping_interval)
 * are messages named "ping" with no data: they are counted as heartbeats.
 *
 * Long-poll (--mode longpoll): each connection loops on requests, one at a time on a
 * keep-alive connection (a new one if the server closes it), never missing a message
 * between two answers:
 *   --target changegate: GET PATH?timeout=0 first, which answers at once with the
 *     current position (lastEventId) and makes the connection ready; then
 *     GET PATH?timeout=T&lastEventId=<the previous answer's lastEventId> (T:
 *     --poll-timeout), each answer {"events": [...], "lastEventId": ...} (product.md).
 *     The events after that position wait in changegate's journal between polls.
 *   --target nchan: GET PATH, then the same with If-Modified-Since and If-None-Match
 *     set to the previous answer's Last-Modified and Etag (Nchan's message id: the
 *     next poll gets the messages after it). The location should have
 *     nchan_longpoll_multipart_response on: an answer then holds every message
 *     queued after that id (multipart/mixed, or the bare body when there is one),
 *     and Nchan's headers name the last of them. A 304 (nchan_subscriber_timeout)
 *     keeps the position. The first poll has no id: with nchan_subscriber_first_message
 *     oldest (its default) it gets the channel's oldest message, so a connection is
 *     ready once its first request is sent, and nothing published after it is lost.
 * Each event in an answer is accounted like an SSE message (seq, ts_us; latency to the
 * answer's receipt). A connection that has all its events closes. Polls are counted
 * ("polls" in the JSON) with the connections re-opened after the server closed an idle
 * one ("reconnects").
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* C_DONE: a long-poll connection that has all its events, closed by us. */
enum conn_state { C_IDLE, C_CONNECTING, C_SENDING, C_HEADERS, C_BODY, C_CLOSED, C_FAILED, C_DONE };
enum mode { M_SSE, M_LONGPOLL };
enum target { T_CHANGEGATE, T_NCHAN };
enum chunk_state { CH_SIZE, CH_DATA, CH_DATA_CRLF, CH_TRAILER, CH_DONE };

struct conn {
    int fd;
    int idx;
    enum conn_state state;
    size_t req_off;
    char hdr[16384];
    size_t hdr_len;
    bool chunked;
    enum chunk_state cstate;
    uint64_t chunk_left;
    char sizeline[128];
    size_t sizeline_len;
    /* SSE */
    char *line;
    size_t line_len, line_cap;
    bool skip_lf;
    bool got_preamble;
    bool in_data; /* the current block has a data field */
    bool named;   /* the current block has a non-empty event field */
    bool ping;    /* ... and it is "ping" (Nchan's keep-alive) */
    bool has_seq, has_ts;
    int64_t seq, ts_us;
    /* accounting */
    int64_t last_seq, base_seq; /* base_seq: the first seq this connection should get */
    uint64_t received, gaps, repeats, resets, no_seq, misrouted, heartbeats;
    char *req; /* the request, when the path has "{i}", and each long-poll's */
    /* long-poll: the answer being read, and where the next poll starts */
    int status;
    int64_t content_length; /* -1: not given */
    bool close_after;       /* the server said Connection: close */
    char boundary[128];     /* multipart/mixed boundary, "" for a bare body */
    char *body;
    size_t body_len, body_cap;
    char pos[512];          /* changegate: the last answer's lastEventId */
    char last_modified[64]; /* nchan: the last answer's Last-Modified ... */
    char etag[64];          /* ... and Etag */
    uint64_t expect;        /* events this connection should get (--expect, or from --events) */
    bool complete;
    bool answered; /* long-poll: this connection has carried an answer */
};

static struct {
    const char *host, *port, *path, *ready_file;
    int connections;
    double duration;
    uint64_t expect;
    int64_t first_seq;
    int max_pending;
    bool verbose;
    int stride;
    double hold;             /* > 0: hold every connection this long once all stream */
    uint64_t min_heartbeats; /* each connection must get at least this many */
    const char *tokens;      /* a file: one token a line, line i for connection i */
    const char *token_param; /* send the token as this query parameter, not a header */
    int64_t events;          /* >= 0: the writer's events in all (--events), else -1 */
    enum mode mode;          /* --mode sse | longpoll */
    enum target target;      /* --target changegate | nchan (how to long-poll) */
    int poll_timeout;        /* changegate: seconds a poll waits (timeout=) */
} opt = {"127.0.0.1",
         "8080",
         "/events",
         NULL,
         100,
         30.0,
         0,
         0,
         256,
         false,
         1,
         0,
         0,
         .events = -1,
         .mode = M_SSE,
         .target = T_CHANGEGATE,
         .poll_timeout = 60};

/* Whether connections wait for a known number of events (--expect or --events). */
static bool expecting(void)
{
    return opt.expect || opt.events >= 0;
}

/* Latency histogram: 10 us buckets up to 10 s, then 10 ms buckets up to 1,000 s (an
 * overloaded run's backlog); beyond that only the maximum is known. */
#define HIST_RES_US 10
#define HIST_FINE_US 10000000LL
#define HIST_COARSE_RES_US 10000
#define HIST_FINE (HIST_FINE_US / HIST_RES_US)
#define HIST_BUCKETS (HIST_FINE + (1000000000LL - HIST_FINE_US) / HIST_COARSE_RES_US)
static uint64_t *hist;
static uint64_t hist_over_10s, hist_count;
static int64_t lat_max = INT64_MIN, lat_min = INT64_MAX;
static double lat_sum;

static struct conn *conns;
static char **tokens; /* --tokens: one per connection */
static char *tokens_text;
static int epfd;
static char request[2048];
static size_t request_len;
static struct sockaddr_storage addr;
static socklen_t addrlen;
static int n_pending, n_ready, n_failed, n_closed, n_complete, n_started;
static uint64_t total_events, total_heartbeats, total_polls, total_reconnects;
static double t_first_event, t_last_event, t_start, t_ready;
static int64_t first_event_us, last_event_us; /* wall clock, to compare with a writer's */
static volatile sig_atomic_t stop_flag;
static int errors_printed;

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int64_t now_real_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadclient: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void conn_fail(struct conn *c, const char *fmt, ...)
{
    if (c->state == C_FAILED || c->state == C_CLOSED || c->state == C_DONE)
        return;
    if (errors_printed < 10) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "loadclient: connection %d: ", c->idx);
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
        if (++errors_printed == 10)
            fprintf(stderr, "loadclient: (further connection errors not shown)\n");
    }
    if (c->state != C_IDLE && !c->got_preamble) /* (a long-poll's later polls are not) */
        n_pending--;
    c->state = C_FAILED;
    n_failed++;
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
}

static void record_latency(int64_t lat)
{
    if (lat < 0)
        lat = 0;
    uint64_t b = lat < HIST_FINE_US
                     ? (uint64_t)lat / HIST_RES_US
                     : HIST_FINE + (uint64_t)(lat - HIST_FINE_US) / HIST_COARSE_RES_US;
    if (lat >= HIST_FINE_US)
        hist_over_10s++;
    if (b < HIST_BUCKETS) /* beyond: only lat_max knows */
        hist[b]++;
    hist_count++;
    lat_sum += (double)lat;
    if (lat > lat_max)
        lat_max = lat;
    if (lat < lat_min)
        lat_min = lat;
}

static int64_t percentile(double p)
{
    if (hist_count == 0)
        return -1;
    uint64_t want = (uint64_t)(p * (double)hist_count);
    if (want >= hist_count)
        want = hist_count - 1;
    uint64_t acc = 0;
    for (uint64_t b = 0; b < HIST_BUCKETS; b++) {
        acc += hist[b];
        if (acc > want)
            return b < HIST_FINE ? (int64_t)(b * HIST_RES_US + HIST_RES_US / 2)
                                 : (int64_t)(HIST_FINE_US + (b - HIST_FINE) * HIST_COARSE_RES_US +
                                             HIST_COARSE_RES_US / 2);
    }
    return lat_max;
}

/* Finds "key" in s and parses the integer after ':' (plain, or {"$numberLong": "N"}). */
static bool json_int(const char *s, size_t n, const char *key, int64_t *out)
{
    size_t kl = strlen(key);
    const char *end = s + n;
    const char *p = s;
    while ((p = memmem(p, (size_t)(end - p), key, kl)) != NULL) {
        const char *q = p + kl;
        while (q < end && (*q == ' ' || *q == '\t'))
            q++;
        if (q < end && *q == ':') {
            q++;
            while (q < end && (*q == ' ' || *q == '{' || *q == '"' || *q == '\t')) {
                if (*q == '"' && end - q > 12 && memcmp(q, "\"$numberLong\"", 13) == 0) {
                    q += 13;
                    while (q < end && (*q == ' ' || *q == ':'))
                        q++;
                    continue;
                }
                q++;
            }
            char buf[32];
            size_t i = 0;
            if (q < end && *q == '-')
                buf[i++] = *q++;
            while (q < end && *q >= '0' && *q <= '9' && i < sizeof buf - 1)
                buf[i++] = *q++;
            buf[i] = 0;
            if (i == 0 || (i == 1 && buf[0] == '-'))
                return false;
            *out = strtoll(buf, NULL, 10);
            return true;
        }
        p += kl;
    }
    return false;
}

/* One event received (an SSE data message, or one of a long-poll answer's events):
 * its seq against this connection's last, its latency, and whether it completes the
 * connection. */
static void deliver(struct conn *c, bool has_seq, int64_t seq, bool has_ts, int64_t ts_us,
                    int64_t recv_us)
{
    if (!has_seq) {
        c->no_seq++;
        return;
    }
    if (((seq - c->base_seq) % opt.stride + opt.stride) % opt.stride != 0) {
        c->misrouted++; /* not this connection's residue: its filter let it in */
    } else if (seq == c->last_seq + opt.stride) {
        /* in order */
    } else if (seq > c->last_seq + opt.stride) {
        c->gaps += (uint64_t)((seq - c->last_seq) / opt.stride - 1);
    } else {
        c->repeats++;
    }
    if (seq > c->last_seq)
        c->last_seq = seq;
    c->received++;
    total_events++;
    double t = now_mono();
    if (t_first_event == 0) {
        t_first_event = t;
        first_event_us = recv_us;
    }
    t_last_event = t;
    last_event_us = recv_us;
    if (has_ts)
        record_latency(recv_us - ts_us);
    if (expecting() && !c->complete && c->received >= c->expect) {
        c->complete = true;
        n_complete++;
    }
}

/* The connection is subscribed: an SSE stream's first comment, a long-poll's first
 * position (changegate) or first request sent (Nchan). */
static void conn_ready(struct conn *c)
{
    c->got_preamble = true;
    n_pending--;
    n_ready++;
    if (expecting() && c->expect == 0 && !c->complete) { /* nothing to wait for */
        c->complete = true;
        n_complete++;
    }
}

static void sse_dispatch(struct conn *c, int64_t recv_us)
{
    if (c->ping) { /* Nchan's keep-alive, with or without data */
        c->heartbeats++;
        total_heartbeats++;
    } else if (c->in_data && c->named) {
        c->resets++;
    } else if (c->in_data) {
        deliver(c, c->has_seq, c->seq, c->has_ts, c->ts_us, recv_us);
    }
    c->in_data = c->named = c->ping = c->has_seq = c->has_ts = false;
}

static void sse_line(struct conn *c, const char *l, size_t n, int64_t recv_us)
{
    if (n == 0) {
        sse_dispatch(c, recv_us);
        return;
    }
    if (l[0] == ':') {
        if (!c->got_preamble) {
            conn_ready(c);
        } else if (n >= 10 && n - (l[1] == ' ' ? 2 : 1) >= 9 &&
                   memcmp(l + (l[1] == ' ' ? 2 : 1), "heartbeat", 9) == 0) {
            c->heartbeats++;
            total_heartbeats++;
        }
        return;
    }
    const char *colon = memchr(l, ':', n);
    size_t fl = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    size_t vl = (size_t)(l + n - v);
    if (vl && *v == ' ') {
        v++;
        vl--;
    }
    if (fl == 4 && memcmp(l, "data", 4) == 0) {
        c->in_data = true;
        int64_t x;
        if (!c->has_seq && json_int(v, vl, "\"seq\"", &x)) {
            c->seq = x;
            c->has_seq = true;
        }
        if (!c->has_ts && json_int(v, vl, "\"ts_us\"", &x)) {
            c->ts_us = x;
            c->has_ts = true;
        }
    } else if (fl == 5 && memcmp(l, "event", 5) == 0) {
        c->named = vl > 0 && !(vl == 7 && memcmp(v, "message", 7) == 0);
        c->ping = vl == 4 && memcmp(v, "ping", 4) == 0;
    }
}

static void line_append(struct conn *c, const char *p, size_t n)
{
    if (c->line_len + n > c->line_cap) {
        while (c->line_len + n > c->line_cap)
            c->line_cap = c->line_cap ? c->line_cap * 2 : 1024;
        c->line = realloc(c->line, c->line_cap);
        if (!c->line)
            die("out of memory");
    }
    memcpy(c->line + c->line_len, p, n);
    c->line_len += n;
}

/* Splits into lines (LF, CR or CRLF, as WHATWG says); complete lines inside one read are
 * parsed in place, only a line cut by a read boundary is copied. */
static void sse_feed(struct conn *c, const char *p, size_t n, int64_t recv_us)
{
    const char *end = p + n;
    while (p < end) {
        if (c->skip_lf) {
            c->skip_lf = false;
            if (*p == '\n') {
                p++;
                continue;
            }
        }
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        const char *cr = memchr(p, '\r', (size_t)(stop - p));
        if (cr)
            stop = cr;
        else if (!nl) {
            line_append(c, p, (size_t)(end - p)); /* unfinished line */
            return;
        }
        if (c->line_len) {
            line_append(c, p, (size_t)(stop - p));
            sse_line(c, c->line, c->line_len, recv_us);
            c->line_len = 0;
        } else {
            sse_line(c, p, (size_t)(stop - p), recv_us);
        }
        if (*stop == '\r')
            c->skip_lf = true;
        p = stop + 1;
    }
}

/* A long-poll answer is parsed whole, so its body is kept until it is. */
static void body_append(struct conn *c, const char *p, size_t n)
{
    if (n == 0) /* (the headers' read may end where the body starts) */
        return;
    if (c->body_len + n > c->body_cap) {
        while (c->body_len + n > c->body_cap)
            c->body_cap = c->body_cap ? c->body_cap * 2 : 4096;
        c->body = realloc(c->body, c->body_cap + 1);
        if (!c->body)
            die("out of memory");
    }
    memcpy(c->body + c->body_len, p, n);
    c->body_len += n;
    c->body[c->body_len] = 0;
}

/* The decoded body: to the SSE parser, or kept (long-poll). */
static void content_feed(struct conn *c, const char *p, size_t n, int64_t recv_us)
{
    if (opt.mode == M_SSE)
        sse_feed(c, p, n, recv_us);
    else
        body_append(c, p, n);
}

/* Finds header NAME (case-insensitive) in the NUL-terminated header block HDR (status
 * line first) and copies its value, without surrounding blanks, to OUT. */
static bool header_value(const char *hdr, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *l = strstr(hdr, "\r\n"); l; l = strstr(l + 2, "\r\n")) {
        const char *h = l + 2;
        if (strncasecmp(h, name, nl) != 0 || h[nl] != ':')
            continue;
        const char *v = h + nl + 1, *e = strstr(v, "\r\n");
        if (!e)
            e = v + strlen(v);
        while (v < e && (*v == ' ' || *v == '\t'))
            v++;
        while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - v) >= cap)
            return false;
        memcpy(out, v, (size_t)(e - v));
        out[e - v] = 0;
        return true;
    }
    return false;
}

static void lp_next(struct conn *c);

/* changegate's answer, {"events": [<event>, ...], "lastEventId": "<position>"}: each
 * event is the text between its braces at depth 1 of the array (strings skipped, so
 * that braces inside them do not count), its seq and ts_us found as in an SSE data
 * line; lastEventId is where the next poll starts (also when events is empty). */
static bool lp_changegate_answer(struct conn *c, int64_t recv_us)
{
    const char *end = c->body + c->body_len;
    const char *p = c->body_len ? memmem(c->body, c->body_len, "\"events\"", 8) : NULL;
    if (p)
        p = memchr(p, '[', (size_t)(end - p));
    if (!p) {
        conn_fail(c, "answer without an events array: %.200s", c->body ? c->body : "");
        return false;
    }
    int depth = 0;
    bool in_str = false;
    const char *obj = NULL;
    for (p++; p < end; p++) {
        char ch = *p;
        if (in_str) {
            /* To the string's closing quote with memchr: most of an event is strings,
             * and parsing answers is most of loadclient's CPU in this mode. A quote
             * after an odd run of backslashes is escaped (p follows a quote, so the
             * run cannot start before p). */
            const char *q = memchr(p, '"', (size_t)(end - p));
            if (!q) {
                p = end;
                break;
            }
            size_t bs = 0;
            while (q - bs > p && q[-1 - (ptrdiff_t)bs] == '\\')
                bs++;
            p = q;
            in_str = bs % 2 == 1;
        } else if (ch == '"') {
            in_str = true;
        } else if (ch == '{') {
            if (depth++ == 0)
                obj = p;
        } else if (ch == '}') {
            if (--depth == 0) {
                size_t len = (size_t)(p + 1 - obj);
                int64_t seq = 0, ts = 0;
                bool has_seq = json_int(obj, len, "\"seq\"", &seq);
                bool has_ts = json_int(obj, len, "\"ts_us\"", &ts);
                deliver(c, has_seq, seq, has_ts, ts, recv_us);
            }
        } else if (ch == ']' && depth == 0) {
            break;
        }
    }
    const char *k = p < end ? memmem(p, (size_t)(end - p), "\"lastEventId\"", 13) : NULL;
    const char *v = k ? memchr(k + 13, '"', (size_t)(end - k - 13)) : NULL;
    const char *ve = v ? memchr(v + 1, '"', (size_t)(end - v - 1)) : NULL;
    if (!ve || (size_t)(ve - v - 1) >= sizeof c->pos || ve == v + 1) {
        conn_fail(c, "answer without a usable lastEventId: %.200s", c->body);
        return false;
    }
    memcpy(c->pos, v + 1, (size_t)(ve - v - 1));
    c->pos[ve - v - 1] = 0;
    return true;
}

static void nchan_message(struct conn *c, const char *m, size_t len, int64_t recv_us)
{
    int64_t seq = 0, ts = 0;
    bool has_seq = json_int(m, len, "\"seq\"", &seq);
    bool has_ts = json_int(m, len, "\"ts_us\"", &ts);
    deliver(c, has_seq, seq, has_ts, ts, recv_us);
}

/* Nchan's answer: one message as the bare body, or several as multipart/mixed parts
 * ("--B", part headers, blank line, the message, CRLF; "--B--" at the end); its
 * Last-Modified and Etag name the last message, the next poll's If-Modified-Since and
 * If-None-Match. A 304 (the subscriber timeout) has nothing and keeps the position. */
static bool lp_nchan_answer(struct conn *c, int64_t recv_us)
{
    if (c->status == 304)
        return true;
    const char *body = c->body ? c->body : "", *end = body + c->body_len;
    if (!c->boundary[0]) {
        nchan_message(c, body, c->body_len, recv_us);
    } else {
        char delim[sizeof c->boundary + 2];
        size_t dl = (size_t)snprintf(delim, sizeof delim, "--%s", c->boundary);
        const char *p = memmem(body, c->body_len, delim, dl);
        while (p) {
            p += dl;
            if (end - p >= 2 && p[0] == '-' && p[1] == '-')
                break; /* the closing delimiter */
            const char *h = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
            const char *m = h ? h + 4 : NULL;
            const char *next = m ? memmem(m, (size_t)(end - m), delim, dl) : NULL;
            if (next) {
                const char *me = next;
                if (me - m >= 2 && me[-2] == '\r' && me[-1] == '\n')
                    me -= 2;
                nchan_message(c, m, (size_t)(me - m), recv_us);
            }
            p = next;
        }
        if (!p) {
            conn_fail(c, "bad multipart answer: %.200s", body);
            return false;
        }
    }
    if (!header_value(c->hdr, "Last-Modified", c->last_modified, sizeof c->last_modified) ||
        !header_value(c->hdr, "Etag", c->etag, sizeof c->etag)) {
        conn_fail(c, "answer without Last-Modified and Etag: %.300s", c->hdr);
        return false;
    }
    return true;
}

/* Whether the long-poll answer being read is whole. */
static bool lp_whole(const struct conn *c)
{
    return c->chunked ? c->cstate == CH_DONE
                      : c->content_length >= 0 && (int64_t)c->body_len >= c->content_length;
}

/* A whole long-poll answer: its events, then the next poll. */
static void lp_answer(struct conn *c, int64_t recv_us)
{
    bool ok =
        opt.target == T_CHANGEGATE ? lp_changegate_answer(c, recv_us) : lp_nchan_answer(c, recv_us);
    if (!ok)
        return;
    if (!c->got_preamble)
        conn_ready(c);
    lp_next(c);
}

static void dechunk(struct conn *c, const char *p, size_t n, int64_t recv_us);

/* Decodes the body (chunked or not) and feeds the SSE parser, or keeps a long-poll
 * answer until it is whole and handles it. */
static void body_feed(struct conn *c, const char *p, size_t n, int64_t recv_us)
{
    if (c->chunked)
        dechunk(c, p, n, recv_us);
    else
        content_feed(c, p, n, recv_us);
    if (opt.mode == M_LONGPOLL && c->state == C_BODY && lp_whole(c))
        lp_answer(c, recv_us);
}

static void dechunk(struct conn *c, const char *p, size_t n, int64_t recv_us)
{
    size_t i = 0;
    while (i < n) {
        switch (c->cstate) {
        case CH_SIZE:
        case CH_TRAILER: {
            char ch = p[i++];
            if (ch == '\n') {
                c->sizeline[c->sizeline_len] = 0;
                if (c->sizeline_len && c->sizeline[c->sizeline_len - 1] == '\r')
                    c->sizeline[--c->sizeline_len] = 0;
                if (c->cstate == CH_SIZE) {
                    char *e;
                    c->chunk_left = strtoull(c->sizeline, &e, 16);
                    if (e == c->sizeline) {
                        conn_fail(c, "bad chunk size line '%s'", c->sizeline);
                        return;
                    }
                    c->cstate = c->chunk_left ? CH_DATA : CH_TRAILER;
                } else if (c->sizeline_len == 0) {
                    c->cstate = CH_DONE;
                }
                c->sizeline_len = 0;
            } else if (c->sizeline_len < sizeof c->sizeline - 1) {
                c->sizeline[c->sizeline_len++] = ch;
            }
            break;
        }
        case CH_DATA: {
            size_t take = n - i;
            if (take > c->chunk_left)
                take = (size_t)c->chunk_left;
            content_feed(c, p + i, take, recv_us);
            i += take;
            c->chunk_left -= take;
            if (c->chunk_left == 0)
                c->cstate = CH_DATA_CRLF;
            break;
        }
        case CH_DATA_CRLF:
            if (p[i] == '\n')
                c->cstate = CH_SIZE;
            i++;
            break;
        case CH_DONE:
            return;
        }
        if (c->state != C_BODY)
            return; /* failed */
    }
}

static void headers_done(struct conn *c, size_t end, int64_t recv_us)
{
    c->hdr[end - 4] = 0;
    int status = 0;
    if (sscanf(c->hdr, "HTTP/%*d.%*d %d", &status) != 1 ||
        !(status == 200 || (opt.mode == M_LONGPOLL && opt.target == T_NCHAN && status == 304))) {
        conn_fail(c, "HTTP status %d: %.200s", status, c->hdr);
        return;
    }
    for (char *l = strstr(c->hdr, "\r\n"); l; l = strstr(l + 2, "\r\n")) {
        if (strncasecmp(l + 2, "transfer-encoding:", 18) == 0 && strcasestr(l + 2, "chunked"))
            c->chunked = true;
    }
    if (opt.mode == M_LONGPOLL) {
        char v[256];
        c->status = status;
        c->content_length = status == 304 ? 0
                            : header_value(c->hdr, "Content-Length", v, sizeof v)
                                ? strtoll(v, NULL, 10)
                                : -1;
        c->close_after = header_value(c->hdr, "Connection", v, sizeof v) && strcasestr(v, "close");
        c->boundary[0] = 0;
        if (header_value(c->hdr, "Content-Type", v, sizeof v) &&
            strncasecmp(v, "multipart/", 10) == 0) {
            const char *b = strcasestr(v, "boundary=");
            size_t bl = 0;
            if (b) {
                b += 9;
                bl = *b == '"' ? strcspn(++b, "\"") : strcspn(b, "; \t");
            }
            if (!bl || bl >= sizeof c->boundary) {
                conn_fail(c, "multipart answer without a usable boundary: %.200s", v);
                return;
            }
            memcpy(c->boundary, b, bl);
            c->boundary[bl] = 0;
        }
        if (!c->chunked && c->content_length < 0) {
            conn_fail(c, "long-poll answer without a length: %.200s", c->hdr);
            return;
        }
        c->body_len = 0;
    }
    c->state = C_BODY;
    size_t rest = c->hdr_len - end;
    if (rest || opt.mode == M_LONGPOLL) /* (an answer may have no body) */
        body_feed(c, c->hdr + end, rest, recv_us);
}

static void conn_start(struct conn *c);
static void lp_reconnect(struct conn *c);

/* Whether a failure on a long-poll's kept-alive connection, before any byte of the
 * next answer, is the server closing it as idle: the poll is then asked again on a new
 * connection (asking again with the same position is safe). */
static bool lp_idle_closed(const struct conn *c)
{
    return opt.mode == M_LONGPOLL && c->answered && c->hdr_len == 0 &&
           (c->state == C_SENDING || c->state == C_HEADERS);
}

static void conn_event(struct conn *c, uint32_t ev)
{
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            conn_fail(c, "connect: %s", strerror(err));
            return;
        }
        c->state = C_SENDING;
    }
    if (c->state == C_SENDING && (ev & EPOLLOUT)) {
        const char *req = c->req ? c->req : request;
        size_t req_len = c->req ? strlen(c->req) : request_len;
        while (c->req_off < req_len) {
            ssize_t w = send(c->fd, req + c->req_off, req_len - c->req_off, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN)
                    return;
                if (lp_idle_closed(c))
                    lp_reconnect(c);
                else
                    conn_fail(c, "send: %s", strerror(errno));
                return;
            }
            c->req_off += (size_t)w;
        }
        c->state = C_HEADERS;
        struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
        if (opt.mode == M_LONGPOLL && opt.target == T_NCHAN && !c->got_preamble)
            conn_ready(c); /* its first poll gets the channel's oldest message */
        return;
    }
    if (!(ev & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)))
        return;
    char buf[65536];
    for (;;) {
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r < 0) {
            if (errno == EAGAIN)
                return;
            if (lp_idle_closed(c))
                lp_reconnect(c);
            else
                conn_fail(c, "recv: %s", strerror(errno));
            return;
        }
        if (r == 0) {
            if (lp_idle_closed(c)) {
                lp_reconnect(c);
            } else if (c->state == C_BODY && c->got_preamble) {
                if (errors_printed < 10) {
                    fprintf(stderr,
                            "loadclient: connection %d: closed by the server after %" PRIu64
                            " events\n",
                            c->idx, c->received);
                    errors_printed++;
                }
                c->state = C_CLOSED;
                n_closed++;
                epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
            } else {
                conn_fail(c, "closed by the server before the stream started");
            }
            return;
        }
        int64_t recv_us = now_real_us();
        if (c->state == C_HEADERS) {
            size_t room = sizeof c->hdr - 1 - c->hdr_len;
            size_t take = (size_t)r < room ? (size_t)r : room;
            memcpy(c->hdr + c->hdr_len, buf, take);
            c->hdr_len += take;
            c->hdr[c->hdr_len] = 0;
            char *e = strstr(c->hdr, "\r\n\r\n");
            if (!e) {
                if (c->hdr_len >= sizeof c->hdr - 1)
                    conn_fail(c, "response headers too long");
                continue;
            }
            size_t end = (size_t)(e - c->hdr) + 4;
            size_t extra = (size_t)r - take;
            headers_done(c, end, recv_us);
            if (extra && c->state == C_BODY)
                body_feed(c, buf + take, extra, recv_us);
        } else if (c->state == C_BODY) {
            body_feed(c, buf, (size_t)r, recv_us);
        }
        if (c->state != C_BODY && c->state != C_HEADERS)
            return;
    }
}

/* The subscription request: the path is head[0..head_len) + index + tail
 * (index is where "{i}" stood, or empty), then QUERY (a long-poll's own parameters, or
 * NULL), then the token (or NULL) as the query parameter --token-param or as an
 * Authorization header; HEADERS (NULL, or lines each ending in CRLF) are added. Returns
 * its length. */
static size_t format_request(char *out, size_t cap, const char *head, int head_len,
                             const char *index, const char *tail, const char *token,
                             const char *query, const char *headers)
{
    bool in_query = token && opt.token_param;
    bool has_query = memchr(head, '?', (size_t)head_len) || strchr(tail, '?');
    const char *query_sep = query ? (has_query ? "&" : "?") : "";
    has_query = has_query || query;
    const char *accept = opt.mode == M_SSE            ? "text/event-stream"
                         : opt.target == T_CHANGEGATE ? "application/json"
                                                      : "*/*";
    int n = snprintf(out, cap,
                     "GET %.*s%s%s%s%s%s%s%s%s HTTP/1.1\r\nHost: %s:%s\r\n"
                     "Accept: %s\r\n%s%s%s%s"
                     "Cache-Control: no-cache\r\nUser-Agent: changegate-loadclient\r\n\r\n",
                     head_len, head, index, tail, query_sep, query ? query : "",
                     in_query ? (has_query ? "&" : "?") : "", in_query ? opt.token_param : "",
                     in_query ? "=" : "", in_query ? token : "", opt.host, opt.port, accept,
                     token && !in_query ? "Authorization: Bearer " : "",
                     token && !in_query ? token : "", token && !in_query ? "\r\n" : "",
                     headers ? headers : "");
    if (n < 0 || (size_t)n >= cap)
        die("request for path %s is too long", opt.path);
    return (size_t)n;
}

/* --tokens: reads the file, one token a line (blank lines and a final newline
 * ignored); there must be one for each connection. */
static void read_tokens(void)
{
    FILE *f = fopen(opt.tokens, "rb");
    if (!f)
        die("%s: %s", opt.tokens, strerror(errno));
    size_t cap = 1 << 20, len = 0;
    tokens_text = malloc(cap + 1);
    if (!tokens_text)
        die("out of memory");
    for (size_t r; (r = fread(tokens_text + len, 1, cap - len, f)) > 0;) {
        len += r;
        if (len == cap) {
            char *more = realloc(tokens_text, (cap *= 2) + 1);
            if (!more)
                die("out of memory");
            tokens_text = more;
        }
    }
    fclose(f);
    tokens = calloc((size_t)opt.connections, sizeof *tokens);
    if (!tokens)
        die("out of memory");
    tokens_text[len] = 0;
    int n = 0;
    for (char *save = NULL, *t = strtok_r(tokens_text, "\r\n", &save); t && n < opt.connections;
         t = strtok_r(NULL, "\r\n", &save))
        tokens[n++] = t;
    if (n < opt.connections)
        die("%s has %d tokens for %d connections", opt.tokens, n, opt.connections);
}

/* The first seq connection c should get, and how many (see --stride, --events). */
static void conn_seqs(struct conn *c)
{
    c->base_seq = opt.first_seq + ((c->idx - opt.first_seq) % opt.stride + opt.stride) % opt.stride;
    c->last_seq = c->base_seq - opt.stride;
    c->expect = opt.expect;
    if (opt.events >= 0)
        c->expect =
            c->base_seq < opt.first_seq + opt.events
                ? (uint64_t)((opt.first_seq + opt.events - 1 - c->base_seq) / opt.stride + 1)
                : 0;
}

/* Connection c's own request (its index for "{i}", its token), with a long-poll's
 * QUERY and HEADERS (or NULL), in c->req. */
static void build_request(struct conn *c, const char *query, const char *headers)
{
    const char *mark = strstr(opt.path, "{i}");
    const char *token = tokens ? tokens[c->idx] : NULL;
    size_t len = strlen(request) + 1024 + sizeof c->pos + (token ? strlen(token) : 0) +
                 (opt.token_param ? strlen(opt.token_param) : 0); /* the same for each poll */
    if (!c->req) {
        c->req = malloc(len);
        if (!c->req)
            die("out of memory");
    }
    char idx[16];
    snprintf(idx, sizeof idx, "%d", c->idx);
    if (mark)
        format_request(c->req, len, opt.path, (int)(mark - opt.path), idx, mark + 3, token, query,
                       headers);
    else
        format_request(c->req, len, opt.path, (int)strlen(opt.path), "", "", token, query, headers);
    c->req_off = 0;
}

/* The next poll's request: where the previous answer left off (see the top). */
static void lp_request(struct conn *c)
{
    char query[sizeof c->pos + 64] = "", headers[256] = "";
    if (opt.target == T_CHANGEGATE) {
        if (c->pos[0])
            snprintf(query, sizeof query, "timeout=%d&lastEventId=%s", opt.poll_timeout, c->pos);
        else
            snprintf(query, sizeof query, "timeout=0"); /* at once, with the current position */
    } else if (c->last_modified[0]) {
        snprintf(headers, sizeof headers, "If-Modified-Since: %s\r\nIf-None-Match: %s\r\n",
                 c->last_modified, c->etag);
    }
    build_request(c, query[0] ? query : NULL, headers[0] ? headers : NULL);
}

/* A new socket for c, connecting; the request is sent once it is writable. */
static void conn_open(struct conn *c)
{
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s (raise ulimit -n?)", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = C_CONNECTING;
    c->req_off = 0;
    c->hdr_len = 0;
    c->answered = false;
    struct epoll_event e = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    if (connect(fd, (struct sockaddr *)&addr, addrlen) < 0 && errno != EINPROGRESS) {
        conn_fail(c, "connect: %s", strerror(errno));
        return;
    }
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

static void conn_start(struct conn *c)
{
    conn_seqs(c);
    if (opt.mode == M_LONGPOLL)
        lp_request(c);
    else if (strstr(opt.path, "{i}") || tokens)
        build_request(c, NULL, NULL);
    n_pending++;
    n_started++;
    conn_open(c);
}

static void conn_close(struct conn *c)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

/* The server closed a long-poll's idle connection: the same poll on a new one. */
static void lp_reconnect(struct conn *c)
{
    conn_close(c);
    total_reconnects++;
    lp_request(c);
    conn_open(c);
}

/* After a whole answer: ready for the next one on the same connection (a new one if
 * the server said it closes), or closed once the connection has all its events. */
static void lp_next(struct conn *c)
{
    total_polls++;
    c->answered = true;
    c->hdr_len = 0;
    c->chunked = false;
    c->cstate = CH_SIZE;
    c->chunk_left = 0;
    c->sizeline_len = 0;
    c->body_len = 0;
    if (c->body_cap > (1 << 20)) { /* a large answer's buffer is not kept */
        free(c->body);
        c->body = NULL;
        c->body_cap = 0;
    }
    if (c->complete) {
        conn_close(c);
        c->state = C_DONE;
        return;
    }
    if (c->close_after) {
        conn_close(c);
        total_reconnects++;
        lp_request(c);
        conn_open(c);
        return;
    }
    lp_request(c);
    c->state = C_SENDING;
    struct epoll_event e = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
}

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadclient [--host H] --port P [--path /events] [--connections N]\n"
            "                  [--duration S] [--expect K | --events N] [--first-seq S]\n"
            "                  [--ready-file F] [--max-pending N] [--stride K] [--hold H]\n"
            "                  [--min-heartbeats B] [--tokens FILE [--token-param NAME]]\n"
            "                  [--mode sse|longpoll] [--target changegate|nchan]\n"
            "                  [--poll-timeout T] [--verbose]\n"
            "Opens N SSE subscriptions (or N long-poll loops: --mode longpoll, the\n"
            "position passed as --target does) and prints one JSON line: connections, events,\n"
            "deliveries/s, latency percentiles (receipt time - ts_us), gaps, repeats,\n"
            "heartbeats. Stops after S seconds or once every connection has received K\n"
            "events (with --events, its share by --stride of the N written); with --hold,\n"
            "H seconds after every connection is streaming (S then only bounds the\n"
            "connecting), and no connection may be closed by the server.\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARG("--host"))
            opt.host = v;
        else if (ARG("--port"))
            opt.port = v;
        else if (ARG("--path"))
            opt.path = v;
        else if (ARG("--connections"))
            opt.connections = atoi(v);
        else if (ARG("--duration"))
            opt.duration = atof(v);
        else if (ARG("--expect"))
            opt.expect = strtoull(v, NULL, 10);
        else if (ARG("--events"))
            opt.events = strtoll(v, NULL, 10);
        else if (ARG("--first-seq"))
            opt.first_seq = strtoll(v, NULL, 10);
        else if (ARG("--ready-file"))
            opt.ready_file = v;
        else if (ARG("--max-pending"))
            opt.max_pending = atoi(v);
        else if (ARG("--stride"))
            opt.stride = atoi(v);
        else if (ARG("--hold"))
            opt.hold = atof(v);
        else if (ARG("--min-heartbeats"))
            opt.min_heartbeats = strtoull(v, NULL, 10);
        else if (ARG("--tokens"))
            opt.tokens = v;
        else if (ARG("--token-param"))
            opt.token_param = v;
        else if (ARG("--mode") && (strcmp(v, "sse") == 0 || strcmp(v, "longpoll") == 0))
            opt.mode = strcmp(v, "sse") == 0 ? M_SSE : M_LONGPOLL;
        else if (ARG("--target") && (strcmp(v, "changegate") == 0 || strcmp(v, "nchan") == 0))
            opt.target = strcmp(v, "changegate") == 0 ? T_CHANGEGATE : T_NCHAN;
        else if (ARG("--poll-timeout"))
            opt.poll_timeout = atoi(v);
        else if (strcmp(a, "--verbose") == 0)
            opt.verbose = true;
        else
            usage();
#undef ARG
    }
    if (opt.connections <= 0 || opt.duration <= 0 || opt.max_pending <= 0 || opt.stride <= 0 ||
        opt.hold < 0 || (opt.events >= 0 && opt.expect) || opt.poll_timeout < 1)
        usage();

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt.connections + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t)opt.connections + 64)
            die("open-file limit %lu is too low for %d connections (ulimit -n)",
                (unsigned long)rl.rlim_cur, opt.connections);
    }

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int gai = getaddrinfo(opt.host, opt.port, &hints, &res);
    if (gai)
        die("%s:%s: %s", opt.host, opt.port, gai_strerror(gai));
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    addrlen = res->ai_addrlen;
    freeaddrinfo(res);

    request_len = format_request(request, sizeof request, opt.path, (int)strlen(opt.path), "", "",
                                 NULL, NULL, NULL);
    if (opt.tokens)
        read_tokens();

    hist = calloc(HIST_BUCKETS, sizeof *hist);
    conns = calloc((size_t)opt.connections, sizeof *conns);
    if (!hist || !conns)
        die("out of memory");
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1: %s", strerror(errno));
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);

    t_start = now_mono();
    double deadline = t_start + opt.duration;
    int next = 0;
    bool ready_written = false;
    struct epoll_event evs[1024];
    while (!stop_flag) {
        while (next < opt.connections && n_pending < opt.max_pending) {
            conns[next].idx = next;
            conn_start(&conns[next]);
            next++;
        }
        if (!ready_written && next == opt.connections && n_pending == 0) {
            ready_written = true;
            t_ready = now_mono();
            fprintf(stderr, "loadclient: %d of %d subscribers streaming (%d failed) after %.2fs\n",
                    n_ready, opt.connections, n_failed, t_ready - t_start);
            if (opt.ready_file) {
                FILE *f = fopen(opt.ready_file, "w");
                if (!f)
                    die("%s: %s", opt.ready_file, strerror(errno));
                fprintf(f, "%d\n", n_ready);
                fclose(f);
            }
            if (opt.hold > 0)
                deadline = t_ready + opt.hold;
        }
        if (opt.hold == 0 && expecting() && ready_written &&
            n_complete + n_failed + n_closed >= opt.connections)
            break;
        double left = deadline - now_mono();
        if (left <= 0)
            break;
        int timeout_ms = left > 0.2 ? 200 : (int)(left * 1000) + 1;
        int n = epoll_wait(epfd, evs, (int)(sizeof evs / sizeof evs[0]), timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++)
            conn_event(evs[i].data.ptr, evs[i].events);
    }
    double t_end = now_mono();

    uint64_t gaps = 0, repeats = 0, resets = 0, no_seq = 0, misrouted = 0, minr = UINT64_MAX,
             maxr = 0, minh = UINT64_MAX, maxh = 0;
    int missing_conns = 0, few_heartbeats = 0;
    uint64_t expected = 0; /* events expected, all connections together */
    /* Hold mode: every connection is closed here, all at once, as the client leaves. */
    double t_close = now_mono();
    int in_state[C_DONE + 1] = {0}, waiting_preamble = 0;
    for (int i = 0; i < opt.connections; i++) {
        struct conn *c = &conns[i];
        if (i >= next) { /* never started */
            c->idx = i;
            conn_seqs(c);
        }
        expected += c->expect;
        in_state[c->state]++;
        if (c->state == C_BODY && !c->got_preamble)
            waiting_preamble++;
        gaps += c->gaps;
        repeats += c->repeats;
        resets += c->resets;
        no_seq += c->no_seq;
        if (c->received < minr)
            minr = c->received;
        if (c->received > maxr)
            maxr = c->received;
        if (c->heartbeats < minh)
            minh = c->heartbeats;
        if (c->heartbeats > maxh)
            maxh = c->heartbeats;
        if (c->heartbeats < opt.min_heartbeats)
            few_heartbeats++;
        /* events still missing at the end count as gaps too */
        if (expecting() && c->received < c->expect) {
            missing_conns++;
            int64_t want_last = c->base_seq + ((int64_t)c->expect - 1) * opt.stride;
            if (c->last_seq < want_last)
                gaps += (uint64_t)((want_last - c->last_seq) / opt.stride);
        }
        misrouted += c->misrouted;
        if (c->fd >= 0)
            close(c->fd);
        free(c->line);
        free(c->req);
        free(c->body);
    }
    double close_s = now_mono() - t_close;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                   (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    if (opt.connections == 0)
        minr = minh = 0;
    double window = t_last_event - t_first_event;
    double rate = window > 0 ? (double)total_events / window : 0;
    bool complete = expecting() ? (missing_conns == 0 && n_failed == 0) : (n_failed == 0);
    if (opt.hold > 0) /* held: every connection streamed until the client closed it */
        complete = complete && ready_written && n_closed == 0;
    complete = complete && few_heartbeats == 0;
    printf("{\"connections\": %d, \"streaming\": %d, \"failed\": %d, \"closed_by_server\": %d, "
           "\"events\": %" PRIu64 ", \"expect_per_connection\": %" PRIu64 ", "
           "\"expected\": %" PRIu64 ", "
           "\"min_received\": %" PRIu64 ", \"max_received\": %" PRIu64 ", "
           "\"complete\": %s, \"connect_s\": %.3f, \"run_s\": %.3f, \"window_s\": %.3f, "
           "\"cpu_s\": %.3f, "
           "\"deliveries_per_s\": %.0f, \"latency_us\": {\"p50\": %" PRId64 ", \"p90\": %" PRId64
           ", \"p99\": %" PRId64 ", \"p999\": %" PRId64 ", \"max\": %" PRId64 ", \"mean\": %.0f, "
           "\"over_10s\": %" PRIu64 "}, \"gaps\": %" PRIu64 ", \"repeats\": %" PRIu64
           ", \"resets\": %" PRIu64 ", \"without_seq\": %" PRIu64 ", \"misrouted\": %" PRIu64
           ", \"heartbeats\": %" PRIu64 ", \"min_heartbeats\": %" PRIu64
           ", \"max_heartbeats\": %" PRIu64 ", \"hold_s\": %.3f, \"close_s\": %.3f"
           ", \"mode\": \"%s\", \"target\": \"%s\", \"polls\": %" PRIu64
           ", \"reconnects\": %" PRIu64 ", \"first_event_us\": %" PRId64
           ", \"last_event_us\": %" PRId64 ", \"states\": {\"not_started\": %d, "
           "\"connecting\": %d, \"sending\": %d, \"awaiting_headers\": %d, "
           "\"awaiting_first_bytes\": %d, \"streaming\": %d, \"closed\": %d, \"failed\": %d, "
           "\"done\": %d}}\n",
           opt.connections, n_ready, n_failed, n_closed, total_events, opt.expect, expected, minr,
           maxr, complete ? "true" : "false", (ready_written ? t_ready : t_end) - t_start,
           t_end - t_start, window, cpu_s, rate, percentile(0.50), percentile(0.90),
           percentile(0.99), percentile(0.999), hist_count ? lat_max : -1,
           hist_count ? lat_sum / (double)hist_count : -1.0, hist_over_10s, gaps, repeats, resets,
           no_seq, misrouted, total_heartbeats, minh, maxh,
           opt.hold > 0 && ready_written ? t_close - t_ready : 0.0, close_s,
           opt.mode == M_SSE ? "sse" : "longpoll",
           opt.target == T_CHANGEGATE ? "changegate" : "nchan", total_polls, total_reconnects,
           first_event_us, last_event_us, in_state[C_IDLE], in_state[C_CONNECTING],
           in_state[C_SENDING], in_state[C_HEADERS], waiting_preamble,
           in_state[C_BODY] - waiting_preamble, in_state[C_CLOSED], in_state[C_FAILED],
           in_state[C_DONE]);
    free(hist);
    free(conns);
    free(tokens);
    free(tokens_text);
    return complete && gaps == 0 && repeats == 0 && misrouted == 0 ? 0 : 1;
}
