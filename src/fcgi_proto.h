/* fcgi_proto.h: the FastCGI 1.0 protocol, transport-free.
 *
 * Three layers, each usable alone:
 *   - a record parser: arbitrary byte chunks in, whole records out;
 *   - a connection: the application side of the specification on top of the
 *     parser (requests and their streams, management records), reporting to
 *     the front end through callbacks;
 *   - encoders for what the application sends, including STDOUT headers for
 *     writev, so that the frames the hub shares are never copied per client.
 * No sockets, no threads, no hub: the front end (fcgi.c) owns the sockets and
 * feeds what it reads; everything here is single-threaded per connection.
 *
 * How the specification's open points are settled (the front end relies on
 * them):
 *   - A request is ready when its PARAMS stream ends (the specification lets a
 *     Responder write before reading all of FCGI_STDIN). STDIN records are
 *     consumed and discarded: every endpoint is a GET.
 *   - Records for a request id that is not active are ignored, as the
 *     specification says; so are records of types a Responder never gets
 *     (FCGI_DATA, ...) and a second PARAMS stream. A second BEGIN_REQUEST for
 *     an active id is ignored as well: the live request goes on untouched,
 *     because answering END_REQUEST for that id would end the live one in the
 *     web server's eyes while the application still serves it.
 *   - Refusals of a new request are answered here, never seen by the
 *     callbacks' on_request: an unknown role (END_REQUEST UNKNOWN_ROLE), more
 *     live requests than the connection takes (CANT_MPX_CONN when it takes
 *     one, else OVERLOADED), PARAMS beyond the limit (a CGI answer "Status:
 *     431" with a JSON error, as HTTP answers large heads), malformed PARAMS
 *     (400 likewise). An ABORT_REQUEST before the request is ready is
 *     answered here too (END_REQUEST); after, it is the front end's
 *     (on_abort).
 *   - Malformed framing ends the connection (cg_fcgi_conn_feed() fails):
 *     a version other than 1, a BEGIN_REQUEST body that is not 8 bytes,
 *     malformed FCGI_GET_VALUES pairs, a connection that cannot be written.
 *
 * Memory per connection: at most one record's content (64 KiB), only while a
 * record arrives split across reads, plus each live request's parameters
 * (at most max_params_bytes, and their index). An idle connection with no
 * request holds no buffer. */
#ifndef CG_FCGI_PROTO_H
#define CG_FCGI_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define CG_FCGI_VERSION_1 1
#define CG_FCGI_HEADER_LEN 8
#define CG_FCGI_MAX_CONTENT 65535
#define CG_FCGI_MAX_PADDING 255
#define CG_FCGI_KEEP_CONN 1 /* BEGIN_REQUEST flags */

/* Default limits of a request's parameters (nginx sends ~1-2 KiB, 20-40 pairs). */
#define CG_FCGI_MAX_PARAMS_BYTES (64 * 1024)
#define CG_FCGI_MAX_PARAMS 1024

typedef enum {
    CG_FCGI_BEGIN_REQUEST = 1,
    CG_FCGI_ABORT_REQUEST = 2,
    CG_FCGI_END_REQUEST = 3,
    CG_FCGI_PARAMS = 4,
    CG_FCGI_STDIN = 5,
    CG_FCGI_STDOUT = 6,
    CG_FCGI_STDERR = 7,
    CG_FCGI_DATA = 8,
    CG_FCGI_GET_VALUES = 9,
    CG_FCGI_GET_VALUES_RESULT = 10,
    CG_FCGI_UNKNOWN_TYPE = 11
} cg_fcgi_type_t;

typedef enum { CG_FCGI_RESPONDER = 1, CG_FCGI_AUTHORIZER = 2, CG_FCGI_FILTER = 3 } cg_fcgi_role_t;

