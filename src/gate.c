/* gate.c: the HTTP front door (see gate.h for what and why).
 *
 * One thread per listener. It accepts, then peeks at the socket with
 * MSG_PEEK, so that the bytes stay queued in the kernel for libmicrohttpd to
 * read as if the gate had never looked. Connections whose head is still
 * incomplete wait in an edge-triggered epoll set: each arrival of more bytes
 * is one event, and a peek that leaves the bytes unread would make a
 * level-triggered set report the same socket forever.
 *
 * The listening socket has TCP_DEFER_ACCEPT, so accept() usually returns a
 * connection whose request has already arrived and the first peek decides. */
#include "gate.h"

#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* What libmicrohttpd 0.9.75 spends of a connection's pool per header field,
 * cookie or query parameter (its key/value record), beyond the bytes of the
 * head itself, rounded up. The head's cost is its length plus this much per
 * item; the small pool takes heads up to the budget http.c passes in. */
#define ITEM_COST 64
#define MAX_COOKIE_PARTS 256
/* A whole head and one byte more, to tell "at the limit" from "beyond it". */
#define PEEK_SIZE (CG_GATE_MAX_REQUEST_LINE + 2 + CG_GATE_MAX_HEADER_BYTES + 2 + 1)
#define HEAD_TIMEOUT_MS 30000  /* for the whole head to arrive */
#define LINGER_TIMEOUT_MS 2000 /* after a rejection, to let the client read it */
#define LINGER_MAX_BYTES (4u << 20)
#define ACCEPT_PAUSE_MS 100 /* out of file descriptors: retry accepting after this */
#define RECEIVE_BUFFER (256 * 1024)

typedef struct pending {
    int fd;
    bool watched;   /* in the epoll set */
    bool lingering; /* rejected: discarding input until the client has read the answer */
    bool peer_done; /* the client shut down its side */
    size_t discarded;
    int64_t deadline_ms;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct pending *prev, *next;
} pending_t;

struct cg_gate {
    int listen_fd, epfd, wake_fd;
    pthread_t thread;
    bool thread_running;
    atomic_bool closing;
    char *name;
    size_t small_budget;
    cg_gate_handoff_fn handoff;
    void *ctx;
    char *buf; /* PEEK_SIZE bytes, used by the gate's thread only */
    pending_t *pending;
    int64_t accept_paused_until; /* 0 when accepting */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- classification ---- */

static void reject(cg_gate_verdict_t *v, int status, const char *code, const char *message)
{
    v->cls = CG_GATE_REJECT;
    v->status = status;
    snprintf(v->error, sizeof v->error, "%s", code);
    snprintf(v->message, sizeof v->message, "%s", message);
}

static size_t count_char(const char *s, size_t len, char ch)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += s[i] == ch;
    return n;
}

/* Counts the query parameters of a request line ("GET /x?a=1&b=2 HTTP/1.1"). */
static size_t count_params(const char *line, size_t len)
{
    const char *q = memchr(line, '?', len);
    if (!q)
        return 0;
    const char *end = memchr(q, ' ', len - (size_t)(q - line));
    size_t qlen = end ? (size_t)(end - q) : len - (size_t)(q - line);
    return 1 + count_char(q, qlen, '&');
}

static bool is_last_event_id(const char *name, size_t len)
{
    return len == 13 && strncasecmp(name, "Last-Event-ID", 13) == 0;
}

/* Bytes libmicrohttpd would misread rather than refuse: it cuts values at a
 * NUL (a Last-Event-ID "P\0junk" would resume from P), glues an obs-fold
 * continuation onto the field *name* (the position would be lost, so the
 * client would silently start from now), and answers a field line without a
 * colon with its own HTML 400. RFC 9112 lets a server refuse all of them.
 * Also %00 in the path, which only ever reaches us as a C string. The
 * fields run from `fields` to the empty line. Returns false after reject(). */
