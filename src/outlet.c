/* outlet.c: direct HTTP streams after their head (see outlet.h).
 *
 * A stream's output is a small ring of items: its answer head, literal
 * messages (preamble, heartbeats, the expired notice, the end marker) and
 * events. An event item points into the event's shared frames and holds a
 * reference; with chunked coding each item is its own chunk, whose size line
 * is kept in the item, so writev sends size line, frame and CRLF without
 * copying the frame. A stream pulls events from the hub only while its ring
 * has room: a slow client fills its ring and then waits for its socket
 * (EPOLLOUT) while its cursor stays in the journal, so it costs no more memory
 * than an idle one and holds nobody up.
 *
 * States. A stream is parked (the hub will wake it), blocked (its socket is
 * full; epoll tells when it drains), or being pumped on its shard. */
#include "outlet.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

#define RING 16 /* output items per stream; events per writev at most */
#define MAX_IOV (3 * RING)
#define PUMP_ROUNDS 4    /* ring-fulls per stream per turn, so that one cannot starve all */
#define WAKE_BUDGET 4096 /* woken streams pumped per loop turn */
#define SWEEP_MS 1000    /* how often write timeouts are looked for */
#define STREAM_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)
/* Coalescing: after a loop turn that pumped at least COALESCE_STREAMS streams
 * and ended with more of them woken already, the next turn starts no sooner
 * than COALESCE_US after that one did. See shard_loop(). */
#define COALESCE_STREAMS 32
#define COALESCE_US 5000

static const char CRLF[] = "\r\n";
static const char END_MARKER[] = "0\r\n\r\n"; /* the last chunk */
static const char SSE_PREAMBLE[] = CG_SSE_PREAMBLE;

typedef struct shard shard_t;

/* One thing to write: bytes (an event's frame, or a literal), preceded by a
 * chunk-size line when hdr_len is not 0 and then followed by CRLF. */
typedef struct {
    const char *bytes;
    uint32_t len;
    uint8_t hdr_len;
    bool owned;     /* bytes is ours (bson_free) */
    char hdr[10];   /* "%x\r\n" */
    cg_event_t *ev; /* the reference that keeps bytes alive, or NULL */
} item_t;

typedef struct stream {
    shard_t *sh;
    int fd;
    cg_sub_t *sub;
    bool chunked, ndjson;
    bool arrived; /* its shard has it in its epoll set */
    bool queued;  /* on the shard's woken list */
    bool parked;  /* the hub will wake it */
    bool ending;  /* its last item is queued: close once written */
    bool blocked; /* its socket took less than was offered */
    cg_transport_t transport;
    int64_t expires_ms, since_ms, blocked_ms;
    unsigned long long sent, sent_msgs;
    item_t items[RING];
    unsigned first, count;        /* the ring's occupied items */
    size_t off;                   /* bytes of items[first] already written */
    struct stream *prev, *next;   /* the shard's streams */
    struct stream *wprev, *wnext; /* the woken list, or the arrivals */
} stream_t;

struct shard {
    cg_outlet_t *outlet;
    pthread_t thread;
    bool running;
    int epfd, wake_fd;
    pthread_mutex_t lock; /* guards arrivals, the woken list and each stream's `queued` */
    stream_t *arrivals;
    stream_t *woken_head, *woken_tail;
    stream_t *streams; /* only the shard's thread touches this list */
    int64_t next_sweep_ms;
    unsigned pumped; /* streams pumped in this loop turn */
};

struct cg_outlet {
    shard_t shards[CG_OUTLET_SHARDS];
    atomic_uint next_shard;
    atomic_bool stop;
    const cg_config_t *cfg;
    cg_hub_t *hub;
    char *name;
};

static void signal_shard(shard_t *sh)
{
    uint64_t one = 1;
    ssize_t w = write(sh->wake_fd, &one, sizeof one);
    (void)w; /* fails only when the counter is huge, which wakes the shard anyway */
}

/* ---- the ring ---- */

/* The chunk-size line "%x\r\n" for len, into out (10 bytes); its length. By
 * hand, because it is made for every event sent to every subscriber and
 * snprintf() was the largest cost in the profile (bench/RESULTS.md). */
static uint8_t chunk_line(char *out, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char digits[8];
    uint8_t n = 0;
    do {
        digits[n++] = hex[len & 15];
        len >>= 4;
    } while (len && n < sizeof digits);
    for (uint8_t i = 0; i < n; i++)
        out[i] = digits[n - 1 - i];
    out[n] = '\r';
    out[n + 1] = '\n';
    return n + 2;
}