/* END_REQUEST's protocolStatus. */
typedef enum {
    CG_FCGI_REQUEST_COMPLETE = 0,
    CG_FCGI_CANT_MPX_CONN = 1,
    CG_FCGI_OVERLOADED = 2,
    CG_FCGI_UNKNOWN_ROLE = 3
} cg_fcgi_status_t;

/* ---- records ---- */

typedef struct cg_fcgi_record {
    uint8_t version; /* always CG_FCGI_VERSION_1: any other fails the parse */
    uint8_t type;
    uint16_t request_id;
    const uint8_t *content; /* borrowed: valid until the next cg_fcgi_parse() */
    uint16_t content_len;
    uint8_t padding_len; /* skipped by the parser */
} cg_fcgi_record_t;

/* The incremental parser. Embed it and zero it (or cg_fcgi_parser_init());
 * the fields are its own. */
typedef struct cg_fcgi_parser {
    uint8_t hdr[CG_FCGI_HEADER_LEN];
    size_t hdr_have;  /* header bytes received of the current record */
    bool in_content;  /* the header is complete, its content is arriving */
    uint8_t *buf;     /* content gathered across reads (malloc), else NULL */
    size_t buf_have;  /* bytes of it received */
    bool buf_yielded; /* buf was handed out: free it on the next call */
    size_t pad_left;  /* padding still to skip, after the last record */
    bool failed;      /* a protocol error: every later call fails */
} cg_fcgi_parser_t;

void cg_fcgi_parser_init(cg_fcgi_parser_t *p);
/* Frees what the parser holds; it can be initialised again. */
void cg_fcgi_parser_clear(cg_fcgi_parser_t *p);

/* Consumes bytes of data[0..len) up to the end of the next record. Returns 1
 * with *rec (content in data itself when the record came whole, else in the
 * parser's buffer) and *used the bytes consumed; 0 when every byte is consumed
 * and no record is complete (*used == len); -1 on a protocol error, with a
 * message in err: the connection must be closed. Padding is skipped after its
 * record has been returned. */
int cg_fcgi_parse(cg_fcgi_parser_t *p, const uint8_t *data, size_t len, size_t *used,
                  cg_fcgi_record_t *rec, char *err, size_t errlen);

/* True between records' bytes: a peer that closes now has cut a record short. */
bool cg_fcgi_parser_mid_record(const cg_fcgi_parser_t *p);
/* Bytes the parser holds on the heap (a record's content split across reads). */
size_t cg_fcgi_parser_memory(const cg_fcgi_parser_t *p);

/* ---- name-value pairs ---- */

typedef struct cg_fcgi_nv {
    const uint8_t *name; /* borrowed from the decoded data */
    size_t name_len;
    const uint8_t *value;
    size_t value_len;
} cg_fcgi_nv_t;

/* Decodes the pair at the start of data[0..len) (1- or 4-byte lengths, by the
 * high bit). Returns 1 with *nv and *used (header and both strings), or 0 when
 * the pair does not fit in len bytes: its lengths, or the lengths' bytes, run
 * past the data. Lengths are up to 2^31-1: checked, never trusted. */
int cg_fcgi_nv_decode(const uint8_t *data, size_t len, cg_fcgi_nv_t *nv, size_t *used);
/* The pair's encoded size; 0 when a length exceeds 2^31-1. */
size_t cg_fcgi_nv_size(size_t name_len, size_t value_len);
/* Writes the pair into out when it fits in cap bytes. Returns its size (as
 * cg_fcgi_nv_size(), whether written or not). */
size_t cg_fcgi_nv_encode(uint8_t *out, size_t cap, const void *name, size_t name_len,
                         const void *value, size_t value_len);

/* ---- a request's parameters ---- */

typedef struct cg_fcgi_param {
    const char *name; /* NUL-terminated; name_len bytes before the NUL */
    size_t name_len;
    const char *value; /* NUL-terminated; may hold NULs itself: value_len is the truth */
    size_t value_len;
} cg_fcgi_param_t;

