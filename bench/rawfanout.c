/* rawfanout: the kernel's fan-out limit on this machine, without changegate.
 *
 * A minimal server that does only what a fan-out must: it accepts N HTTP connections on
 * a loopback port (bench/loadclient's SSE subscriptions), answers each with a fixed
 * HTTP/1.1 200 head (text/event-stream, no chunking: the body ends when the connection
 * does) and the same first comment changegate sends, then, once all N are streaming (or
 * on SIGUSR1), frames EVENTS events and writes every one to every connection. No HTTP
 * library, no filtering, no MongoDB: what it reaches, deliveries/s with loadclient
 * reading, is what this machine's kernel (and loadclient) allow, and changegate's own
 * deliveries/s are read as a fraction of it (bench/limit.sh).
 *
 *   cc -O2 -std=c11 -Wall -Wextra -pthread -o bench/rawfanout bench/rawfanout.c
 *   bench/rawfanout --port 8090 --connections 1000 --events 10000 &
 *   bench/loadclient --port 8090 --connections 1000 --expect 10000 --duration 60
 *
 * Each event is framed once, in the byte layout of changegate's SSE frame for a change
 * event of bench/writer.py's document ({seq, ts_us, pad}): a frame taken from a real
 * changegate (built in below, or --template FILE) with seq and ts_us filled in, ts_us
 * being the wall-clock time of framing, so that loadclient's latency is receipt - framing.
 * A delivery is then the same number of bytes as changegate's (changegate adds HTTP
 * chunk framing, a few bytes per write). Frames live in a bounded ring of --ring slots,
 * like changegate's journal; each connection has a cursor into it (the next event, and
 * how much of it is written). A connection is written with writev() of as many frames as
 * it is behind, until its socket buffer is full; it then waits for EPOLLOUT, and the
 * others go on: no socket is ever waited for.
 *
 * Nothing is dropped. With --rate 0 (the default) events are framed as fast as the
 * slowest connection frees ring slots (a slot is reused only when every connection has
 * written that event in full), which is saturation: with --ring at least EVENTS every
 * event is framed at once. With --rate R events are framed on a schedule (event i at
 * start + i/R), as a source that does not wait; when the slot an event needs is still
 * held by a connection that far behind, the run fails (it says so, closes every
 * connection and exits 1) rather than skip events for it.
 *
 * --threads T splits the connections round-robin over T threads (each with its own
 * epoll), all writing the same frames; thread 0, the main thread, also frames the
 * events. changegate uses several threads, so on a 2-CPU machine the fair limit is the
 * best of T = 1 and 2. After every connection has every event, rawfanout waits (at most
 * --linger seconds) for the client to close, so that its connections end with the
 * client's close, not with a server close the client would report, and prints one line
 * of JSON.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* One frame of changegate's SSE stream for bench/writer.py's 100-byte document (seq
 * 12345), as curl received it from changegate at commit 2f7c0ba (compact JSON) less the
 * HTTP chunk framing; seq and ts_us are replaced in each event (the resume token, the
 * ObjectIds and the cluster time stay those of this one: they have fixed widths in
 * changegate's frames but for the cluster time's increment). */
static const char builtin_template[] =
    "id: 826B176015000CF23201\ndata: {\"_id\":{\"_data\":\"826B176015000CF23201\"},"
    "\"operationType\":\"insert\",\"clusterTime\":{\"$timestamp\":{\"t\":1796694037,"
    "\"i\":848434}},\"wallTime\":{\"$date\":\"2026-12-08T01:40:37.848Z\"},"
    "\"fullDocument\":{\"_id\":{\"$oid\":\"6b176015c08bf67bbb582733\"},\"seq\":12345,"
    "\"ts_us\":1796694037847011,\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"},"
    "\"ns\":{\"db\":\"bench\",\"coll\":\"events\"},\"documentKey\":{\"_id\":{\"$oid\":"
    "\"6b176015c08bf67bbb582733\"}}}\n\n";