static void push(stream_t *s, const char *bytes, size_t len, bool owned, bool framed,
                 cg_event_t *ev)
{
    item_t *it = &s->items[(s->first + s->count++) % RING];
    it->bytes = bytes;
    it->len = (uint32_t)len;
    it->owned = owned;
    it->ev = ev;
    it->hdr_len = 0;
    if (framed && s->chunked)
        it->hdr_len = chunk_line(it->hdr, len);
}

static size_t item_size(const item_t *it)
{
    return it->hdr_len + it->len + (it->hdr_len ? 2 : 0);
}

static void item_release(item_t *it)
{
    if (it->owned)
        bson_free((char *)it->bytes);
    cg_event_unref(it->ev);
    it->ev = NULL;
    it->owned = false;
}

/* A message that is not an event (the preamble, a heartbeat, the expired
 * notice): its bytes count as sent, not as a message. */
static void push_literal(stream_t *s, const char *bytes, size_t len, bool owned)
{
    push(s, bytes, len, owned, true, NULL);
    s->sent += len;
    cg_metrics_sent(s->transport, 0, len);
}

/* A message made from the stream's position: a heartbeat or the expired notice. */
static void push_positioned(stream_t *s, char *(*make)(bool ndjson, const char *position))
{
    char *position = cg_hub_sub_position(s->sh->outlet->hub, s->sub);
    char *msg = make(s->ndjson, position);
    bson_free(position);
    push_literal(s, msg, strlen(msg), true);
}

static void end_stream(stream_t *s)
{
    if (s->chunked)
        push(s, END_MARKER, sizeof END_MARKER - 1, false, false, NULL);
    s->ending = true;
}

/* ---- closing ---- */

static void unlink_woken(shard_t *sh, stream_t *s)
{
    if (s->wprev)
        s->wprev->wnext = s->wnext;
    else
        sh->woken_head = s->wnext;
    if (s->wnext)
        s->wnext->wprev = s->wprev;
    else
        sh->woken_tail = s->wprev;
    s->wprev = s->wnext = NULL;
    s->queued = false;
}

/* why: a drop counted in /metrics, or -1 for a stream that ended as it should. */
static void close_stream(stream_t *s, int why, const char *reason)
{
    shard_t *sh = s->sh;
    cg_outlet_t *o = sh->outlet;
    if (s->arrived) {
        epoll_ctl(sh->epfd, EPOLL_CTL_DEL, s->fd, NULL);
        if (s->prev)
            s->prev->next = s->next;
        else
            sh->streams = s->next;
        if (s->next)
            s->next->prev = s->prev;
    }
    close(s->fd);
    /* After this no wake comes; one already queued is taken off the list. */
    cg_hub_unsubscribe(o->hub, s->sub);
    pthread_mutex_lock(&sh->lock);
    if (s->queued)
        unlink_woken(sh, s);
    pthread_mutex_unlock(&sh->lock);
    if (why >= 0)
        cg_metrics_drop((cg_drop_t)why);
    cg_metrics_subscribers(s->transport, -1);
    cg_log_debug("%s: %s stream closed after %.1f s (%s): %llu messages, %llu bytes", o->name,
                 s->ndjson ? "NDJSON" : "SSE", (double)(cg_hub_now_ms() - s->since_ms) / 1000,
                 reason, s->sent_msgs, s->sent);
    for (; s->count; s->count--, s->first = (s->first + 1) % RING)
        item_release(&s->items[s->first]);
    bson_free(s);
}

/* ---- writing ---- */

/* Writes what the ring holds. Returns true when all of it went out and the
 * stream goes on; false when the socket is full (blocked) or the stream was
 * closed (gone, or ended). */
static bool flush(stream_t *s)
{
    while (s->count) {
        struct iovec iov[MAX_IOV];
        int n = 0;
        size_t skip = s->off;
        for (unsigned k = 0; k < s->count; k++) {
            const item_t *it = &s->items[(s->first + k) % RING];
            const char *parts[3] = {it->hdr, it->bytes, CRLF};
            size_t lens[3] = {it->hdr_len, it->len, it->hdr_len ? 2 : 0};
            for (int p = 0; p < 3; p++) {
                if (skip >= lens[p]) {
                    skip -= lens[p];
                    continue;
                }
                iov[n].iov_base = (char *)parts[p] + skip;
                iov[n++].iov_len = lens[p] - skip;
                skip = 0;
            }
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(s->fd, &msg, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!s->blocked)
                    s->blocked_ms = cg_hub_now_ms();
                s->blocked = true;
                return false;
            }
            close_stream(s, CG_DROP_CLIENT_GONE, "client gone");
            return false;
        }
        size_t done = s->off + (size_t)w;
        while (s->count && done >= item_size(&s->items[s->first])) {
            done -= item_size(&s->items[s->first]);
            item_release(&s->items[s->first]);
            s->first = (s->first + 1) % RING;
            s->count--;
        }
        s->off = done;
        s->blocked_ms = cg_hub_now_ms(); /* progress: the write timeout starts over */
    }
    s->blocked = false;
    if (s->ending) {
        close_stream(s, -1, "ended by the server");
        return false;
    }
    return true;
}

