/* fcgi_proto.c: the FastCGI 1.0 protocol, transport-free (see fcgi_proto.h).
 *
 * The parser hands out each record's content where it lies: in the caller's
 * bytes when the record came whole (the usual case), in a buffer of exactly
 * the content's length only when it was split across reads. That buffer is
 * freed as soon as its record has been handled, so an idle connection, which
 * is what a long-lived stream's connection is, holds none.
 *
 * A request's PARAMS stream is kept as sent until it ends, its pairs checked
 * as they complete (a length beyond the limit is refused at once, not when
 * the bytes have come), then rewritten in place as NUL-terminated names and
 * values: every pair loses at least two length bytes and gains two NULs, so
 * the rewrite never overtakes what it reads and needs no second buffer. */
#include "fcgi_proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NV_MAX_LEN 0x7fffffffu /* a 4-byte length's 31 bits */
#define PARAMS_INITIAL 1024    /* first allocation of a PARAMS buffer */

const uint8_t cg_fcgi_padding[8] = {0};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* ---- records ---- */

void cg_fcgi_parser_init(cg_fcgi_parser_t *p)
{
    memset(p, 0, sizeof *p);
}

void cg_fcgi_parser_clear(cg_fcgi_parser_t *p)
{
    free(p->buf);
    memset(p, 0, sizeof *p);
}

static uint16_t be16(const uint8_t *b)
{
    return (uint16_t)(b[0] << 8 | b[1]);
}

int cg_fcgi_parse(cg_fcgi_parser_t *p, const uint8_t *data, size_t len, size_t *used,
                  cg_fcgi_record_t *rec, char *err, size_t errlen)
{
    size_t off = 0;
    *used = 0;
    if (p->failed) {
        set_err(err, errlen, "the connection already had a FastCGI protocol error");
        return -1;
    }
    /* The record handed out last is handled by now: its buffer goes. */
    if (p->buf_yielded) {
        free(p->buf);
        p->buf = NULL;
        p->buf_have = 0;
        p->buf_yielded = false;
    }
    if (p->pad_left) {
        size_t n = min_size(p->pad_left, len);
        p->pad_left -= n;
        off += n;
        if (p->pad_left)
            goto need_more;
    }
    if (!p->in_content) {
        size_t n = min_size(CG_FCGI_HEADER_LEN - p->hdr_have, len - off);
        if (n) {
            memcpy(p->hdr + p->hdr_have, data + off, n);
            p->hdr_have += n;
            off += n;
        }
        if (p->hdr_have < CG_FCGI_HEADER_LEN)
            goto need_more;
        if (p->hdr[0] != CG_FCGI_VERSION_1) {
            /* Nothing after a wrong version can be framed: garbage, TLS or
             * HTTP sent to the FastCGI port. */
            p->failed = true;
            *used = off;
            set_err(err, errlen, "FastCGI record version %u (only 1 exists)", p->hdr[0]);
            return -1;
        }
        p->in_content = true;
    }
    size_t clen = be16(p->hdr + 4);
    const uint8_t *content;
    if (!p->buf && len - off >= clen) {
        content = clen ? data + off : NULL;
        off += clen;
    } else {
        if (off == len)
            goto need_more; /* nothing of the content yet: nothing to hold */
        if (!p->buf) {
            p->buf = malloc(clen);
            if (!p->buf) {
                p->failed = true;
                *used = off;
                set_err(err, errlen, "out of memory for a FastCGI record");
                return -1;
            }
        }
        size_t n = min_size(clen - p->buf_have, len - off);
        memcpy(p->buf + p->buf_have, data + off, n);
        p->buf_have += n;
        off += n;
        if (p->buf_have < clen)
            goto need_more;
        content = p->buf;
        p->buf_yielded = true;
    }
    rec->version = p->hdr[0];
    rec->type = p->hdr[1];
    rec->request_id = be16(p->hdr + 2);
    rec->content = content;
    rec->content_len = (uint16_t)clen;
    rec->padding_len = p->hdr[6];
    p->pad_left = p->hdr[6];
    p->hdr_have = 0;
    p->in_content = false;
    *used = off;
    return 1;

need_more:
    *used = off;
    return 0;
}

bool cg_fcgi_parser_mid_record(const cg_fcgi_parser_t *p)
{
    return p->hdr_have > 0 || p->in_content || p->pad_left > 0;
}

size_t cg_fcgi_parser_memory(const cg_fcgi_parser_t *p)
{
    return p->buf ? be16(p->hdr + 4) : 0;
}

/* ---- name-value pairs ---- */

/* One length at d[*pos]: 1 byte when its high bit is clear, else 4 bytes
 * carrying 31 bits. Returns false when its bytes are not all in d[0..len). */