/* What changegate answers an SSE subscription with, less its Date and X-Accel-Buffering
 * headers and the chunking; loadclient counts a connection as streaming at the comment. */
static const char response_head[] = "HTTP/1.1 200 OK\r\n"
                                    "Content-Type: text/event-stream\r\n"
                                    "Cache-Control: no-cache\r\n"
                                    "Connection: close\r\n"
                                    "\r\n"
                                    ": changegate\nretry: 3000\n\n";

/* Frames per writev(): 64 frames of ~520 bytes are 33 KB a call, few calls for a
 * connection that is far behind, and the iovec array stays small on the stack. */
#define IOV_BATCH 64
#define MAX_REQUEST 65536 /* bytes of request head before giving up on a connection */

enum conn_state { S_REQUEST, S_STREAMING, S_CLOSED };

struct conn {
    int fd;
    enum conn_state state;
    int crlf;              /* S_REQUEST: how much of "\r\n\r\n" the request ends with so far */
    size_t req_len;        /* S_REQUEST: bytes read */
    char first[4];         /* S_REQUEST: its first bytes */
    _Atomic uint64_t done; /* events written in full; UINT64_MAX once closed (holds no slot) */
    size_t off;            /* bytes of event `done` already written */
    bool blocked;          /* the last write filled the socket: wait for EPOLLOUT */
    bool waiting;          /* caught up with the framed events: on its worker's waiting list */
    bool finished;         /* has every event */
};

struct worker {
    int id;
    pthread_t thread;
    int epfd, efd;         /* efd: an eventfd thread 0 writes when it frames events (T > 1) */
    struct conn **waiting; /* caught up: written when `head` moves */
    int n_waiting, n_open, n_unfinished;
    uint64_t seen; /* the head when the waiting list was last written */
    _Atomic int sleeping;
    double t_finished; /* when its last connection had every event */
    uint64_t writes, blocked, bytes, closed_early;
};

static struct {
    const char *host, *port, *template_file, *ready_file;
    int connections, threads;
    uint64_t events, ring;
    int64_t first_seq;
    double rate, start_timeout, linger;
    int doc_bytes;
} opt = {"127.0.0.1", NULL, NULL, NULL, 100, 1, 10000, 10000, 0, 0, 60, 30, 0};

/* The template in three parts around the seq and ts_us values, which are written
 * between them for each event. */
static char *tpl_pre, *tpl_mid, *tpl_post;
static size_t tpl_pre_len, tpl_mid_len, tpl_post_len;

static char *ring_mem;     /* ring slot i: ring_mem + i * slot_cap */
static uint32_t *ring_len; /* the frame's length in slot i */
static size_t slot_cap;
static _Atomic uint64_t head; /* events framed: seqs first_seq + [0, head) */
static uint64_t tail_seen;    /* thread 0: the lowest `done` of open connections, last seen */
static double t_tail;         /* thread 0: when tail_seen was computed */
static bool ring_full;        /* thread 0: the next event waits for a slot (--rate 0) */
static uint64_t frame_bytes;  /* bytes of all frames framed (their average is in the JSON) */

static struct conn *conns;
static int n_conns;
static struct worker *workers;
static double t_start;
static _Atomic double t_deadline; /* the end of --linger once all finished, else 0 */
static _Atomic int n_unfinished_all;
static _Atomic bool overrun, stopping;
static uint64_t overrun_conns, overrun_seq;
static volatile sig_atomic_t stop_flag, start_flag;

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

static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru); /* every thread of the process */
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "rawfanout: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

/* Finds `"key":` in t (with or without spaces around the colon: changegate sent
 * libbson's spaced JSON before 2f7c0ba) and the run of digits after it: [*start, *end). */
static void find_number(const char *t, const char *key, const char **start, const char **end)
{
    const char *p = strstr(t, key);
    if (!p)
        die("the template has no %s field", key);
    p += strlen(key);
    while (*p == ' ' || *p == ':')
        p++;
    const char *q = p;
    while (*q >= '0' && *q <= '9')
        q++;
    if (q == p)
        die("the template's %s is not a plain number", key);
    *start = p;
    *end = q;
}