/* Moves events from the hub into the ring, as many as fit under one lock of
 * the hub, until the hub has nothing (parked), the ring is full or the stream
 * ends. Two items stay free for the expired notice and the end marker. */
static void fill(stream_t *s)
{
    cg_hub_t *hub = s->sh->outlet->hub;
    while (!s->ending && s->count < RING - 2) {
        /* Checked before taking the next event, so that the expired message's
         * position is the last one this client got. */
        if (s->expires_ms && cg_hub_now_ms() >= s->expires_ms) {
            push_positioned(s, cg_event_expired);
            end_stream(s);
            return;
        }
        cg_event_t *evs[RING];
        const cg_frames_t *frs[RING];
        size_t n;
        switch (cg_hub_next_n(hub, s->sub, true, RING - 2 - s->count, evs, frs, &n)) {
        case CG_NEXT_EVENT: {
            size_t bytes = 0;
            for (size_t i = 0; i < n; i++) {
                size_t len = s->ndjson ? frs[i]->ndjson_len : frs[i]->sse_len;
                push(s, s->ndjson ? frs[i]->ndjson : frs[i]->sse, len, false, true, evs[i]);
                bytes += len;
            }
            s->sent += bytes;
            s->sent_msgs += n;
            cg_metrics_sent(s->transport, n, bytes);
            break;
        }
        case CG_NEXT_HEARTBEAT:
            push_positioned(s, cg_event_heartbeat);
            break;
        case CG_NEXT_PARKED:
            s->parked = true;
            return;
        case CG_NEXT_TIMEOUT: /* a stream's only deadline is its token's expiry */
            push_positioned(s, cg_event_expired);
            end_stream(s);
            return;
        case CG_NEXT_END:
        case CG_NEXT_EMPTY:
            end_stream(s);
            return;
        }
    }
}

static void queue_woken(shard_t *sh, stream_t *s); /* under sh->lock */

/* Runs a stream until it is parked, blocked, closed, or has had its share of
 * this turn (then it is queued again, behind the others). May free s. */
static void pump(stream_t *s)
{
    s->sh->pumped++;
    for (int round = 0; round < PUMP_ROUNDS; round++) {
        if (!flush(s))
            return;
        if (s->parked)
            return;
        fill(s);
    }
    if (!flush(s) || s->parked)
        return;
    pthread_mutex_lock(&s->sh->lock);
    queue_woken(s->sh, s);
    pthread_mutex_unlock(&s->sh->lock);
}

/* ---- the hub's callbacks (under its lock) ---- */

static void on_park(void *ctx)
{
    (void)ctx; /* the shard knows from CG_NEXT_PARKED */
}

static void queue_woken(shard_t *sh, stream_t *s)
{
    if (s->queued)
        return;
    s->queued = true;
    s->wprev = sh->woken_tail;
    s->wnext = NULL;
    if (sh->woken_tail)
        sh->woken_tail->wnext = s;
    else
        sh->woken_head = s;
    sh->woken_tail = s;
}

static void on_wake(void *ctx)
{
    stream_t *s = ctx;
    shard_t *sh = s->sh;
    pthread_mutex_lock(&sh->lock);
    bool was_empty = !sh->woken_head;
    queue_woken(sh, s);
    pthread_mutex_unlock(&sh->lock);
    if (was_empty)
        signal_shard(sh);
}

static const cg_sub_ops_t sub_ops = {on_park, on_wake};

/* ---- the shard's loop ---- */

/* The client sent more (nothing is expected) or closed its side. Returns
 * false when the stream was closed. */
static bool read_input(stream_t *s)
{
    char buf[4096];
    for (;;) {
        ssize_t r = recv(s->fd, buf, sizeof buf, 0);
        if (r > 0)
            continue; /* a pipelined request after a stream is never answered: discard */
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (r < 0 && errno == EINTR)
            continue;
        /* Closed or reset. A client that only shut down its sending side is
         * treated the same, as the libmicrohttpd streams do. */
        close_stream(s, CG_DROP_CLIENT_GONE, "client gone");
        return false;
    }
}

