/* request.c: parameter and header validation shared by every front end. */
#include "request.h"

#include <bson/bson.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "position.h"

int cg_request_fail(cg_request_t *req, int status, const char *code, const char *fmt, ...)
{
    if (req->status) /* keep the first problem */
        return -1;
    req->status = status;
    snprintf(req->error, sizeof req->error, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(req->message, sizeof req->message, fmt, ap);
    va_end(ap);
    /* Messages quote client input: keep them printable ASCII so the JSON
     * body is always valid UTF-8 and one line. */
    for (char *p = req->message; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    return -1;
}

int cg_request_init(cg_request_t *req, const char *method, const char *path)
{
    memset(req, 0, sizeof *req);
    req->filter = cg_filter_new();
    req->timeout_s = CG_POLL_TIMEOUT_DEFAULT;
    req->limit = CG_POLL_LIMIT_DEFAULT;
    if (strcmp(path, "/events") == 0)
        req->endpoint = CG_EP_EVENTS;
    else if (strcmp(path, "/poll") == 0)
        req->endpoint = CG_EP_POLL;
    else if (strcmp(path, "/healthz") == 0)
        req->endpoint = CG_EP_HEALTHZ;
    else if (strcmp(path, "/metrics") == 0)
        req->endpoint = CG_EP_METRICS;
    else
        return cg_request_fail(
            req, 404, "not_found",
            "no such endpoint: %.200s (try /events, /poll, /healthz or /metrics)", path);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        req->allow = "GET, HEAD, OPTIONS";
        return cg_request_fail(req, 405, "method_not_allowed",
                               "method %.32s is not allowed on %s; use GET", method, path);
    }
    return 0;
}

/* Parses a decimal in [min, max]; -1 on anything else. */
static int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return -1;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int once(cg_request_t *req, bool *seen, const char *name)
{
    if (*seen)
        return cg_request_fail(req, 400, "invalid_parameter", "%s is given more than once", name);
    *seen = true;
    return 0;
}

int cg_request_param(cg_request_t *req, const char *name, const char *value)
{
    char err[512];
    value = value ? value : "";
    if (strcmp(name, "ns") == 0) {
        if (cg_filter_add_ns(req->filter, value, err, sizeof err) != 0)
            return cg_request_fail(req, 400, "invalid_parameter", "%s", err);
    } else if (strcmp(name, "op") == 0) {
        if (cg_filter_add_ops(req->filter, value, err, sizeof err) != 0)
            return cg_request_fail(req, 400, "invalid_parameter", "%s", err);
    } else if (strcmp(name, "id") == 0) {
        if (cg_filter_add_id(req->filter, value, err, sizeof err) != 0)
            return cg_request_fail(req, 400, "invalid_parameter", "%s", err);
    } else if (strcmp(name, "filter") == 0) {
        if (cg_filter_set_query(req->filter, value, err, sizeof err) != 0)
            return cg_request_fail(req, 400, "invalid_filter", "%s", err);
    } else if (strcmp(name, "fields") == 0) {
        if (once(req, &req->seen_fields, name) != 0)
            return -1;
        req->project = cg_project_new(value, err, sizeof err);
        if (!req->project)
            return cg_request_fail(req, 400, "invalid_parameter", "%s", err);
    } else if (strcmp(name, "lastEventId") == 0) {
        if (once(req, &req->seen_position, name) != 0)
            return -1;
        req->param_position = bson_strdup(value);
    } else if (strcmp(name, "access_token") == 0 && req->access_token_ok &&
               req->endpoint != CG_EP_HEALTHZ && req->endpoint != CG_EP_METRICS) {
        if (once(req, &req->seen_access_token, name) != 0)
            return -1;
        req->access_token = bson_strdup(value);
    } else if (strcmp(name, "format") == 0 && req->endpoint == CG_EP_EVENTS) {
        if (once(req, &req->seen_format, name) != 0)
            return -1;
        if (strcmp(value, "ndjson") == 0)
            req->ndjson = true;
        else if (strcmp(value, "sse") != 0)
            return cg_request_fail(req, 400, "invalid_parameter",
                                   "format must be sse or ndjson, not '%.64s'", value);
    } else if (strcmp(name, "timeout") == 0 && req->endpoint == CG_EP_POLL) {
        if (once(req, &req->seen_timeout, name) != 0)
            return -1;
        if (parse_uint(value, 0, CG_POLL_TIMEOUT_MAX, &req->timeout_s) != 0)
            return cg_request_fail(req, 400, "invalid_parameter",
                                   "timeout must be a whole number of seconds from 0 to %d",
                                   CG_POLL_TIMEOUT_MAX);
    } else if (strcmp(name, "limit") == 0 && req->endpoint == CG_EP_POLL) {
        if (once(req, &req->seen_limit, name) != 0)
            return -1;
        if (parse_uint(value, 1, CG_POLL_LIMIT_MAX, &req->limit) != 0)
            return cg_request_fail(req, 400, "invalid_parameter",
                                   "limit must be a whole number from 1 to %d", CG_POLL_LIMIT_MAX);
    } else {
        return cg_request_fail(req, 400, "unknown_parameter",
                               "unknown query parameter '%.64s' for this endpoint", name);
    }
    return 0;
}

static int check_position(cg_request_t *req, const char *pos, const char *what)
{
    bson_t token;
    char err[256];
    if (cg_position_to_token(pos, &token, err, sizeof err) != 0)
        return cg_request_fail(req, 400, "invalid_position", "%s is not a valid position: %s", what,
                               err);
    bson_destroy(&token);
    return 0;
}

int cg_request_finish(cg_request_t *req, const char *last_event_id, const char *accept)
{
    if (req->status)
        return -1;
    /* An empty value means "no position" (what EventSource has before any id). */
    if (req->param_position && *req->param_position &&
        check_position(req, req->param_position, "the lastEventId parameter") != 0)
        return -1;
    if (last_event_id && *last_event_id &&
        check_position(req, last_event_id, "the Last-Event-ID header") != 0)
        return -1;
    const char *pos = last_event_id && *last_event_id ? last_event_id : req->param_position;
    req->position = pos && *pos ? bson_strdup(pos) : NULL;
    if (req->endpoint == CG_EP_EVENTS && !req->seen_format && accept &&
        strstr(accept, "application/x-ndjson"))
        req->ndjson = true;
    char err[512];
    if (cg_filter_compile(req->filter, err, sizeof err) != 0)
        return cg_request_fail(req, 400, "invalid_filter", "%s", err);
    return 0;
}

char *cg_request_error_json(const cg_request_t *req)
{
    json_t *body = json_pack("{s:s, s:s}", "error", req->error, "message", req->message);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}

cg_project_t *cg_request_take_project(cg_request_t *req)
{
    cg_project_t *p = req->project;
    req->project = NULL;
    return p;
}

cg_filter_t *cg_request_take_filter(cg_request_t *req)
{
    cg_filter_t *f = req->filter;
    req->filter = NULL;
    return f;
}

void cg_request_clear(cg_request_t *req)
{
    cg_filter_free(req->filter);
    cg_project_free(req->project);
    req->project = NULL;
    bson_free(req->position);
    bson_free(req->param_position);
    bson_free(req->origin);
    req->origin = NULL;
    bson_free(req->access_token);
    req->access_token = NULL;
    req->filter = NULL;
    req->position = req->param_position = NULL;
}

int cg_request_param_n(cg_request_t *req, const char *name, size_t name_len, const char *value,
                       size_t value_len)
{
    if (strlen(name) != name_len || (value && strlen(value) != value_len))
        return cg_request_fail(req, 400,
                               strcmp(name, "lastEventId") == 0 ? "invalid_position"
                               : strcmp(name, "filter") == 0    ? "invalid_filter"
                                                                : "invalid_parameter",
                               "query parameter '%.64s' holds a NUL byte (%%00)", name);
    return cg_request_param(req, name, value);
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes s[0..len) in place the way libmicrohttpd 0.9.75 decodes query
 * arguments: '+' is a space, %HH a byte, a '%' not followed by two hex
 * digits stays as it is. Returns the new length (a NUL is written after). */
static size_t unescape_arg(char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int hi, lo;
        if (s[i] == '+') {
            s[o++] = ' ';
        } else if (s[i] == '%' && i + 2 < len && (hi = hex_digit(s[i + 1])) >= 0 &&
                   (lo = hex_digit(s[i + 2])) >= 0) {
            s[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            s[o++] = s[i];
        }
    }
    s[o] = '\0';
    return o;
}

int cg_request_query(cg_request_t *req, const char *query, size_t len)
{
    if (!len)
        return req->status ? -1 : 0;
    char *copy = bson_malloc(len + 1);
    memcpy(copy, query, len);
    copy[len] = '\0';
    int rc = 0;
    char *p = copy, *end = copy + len;
    while (rc == 0 && p <= end) {
        char *amp = memchr(p, '&', (size_t)(end - p));
        char *stop = amp ? amp : end;
        char *eq = memchr(p, '=', (size_t)(stop - p));
        size_t klen = unescape_arg(p, (size_t)((eq ? eq : stop) - p));
        if (eq) {
            size_t vlen = unescape_arg(eq + 1, (size_t)(stop - eq - 1));
            rc = cg_request_param_n(req, p, klen, eq + 1, vlen);
        } else {
            rc = cg_request_param_n(req, p, klen, NULL, 0);
        }
        if (!amp)
            break;
        p = amp + 1;
    }
    bson_free(copy);
    return rc;
}

bool cg_request_cors(cg_request_t *req, char *const *allowed, size_t n, const char *origin)
{
    if (!origin)
        return true;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(allowed[i], origin) == 0) {
            req->origin = bson_strdup(origin);
            req->origin_credentials = true;
            return true;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(allowed[i], "*") == 0) {
            req->origin = bson_strdup("*");
            return true;
        }
    }
    cg_request_fail(req, 403, "origin_not_allowed",
                    "origin %.200s is not allowed (see --cors-origin)", origin);
    return false;
}