/* Splits the template (the built-in frame or --template's first frame) around its seq
 * and ts_us values; with --doc-bytes, sets the pad to the length bench/writer.py gives a
 * document of that BSON size. */
static void load_template(void)
{
    char *t;
    if (opt.template_file) {
        FILE *f = fopen(opt.template_file, "rb");
        if (!f)
            die("%s: %s", opt.template_file, strerror(errno));
        t = xmalloc(1 << 20);
        size_t n = fread(t, 1, (1 << 20) - 1, f);
        fclose(f);
        t[n] = 0;
        char *end = strstr(t, "\n\n"); /* one frame: up to the blank line that ends it */
        if (!end)
            die("%s: no SSE frame (ending in a blank line)", opt.template_file);
        end[2] = 0;
    } else {
        t = strdup(builtin_template);
        if (!t)
            die("out of memory");
    }
    if (opt.doc_bytes > 0) {
        /* writer.py's pad makes the BSON document {_id: ObjectId, seq: int32, ts_us:
         * int64, pad: string} doc-bytes long: 56 bytes besides the pad's characters. */
        char *p = strstr(t, "\"pad\"");
        if (!p)
            die("the template has no pad field for --doc-bytes");
        p += 5;
        while (*p == ' ' || *p == ':')
            p++;
        if (*p++ != '"')
            die("the template's pad is not a string");
        char *q = strchr(p, '"');
        if (!q)
            die("the template's pad is not a string");
        size_t pad = opt.doc_bytes > 56 ? (size_t)opt.doc_bytes - 56 : 0;
        char *u = xmalloc(strlen(t) + pad + 1);
        memcpy(u, t, (size_t)(p - t));
        memset(u + (p - t), 'x', pad);
        strcpy(u + (p - t) + pad, q);
        free(t);
        t = u;
    }
    const char *s0, *s1, *u0, *u1;
    find_number(t, "\"seq\"", &s0, &s1);
    find_number(t, "\"ts_us\"", &u0, &u1);
    if (u0 < s1)
        die("the template's seq must come before its ts_us");
    tpl_pre_len = (size_t)(s0 - t);
    tpl_mid_len = (size_t)(u0 - s1);
    tpl_post_len = strlen(u1);
    tpl_pre = strndup(t, tpl_pre_len);
    tpl_mid = strndup(s1, tpl_mid_len);
    tpl_post = strdup(u1);
    if (!tpl_pre || !tpl_mid || !tpl_post)
        die("out of memory");
    free(t);
    slot_cap = tpl_pre_len + tpl_mid_len + tpl_post_len + 2 * 21;
}

static char *slot(uint64_t i)
{
    return ring_mem + (i % opt.ring) * slot_cap;
}

/* Frames event i (seq first_seq + i) into its ring slot; ts_us is now. */
static void frame_event(uint64_t i)
{
    char *p = slot(i), *start = p;
    memcpy(p, tpl_pre, tpl_pre_len);
    p += tpl_pre_len;
    p += sprintf(p, "%" PRId64, opt.first_seq + (int64_t)i);
    memcpy(p, tpl_mid, tpl_mid_len);
    p += tpl_mid_len;
    p += sprintf(p, "%" PRId64, now_real_us());
    memcpy(p, tpl_post, tpl_post_len);
    p += tpl_post_len;
    ring_len[i % opt.ring] = (uint32_t)(p - start);
    frame_bytes += (uint64_t)(p - start);
}

/* The lowest `done` of all connections: slots of events before it are free. O(N), so
 * thread 0 calls it only when it needs a slot and at most every half millisecond. */
static uint64_t ring_tail(void)
{
    uint64_t m = UINT64_MAX;
    for (int i = 0; i < n_conns; i++) {
        uint64_t d = atomic_load_explicit(&conns[i].done, memory_order_acquire);
        if (d < m)
            m = d;
    }
    return m;
}