static void take_arrivals(shard_t *sh)
{
    pthread_mutex_lock(&sh->lock);
    stream_t *list = sh->arrivals;
    sh->arrivals = NULL;
    pthread_mutex_unlock(&sh->lock);
    while (list) {
        stream_t *s = list;
        list = s->wnext;
        s->wnext = NULL;
        struct epoll_event ev = {.events = STREAM_EVENTS, .data.ptr = s};
        if (epoll_ctl(sh->epfd, EPOLL_CTL_ADD, s->fd, &ev) != 0) {
            close_stream(s, CG_DROP_CLIENT_GONE, "cannot watch its socket");
            continue;
        }
        s->arrived = true;
        s->prev = NULL;
        s->next = sh->streams;
        if (sh->streams)
            sh->streams->prev = s;
        sh->streams = s;
        if (s->ndjson) /* NDJSON starts with a heartbeat: the position it starts from */
            push_positioned(s, cg_event_heartbeat);
        pump(s);
    }
}

static bool run_woken(shard_t *sh)
{
    uint64_t count;
    ssize_t rd = read(sh->wake_fd, &count, sizeof count);
    (void)rd; /* EAGAIN: nothing signalled; the lists are looked at anyway */
    take_arrivals(sh);
    for (int i = 0; i < WAKE_BUDGET; i++) {
        pthread_mutex_lock(&sh->lock);
        stream_t *s = sh->woken_head;
        if (s)
            unlink_woken(sh, s);
        pthread_mutex_unlock(&sh->lock);
        if (!s)
            return false;
        s->parked = false;
        if (!s->blocked) /* a blocked one goes on when its socket drains */
            pump(s);
    }
    return true;
}

