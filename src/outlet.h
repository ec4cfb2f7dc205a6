/* outlet.h: direct HTTP streams after their head, without libmicrohttpd.
 *
 * libmicrohttpd parses and validates a stream request (http.c); once the
 * subscriber is admitted, the outlet takes its socket and writes the answer
 * itself: the head, then each event's shared frame with writev, never copied.
 * A stream then costs a small struct instead of libmicrohttpd's
 * per-connection pool, and its events go out as soon as the hub wakes it, not
 * at libmicrohttpd's next loop turn.
 *
 * Threads: CG_OUTLET_SHARDS threads of the outlet's own each own the streams
 * given to them. The hub's wake callback, from any thread, queues the stream
 * on its shard; only the shard touches the socket. */
#ifndef CG_OUTLET_H
#define CG_OUTLET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "hub.h"

#define CG_OUTLET_SHARDS 2

typedef struct cg_outlet cg_outlet_t;

/* What a stream sends besides events. */
typedef struct cg_outlet_stream {
    bool ndjson;         /* else SSE */
    bool http10;         /* the client spoke HTTP/1.0: no chunked coding; close ends the body */
    const char *headers; /* header lines for the answer, each ending in CRLF (copied) */
    int64_t expires_ms;  /* the token's expiry (the stream ends then); 0: never */
} cg_outlet_stream_t;

/* Starts the shards. `name` prefixes log lines (copied). cfg and hub must
 * outlive the outlet. NULL with err on failure. */
cg_outlet_t *cg_outlet_start(const char *name, const cg_config_t *cfg, cg_hub_t *hub, char *err,
                             size_t errlen);

/* Subscribes spec (whose ops and ctx the outlet fills in; its filter and
 * projection are stolen, whatever the result) and, on CG_HUB_OK, takes over a
 * duplicate of fd: the caller must then close its own descriptor without
 * writing to it or shutting it down. On any other result nothing was taken
 * and the caller answers the refusal itself. */
cg_hub_rc_t cg_outlet_take(cg_outlet_t *o, int fd, cg_sub_spec_t *spec,
                           const cg_outlet_stream_t *stream);

/* Ends every stream (their end marker, when the socket takes it), closes
 * them and stops the threads. Call after cg_hub_stop(). NULL is fine. */
void cg_outlet_stop(cg_outlet_t *o);

#endif