/* A paced event needs a slot a connection still holds: the run fails. */
static void report_overrun(uint64_t i)
{
    uint64_t behind = 0;
    for (int k = 0; k < n_conns; k++)
        if (atomic_load_explicit(&conns[k].done, memory_order_acquire) + opt.ring <= i)
            behind++;
    overrun_conns = behind;
    overrun_seq = (uint64_t)opt.first_seq + i;
    fprintf(stderr,
            "rawfanout: FAILED: event %" PRIu64 " is due and %" PRIu64
            " connection(s) are still more than the ring (%" PRIu64 " events) behind\n",
            overrun_seq, behind, opt.ring);
    atomic_store(&overrun, true);
    atomic_store(&stopping, true);
}

/* Thread 0: frames the events that are due (--rate) or for which there is room (--rate
 * 0), publishes them in `head`, and wakes the workers asleep in epoll_wait. */
static void produce(void)
{
    uint64_t h = atomic_load_explicit(&head, memory_order_relaxed);
    ring_full = false;
    if (h >= opt.events)
        return;
    uint64_t want = opt.events;
    if (opt.rate > 0) {
        double due = (now_mono() - t_start) * opt.rate + 1;
        if (due < (double)want)
            want = (uint64_t)due;
    }
    if (want <= h)
        return;
    if (want > tail_seen + opt.ring && tail_seen != UINT64_MAX) {
        double t = now_mono();
        if (opt.rate > 0 || t - t_tail >= 0.0005) {
            tail_seen = ring_tail();
            t_tail = t;
        }
        if (tail_seen != UINT64_MAX && want > tail_seen + opt.ring) {
            if (opt.rate > 0) {
                report_overrun(tail_seen + opt.ring);
                return;
            }
            want = tail_seen + opt.ring; /* saturation: wait for the slowest */
            ring_full = true;
            if (want <= h)
                return;
        }
    }
    for (uint64_t i = h; i < want; i++)
        frame_event(i);
    /* seq_cst, with the sleeping flag's: a worker that goes to sleep either sees the new
     * head or is seen asleep and woken. */
    atomic_store(&head, want);
    for (int k = 1; k < opt.threads; k++) {
        if (atomic_load(&workers[k].sleeping)) {
            uint64_t one = 1;
            if (write(workers[k].efd, &one, sizeof one) < 0 && errno != EAGAIN)
                die("eventfd write: %s", strerror(errno));
        }
    }
}

static void conn_close(struct worker *w, struct conn *c)
{
    if (c->state == S_CLOSED)
        return;
    if (!c->finished) {
        w->closed_early++;
        w->n_unfinished--;
        atomic_fetch_sub(&n_unfinished_all, 1);
    }
    c->state = S_CLOSED;
    atomic_store_explicit(&c->done, UINT64_MAX, memory_order_release); /* holds no slot */
    close(c->fd); /* also takes it out of the epoll set */
    c->fd = -1;
    w->n_open--;
}

static void conn_finished(struct worker *w, struct conn *c)
{
    c->finished = true;
    if (--w->n_unfinished == 0)
        w->t_finished = now_mono();
    if (atomic_fetch_sub(&n_unfinished_all, 1) == 1)
        atomic_store(&t_deadline, now_mono() + opt.linger);
}

/* Writes the framed events [c->done, h) to c until they are all written or its socket
 * buffer is full: the kernel's buffers bound one connection's turn, the most a fan-out
 * can do per call, which is what the limit is about. A write that takes less than
 * offered means the buffer is full: Linux's tcp_sendmsg then sets SOCK_NOSPACE, so
 * EPOLLOUT (edge-triggered) follows once there is room, and the EAGAIN another writev()
 * would return is not needed. */