/* Streams whose client took nothing for --write-timeout seconds. */
static void sweep(shard_t *sh, int64_t now)
{
    int64_t write_ms = (int64_t)sh->outlet->cfg->write_timeout * 1000;
    for (stream_t *s = sh->streams, *next; s; s = next) {
        next = s->next;
        if (s->blocked && now - s->blocked_ms > write_ms)
            close_stream(s, CG_DROP_WRITE_TIMEOUT, "write timeout");
    }
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The loop. When a turn had many streams to pump and the hub woke more of
 * them during it, events are coming faster than the shard writes them one at
 * a time: the next turn then waits until COALESCE_US after this one began, so
 * that the events arriving meanwhile go out together, one write per stream for
 * several events. On loopback a write costs about as much as the bytes it
 * carries plus a fixed 5-8 µs (the client's side of TCP runs in it), so a
 * write per event per stream would saturate the machine at a fraction of the
 * rate. Events that come further apart than a turn, or to few streams, are
 * never delayed. */
static void *shard_loop(void *arg)
{
    shard_t *sh = arg;
    cg_outlet_t *o = sh->outlet;
    struct epoll_event evs[256];
    bool more = false, busy = false;
    int64_t turn_us = 0;
    while (!atomic_load(&o->stop)) {
        if (busy) {
            int64_t left = turn_us + COALESCE_US - now_us();
            if (left > 0)
                nanosleep(&(struct timespec){0, (long)left * 1000}, NULL);
        }
        sh->pumped = 0;
        turn_us = now_us();
        int64_t now = cg_hub_now_ms();
        int wait_ms = more ? 0 : (int)(sh->next_sweep_ms > now ? sh->next_sweep_ms - now : 0);
        int n = epoll_wait(sh->epfd, evs, 256, wait_ms);
        for (int i = 0; i < n; i++) {
            stream_t *s = evs[i].data.ptr;
            if (!s)
                continue; /* the wake eventfd: run_woken() below */
            uint32_t e = evs[i].events;
            if (e & (EPOLLERR | EPOLLHUP)) {
                close_stream(s, CG_DROP_CLIENT_GONE, "client gone");
                continue;
            }
            if ((e & (EPOLLIN | EPOLLRDHUP)) && !read_input(s))
                continue;
            if ((e & EPOLLOUT) && s->blocked) {
                s->blocked = false;
                pump(s);
            }
        }
        more = run_woken(sh);
        pthread_mutex_lock(&sh->lock);
        busy = sh->pumped >= COALESCE_STREAMS && (more || sh->woken_head);
        pthread_mutex_unlock(&sh->lock);
        now = cg_hub_now_ms();
        if (now >= sh->next_sweep_ms) {
            sweep(sh, now);
            sh->next_sweep_ms = now + SWEEP_MS;
        }
    }
    return NULL;
}

/* ---- the outlet ---- */

cg_outlet_t *cg_outlet_start(const char *name, const cg_config_t *cfg, cg_hub_t *hub, char *err,
                             size_t errlen)
{
    cg_outlet_t *o = bson_malloc0(sizeof *o);
    o->cfg = cfg;
    o->hub = hub;
    o->name = bson_strdup(name);
    atomic_init(&o->stop, false);
    atomic_init(&o->next_shard, 0);
    for (int i = 0; i < CG_OUTLET_SHARDS; i++) {
        shard_t *sh = &o->shards[i];
        sh->outlet = o;
        pthread_mutex_init(&sh->lock, NULL);
        sh->epfd = epoll_create1(EPOLL_CLOEXEC);
        sh->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event wev = {.events = EPOLLIN, .data.ptr = NULL};
        if (sh->epfd < 0 || sh->wake_fd < 0 ||
            epoll_ctl(sh->epfd, EPOLL_CTL_ADD, sh->wake_fd, &wev) != 0 ||
            pthread_create(&sh->thread, NULL, shard_loop, sh) != 0) {
            snprintf(err, errlen, "%s: cannot start its stream threads: %s", name, strerror(errno));
            cg_outlet_stop(o);
            return NULL;
        }
        sh->running = true;
    }
    return o;
}

/* The answer's head: status line, Date, the caller's headers, and how the body ends. */
static char *make_head(const cg_outlet_stream_t *st)
{
    char date[64];
    struct tm tm;
    time_t now = time(NULL);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", gmtime_r(&now, &tm));
    return bson_strdup_printf("HTTP/1.1 200 OK\r\nDate: %s\r\n%s%s\r\n", date, st->headers,
                              st->http10 ? "Connection: close\r\n"
                                         : "Transfer-Encoding: chunked\r\n");
}

cg_hub_rc_t cg_outlet_take(cg_outlet_t *o, int fd, cg_sub_spec_t *spec,
                           const cg_outlet_stream_t *st)
{
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    stream_t *s = bson_malloc0(sizeof *s);
    s->sh = &o->shards[atomic_fetch_add(&o->next_shard, 1) % CG_OUTLET_SHARDS];
    s->fd = dup_fd;
    spec->ops = &sub_ops;
    spec->ctx = s;
    cg_hub_rc_t rc = dup_fd < 0 ? CG_HUB_FULL : cg_hub_subscribe(o->hub, spec, &s->sub);
    if (rc != CG_HUB_OK) {
        if (dup_fd >= 0)
            close(dup_fd);
        else {
            cg_filter_free(spec->filter);
            cg_project_free(spec->project);
        }
        bson_free(s);
        return rc;
    }
    s->ndjson = st->ndjson;
    s->chunked = !st->http10;
    s->transport = st->ndjson ? CG_TRANSPORT_NDJSON : CG_TRANSPORT_SSE;
    s->expires_ms = st->expires_ms;
    s->since_ms = cg_hub_now_ms();
    int one = 1; /* each batch of events goes out as soon as it is written */
    setsockopt(dup_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char *head = make_head(st);
    push(s, head, strlen(head), true, false, NULL);
    cg_metrics_subscribers(s->transport, 1);
    if (!s->ndjson)
        push_literal(s, SSE_PREAMBLE, sizeof SSE_PREAMBLE - 1, false);

    shard_t *sh = s->sh;
    pthread_mutex_lock(&sh->lock);
    s->wnext = sh->arrivals;
    sh->arrivals = s;
    pthread_mutex_unlock(&sh->lock);
    signal_shard(sh);
    return CG_HUB_OK;
}

void cg_outlet_stop(cg_outlet_t *o)
{
    if (!o)
        return;
    atomic_store(&o->stop, true);
    for (int i = 0; i < CG_OUTLET_SHARDS; i++) {
        shard_t *sh = &o->shards[i];
        if (sh->running) {
            signal_shard(sh);
            pthread_join(sh->thread, NULL);
        }
    }
    /* The threads are gone: whatever is still open ends now, on this thread. */
    for (int i = 0; i < CG_OUTLET_SHARDS; i++) {
        shard_t *sh = &o->shards[i];
        take_arrivals(sh);
        while (sh->streams) {
            stream_t *s = sh->streams;
            if (!s->ending)
                end_stream(s); /* fill() keeps room for it */
            /* flush() closes an ending stream it empties; one still there is blocked. */
            if (!flush(s) && sh->streams == s)
                close_stream(s, CG_DROP_SHUTTING_DOWN, "shutdown");
        }
        if (sh->epfd >= 0)
            close(sh->epfd);
        if (sh->wake_fd >= 0)
            close(sh->wake_fd);
        pthread_mutex_destroy(&sh->lock);
    }
    bson_free(o->name);
    bson_free(o);
}