/* A ready request's parameters, in the order sent. Owned by the connection:
 * valid until the request ends (cg_fcgi_conn_end_request()) or its
 * parameters are dropped (cg_fcgi_conn_drop_params()). */
typedef struct cg_fcgi_params {
    const cg_fcgi_param_t *items;
    size_t count;
} cg_fcgi_params_t;

/* The value of the first parameter named `name` (exact, case-sensitive:
 * "REQUEST_METHOD", "HTTP_LAST_EVENT_ID"...), or NULL. *value_len when not NULL. */
const char *cg_fcgi_params_get(const cg_fcgi_params_t *params, const char *name, size_t *value_len);

/* What HTTP routing needs from a request's parameters. */
typedef struct cg_fcgi_target {
    const char *method; /* REQUEST_METHOD (borrowed) */
    char *path;         /* owned: percent-decoded, as libmicrohttpd hands its URL over */
    const char *query;  /* borrowed: QUERY_STRING or what follows '?' in REQUEST_URI, raw; "" */
} cg_fcgi_target_t;

/* Fills *t: the path from REQUEST_URI (up to '?', decoded), else SCRIPT_NAME
 * followed by PATH_INFO (the web server decoded those). Returns 0, or -1 with a
 * message in err (no method, no path, a path not starting with '/' or holding
 * %00); *t needs cg_fcgi_target_clear() only on success. */
int cg_fcgi_params_target(const cg_fcgi_params_t *params, cg_fcgi_target_t *t, char *err,
                          size_t errlen);
void cg_fcgi_target_clear(cg_fcgi_target_t *t);

/* ---- a connection ---- */

typedef struct cg_fcgi_limits {
    unsigned max_conns; /* answered for FCGI_MAX_CONNS */
    unsigned max_reqs;  /* answered for FCGI_MAX_REQS */
    /* Live requests on one connection; beyond, new ones are refused. 1 means
     * no multiplexing: FCGI_MPXS_CONNS is answered "0", refusals are
     * CANT_MPX_CONN; above 1 it is "1" and refusals are OVERLOADED. 0: 1. */
    unsigned max_reqs_per_conn;
    size_t max_params_bytes; /* a request's PARAMS stream; 0: CG_FCGI_MAX_PARAMS_BYTES */
    unsigned max_params;     /* pairs in it; 0: CG_FCGI_MAX_PARAMS */
} cg_fcgi_limits_t;

/* How the connection reports to the front end. Called from within
 * cg_fcgi_conn_feed() only. A callback may call cg_fcgi_conn_end_request()
 * and cg_fcgi_conn_drop_params() for any id, never cg_fcgi_conn_feed() or
 * cg_fcgi_conn_free(). */
typedef struct cg_fcgi_callbacks {
    /* A request's parameters are complete: route it (see
     * cg_fcgi_params_target()), then write its STDOUT and end it with
     * cg_fcgi_conn_end_request(), now or later. keep_conn false: the web
     * server leaves closing the connection to the application (see
     * cg_fcgi_conn_should_close()). */
    void (*on_request)(void *ctx, uint16_t request_id, const cg_fcgi_params_t *params,
                       bool keep_conn);
    /* The web server aborts a ready request (its client left): end it with
     * cg_fcgi_conn_end_request() as soon as possible. Once per request. */
    void (*on_abort)(void *ctx, uint16_t request_id);
    /* Bytes the connection answers by itself (management records, refusals,
     * cg_fcgi_conn_end_request()): append them to the connection's output, in
     * order with the front end's own STDOUT records. Returns 0, or -1 when they
     * cannot be queued: the connection is then failed. */
    int (*on_write)(void *ctx, const void *bytes, size_t len);
    /* Optional (NULL): a new request was refused here, for the log and metrics. */
    void (*on_refused)(void *ctx, uint16_t request_id, const char *why);
} cg_fcgi_callbacks_t;

typedef struct cg_fcgi_conn cg_fcgi_conn_t;