static void conn_write(struct worker *w, struct conn *c, uint64_t h)
{
    while (c->state == S_STREAMING && !c->blocked) {
        uint64_t d = atomic_load_explicit(&c->done, memory_order_relaxed);
        if (d >= h) {
            if (d == opt.events) {
                if (!c->finished)
                    conn_finished(w, c);
            } else if (!c->waiting) {
                c->waiting = true;
                w->waiting[w->n_waiting++] = c;
            }
            return;
        }
        struct iovec iov[IOV_BATCH];
        int n = 0;
        size_t offered = 0, off = c->off;
        for (uint64_t i = d; i < h && n < IOV_BATCH; i++, n++, off = 0) {
            iov[n].iov_base = slot(i) + off;
            iov[n].iov_len = ring_len[i % opt.ring] - off;
            offered += iov[n].iov_len;
        }
        ssize_t r = writev(c->fd, iov, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                c->blocked = true;
                w->blocked++;
                return;
            }
            conn_close(w, c); /* the client is gone (EPIPE, ECONNRESET) */
            return;
        }
        w->writes++;
        w->bytes += (uint64_t)r;
        size_t left = (size_t)r;
        off = c->off;
        while (left > 0) {
            size_t rest = ring_len[d % opt.ring] - off;
            if (left < rest) {
                off += left;
                break;
            }
            left -= rest;
            d++;
            off = 0;
        }
        c->off = off;
        atomic_store_explicit(&c->done, d, memory_order_release);
        if ((size_t)r < offered) {
            c->blocked = true;
            w->blocked++;
        }
    }
}

/* Reads what the client sends after its request (nothing, but for its close). */
static void conn_read(struct worker *w, struct conn *c)
{
    char buf[4096];
    for (;;) {
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r > 0)
            continue;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        conn_close(w, c); /* EOF or error: the client closed */
        return;
    }
}

/* A worker's loop: writes its connections as events are framed and sockets drain, until
 * every one has every event and the client has closed it (or --linger has passed, or
 * the run stops). Thread 0 also frames the events. */
static void *worker_run(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[512];
    for (;;) {
        if (w->id == 0)
            produce();
        if (atomic_load(&stopping) || stop_flag)
            break;
        uint64_t h = atomic_load_explicit(&head, memory_order_acquire);
        if (h != w->seen) {
            w->seen = h;
            int n = w->n_waiting;
            w->n_waiting = 0;
            for (int i = 0; i < n; i++) {
                struct conn *c = w->waiting[i];
                c->waiting = false;
                conn_write(w, c, h); /* may put it back on the list */
            }
        }
        if (w->n_open == 0 && (w->id != 0 || h == opt.events))
            break;
        double now = now_mono(), deadline = atomic_load(&t_deadline);
        if (deadline > 0 && now >= deadline)
            break;         /* everything written, and the client did not close within --linger */
        int timeout = 200; /* ms: to look at stop_flag and the deadline now and then */
        if (w->id == 0 && h < opt.events) {
            if (ring_full)
                timeout = 1; /* waiting for the slowest connection to free a slot */
            else if (opt.rate > 0) {
                double due = t_start + (double)h / opt.rate - now; /* event h's time */
                timeout = due <= 0 ? 0 : (int)(due * 1000) + 1;
                if (timeout > 200)
                    timeout = 200;
            }
        }
        if (w->id != 0) {
            atomic_store(&w->sleeping, 1);
            if (atomic_load(&head) != w->seen) { /* framed meanwhile: no sleep */
                atomic_store(&w->sleeping, 0);
                continue;
            }
        }
        int n = epoll_wait(w->epfd, evs, (int)(sizeof evs / sizeof evs[0]), timeout);
        if (w->id != 0)
            atomic_store(&w->sleeping, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait: %s", strerror(errno));
        }
        h = atomic_load_explicit(&head, memory_order_acquire);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) { /* the eventfd */
                uint64_t v;
                if (read(w->efd, &v, sizeof v) < 0 && errno != EAGAIN)
                    die("eventfd read: %s", strerror(errno));
                continue;
            }
            struct conn *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                conn_read(w, c);
            if (c->state == S_STREAMING && (evs[i].events & EPOLLOUT) && c->blocked) {
                c->blocked = false;
                conn_write(w, c, h);
            }
        }
    }
    return NULL;
}