static bool screen_syntax(const char *line, size_t line_len, const char *fields, const char *end,
                          cg_gate_verdict_t *v)
{
    const char *q = memchr(line, '?', line_len);
    size_t path_len = q ? (size_t)(q - line) : line_len;
    if (memchr(line, '\0', line_len) || memmem(line, path_len, "%00", 3)) {
        reject(v, 400, "bad_request", "the request line holds a NUL byte");
        return false;
    }
    size_t vlen = line_len;
    while (vlen && (line[vlen - 1] == '\n' || line[vlen - 1] == '\r'))
        vlen--;
    const char *sp = memchr(line, ' ', vlen);
    const char *version = memrchr(line, ' ', vlen);
    if (!sp || sp == version || vlen - (size_t)(version + 1 - line) < 5 ||
        memcmp(version + 1, "HTTP/", 5) != 0) {
        reject(v, 400, "bad_request", "not an HTTP request line (METHOD TARGET HTTP/1.1)");
        return false;
    }
    if (vlen < 9 || (memcmp(line + vlen - 9, " HTTP/1.1", 9) != 0 &&
                     memcmp(line + vlen - 9, " HTTP/1.0", 9) != 0)) {
        reject(v, 505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served");
        return false;
    }
    bool prev_lei = false; /* the previous field was Last-Event-ID */
    int leis = 0;
    for (const char *l = fields; l < end;) {
        const char *e = memchr(l, '\n', (size_t)(end - l));
        size_t n = (size_t)(e - l);
        if (n && l[n - 1] == '\r')
            n--;
        if (n == 0)
            break;
        bool fold = *l == ' ' || *l == '\t';
        const char *colon = fold ? NULL : memchr(l, ':', n);
        bool lei = fold ? prev_lei : colon && is_last_event_id(l, (size_t)(colon - l));
        if (fold || !colon || memchr(l, '\0', n) || memchr(l, '\r', n)) {
            if (lei)
                reject(v, 400, "invalid_position",
                       "the Last-Event-ID header holds a NUL byte, a bare CR or a folded line");
            else
                reject(v, 400, "bad_request",
                       "a header line is folded, lacks a ':', or holds a NUL byte or bare CR");
            return false;
        }
        if (lei && ++leis > 1) { /* which one would libmicrohttpd take? */
            reject(v, 400, "invalid_position", "more than one Last-Event-ID header");
            return false;
        }
        prev_lei = lei;
        l = e + 1;
    }
    return true;
}

void cg_gate_classify(const char *head, size_t len, size_t small_budget, cg_gate_verdict_t *v)
{
    memset(v, 0, sizeof *v);
    size_t line_max = CG_GATE_MAX_REQUEST_LINE + 2; /* and its CRLF */
    const char *nl = memchr(head, '\n', len < line_max ? len : line_max);
    if (!nl) {
        if (len >= line_max)
            reject(v, 414, "uri_too_long", "the request line is longer than 64 KiB");
        else
            v->cls = CG_GATE_WAIT;
        return;
    }
    size_t line_len = (size_t)(nl - head) + 1;
    size_t params = count_params(head, line_len);
    if (params > CG_GATE_MAX_QUERY_PARAMS) {
        reject(v, 414, "uri_too_long", "the URL has more than 512 query parameters");
        return;
    }
    /* Header fields, up to the empty line. */
    const char *p = nl + 1, *end = head + len;
    size_t fields = 0;
    for (;;) {
        const char *q = memchr(p, '\n', (size_t)(end - p));
        size_t header_bytes = (size_t)((q ? q + 1 : end) - (nl + 1));
        if (header_bytes > CG_GATE_MAX_HEADER_BYTES + 2) {
            /* The field that overflows is an Authorization header: what is too
             * large is the token, and the answer says so as a verifier would. */
            if ((size_t)(end - p) >= 14 && strncasecmp(p, "authorization:", 14) == 0)
                reject(v, 401, "token_too_large", "the token is too large");
            else
                reject(v, 431, "headers_too_large", "the header fields are larger than 16 KiB");
            return;
        }
        if (!q) {
            v->cls = CG_GATE_WAIT;
            return;
        }
        bool empty = q == p || (q == p + 1 && *p == '\r');
        if (empty) {
            p = q + 1;
            break;
        }
        if (++fields > CG_GATE_MAX_HEADER_FIELDS) {
            reject(v, 431, "headers_too_large", "the request has more than 100 header fields");
            return;
        }
        p = q + 1;
    }
    size_t head_len = (size_t)(p - head);
    if (!screen_syntax(head, line_len, nl + 1, p, v))
        return;
    size_t cookie_parts = count_char(nl + 1, head_len - line_len, ';');
    if (cookie_parts > MAX_COOKIE_PARTS) {
        reject(v, 431, "headers_too_large",
               "the header fields have more than 256 ';'-separated parts");
        return;
    }
    size_t cost = head_len + ITEM_COST * (params + fields + cookie_parts);
    v->cls = cost <= small_budget ? CG_GATE_SMALL : CG_GATE_LARGE;
}

/* ---- connections at the gate ---- */

static void unlink_pending(cg_gate_t *g, pending_t *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        g->pending = p->next;
    if (p->next)
        p->next->prev = p->prev;
    if (p->watched)
        epoll_ctl(g->epfd, EPOLL_CTL_DEL, p->fd, NULL);
}

static void drop(cg_gate_t *g, pending_t *p)
{
    unlink_pending(g, p);
    close(p->fd);
    free(p);
}

static bool watch(cg_gate_t *g, pending_t *p)
{
    if (p->watched)
        return true;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = p};
    if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, p->fd, &ev) != 0)
        return false;
    p->watched = true;
    return true;
}