static bool nv_length(const uint8_t *d, size_t len, size_t *pos, size_t *out)
{
    if (*pos >= len)
        return false;
    if (!(d[*pos] & 0x80)) {
        *out = d[*pos];
        *pos += 1;
        return true;
    }
    if (len - *pos < 4)
        return false;
    const uint8_t *b = d + *pos;
    *out = (size_t)(b[0] & 0x7f) << 24 | (size_t)b[1] << 16 | (size_t)b[2] << 8 | b[3];
    *pos += 4;
    return true;
}

/* Both lengths of the pair at d; *hlen their bytes. False when they are not
 * all in d[0..len) yet. The strings themselves are not checked. */
static bool nv_lengths(const uint8_t *d, size_t len, size_t *nl, size_t *vl, size_t *hlen)
{
    size_t pos = 0;
    if (!nv_length(d, len, &pos, nl) || !nv_length(d, len, &pos, vl))
        return false;
    *hlen = pos;
    return true;
}

int cg_fcgi_nv_decode(const uint8_t *data, size_t len, cg_fcgi_nv_t *nv, size_t *used)
{
    size_t nl, vl, hl;
    if (!nv_lengths(data, len, &nl, &vl, &hl))
        return 0;
    /* Subtractions only: the lengths are up to 2^31-1 each. */
    if (nl > len - hl || vl > len - hl - nl)
        return 0;
    nv->name = data + hl;
    nv->name_len = nl;
    nv->value = data + hl + nl;
    nv->value_len = vl;
    *used = hl + nl + vl;
    return 1;
}

size_t cg_fcgi_nv_size(size_t name_len, size_t value_len)
{
    if (name_len > NV_MAX_LEN || value_len > NV_MAX_LEN)
        return 0;
    return (name_len > 127 ? 4 : 1) + (value_len > 127 ? 4 : 1) + name_len + value_len;
}

static uint8_t *put_nv_length(uint8_t *o, size_t n)
{
    if (n > 127) {
        *o++ = (uint8_t)(0x80 | (n >> 24));
        *o++ = (uint8_t)(n >> 16);
        *o++ = (uint8_t)(n >> 8);
    }
    *o++ = (uint8_t)n;
    return o;
}

size_t cg_fcgi_nv_encode(uint8_t *out, size_t cap, const void *name, size_t name_len,
                         const void *value, size_t value_len)
{
    size_t size = cg_fcgi_nv_size(name_len, value_len);
    if (size == 0 || size > cap)
        return size;
    uint8_t *o = put_nv_length(out, name_len);
    o = put_nv_length(o, value_len);
    if (name_len)
        memcpy(o, name, name_len);
    if (value_len)
        memcpy(o + name_len, value, value_len);
    return size;
}

/* ---- a request's parameters ---- */

const char *cg_fcgi_params_get(const cg_fcgi_params_t *params, const char *name, size_t *value_len)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < params->count; i++) {
        const cg_fcgi_param_t *p = &params->items[i];
        if (p->name_len == n && memcmp(p->name, name, n) == 0) {
            if (value_len)
                *value_len = p->value_len;
            return p->value;
        }
    }
    return NULL;
}

/* A parameter usable as a C string: present and without NULs of its own. */
static const char *param_str(const cg_fcgi_params_t *params, const char *name)
{
    size_t len;
    const char *v = cg_fcgi_params_get(params, name, &len);
    return v && strlen(v) == len ? v : NULL;
}

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Decodes %XX in s[0..len) into a new string the way libmicrohttpd decodes
 * its URLs (anything that is not % and two hex digits stays as it is), so a
 * path routes the same over both front ends. NULL when out of memory or when
 * a NUL would result: it would cut the path short behind the router's back. */
static char *percent_decode(const char *s, size_t len, bool *has_nul)
{
    char *out = malloc(len + 1);
    size_t w = 0;
    *has_nul = false;
    if (!out)
        return NULL;
    for (size_t r = 0; r < len; r++) {
        int hi, lo;
        if (s[r] == '%' && len - r > 2 && (hi = hex_value(s[r + 1])) >= 0 &&
            (lo = hex_value(s[r + 2])) >= 0) {
            out[w] = (char)(hi << 4 | lo);
            r += 2;
        } else {
            out[w] = s[r];
        }
        if (out[w++] == '\0') {
            *has_nul = true;
            free(out);
            return NULL;
        }
    }
    out[w] = '\0';
    return out;
}