/* Accepting: answers each request head with response_head. A head that does not
 * start with GET, or that a full socket buffer would cut, is closed (counted). */
static int n_streaming, n_refused;

static void accept_read(struct conn *c)
{
    char buf[4096];
    for (;;) {
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0)
            goto refuse;
        for (ssize_t i = 0; i < r; i++) {
            if (c->req_len < 4)
                c->first[c->req_len] = buf[i];
            c->req_len++;
            char want = (c->crlf % 2 == 0) ? '\r' : '\n';
            c->crlf = buf[i] == want ? c->crlf + 1 : (buf[i] == '\r' ? 1 : 0);
            if (c->crlf == 4) {
                if (memcmp(c->first, "GET ", 4) != 0)
                    goto refuse;
                ssize_t w = send(c->fd, response_head, sizeof response_head - 1, MSG_NOSIGNAL);
                if (w != (ssize_t)(sizeof response_head - 1))
                    goto refuse; /* a fresh socket takes 100 bytes: the client is gone */
                c->state = S_STREAMING;
                n_streaming++;
                return;
            }
        }
        if (c->req_len > MAX_REQUEST)
            goto refuse;
    }
refuse:
    close(c->fd);
    c->fd = -1;
    c->state = S_CLOSED;
    n_refused++;
}

/* Until N connections stream (or SIGUSR1): accepts and answers them in the main thread.
 * Returns the listening socket, closed by the caller once the fan-out starts. */
static void accept_all(void)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int gai = getaddrinfo(opt.host, opt.port, &hints, &res);
    if (gai)
        die("%s:%s: %s", opt.host, opt.port, gai_strerror(gai));
    int lfd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, res->ai_addr, res->ai_addrlen) < 0)
        die("bind %s:%s: %s", opt.host, opt.port, strerror(errno));
    freeaddrinfo(res);
    if (listen(lfd, 4096) < 0) /* loadclient connects 256 at a time */
        die("listen: %s", strerror(errno));
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1: %s", strerror(errno));
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &e);
    fprintf(stderr, "rawfanout: listening on %s:%s for %d connections\n", opt.host, opt.port,
            opt.connections);
    if (opt.ready_file) {
        FILE *f = fopen(opt.ready_file, "w");
        if (!f)
            die("%s: %s", opt.ready_file, strerror(errno));
        fprintf(f, "%s\n", opt.port);
        fclose(f);
    }

    double deadline = now_mono() + opt.start_timeout;
    struct epoll_event evs[256];
    while (n_streaming < opt.connections && !start_flag) {
        if (stop_flag)
            die("stopped while accepting");
        if (now_mono() > deadline)
            die("only %d of %d connections streaming after %.0f s", n_streaming, opt.connections,
                opt.start_timeout);
        int n = epoll_wait(epfd, evs, 256, 200);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr != NULL) {
                struct conn *c = evs[i].data.ptr;
                if (c->state == S_REQUEST)
                    accept_read(c);
                continue;
            }
            for (;;) {
                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                    if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                        break;
                    die("accept: %s (raise ulimit -n?)", strerror(errno));
                }
                if (n_conns == opt.connections) { /* all slots taken, some still asking */
                    close(fd);
                    n_refused++;
                    continue;
                }
                /* Small writes go out at once, as changegate's do (latency). */
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                struct conn *c = &conns[n_conns++];
                c->fd = fd;
                c->state = S_REQUEST;
                struct epoll_event ce = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ce);
                accept_read(c); /* the request is usually there already */
            }
        }
    }
    close(epfd); /* the workers register the connections in their own */
    close(lfd);  /* later connections are refused by the kernel */
    /* Keep the streaming ones, in order; drop any still sending its request. */
    int k = 0;
    for (int i = 0; i < n_conns; i++) {
        if (conns[i].state == S_REQUEST) {
            close(conns[i].fd);
            n_refused++;
        } else if (conns[i].state == S_STREAMING) {
            conns[k] = conns[i];
            k++;
        }
    }
    n_conns = k;
}

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        start_flag = 1;
    else
        stop_flag = 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: rawfanout --port P [--host H] [--connections N] [--events E] [--rate R]\n"
            "                 [--threads T] [--ring R] [--first-seq S] [--doc-bytes D]\n"
            "                 [--template FILE] [--ready-file F] [--start-timeout S]\n"
            "                 [--linger S]\n"
            "Accepts N SSE subscriptions (e.g. bench/loadclient's), then writes E events,\n"
            "each framed once like changegate's SSE frame, to every one: as fast as the\n"
            "connections take them (R 0, the default) or R events/s. Starts once N stream\n"
            "(or on SIGUSR1); exits once each has every event and the client closed it,\n"
            "printing one line of JSON. Exit 1 when a connection would have lost events.\n");
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
        else if (ARG("--connections"))
            opt.connections = atoi(v);
        else if (ARG("--events"))
            opt.events = strtoull(v, NULL, 10);
        else if (ARG("--rate"))
            opt.rate = atof(v);
        else if (ARG("--threads"))
            opt.threads = atoi(v);
        else if (ARG("--ring"))
            opt.ring = strtoull(v, NULL, 10);
        else if (ARG("--first-seq"))
            opt.first_seq = strtoll(v, NULL, 10);
        else if (ARG("--doc-bytes"))
            opt.doc_bytes = atoi(v);
        else if (ARG("--template"))
            opt.template_file = v;
        else if (ARG("--ready-file"))
            opt.ready_file = v;
        else if (ARG("--start-timeout"))
            opt.start_timeout = atof(v);
        else if (ARG("--linger"))
            opt.linger = atof(v);
        else
            usage();
