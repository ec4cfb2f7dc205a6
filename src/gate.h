/* gate.h: the HTTP front door, in front of libmicrohttpd.
 *
 * The gate owns a listening socket. It accepts each connection and peeks
 * (never reads) at its request head until the head is complete, then hands the
 * socket to a libmicrohttpd daemon whose per-connection memory fits the head:
 * the small pool that every ordinary request fits, or a large one for heads
 * that carry a long filter. Heads beyond what even the large pool takes are
 * answered here, with the same JSON errors as everywhere else (414, 431),
 * instead of libmicrohttpd's HTML ones; that also keeps the small pool small.
 *
 * Only the first request of a connection passes the gate; keep-alive requests
 * after it go straight to the daemon that took the connection. */
#ifndef CG_GATE_H
#define CG_GATE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Limits of a request head (documented in the README and --help). */
#define CG_GATE_MAX_REQUEST_LINE (64 * 1024) /* beyond: 414 */
#define CG_GATE_MAX_HEADER_BYTES (16 * 1024) /* the header fields together; beyond: 431 */
#define CG_GATE_MAX_HEADER_FIELDS 100        /* beyond: 431 */
#define CG_GATE_MAX_QUERY_PARAMS 512         /* beyond: 414 */

typedef enum {
    CG_GATE_WAIT = 0, /* the head is not complete yet */
    CG_GATE_SMALL,    /* fits the small per-connection pool */
    CG_GATE_LARGE,    /* needs the large pool */
    CG_GATE_REJECT    /* answer with the error in the verdict */
} cg_gate_class_t;

typedef struct {
    cg_gate_class_t cls;
    int status;        /* CG_GATE_REJECT: 400, 401 (an oversized token), 414, 431 or 505 */
    char error[32];    /* its code */
    char message[160]; /* for a person */
} cg_gate_verdict_t;

/* Decides from the first `len` bytes of a connection. An incomplete head
 * (CG_GATE_WAIT) from a peer that has closed its side is the caller's to drop.
 * Pure: unit-tested. */
void cg_gate_classify(const char *head, size_t len, size_t small_budget, cg_gate_verdict_t *v);

/* Receives each accepted connection whose head passed. The callee owns fd. */
typedef void (*cg_gate_handoff_fn)(void *ctx, int fd, const struct sockaddr *addr,
                                   socklen_t addrlen, cg_gate_class_t cls);

typedef struct cg_gate cg_gate_t;

/* Binds and listens on addr the way the gate needs (receive buffer large
 * enough to peek at a whole head). Returns the socket, or -1 with errno. */
int cg_gate_listen(const struct sockaddr *addr, socklen_t addrlen);

/* Starts the gate's thread on listen_fd, which the gate then owns. `name`
 * prefixes log lines; `small_budget` is the head cost (see gate.c) the small
 * pool takes. Returns NULL with err on failure (and closes listen_fd). */
cg_gate_t *cg_gate_start(int listen_fd, const char *name, size_t small_budget,
                         cg_gate_handoff_fn handoff, void *ctx, char *err, size_t errlen);
/* Stops accepting: closes the listening socket and the connections still at
 * the gate. Idempotent. */
void cg_gate_close(cg_gate_t *gate);
/* Closes, joins the thread and frees. NULL is fine. */
void cg_gate_free(cg_gate_t *gate);

#endif