int cg_fcgi_params_target(const cg_fcgi_params_t *params, cg_fcgi_target_t *t, char *err,
                          size_t errlen)
{
    memset(t, 0, sizeof *t);
    t->method = param_str(params, "REQUEST_METHOD");
    if (!t->method || !*t->method) {
        set_err(err, errlen, "the FastCGI request has no REQUEST_METHOD");
        return -1;
    }
    const char *uri = param_str(params, "REQUEST_URI");
    const char *qs = param_str(params, "QUERY_STRING");
    bool has_nul = false;
    if (uri && *uri) {
        const char *q = strchr(uri, '?');
        size_t plen = q ? (size_t)(q - uri) : strlen(uri);
        t->path = percent_decode(uri, plen, &has_nul);
        t->query = qs ? qs : q ? q + 1 : "";
    } else {
        /* The web server decoded these; they are the path as they are. */
        const char *script = param_str(params, "SCRIPT_NAME");
        const char *info = param_str(params, "PATH_INFO");
        size_t slen = script ? strlen(script) : 0, ilen = info ? strlen(info) : 0;
        if (slen + ilen == 0) {
            set_err(err, errlen, "the FastCGI request has no REQUEST_URI nor SCRIPT_NAME");
            return -1;
        }
        t->path = malloc(slen + ilen + 1);
        if (t->path) {
            memcpy(t->path, script ? script : "", slen);
            memcpy(t->path + slen, info ? info : "", ilen + 1);
        }
        t->query = qs ? qs : "";
    }
    if (!t->path) {
        set_err(err, errlen, has_nul ? "the request path holds %%00" : "out of memory");
        return -1;
    }
    if (t->path[0] != '/') {
        set_err(err, errlen, "the request path does not start with '/'");
        cg_fcgi_target_clear(t);
        return -1;
    }
    return 0;
}

void cg_fcgi_target_clear(cg_fcgi_target_t *t)
{
    free(t->path);
    memset(t, 0, sizeof *t);
}

/* ---- a connection ---- */

typedef struct fcgi_req {
    uint16_t id;
    bool keep_conn;
    bool ready;   /* the PARAMS stream ended; on_request has it */
    bool aborted; /* on_abort was called */
    /* The PARAMS stream as sent; once ready, its pairs NUL-terminated (owned). */
    uint8_t *params;
    size_t params_len, params_cap;
    size_t scan_off;        /* the pairs before this offset are complete */
    size_t pairs;           /* and this many */
    cg_fcgi_param_t *items; /* owned; the view's pairs, pointing into params */
    cg_fcgi_params_t view;
    struct fcgi_req *next;
} fcgi_req_t;

struct cg_fcgi_conn {
    cg_fcgi_parser_t parser;
    cg_fcgi_limits_t limits; /* defaults filled in */
    cg_fcgi_callbacks_t cb;
    void *ctx;
    fcgi_req_t *reqs; /* the active requests; a few, so a list */
    size_t active;
    bool close_pending; /* a request without KEEP_CONN was answered */
    bool failed;        /* protocol error or failed write: feed no more */
    uint64_t ignored;
};

cg_fcgi_conn_t *cg_fcgi_conn_new(const cg_fcgi_limits_t *limits, const cg_fcgi_callbacks_t *cb,
                                 void *ctx)
{
    cg_fcgi_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->limits = *limits;
    if (c->limits.max_reqs_per_conn == 0)
        c->limits.max_reqs_per_conn = 1;
    if (c->limits.max_params_bytes == 0)
        c->limits.max_params_bytes = CG_FCGI_MAX_PARAMS_BYTES;
    if (c->limits.max_params == 0)
        c->limits.max_params = CG_FCGI_MAX_PARAMS;
    c->cb = *cb;
    c->ctx = ctx;
    return c;
}

static void free_params(fcgi_req_t *r)
{
    free(r->params);
    free(r->items);
    r->params = NULL;
    r->items = NULL;
    r->params_len = r->params_cap = r->scan_off = r->pairs = 0;
    r->view.items = NULL;
    r->view.count = 0;
}

static void free_req(fcgi_req_t *r)
{
    free_params(r);
    free(r);
}

void cg_fcgi_conn_free(cg_fcgi_conn_t *c)
{
    if (!c)
        return;
    while (c->reqs) {
        fcgi_req_t *next = c->reqs->next;
        free_req(c->reqs);
        c->reqs = next;
    }
    cg_fcgi_parser_clear(&c->parser);
    free(c);
}

