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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum conn_state { C_IDLE, C_CONNECTING, C_SENDING, C_HEADERS, C_BODY, C_CLOSED, C_FAILED };
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
    bool has_seq, has_ts;
    int64_t seq, ts_us;
    /* accounting */
    int64_t last_seq, base_seq; /* base_seq: the first seq this connection should get */
    uint64_t received, gaps, repeats, resets, no_seq, misrouted, heartbeats;
    char *req;       /* the request, when the path has "{i}" */
    uint64_t expect; /* events this connection should get (--expect, or from --events) */
    bool complete;
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
} opt = {"127.0.0.1", "8080", "/events", NULL, 100, 30.0, 0, 0, 256, false, 1, 0, 0, .events = -1};

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
static uint64_t total_events, total_heartbeats;
static double t_first_event, t_last_event, t_start, t_ready;
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
    if (c->state == C_FAILED || c->state == C_CLOSED)
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
    if (c->state == C_CONNECTING || c->state == C_SENDING || c->state == C_HEADERS ||
        (c->state == C_BODY && !c->got_preamble))
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

static void sse_dispatch(struct conn *c, int64_t recv_us)
{
    if (c->in_data && c->named) {
        c->resets++;
    } else if (c->in_data) {
        if (!c->has_seq) {
            c->no_seq++;
        } else {
            if (((c->seq - c->base_seq) % opt.stride + opt.stride) % opt.stride != 0) {
                c->misrouted++; /* not this connection's residue: its filter let it in */
            } else if (c->seq == c->last_seq + opt.stride) {
                /* in order */
            } else if (c->seq > c->last_seq + opt.stride) {
                c->gaps += (uint64_t)((c->seq - c->last_seq) / opt.stride - 1);
            } else {
                c->repeats++;
            }
            if (c->seq > c->last_seq)
                c->last_seq = c->seq;
            c->received++;
            total_events++;
            double t = now_mono();
            if (t_first_event == 0)
                t_first_event = t;
            t_last_event = t;
            if (c->has_ts)
                record_latency(recv_us - c->ts_us);
            if (expecting() && !c->complete && c->received >= c->expect) {
                c->complete = true;
                n_complete++;
            }
        }
    }
    c->in_data = c->named = c->has_seq = c->has_ts = false;
}