/* Copies limits and callbacks (on_request, on_abort, on_write are required).
 * Returns NULL when out of memory. */
cg_fcgi_conn_t *cg_fcgi_conn_new(const cg_fcgi_limits_t *limits, const cg_fcgi_callbacks_t *cb,
                                 void *ctx);
/* Frees the connection and every request state; writes nothing. NULL is fine. */
void cg_fcgi_conn_free(cg_fcgi_conn_t *c);

/* Processes bytes read from the web server, any number, cut anywhere.
 * Returns 0, or -1 with a message in err: a protocol error or a failed write;
 * the front end closes the connection, and every later call fails. */
int cg_fcgi_conn_feed(cg_fcgi_conn_t *c, const void *data, size_t len, char *err, size_t errlen);

/* Ends a ready request: with CG_FCGI_REQUEST_COMPLETE, the empty STDOUT record
 * that ends its output and END_REQUEST {app_status, REQUEST_COMPLETE}; with a
 * refusal status (e.g. CG_FCGI_OVERLOADED when the front end is full),
 * END_REQUEST alone. Written through on_write; the id becomes inactive and
 * its parameters are freed. Returns 0, or -1 when the id is not active or
 * the write failed (or an earlier one did: then nothing is written, but the
 * id becomes inactive all the same). */
int cg_fcgi_conn_end_request(cg_fcgi_conn_t *c, uint16_t request_id, uint32_t app_status,
                             cg_fcgi_status_t protocol_status);
/* Frees a ready request's parameters once routed (long-lived streams need
 * them no more); the request stays active. */
void cg_fcgi_conn_drop_params(cg_fcgi_conn_t *c, uint16_t request_id);

/* True once a request without FCGI_KEEP_CONN has been answered and no request
 * is active: flush the output, then close. */
bool cg_fcgi_conn_should_close(const cg_fcgi_conn_t *c);
/* True when the web server has closed mid-record if it closes now. */
bool cg_fcgi_conn_mid_record(const cg_fcgi_conn_t *c);
/* Active requests (begun, not ended), ready or not. */
size_t cg_fcgi_conn_active(const cg_fcgi_conn_t *c);
bool cg_fcgi_conn_is_active(const cg_fcgi_conn_t *c, uint16_t request_id);
/* Records ignored as the specification says (inactive ids, a second
 * BEGIN_REQUEST for an active id, types a Responder never gets). */
uint64_t cg_fcgi_conn_ignored(const cg_fcgi_conn_t *c);
/* Heap bytes the connection holds for buffers (parser and parameters). */
size_t cg_fcgi_conn_memory(const cg_fcgi_conn_t *c);

/* ---- encoding what the application sends ---- */

/* Padding that brings len bytes of content to a multiple of 8 (0..7). */
static inline unsigned cg_fcgi_padding_for(size_t content_len)
{
    return (unsigned)((8 - content_len % 8) % 8);
}

/* Zeros, to send as padding. */
extern const uint8_t cg_fcgi_padding[8];

/* Writes a record header. */
void cg_fcgi_encode_header(uint8_t out[CG_FCGI_HEADER_LEN], uint8_t type, uint16_t request_id,
                           uint16_t content_len, uint8_t padding_len);

/* The header of one STDOUT record of content_len bytes, for the front end to
 * send with writev: the header, the content itself (not copied), then the
 * returned number of bytes of cg_fcgi_padding (0 when pad is false). */
unsigned cg_fcgi_stdout_header(uint8_t hdr[CG_FCGI_HEADER_LEN], uint16_t request_id,
                               uint16_t content_len, bool pad);