#undef ARG
    }
    if (!opt.port || opt.connections <= 0 || opt.events == 0 || opt.rate < 0 || opt.threads <= 0 ||
        opt.ring == 0 || opt.linger < 0 || opt.start_timeout <= 0)
        usage();
    if (opt.threads > opt.connections)
        opt.threads = opt.connections;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt.connections + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t)opt.connections + 64)
            die("open-file limit %lu is too low for %d connections (ulimit -n)",
                (unsigned long)rl.rlim_cur, opt.connections);
    }
    load_template();
    if (opt.ring > (1u << 30) / slot_cap)
        die("--ring %" PRIu64 " is too large", opt.ring);
    ring_mem = xmalloc(opt.ring * slot_cap);
    ring_len = xmalloc(opt.ring * sizeof *ring_len);
    conns = xmalloc((size_t)opt.connections * sizeof *conns);

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* writev to a closed connection: EPIPE, not death */

    accept_all();
    if (n_conns == 0)
        die("no connection to write to");
    if (opt.threads > n_conns)
        opt.threads = n_conns;

    /* Round-robin over the workers, each with its own epoll set: edge-triggered, so that
     * a blocked connection is reported once when its buffer drains, and a connection
     * that is merely caught up costs nothing until events are framed. */
    workers = xmalloc((size_t)opt.threads * sizeof *workers);
    for (int k = 0; k < opt.threads; k++) {
        struct worker *w = &workers[k];
        w->id = k;
        w->waiting = xmalloc(((size_t)n_conns / (size_t)opt.threads + 1) * sizeof *w->waiting);
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (w->epfd < 0)
            die("epoll_create1: %s", strerror(errno));
        w->efd = -1;
        if (k > 0) {
            w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
            if (w->efd < 0)
                die("eventfd: %s", strerror(errno));
            struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->efd, &e);
        }
    }
    for (int i = 0; i < n_conns; i++) {
        struct worker *w = &workers[i % opt.threads];
        struct conn *c = &conns[i];
        atomic_init(&c->done, 0);
        c->waiting = true; /* nothing framed yet */
        w->waiting[w->n_waiting++] = c;
        w->n_open++;
        w->n_unfinished++;
        struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &e) < 0)
            die("epoll_ctl: %s", strerror(errno));
    }
    atomic_store(&n_unfinished_all, n_conns);
    fprintf(stderr,
            "rawfanout: %d connections streaming (%d refused); writing %" PRIu64
            " events of ~%zu bytes, %s, %d thread(s), ring %" PRIu64 "\n",
            n_conns, n_refused, opt.events, tpl_pre_len + tpl_mid_len + tpl_post_len + 17,
            opt.rate > 0 ? "paced" : "as fast as possible", opt.threads, opt.ring);

    double cpu0 = cpu_now();
    t_start = now_mono();
    for (int k = 1; k < opt.threads; k++)
        if (pthread_create(&workers[k].thread, NULL, worker_run, &workers[k]) != 0)
            die("pthread_create failed");
    worker_run(&workers[0]); /* the others end on their own: all closed, --linger, a stop */
    for (int k = 1; k < opt.threads; k++)
        pthread_join(workers[k].thread, NULL);
    double cpu_s = cpu_now() - cpu0, run_s = now_mono() - t_start;

    uint64_t writes = 0, blocked = 0, bytes = 0, closed_early = 0, deliveries = 0;
    int finished = 0, not_closed = 0;
    double t_last = t_start;
    for (int k = 0; k < opt.threads; k++) {
        struct worker *w = &workers[k];
        writes += w->writes;
        blocked += w->blocked;
        bytes += w->bytes;
        closed_early += w->closed_early;
        if (w->t_finished > t_last)
            t_last = w->t_finished;
    }
    for (int i = 0; i < n_conns; i++) {
        struct conn *c = &conns[i];
        if (c->finished) {
            finished++;
            deliveries += opt.events;
        } else if (c->state != S_CLOSED) {
            deliveries += atomic_load(&c->done);
        }
        if (c->state != S_CLOSED) {
            not_closed++;
            close(c->fd);
        }
    }
    uint64_t framed = atomic_load(&head);
    bool ok = finished == n_conns && !atomic_load(&overrun) && !stop_flag;
    double seconds = t_last - t_start;
    printf("{\"connections\": %d, \"refused\": %d, \"threads\": %d, \"events\": %" PRIu64
           ", \"framed\": %" PRIu64 ", \"frame_bytes\": %.1f, \"ring\": %" PRIu64
           ", \"rate\": %.1f, \"finished\": %d, \"closed_early\": %" PRIu64
           ", \"overrun\": %s, \"overrun_connections\": %" PRIu64 ", \"overrun_seq\": %" PRId64
           ", \"not_closed_by_client\": %d, \"seconds\": %.3f, \"deliveries\": %" PRIu64
           ", \"deliveries_per_s\": %.0f, \"bytes\": %" PRIu64 ", \"bytes_per_s\": %.0f"
           ", \"writes\": %" PRIu64 ", \"blocked\": %" PRIu64 ", \"run_s\": %.3f, \"cpu_s\": %.3f"
           ", \"cpu_total_s\": %.3f, \"ok\": %s}\n",
           n_conns, n_refused, opt.threads, opt.events, framed,
           framed ? (double)frame_bytes / (double)framed : 0.0, opt.ring, opt.rate, finished,
           closed_early, atomic_load(&overrun) ? "true" : "false", overrun_conns,
           atomic_load(&overrun) ? (int64_t)overrun_seq : -1, not_closed, seconds, deliveries,
           ok && seconds > 0 ? (double)deliveries / seconds : 0.0, bytes,
           ok && seconds > 0 ? (double)bytes / seconds : 0.0, writes, blocked, run_s, cpu_s,
           cpu_now(), ok ? "true" : "false");
    return ok ? 0 : 1;
}