static void sse_line(struct conn *c, const char *l, size_t n, int64_t recv_us)
{
    if (n == 0) {
        sse_dispatch(c, recv_us);
        return;
    }
    if (l[0] == ':') {
        if (!c->got_preamble) {
            c->got_preamble = true;
            n_pending--;
            n_ready++;
            if (expecting() && c->expect == 0 && !c->complete) { /* nothing to wait for */
                c->complete = true;
                n_complete++;
            }
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

/* Decodes the body (chunked or not) and feeds the SSE parser. */
static void body_feed(struct conn *c, const char *p, size_t n, int64_t recv_us)
{
    if (!c->chunked) {
        sse_feed(c, p, n, recv_us);
        return;
    }
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
            sse_feed(c, p + i, take, recv_us);
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
    }
}

static void headers_done(struct conn *c, size_t end, int64_t recv_us)
{
    c->hdr[end - 4] = 0;
    int status = 0;
    if (sscanf(c->hdr, "HTTP/%*d.%*d %d", &status) != 1 || status != 200) {
        conn_fail(c, "HTTP status %d: %.200s", status, c->hdr);
        return;
    }
    for (char *l = strstr(c->hdr, "\r\n"); l; l = strstr(l + 2, "\r\n")) {
        if (strncasecmp(l + 2, "transfer-encoding:", 18) == 0 && strcasestr(l + 2, "chunked"))
            c->chunked = true;
    }
    c->state = C_BODY;
    size_t rest = c->hdr_len - end;
    if (rest)
        body_feed(c, c->hdr + end, rest, recv_us);
}

static void conn_start(struct conn *c);

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
                conn_fail(c, "send: %s", strerror(errno));
                return;
            }
            c->req_off += (size_t)w;
        }
        c->state = C_HEADERS;
        struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
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
            conn_fail(c, "recv: %s", strerror(errno));
            return;
        }
        if (r == 0) {
            if (c->state == C_BODY && c->got_preamble) {
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
 * (index is where "{i}" stood, or empty), then the token (or NULL) as the query
 * parameter --token-param or as an Authorization header. Returns its length. */
static size_t format_request(char *out, size_t cap, const char *head, int head_len,
                             const char *index, const char *tail, const char *token)
{
    bool in_query = token && opt.token_param;
    bool has_query = memchr(head, '?', (size_t)head_len) || strchr(tail, '?');
    int n = snprintf(out, cap,
                     "GET %.*s%s%s%s%s%s%s HTTP/1.1\r\nHost: %s:%s\r\n"
                     "Accept: text/event-stream\r\n%s%s%s"
                     "Cache-Control: no-cache\r\nUser-Agent: changegate-loadclient\r\n\r\n",
                     head_len, head, index, tail, in_query ? (has_query ? "&" : "?") : "",
                     in_query ? opt.token_param : "", in_query ? "=" : "", in_query ? token : "",
                     opt.host, opt.port, token && !in_query ? "Authorization: Bearer " : "",
                     token && !in_query ? token : "", token && !in_query ? "\r\n" : "");
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

static void conn_start(struct conn *c)
{
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s (raise ulimit -n?)", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = C_CONNECTING;
    conn_seqs(c);
    const char *mark = strstr(opt.path, "{i}");
    const char *token = tokens ? tokens[c->idx] : NULL;
    if (mark || token) {
        size_t len = strlen(request) + 64 + (token ? strlen(token) : 0) +
                     (opt.token_param ? strlen(opt.token_param) : 0);
        c->req = malloc(len);
        if (!c->req)
            die("out of memory");
        char idx[16];
        snprintf(idx, sizeof idx, "%d", c->idx);
        if (mark)
            format_request(c->req, len, opt.path, (int)(mark - opt.path), idx, mark + 3, token);
        else
            format_request(c->req, len, opt.path, (int)strlen(opt.path), "", "", token);
    }
    n_pending++;
    n_started++;
    struct epoll_event e = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    if (connect(fd, (struct sockaddr *)&addr, addrlen) < 0 && errno != EINPROGRESS) {
        conn_fail(c, "connect: %s", strerror(errno));
        return;
    }
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: loadclient [--host H] --port P [--path /events] [--connections N]\n"
                    "                  [--duration S] [--expect K | --events N] [--first-seq S]\n"
                    "                  [--ready-file F] [--max-pending N] [--stride K] [--hold H]\n"
                    "                  [--min-heartbeats B] [--tokens FILE [--token-param NAME]]\n"
                    "                  [--verbose]\n"
                    "Opens N SSE subscriptions and prints one JSON line: connections, events,\n"
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
        else if (strcmp(a, "--verbose") == 0)
            opt.verbose = true;
        else
            usage();
#undef ARG
    }
    if (opt.connections <= 0 || opt.duration <= 0 || opt.max_pending <= 0 || opt.stride <= 0 ||
        opt.hold < 0 || (opt.events >= 0 && opt.expect))
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

    request_len =
        format_request(request, sizeof request, opt.path, (int)strlen(opt.path), "", "", NULL);
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
    int in_state[C_FAILED + 1] = {0}, waiting_preamble = 0;
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
           ", \"states\": {\"not_started\": %d, "
           "\"connecting\": %d, \"sending\": %d, \"awaiting_headers\": %d, "
           "\"awaiting_first_bytes\": %d, \"streaming\": %d, \"closed\": %d, \"failed\": %d}}\n",
           opt.connections, n_ready, n_failed, n_closed, total_events, opt.expect, expected, minr,
           maxr, complete ? "true" : "false", (ready_written ? t_ready : t_end) - t_start,
           t_end - t_start, window, cpu_s, rate, percentile(0.50), percentile(0.90),
           percentile(0.99), percentile(0.999), hist_count ? lat_max : -1,
           hist_count ? lat_sum / (double)hist_count : -1.0, hist_over_10s, gaps, repeats, resets,
           no_seq, misrouted, total_heartbeats, minh, maxh,
           opt.hold > 0 && ready_written ? t_close - t_ready : 0.0, close_s, in_state[C_IDLE],
           in_state[C_CONNECTING], in_state[C_SENDING], in_state[C_HEADERS], waiting_preamble,
           in_state[C_BODY] - waiting_preamble, in_state[C_CLOSED], in_state[C_FAILED]);
    free(hist);
    free(conns);
    free(tokens);
    free(tokens_text);
    return complete && gaps == 0 && repeats == 0 && misrouted == 0 ? 0 : 1;
}