/* STDOUT records needed for len bytes (split at 65535); 0 for 0 bytes. */
size_t cg_fcgi_stdout_records(size_t len);
/* Lays len bytes at data out as STDOUT records for writev, without copying
 * them: per record its header (written into hdrs[i]), its slice of data and,
 * when pad, its padding (pointing at cg_fcgi_padding). Needs
 * cg_fcgi_stdout_records(len) headers and at most 3 iovecs per record; the
 * iovecs point into hdrs and data. Returns the iovecs filled, 0 when len is 0
 * or hdrs or iov are too small. */
size_t cg_fcgi_stdout_iov(uint16_t request_id, const void *data, size_t len, bool pad,
                          uint8_t (*hdrs)[CG_FCGI_HEADER_LEN], size_t nhdrs, struct iovec *iov,
                          size_t niov);

/* Copying encoders into out[0..cap). Each returns the bytes the records take
 * and writes them only when they fit (check: result <= cap). */
/* One record; 0 (nothing written) when len > CG_FCGI_MAX_CONTENT. */
size_t cg_fcgi_encode_record(uint8_t *out, size_t cap, uint8_t type, uint16_t request_id,
                             const void *content, size_t len, bool pad);
/* len bytes as STDOUT records, split at 65535; nothing for 0 bytes (the empty
 * record that ends the stream is cg_fcgi_encode_stdout_end()). */
size_t cg_fcgi_encode_stdout(uint8_t *out, size_t cap, uint16_t request_id, const void *data,
                             size_t len, bool pad);
/* One record of name-value pairs (PARAMS, GET_VALUES, GET_VALUES_RESULT);
 * 0 (nothing written) when they exceed one record's content. */
size_t cg_fcgi_encode_pairs(uint8_t *out, size_t cap, uint8_t type, uint16_t request_id,
                            const cg_fcgi_nv_t *pairs, size_t count, bool pad);

/* Fixed-size records. */
#define CG_FCGI_STDOUT_END_LEN 8
#define CG_FCGI_END_REQUEST_LEN 16
#define CG_FCGI_UNKNOWN_TYPE_LEN 16
void cg_fcgi_encode_stdout_end(uint8_t out[CG_FCGI_STDOUT_END_LEN], uint16_t request_id);
void cg_fcgi_encode_end_request(uint8_t out[CG_FCGI_END_REQUEST_LEN], uint16_t request_id,
                                uint32_t app_status, cg_fcgi_status_t protocol_status);
void cg_fcgi_encode_unknown_type(uint8_t out[CG_FCGI_UNKNOWN_TYPE_LEN], uint8_t type);

/* The GET_VALUES_RESULT record answering a GET_VALUES query's content
 * (name-value pairs, values ignored): FCGI_MAX_CONNS, FCGI_MAX_REQS and
 * FCGI_MPXS_CONNS from limits, each at most once, in the order asked; unknown
 * names omitted. Returns the bytes written (at most cap; 256 always suffice),
 * or 0 when the query's pairs are malformed or cap is too small. */
size_t cg_fcgi_encode_get_values_result(uint8_t *out, size_t cap, const cg_fcgi_limits_t *limits,
                                        const uint8_t *query, size_t query_len);

/* A growable output buffer for the copying encoders. Zero it to start. */
typedef struct cg_fcgi_buf {
    uint8_t *data; /* owned (malloc) */
    size_t len, cap;
} cg_fcgi_buf_t;

/* Each appends, or returns -1 (buffer unchanged) when out of memory. */
int cg_fcgi_buf_stdout(cg_fcgi_buf_t *b, uint16_t request_id, const void *data, size_t len,
                       bool pad);
int cg_fcgi_buf_stdout_end(cg_fcgi_buf_t *b, uint16_t request_id);
int cg_fcgi_buf_end_request(cg_fcgi_buf_t *b, uint16_t request_id, uint32_t app_status,
                            cg_fcgi_status_t protocol_status);
int cg_fcgi_buf_record(cg_fcgi_buf_t *b, uint8_t type, uint16_t request_id, const void *content,
                       size_t len, bool pad);
void cg_fcgi_buf_free(cg_fcgi_buf_t *b);

#endif