/* Reads and discards what the client still sends after a rejection, until it
 * closes or the linger time ends: closing with unread input would reset the
 * connection and could destroy the answer before the client reads it. */
static void linger_read(cg_gate_t *g, pending_t *p)
{
    for (;;) {
        ssize_t n = read(p->fd, g->buf, PEEK_SIZE);
        if (n > 0) {
            p->discarded += (size_t)n;
            if (p->discarded > LINGER_MAX_BYTES) {
                drop(g, p);
                return;
            }
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EINTR)
            continue;
        drop(g, p); /* EOF or error */
        return;
    }
}

static void answer_and_linger(cg_gate_t *g, pending_t *p, const cg_gate_verdict_t *v)
{
    json_t *j = json_pack("{s:s, s:s}", "error", v->error, "message", v->message);
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    const char *reason = v->status == 400   ? "Bad Request"
                         : v->status == 401 ? "Unauthorized"
                         : v->status == 414 ? "URI Too Long"
                         : v->status == 505 ? "HTTP Version Not Supported"
                                            : "Request Header Fields Too Large";
    char resp[512];
    int n =
        snprintf(resp, sizeof resp,
                 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n%s"
                 "Content-Length: %zu\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n%s",
                 v->status, reason,
                 v->status == 401 ? "WWW-Authenticate: Bearer realm=\"changegate\"\r\n" : "",
                 strlen(body), body);
    free(body);
    cg_log_debug("%s: refused a request head: %d %s", g->name, v->status, v->message);
    /* A fresh socket's send buffer always has room for these few bytes. */
    if (n <= 0 || (size_t)n >= sizeof resp ||
        send(p->fd, resp, (size_t)n, MSG_NOSIGNAL) != (ssize_t)n) {
        drop(g, p);
        return;
    }
    shutdown(p->fd, SHUT_WR);
    p->lingering = true;
    p->deadline_ms = now_ms() + LINGER_TIMEOUT_MS;
    if (!watch(g, p)) {
        drop(g, p);
        return;
    }
    linger_read(g, p);
}

/* Peeks at a connection's head and acts on the verdict. */
static void examine(cg_gate_t *g, pending_t *p)
{
    ssize_t n;
    do
        n = recv(p->fd, g->buf, PEEK_SIZE, MSG_PEEK);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            drop(g, p);
        else if (!watch(g, p))
            drop(g, p);
        return;
    }
    bool more = n > 0 && !p->peer_done;
    cg_gate_verdict_t v;
    cg_gate_classify(g->buf, (size_t)n, g->small_budget, &v);
    switch (v.cls) {
    case CG_GATE_WAIT:
        if (!more || !watch(g, p))
            drop(g, p);
        return;
    case CG_GATE_SMALL:
    case CG_GATE_LARGE:
        unlink_pending(g, p);
        g->handoff(g->ctx, p->fd, (struct sockaddr *)&p->addr, p->addrlen, v.cls);
        free(p);
        return;
    case CG_GATE_REJECT:
        answer_and_linger(g, p, &v);
        return;
    }
}

static void pause_accepting(cg_gate_t *g)
{
    epoll_ctl(g->epfd, EPOLL_CTL_DEL, g->listen_fd, NULL);
    g->accept_paused_until = now_ms() + ACCEPT_PAUSE_MS;
}

static void accept_all(cg_gate_t *g)
{
    for (;;) {
        pending_t *p = calloc(1, sizeof *p);
        if (!p) {
            pause_accepting(g);
            return;
        }
        p->addrlen = sizeof p->addr;
        p->fd = accept4(g->listen_fd, (struct sockaddr *)&p->addr, &p->addrlen,
                        SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (p->fd < 0) {
            int e = errno;
            free(p);
            if (e == EINTR || e == ECONNABORTED)
                continue;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                cg_log_warn("%s: cannot accept: %s (pausing %d ms)", g->name, strerror(e),
                            ACCEPT_PAUSE_MS);
                pause_accepting(g);
            }
            return; /* EAGAIN: all taken */
        }
        p->deadline_ms = now_ms() + HEAD_TIMEOUT_MS;
        p->next = g->pending;
        if (g->pending)
            g->pending->prev = p;
        g->pending = p;
        examine(g, p);
    }
}