static fcgi_req_t *find_req(const cg_fcgi_conn_t *c, uint16_t id)
{
    for (fcgi_req_t *r = c->reqs; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

/* Makes the id inactive: unlinks and frees its state. */
static void retire(cg_fcgi_conn_t *c, fcgi_req_t *r)
{
    for (fcgi_req_t **pp = &c->reqs; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    c->active--;
    if (!r->keep_conn)
        c->close_pending = true;
    free_req(r);
}

static int emit(cg_fcgi_conn_t *c, const void *bytes, size_t len)
{
    if (c->cb.on_write(c->ctx, bytes, len) != 0) {
        c->failed = true;
        return -1;
    }
    return 0;
}

static void report_refusal(cg_fcgi_conn_t *c, uint16_t id, const char *why)
{
    if (c->cb.on_refused)
        c->cb.on_refused(c->ctx, id, why);
}

/* Refuses a request that never became active: END_REQUEST alone. */
static int refuse_new(cg_fcgi_conn_t *c, uint16_t id, bool keep_conn, cg_fcgi_status_t status,
                      const char *why)
{
    uint8_t out[CG_FCGI_END_REQUEST_LEN];
    cg_fcgi_encode_end_request(out, id, 0, status);
    if (!keep_conn)
        c->close_pending = true;
    report_refusal(c, id, why);
    return emit(c, out, sizeof out);
}

/* Answers an active request that is not ready with an HTTP error, the way
 * HTTP answers: a CGI "Status:" head and a JSON body {"error","message"}
 * (code and message are plain ASCII without quotes or backslashes), then ends
 * it. When even that answer cannot be made, END_REQUEST OVERLOADED. */
static int refuse_http(cg_fcgi_conn_t *c, fcgi_req_t *r, int status, const char *reason,
                       const char *code, const char *message)
{
    uint16_t id = r->id;
    bool keep_conn = r->keep_conn;
    char resp[512];
    int n = snprintf(resp, sizeof resp,
                     "Status: %d %s\r\nContent-Type: application/json\r\n"
                     "Cache-Control: no-cache\r\n\r\n{\"error\":\"%s\",\"message\":\"%s\"}",
                     status, reason, code, message);
    retire(c, r);
    cg_fcgi_buf_t b = {0};
    int rc;
    if (n > 0 && (size_t)n < sizeof resp &&
        cg_fcgi_buf_stdout(&b, id, resp, (size_t)n, true) == 0 &&
        cg_fcgi_buf_stdout_end(&b, id) == 0 &&
        cg_fcgi_buf_end_request(&b, id, 0, CG_FCGI_REQUEST_COMPLETE) == 0) {
        report_refusal(c, id, message);
        rc = emit(c, b.data, b.len);
    } else {
        rc = refuse_new(c, id, keep_conn, CG_FCGI_OVERLOADED, "out of memory");
    }
    cg_fcgi_buf_free(&b);
    return rc;
}

static int refuse_too_large(cg_fcgi_conn_t *c, fcgi_req_t *r)
{
    char message[96];
    snprintf(message, sizeof message,
             "the request's FastCGI parameters exceed %zu bytes or %u pairs",
             c->limits.max_params_bytes, c->limits.max_params);
    return refuse_http(c, r, 431, "Request Header Fields Too Large", "headers_too_large", message);
}

static int on_begin(cg_fcgi_conn_t *c, const cg_fcgi_record_t *rec, char *err, size_t errlen)
{
    if (rec->content_len != 8) {
        set_err(err, errlen, "FCGI_BEGIN_REQUEST with a body of %u bytes (8 expected)",
                rec->content_len);
        return -1;
    }
    uint16_t id = rec->request_id;
    unsigned role = be16(rec->content);
    bool keep_conn = rec->content[2] & CG_FCGI_KEEP_CONN;
    if (find_req(c, id)) {
        c->ignored++; /* see fcgi_proto.h: the live request goes on */
        return 0;
    }
    if (role != CG_FCGI_RESPONDER)
        return refuse_new(c, id, keep_conn, CG_FCGI_UNKNOWN_ROLE,
                          "a role other than Responder was asked for");
    if (c->active >= c->limits.max_reqs_per_conn) {
        if (c->limits.max_reqs_per_conn == 1)
            return refuse_new(c, id, keep_conn, CG_FCGI_CANT_MPX_CONN,
                              "a second request on a connection that takes one at a time");
        return refuse_new(c, id, keep_conn, CG_FCGI_OVERLOADED,
                          "more requests on one connection than it takes");
    }
    fcgi_req_t *r = calloc(1, sizeof *r);
    if (!r)
        return refuse_new(c, id, keep_conn, CG_FCGI_OVERLOADED, "out of memory");
    r->id = id;
    r->keep_conn = keep_conn;
    r->next = c->reqs;
    c->reqs = r;
    c->active++;
    return 0;
}

/* The PARAMS stream ended: check it is whole pairs, index them and hand the
 * request over. */
static int params_end(cg_fcgi_conn_t *c, fcgi_req_t *r)
{
    if (r->scan_off != r->params_len)
        return refuse_http(c, r, 400, "Bad Request", "bad_request",
                           "the request's FastCGI parameters are malformed: a name-value pair "
                           "runs past the end of the stream");
    if (r->pairs) {
        r->items = malloc(r->pairs * sizeof *r->items);
        if (!r->items) {
            uint16_t id = r->id;
            bool keep_conn = r->keep_conn;
            retire(c, r);
            return refuse_new(c, id, keep_conn, CG_FCGI_OVERLOADED, "out of memory");
        }
    }
    /* In place (see the top of this file): w never passes rd. */
    uint8_t *p = r->params;
    size_t rd = 0, w = 0;
    for (size_t i = 0; i < r->pairs; i++) {
        size_t nl, vl, hl;
        nv_lengths(p + rd, r->params_len - rd, &nl, &vl, &hl); /* complete: scanned */
        memmove(p + w, p + rd + hl, nl);
        p[w + nl] = '\0';
        memmove(p + w + nl + 1, p + rd + hl + nl, vl);
        p[w + nl + 1 + vl] = '\0';
        r->items[i] = (cg_fcgi_param_t){(char *)p + w, nl, (char *)p + w + nl + 1, vl};
        w += nl + vl + 2;
        rd += hl + nl + vl;
    }
    r->view.items = r->items;
    r->view.count = r->pairs;
    r->ready = true;
    c->cb.on_request(c->ctx, r->id, &r->view, r->keep_conn); /* may end r */
    return 0;
}

static int on_params(cg_fcgi_conn_t *c, fcgi_req_t *r, const cg_fcgi_record_t *rec)
{
    if (r->ready) {
        c->ignored++; /* a second PARAMS stream */
        return 0;
    }
    if (rec->content_len == 0)
        return params_end(c, r);
    size_t max = c->limits.max_params_bytes;
    if (rec->content_len > max - r->params_len)
        return refuse_too_large(c, r);
    if (r->params_len + rec->content_len > r->params_cap) {
        size_t cap = r->params_cap ? r->params_cap : PARAMS_INITIAL;
        while (cap < r->params_len + rec->content_len)
            cap *= 2;
        cap = min_size(cap, max);
        uint8_t *np = realloc(r->params, cap);
        if (!np) {
            uint16_t id = r->id;
            bool keep_conn = r->keep_conn;
            retire(c, r);
            return refuse_new(c, id, keep_conn, CG_FCGI_OVERLOADED, "out of memory");
        }
        r->params = np;
        r->params_cap = cap;
    }
    memcpy(r->params + r->params_len, rec->content, rec->content_len);
    r->params_len += rec->content_len;
    /* Check the pairs completed so far; a pair declared longer than the limit
     * is refused now, before its bytes come. 64-bit sums: two 31-bit lengths. */
    for (;;) {
        size_t nl, vl, hl;
        if (!nv_lengths(r->params + r->scan_off, r->params_len - r->scan_off, &nl, &vl, &hl))
            break;
        uint64_t end = (uint64_t)r->scan_off + hl + nl + vl;
        if (end > max)
            return refuse_too_large(c, r);
        if (end > r->params_len)
            break;
        if (++r->pairs > c->limits.max_params)
            return refuse_too_large(c, r);
        r->scan_off = (size_t)end;
    }
    return 0;
}

static int on_abort_request(cg_fcgi_conn_t *c, fcgi_req_t *r)
{
    if (!r->ready) {
        /* The front end never saw it: the answer the specification asks for
         * is given here. */
        uint16_t id = r->id;
        uint8_t out[CG_FCGI_END_REQUEST_LEN];
        cg_fcgi_encode_end_request(out, id, 0, CG_FCGI_REQUEST_COMPLETE);
        retire(c, r);
        return emit(c, out, sizeof out);
    }
    if (r->aborted) {
        c->ignored++;
        return 0;
    }
    r->aborted = true;
    c->cb.on_abort(c->ctx, r->id); /* may end r */
    return 0;
}

static int on_management(cg_fcgi_conn_t *c, const cg_fcgi_record_t *rec, char *err, size_t errlen)
{
    if (rec->type == CG_FCGI_GET_VALUES) {
        uint8_t out[256];
        size_t n = cg_fcgi_encode_get_values_result(out, sizeof out, &c->limits, rec->content,
                                                    rec->content_len);
        if (n == 0) {
            set_err(err, errlen, "malformed name-value pairs in FCGI_GET_VALUES");
            return -1;
        }
        return emit(c, out, n);
    }
    uint8_t out[CG_FCGI_UNKNOWN_TYPE_LEN];
    cg_fcgi_encode_unknown_type(out, rec->type);
    return emit(c, out, sizeof out);
}

static int dispatch(cg_fcgi_conn_t *c, const cg_fcgi_record_t *rec, char *err, size_t errlen)
{
    if (rec->request_id == 0)
        return on_management(c, rec, err, errlen);
    if (rec->type == CG_FCGI_BEGIN_REQUEST)
        return on_begin(c, rec, err, errlen);
    fcgi_req_t *r = find_req(c, rec->request_id);
    if (!r) {
        c->ignored++; /* inactive id: the specification says ignore */
        return 0;
    }
    switch (rec->type) {
    case CG_FCGI_PARAMS:
        return on_params(c, r, rec);
    case CG_FCGI_STDIN:
        /* Every endpoint is a GET: a body, if any, is read and dropped. The
         * stream's end changes nothing: the request was ready before. */
        return 0;
    case CG_FCGI_ABORT_REQUEST:
        return on_abort_request(c, r);
    default:
        c->ignored++; /* DATA, or what a web server never sends */
        return 0;
    }
}

int cg_fcgi_conn_feed(cg_fcgi_conn_t *c, const void *data, size_t len, char *err, size_t errlen)
{
    const uint8_t *d = data;
    size_t off = 0;
    for (;;) {
        /* Also set by a callback's cg_fcgi_conn_end_request() that failed. */
        if (c->failed) {
            set_err(err, errlen, "the FastCGI connection's answer could not be queued");
            return -1;
        }
        cg_fcgi_record_t rec;
        size_t used;
        int rc = cg_fcgi_parse(&c->parser, d ? d + off : d, len - off, &used, &rec, err, errlen);
        off += used;
        if (rc == 0)
            return 0;
        if (rc > 0 && dispatch(c, &rec, err, errlen) == 0)
            continue;
        if (rc > 0 && c->failed) /* emit() failed; dispatch set no message */
            set_err(err, errlen, "the FastCGI connection's answer could not be queued");
        /* Nothing more is read from a connection that failed. */
        c->failed = true;
        c->parser.failed = true;
        return -1;
    }
}

int cg_fcgi_conn_end_request(cg_fcgi_conn_t *c, uint16_t request_id, uint32_t app_status,
                             cg_fcgi_status_t protocol_status)
{
    fcgi_req_t *r = find_req(c, request_id);
    if (!r)
        return -1;
    if (c->failed) { /* nothing more is written; the state goes all the same */
        retire(c, r);
        return -1;
    }
    uint8_t out[CG_FCGI_STDOUT_END_LEN + CG_FCGI_END_REQUEST_LEN];
    size_t n = 0;
    if (protocol_status == CG_FCGI_REQUEST_COMPLETE) {
        cg_fcgi_encode_stdout_end(out, request_id);
        n = CG_FCGI_STDOUT_END_LEN;
    }
    cg_fcgi_encode_end_request(out + n, request_id, app_status, protocol_status);
    n += CG_FCGI_END_REQUEST_LEN;
    retire(c, r);
    return emit(c, out, n);
}

void cg_fcgi_conn_drop_params(cg_fcgi_conn_t *c, uint16_t request_id)
{
    fcgi_req_t *r = find_req(c, request_id);
    if (r && r->ready)
        free_params(r);
}

bool cg_fcgi_conn_should_close(const cg_fcgi_conn_t *c)
{
    return c->close_pending && c->active == 0;
}

bool cg_fcgi_conn_mid_record(const cg_fcgi_conn_t *c)
{
    return cg_fcgi_parser_mid_record(&c->parser);
}

size_t cg_fcgi_conn_active(const cg_fcgi_conn_t *c)
{
    return c->active;
}

bool cg_fcgi_conn_is_active(const cg_fcgi_conn_t *c, uint16_t request_id)
{
    return find_req(c, request_id) != NULL;
}

uint64_t cg_fcgi_conn_ignored(const cg_fcgi_conn_t *c)
{
    return c->ignored;
}

size_t cg_fcgi_conn_memory(const cg_fcgi_conn_t *c)
{
    size_t n = cg_fcgi_parser_memory(&c->parser);
    for (const fcgi_req_t *r = c->reqs; r; r = r->next)
        n += sizeof *r + r->params_cap + (r->items ? r->pairs * sizeof *r->items : 0);
    return n;
}

/* ---- encoding ---- */

void cg_fcgi_encode_header(uint8_t out[CG_FCGI_HEADER_LEN], uint8_t type, uint16_t request_id,
                           uint16_t content_len, uint8_t padding_len)
{
    out[0] = CG_FCGI_VERSION_1;
    out[1] = type;
    out[2] = (uint8_t)(request_id >> 8);
    out[3] = (uint8_t)request_id;
    out[4] = (uint8_t)(content_len >> 8);
    out[5] = (uint8_t)content_len;
    out[6] = padding_len;
    out[7] = 0;
}

unsigned cg_fcgi_stdout_header(uint8_t hdr[CG_FCGI_HEADER_LEN], uint16_t request_id,
                               uint16_t content_len, bool pad)
{
    unsigned padding = pad ? cg_fcgi_padding_for(content_len) : 0;
    cg_fcgi_encode_header(hdr, CG_FCGI_STDOUT, request_id, content_len, (uint8_t)padding);
    return padding;
}

size_t cg_fcgi_stdout_records(size_t len)
{
    return len / CG_FCGI_MAX_CONTENT + (len % CG_FCGI_MAX_CONTENT != 0);
}

size_t cg_fcgi_stdout_iov(uint16_t request_id, const void *data, size_t len, bool pad,
                          uint8_t (*hdrs)[CG_FCGI_HEADER_LEN], size_t nhdrs, struct iovec *iov,
                          size_t niov)
{
    size_t records = cg_fcgi_stdout_records(len);
    if (records == 0 || nhdrs < records)
        return 0;
    /* Only the last record can differ in size, hence in padding. */
    size_t last = len - (records - 1) * CG_FCGI_MAX_CONTENT;
    size_t need = 2 * records;
    if (pad)
        need += (records - 1) * (cg_fcgi_padding_for(CG_FCGI_MAX_CONTENT) != 0) +
                (cg_fcgi_padding_for(last) != 0);
    if (niov < need)
        return 0;
    const uint8_t *d = data;
    size_t k = 0;
    for (size_t i = 0; i < records; i++) {
        size_t n = i + 1 < records ? CG_FCGI_MAX_CONTENT : last;
        unsigned padding = cg_fcgi_stdout_header(hdrs[i], request_id, (uint16_t)n, pad);
        iov[k++] = (struct iovec){hdrs[i], CG_FCGI_HEADER_LEN};
        iov[k++] = (struct iovec){(void *)(d + i * CG_FCGI_MAX_CONTENT), n};
        if (padding)
            iov[k++] = (struct iovec){(void *)cg_fcgi_padding, padding};
    }
    return k;
}

/* The bytes of one record of len bytes of content (<= 65535). */
static size_t record_size(size_t len, bool pad)
{
    return CG_FCGI_HEADER_LEN + len + (pad ? cg_fcgi_padding_for(len) : 0);
}

/* The bytes of len bytes as STDOUT records. */
static size_t stdout_size(size_t len, bool pad)
{
    size_t records = cg_fcgi_stdout_records(len), size = 0;
    for (size_t i = 0; i < records; i++)
        size += record_size(min_size(len - i * CG_FCGI_MAX_CONTENT, CG_FCGI_MAX_CONTENT), pad);
    return size;
}

size_t cg_fcgi_encode_record(uint8_t *out, size_t cap, uint8_t type, uint16_t request_id,
                             const void *content, size_t len, bool pad)
{
    if (len > CG_FCGI_MAX_CONTENT)
        return 0;
    unsigned padding = pad ? cg_fcgi_padding_for(len) : 0;
    size_t size = record_size(len, pad);
    if (size > cap)
        return size;
    cg_fcgi_encode_header(out, type, request_id, (uint16_t)len, (uint8_t)padding);
    if (len)
        memcpy(out + CG_FCGI_HEADER_LEN, content, len);
    if (padding)
        memset(out + CG_FCGI_HEADER_LEN + len, 0, padding);
    return size;
}

size_t cg_fcgi_encode_stdout(uint8_t *out, size_t cap, uint16_t request_id, const void *data,
                             size_t len, bool pad)
{
    size_t records = cg_fcgi_stdout_records(len), size = stdout_size(len, pad);
    if (size > cap)
        return size;
    const uint8_t *d = data;
    size_t w = 0;
    for (size_t i = 0; i < records; i++) {
        size_t n = min_size(len - i * CG_FCGI_MAX_CONTENT, CG_FCGI_MAX_CONTENT);
        w += cg_fcgi_encode_record(out + w, cap - w, CG_FCGI_STDOUT, request_id,
                                   d + i * CG_FCGI_MAX_CONTENT, n, pad);
    }
    return size;
}

size_t cg_fcgi_encode_pairs(uint8_t *out, size_t cap, uint8_t type, uint16_t request_id,
                            const cg_fcgi_nv_t *pairs, size_t count, bool pad)
{
    size_t clen = 0;
    for (size_t i = 0; i < count; i++) {
        size_t n = cg_fcgi_nv_size(pairs[i].name_len, pairs[i].value_len);
        if (n == 0 || n > CG_FCGI_MAX_CONTENT - clen)
            return 0;
        clen += n;
    }
    unsigned padding = pad ? cg_fcgi_padding_for(clen) : 0;
    size_t size = CG_FCGI_HEADER_LEN + clen + padding;
    if (size > cap)
        return size;
    cg_fcgi_encode_header(out, type, request_id, (uint16_t)clen, (uint8_t)padding);
    size_t w = CG_FCGI_HEADER_LEN;
    for (size_t i = 0; i < count; i++)
        w += cg_fcgi_nv_encode(out + w, cap - w, pairs[i].name, pairs[i].name_len, pairs[i].value,
                               pairs[i].value_len);
    if (padding)
        memset(out + w, 0, padding);
    return size;
}

void cg_fcgi_encode_stdout_end(uint8_t out[CG_FCGI_STDOUT_END_LEN], uint16_t request_id)
{
    cg_fcgi_encode_header(out, CG_FCGI_STDOUT, request_id, 0, 0);
}

void cg_fcgi_encode_end_request(uint8_t out[CG_FCGI_END_REQUEST_LEN], uint16_t request_id,
                                uint32_t app_status, cg_fcgi_status_t protocol_status)
{
    cg_fcgi_encode_header(out, CG_FCGI_END_REQUEST, request_id, 8, 0);
    uint8_t *b = out + CG_FCGI_HEADER_LEN;
    b[0] = (uint8_t)(app_status >> 24);
    b[1] = (uint8_t)(app_status >> 16);
    b[2] = (uint8_t)(app_status >> 8);
    b[3] = (uint8_t)app_status;
    b[4] = (uint8_t)protocol_status;
    b[5] = b[6] = b[7] = 0;
}

void cg_fcgi_encode_unknown_type(uint8_t out[CG_FCGI_UNKNOWN_TYPE_LEN], uint8_t type)
{
    cg_fcgi_encode_header(out, CG_FCGI_UNKNOWN_TYPE, 0, 8, 0);
    memset(out + CG_FCGI_HEADER_LEN, 0, 8);
    out[CG_FCGI_HEADER_LEN] = type;
}

size_t cg_fcgi_encode_get_values_result(uint8_t *out, size_t cap, const cg_fcgi_limits_t *limits,
                                        const uint8_t *query, size_t query_len)
{
    static const char *const names[3] = {"FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"};
    char values[3][16];
    snprintf(values[0], sizeof values[0], "%u", limits->max_conns);
    snprintf(values[1], sizeof values[1], "%u", limits->max_reqs);
    snprintf(values[2], sizeof values[2], "%d", limits->max_reqs_per_conn > 1);
    cg_fcgi_nv_t answer[3];
    size_t count = 0;
    bool answered[3] = {false, false, false};
    size_t off = 0;
    while (off < query_len) {
        cg_fcgi_nv_t q;
        size_t used;
        if (!cg_fcgi_nv_decode(query + off, query_len - off, &q, &used))
            return 0;
        off += used;
        for (int i = 0; i < 3; i++) {
            if (!answered[i] && q.name_len == strlen(names[i]) &&
                memcmp(q.name, names[i], q.name_len) == 0) {
                answered[i] = true;
                answer[count++] = (cg_fcgi_nv_t){(const uint8_t *)names[i], strlen(names[i]),
                                                 (const uint8_t *)values[i], strlen(values[i])};
            }
        }
    }
    size_t n = cg_fcgi_encode_pairs(out, cap, CG_FCGI_GET_VALUES_RESULT, 0, answer, count, true);
    return n <= cap ? n : 0;
}

/* ---- the growable buffer ---- */

static int buf_reserve(cg_fcgi_buf_t *b, size_t n)
{
    if (n <= b->cap - b->len)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n)
        cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d)
        return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

int cg_fcgi_buf_stdout(cg_fcgi_buf_t *b, uint16_t request_id, const void *data, size_t len,
                       bool pad)
{
    size_t n = stdout_size(len, pad);
    if (n == 0)
        return 0;
    if (buf_reserve(b, n) != 0)
        return -1;
    b->len += cg_fcgi_encode_stdout(b->data + b->len, b->cap - b->len, request_id, data, len, pad);
    return 0;
}

int cg_fcgi_buf_stdout_end(cg_fcgi_buf_t *b, uint16_t request_id)
{
    if (buf_reserve(b, CG_FCGI_STDOUT_END_LEN) != 0)
        return -1;
    cg_fcgi_encode_stdout_end(b->data + b->len, request_id);
    b->len += CG_FCGI_STDOUT_END_LEN;
    return 0;
}

int cg_fcgi_buf_end_request(cg_fcgi_buf_t *b, uint16_t request_id, uint32_t app_status,
                            cg_fcgi_status_t protocol_status)
{
    if (buf_reserve(b, CG_FCGI_END_REQUEST_LEN) != 0)
        return -1;
    cg_fcgi_encode_end_request(b->data + b->len, request_id, app_status, protocol_status);
    b->len += CG_FCGI_END_REQUEST_LEN;
    return 0;
}

int cg_fcgi_buf_record(cg_fcgi_buf_t *b, uint8_t type, uint16_t request_id, const void *content,
                       size_t len, bool pad)
{
    if (len > CG_FCGI_MAX_CONTENT || buf_reserve(b, record_size(len, pad)) != 0)
        return -1;
    b->len += cg_fcgi_encode_record(b->data + b->len, b->cap - b->len, type, request_id, content,
                                    len, pad);
    return 0;
}

void cg_fcgi_buf_free(cg_fcgi_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}
