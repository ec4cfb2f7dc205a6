/* request.h: a subscriber request, validated, independent of the transport.
 *
 * A front end feeds the method, path, query parameters and the two headers
 * that matter (Last-Event-ID, Accept) into a cg_request_t; on any problem the
 * request holds the HTTP status and a JSON error body to send. HTTP and
 * FastCGI thus accept and refuse exactly the same things. */
#ifndef CG_REQUEST_H
#define CG_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include <bson/bson.h>

#include "filter.h"
#include "project.h"

typedef enum {
    CG_EP_EVENTS = 1, /* GET /events: SSE or NDJSON */
    CG_EP_POLL,       /* GET /poll: long-poll */
    CG_EP_HEALTHZ,    /* GET /healthz */
    CG_EP_METRICS     /* GET /metrics */
} cg_endpoint_t;

#define CG_POLL_TIMEOUT_DEFAULT 25
#define CG_POLL_TIMEOUT_MAX 120
#define CG_POLL_LIMIT_DEFAULT 100
#define CG_POLL_LIMIT_MAX 1000

typedef struct cg_request {
    cg_endpoint_t endpoint;
    cg_filter_t *filter;   /* owned; compiled by cg_request_finish(); take with _take_filter() */
    cg_project_t *project; /* `fields`, or NULL; take with cg_request_take_project() */
    char *position;        /* where to resume after (header wins over parameter); NULL: now */
    bool ndjson;
    unsigned timeout_s, limit;

    int status;            /* 0 while valid; else the HTTP status to answer */
    char error[32];        /* error code, e.g. "unknown_parameter" */
    char message[512];     /* for a person */
    const char *allow;     /* for 405: the Allow header */
    char *origin;          /* the CORS origin to echo (cg_request_cors()), or NULL */
    bool access_token_ok;  /* set before the parameters: access_token is accepted */
    char *access_token;    /* its value (never logged), or NULL */
    bool www_authenticate; /* a 401: answer with WWW-Authenticate: Bearer */
    bool origin_credentials;

    /* internal */
    char *param_position;
    bool seen_format, seen_timeout, seen_limit, seen_position, seen_fields, seen_access_token;
} cg_request_t;

/* Routes method and path. Returns 0, or -1 with the error set (404/405). */
int cg_request_init(cg_request_t *req, const char *method, const char *path);
/* Each query parameter in turn (repeats allowed for ns). 0, or -1 with error. */
int cg_request_param(cg_request_t *req, const char *name, const char *value);
/* The same with lengths: a name or value holding a NUL byte (%00) is a 400
 * rather than silently cut short. value may be NULL (a name without '='). */
int cg_request_param_n(cg_request_t *req, const char *name, size_t name_len, const char *value,
                       size_t value_len);
/* Every parameter of a raw query string (what follows '?'), split and
 * decoded exactly as libmicrohttpd does for the HTTP front end ('&' between
 * parameters, '+' a space, %HH a byte). 0, or -1 with the error set. */
int cg_request_query(cg_request_t *req, const char *query, size_t len);
/* Checks a request's Origin header (NULL: none) against the allowed origins
 * (--cors-origin). Sets req->origin when the answer should carry CORS headers;
 * returns false with a 403 set when the origin is not allowed. */
bool cg_request_cors(cg_request_t *req, char *const *allowed, size_t n, const char *origin);
/* Applies what a token allows (access.c) before cg_request_finish(): rule
 * (copied; NULL: none) is ANDed with the filter on the event's subject, and
 * the projection is limited to fields (NULL: no limit). 0, or -1 with the
 * error set (403 when `fields` asks for more than the token allows). */
int cg_request_grant(cg_request_t *req, const bson_t *rule, const char *fields);
/* A long-poll's answer is CG_POLL_PREFIX, the events' shared JSON bytes
 * separated by commas, and a suffix naming the position to poll from next
 * (NULL: none known yet): a new string (bson_free()). Both front ends send the
 * events' bytes without copying them, so the answer is assembled by them. */
#define CG_POLL_PREFIX "{\"events\":["
char *cg_request_poll_suffix(const char *last_position);
/* The answer's length in bytes (its Content-Length). */
size_t cg_request_poll_length(const cg_frames_t *const *frames, size_t n, const char *suffix);
/* The 410 body of a long-poll whose position cannot be continued:
 * {"error":"history_lost",...,"lastEventId":position}. A new string (free()). */
char *cg_request_history_lost_json(const char *reason, const char *position);
/* Call once with the headers' values (NULL when absent), after all parameters.
 * Validates the position and compiles the filter. 0, or -1 with error. */
int cg_request_finish(cg_request_t *req, const char *last_event_id, const char *accept);
/* Sets an error (status, code, printf-style message); returns -1. */
int cg_request_fail(cg_request_t *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The error body {"error":...,"message":...}, a new string (free()). */
char *cg_request_error_json(const cg_request_t *req);
cg_filter_t *cg_request_take_filter(cg_request_t *req);
cg_project_t *cg_request_take_project(cg_request_t *req);
void cg_request_clear(cg_request_t *req);

#endif