char *cg_request_history_lost_json(const char *reason, const char *position)
{
    char *msg = bson_strdup_printf("continuity cannot be kept from the given position (%s); "
                                   "continue from lastEventId",
                                   reason);
    json_t *body = json_pack("{s:s, s:s, s:s, s:s?}", "error", "history_lost", "message", msg,
                             "reason", reason, "lastEventId", position);
    bson_free(msg);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}

struct outside {
    const cg_project_t *allowed;
    char *path; /* the first path outside it */
};

static bool path_outside(const char *path, void *ctx)
{
    struct outside *o = ctx;
    if (cg_project_covers(o->allowed, path))
        return true;
    o->path = bson_strdup(path);
    return false;
}

int cg_request_grant(cg_request_t *req, const bson_t *rule, const char *fields)
{
    char err[512];
    if (rule && cg_filter_set_rule(req->filter, rule, err, sizeof err) != 0)
        return cg_request_fail(req, 403, "invalid_token_filter", "%s", err);
    if (!fields)
        return 0;
    cg_project_t *allowed = cg_project_new(fields, err, sizeof err);
    if (!allowed)
        return cg_request_fail(req, 403, "invalid_token_fields", "the token's fields: %s", err);
    /* A filter on a field the token hides would reveal it by which events
     * arrive: a filter may only look at what the client may see. */
    struct outside ctx = {allowed, NULL};
    cg_filter_query_paths(req->filter, path_outside, &ctx);
    if (ctx.path) {
        cg_request_fail(req, 403, "field_not_allowed",
                        "filter: '%.200s' is not within the fields the token allows", ctx.path);
        bson_free(ctx.path);
        cg_project_free(allowed);
        return -1;
    }
    cg_project_t *both = NULL;
    int rc = cg_project_restrict(req->project, allowed, &both, err, sizeof err);
    cg_project_free(allowed);
    if (rc != 0)
        return cg_request_fail(req, 403, "field_not_allowed", "%s", err);
    cg_project_free(req->project);
    req->project = both;
    return 0;
}

char *cg_request_poll_suffix(const char *last_position)
{
    return last_position ? bson_strdup_printf("],\"lastEventId\":\"%s\"}", last_position)
                         : bson_strdup("],\"lastEventId\":null}");
}

size_t cg_request_poll_length(const cg_frames_t *const *frames, size_t n, const char *suffix)
{
    size_t total = sizeof CG_POLL_PREFIX - 1 + strlen(suffix) + (n ? n - 1 : 0);
    for (size_t i = 0; i < n; i++)
        total += frames[i]->json_len;
    return total;
}