static void on_ready(cg_gate_t *g, pending_t *p, uint32_t events)
{
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        p->peer_done = true;
    if (p->lingering)
        linger_read(g, p);
    else
        examine(g, p);
}

static void expire(cg_gate_t *g, int64_t now)
{
    pending_t *next;
    for (pending_t *p = g->pending; p; p = next) {
        next = p->next;
        if (now >= p->deadline_ms) {
            if (!p->lingering)
                cg_log_debug("%s: dropped a connection whose request head did not arrive", g->name);
            drop(g, p);
        }
    }
}

static void *gate_loop(void *arg)
{
    cg_gate_t *g = arg;
    struct epoll_event evs[64];
    int64_t next_sweep = now_ms() + 1000;
    while (!atomic_load(&g->closing)) {
        int n = epoll_wait(g->epfd, evs, 64, 250);
        for (int i = 0; i < n; i++) {
            void *ptr = evs[i].data.ptr;
            if (ptr == &g->listen_fd)
                accept_all(g);
            else if (ptr != &g->wake_fd)
                on_ready(g, ptr, evs[i].events);
        }
        int64_t now = now_ms();
        if (g->accept_paused_until && now >= g->accept_paused_until) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &g->listen_fd};
            g->accept_paused_until = 0;
            epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->listen_fd, &ev);
        }
        if (now >= next_sweep) {
            expire(g, now);
            next_sweep = now + 250;
        }
    }
    while (g->pending)
        drop(g, g->pending);
    return NULL;
}

cg_gate_t *cg_gate_start(int listen_fd, const char *name, size_t small_budget,
                         cg_gate_handoff_fn handoff, void *ctx, char *err, size_t errlen)
{
    cg_gate_t *g = calloc(1, sizeof *g);
    if (!g) {
        close(listen_fd);
        snprintf(err, errlen, "%s: out of memory", name);
        return NULL;
    }
    g->listen_fd = listen_fd;
    g->name = strdup(name);
    g->small_budget = small_budget;
    g->handoff = handoff;
    g->ctx = ctx;
    g->buf = malloc(PEEK_SIZE);
    g->epfd = epoll_create1(EPOLL_CLOEXEC);
    g->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    atomic_init(&g->closing, false);
    /* Hold connections in the kernel until their first bytes arrive. */
    int defer_s = 5;
    setsockopt(listen_fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_s, sizeof defer_s);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &g->listen_fd};
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &g->wake_fd};
    if (!g->name || !g->buf || g->epfd < 0 || g->wake_fd < 0 ||
        epoll_ctl(g->epfd, EPOLL_CTL_ADD, listen_fd, &lev) != 0 ||
        epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->wake_fd, &wev) != 0 ||
        pthread_create(&g->thread, NULL, gate_loop, g) != 0) {
        snprintf(err, errlen, "%s: cannot start accepting: %s", name, strerror(errno));
        cg_gate_free(g);
        return NULL;
    }
    g->thread_running = true;
    return g;
}

void cg_gate_close(cg_gate_t *g)
{
    if (!g)
        return;
    atomic_store(&g->closing, true);
    if (g->thread_running) {
        uint64_t one = 1;
        ssize_t w = write(g->wake_fd, &one, sizeof one);
        (void)w; /* a full counter already wakes the thread */
        pthread_join(g->thread, NULL);
        g->thread_running = false;
    }
    if (g->listen_fd >= 0)
        close(g->listen_fd);
    g->listen_fd = -1;
}

void cg_gate_free(cg_gate_t *g)
{
    if (!g)
        return;
    cg_gate_close(g);
    if (g->epfd >= 0)
        close(g->epfd);
    if (g->wake_fd >= 0)
        close(g->wake_fd);
    free(g->buf);
    free(g->name);
    free(g);
}

int cg_gate_listen(const struct sockaddr *addr, socklen_t addrlen)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int one = 1, rcvbuf = RECEIVE_BUFFER;
    /* SO_REUSEADDR lets a restart bind at once; deliberately not SO_REUSEPORT,
     * which would let a second process share the port silently. The receive
     * buffer (inherited by accepted sockets, and set before listen() so the
     * window scale allows it) must hold a whole head the gate peeks at. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) != 0 ||
        bind(fd, addr, addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}
