/* Unit tests for src/fcgi_proto.c: the record parser (records cut at every
 * byte, several in one read, bad versions, a peer gone mid-record), name-value
 * pairs, a connection's requests (multiplexed, aborted, refused, ignored),
 * management records, hostile input (overrunning lengths, garbage), and the
 * encoders, checked by parsing what they write. */
#include <check.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fcgi_proto.h"
#include "testutil.h"

/* ---- helpers: building what a web server sends ---- */

static void add_record(cg_fcgi_buf_t *b, uint8_t type, uint16_t id, const void *content, size_t len)
{
    ck_assert_int_eq(cg_fcgi_buf_record(b, type, id, content, len, false), 0);
}

/* Appends raw bytes (the buffer's data is malloc'ed, as its header says). */
static void append_raw(cg_fcgi_buf_t *b, const void *d, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = (b->len + n) * 2;
        b->data = realloc(b->data, cap);
        ck_assert_ptr_nonnull(b->data);
        b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, d, n);
    b->len += n;
}

/* A record with explicit padding (encoders only pad to 8), of 0xEE bytes. */
static void add_padded(cg_fcgi_buf_t *b, uint8_t type, uint16_t id, const void *content, size_t len,
                       uint8_t padding)
{
    uint8_t hdr[CG_FCGI_HEADER_LEN], pad[255];
    cg_fcgi_encode_header(hdr, type, id, (uint16_t)len, padding);
    memset(pad, 0xEE, sizeof pad);
    append_raw(b, hdr, sizeof hdr);
    append_raw(b, content, len);
    append_raw(b, pad, padding);
}

static void add_begin(cg_fcgi_buf_t *b, uint16_t id, uint16_t role, uint8_t flags)
{
    uint8_t body[8] = {(uint8_t)(role >> 8), (uint8_t)role, flags, 0, 0, 0, 0, 0};
    add_record(b, CG_FCGI_BEGIN_REQUEST, id, body, sizeof body);
}

/* The name-value pairs of kv (name, value, ..., NULL) as a stream's bytes. */
static size_t nv_stream(uint8_t *out, size_t cap, const char *const *kv)
{
    size_t len = 0;
    for (size_t i = 0; kv[i]; i += 2) {
        size_t n = cg_fcgi_nv_encode(out + len, cap - len, kv[i], strlen(kv[i]), kv[i + 1],
                                     strlen(kv[i + 1]));
        ck_assert_uint_le(n, cap - len);
        len += n;
    }
    return len;
}

static char long_name[201], long_value[301];

/* What nginx sends, roughly, plus a name and a value over 127 bytes (4-byte
 * lengths) and an empty value. */
static const char *std_params[] = {"REQUEST_METHOD",
                                   "GET",
                                   "REQUEST_URI",
                                   "/events?ns=app.orders",
                                   "QUERY_STRING",
                                   "ns=app.orders",
                                   "HTTP_LAST_EVENT_ID",
                                   "82000000010000000",
                                   "HTTP_ACCEPT",
                                   "text/event-stream",
                                   "HTTP_ORIGIN",
                                   "",
                                   long_name,
                                   long_value,
                                   NULL};

static void init_long(void)
{
    memset(long_name, 'N', 200);
    long_name[200] = '\0';
    memset(long_value, 'v', 300);
    long_value[300] = '\0';
}

/* BEGIN, the pairs in one PARAMS record, the empty PARAMS, the empty STDIN. */
static void add_request(cg_fcgi_buf_t *b, uint16_t id, uint8_t flags, const char *const *kv)
{
    uint8_t s[4096];
    size_t n = nv_stream(s, sizeof s, kv);
    add_begin(b, id, CG_FCGI_RESPONDER, flags);
    add_record(b, CG_FCGI_PARAMS, id, s, n);
    add_record(b, CG_FCGI_PARAMS, id, NULL, 0);
    add_record(b, CG_FCGI_STDIN, id, NULL, 0);
}

/* ---- helpers: records parsed back ---- */

typedef struct trec {
    uint8_t type;
    uint16_t id;
    size_t len;
    uint8_t *content; /* owned copy, NUL-terminated */
    uint8_t padding;
} trec_t;

#define MAX_RECS 64

/* Parses d[0..len) whole: it must hold whole records only. */
static size_t parse_all(const uint8_t *d, size_t len, trec_t *out)
{
    cg_fcgi_parser_t p;
    cg_fcgi_parser_init(&p);
    size_t n = 0, off = 0, used;
    cg_fcgi_record_t r;
    char err[128] = "";
    int rc;
    while ((rc = cg_fcgi_parse(&p, d + off, len - off, &used, &r, err, sizeof err)) == 1) {
        ck_assert_uint_lt(n, MAX_RECS);
        out[n].type = r.type;
        out[n].id = r.request_id;
        out[n].len = r.content_len;
        out[n].padding = r.padding_len;
        out[n].content = malloc(r.content_len + 1u);
        if (r.content_len)
            memcpy(out[n].content, r.content, r.content_len);
        out[n].content[r.content_len] = '\0';
        n++;
        off += used;
    }
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert(!cg_fcgi_parser_mid_record(&p));
    cg_fcgi_parser_clear(&p);
    return n;
}

static void free_recs(trec_t *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(r[i].content);
}

static void expect_end_request(const trec_t *r, uint16_t id, uint32_t app, uint8_t status)
{
    ck_assert_int_eq(r->type, CG_FCGI_END_REQUEST);
    ck_assert_int_eq(r->id, id);
    ck_assert_uint_eq(r->len, 8);
    uint32_t got = (uint32_t)r->content[0] << 24 | (uint32_t)r->content[1] << 16 |
                   (uint32_t)r->content[2] << 8 | r->content[3];
    ck_assert_uint_eq(got, app);
    ck_assert_int_eq(r->content[4], status);
}

/* ---- helpers: a connection that records what it reports ---- */

typedef struct tctx {
    cg_fcgi_conn_t *conn;
    char log[65536];
    size_t log_len;
    cg_fcgi_buf_t out; /* every byte on_write got */
    int ready, aborts, refusals, writes, end_failures;
    bool end_on_ready, end_on_abort, fail_writes;
    /* The last ready request. */
    uint16_t last_id;
    bool last_keep;
    char method[16], uri[256], lei[64], origin[16];
    bool origin_present;
    size_t last_count;
    size_t long_len;
} tctx_t;

static void logf_(tctx_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(tctx_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->log + t->log_len, sizeof t->log - t->log_len, fmt, ap);
    va_end(ap);
    ck_assert(n >= 0 && (size_t)n < sizeof t->log - t->log_len);
    t->log_len += (size_t)n;
}

static void copy_param(const cg_fcgi_params_t *p, const char *name, char *dst, size_t cap)
{
    const char *v = cg_fcgi_params_get(p, name, NULL);
    snprintf(dst, cap, "%s", v ? v : "(none)");
}

static void t_on_request(void *ctx, uint16_t id, const cg_fcgi_params_t *params, bool keep)
{
    tctx_t *t = ctx;
    t->ready++;
    t->last_id = id;
    t->last_keep = keep;
    t->last_count = params->count;
    copy_param(params, "REQUEST_METHOD", t->method, sizeof t->method);
    copy_param(params, "REQUEST_URI", t->uri, sizeof t->uri);
    copy_param(params, "HTTP_LAST_EVENT_ID", t->lei, sizeof t->lei);
    const char *o = cg_fcgi_params_get(params, "HTTP_ORIGIN", NULL);
    t->origin_present = o != NULL;
    snprintf(t->origin, sizeof t->origin, "%s", o ? o : "");
    size_t ll = 0;
    t->long_len = cg_fcgi_params_get(params, long_name, &ll) ? ll : 0;
    logf_(t, "ready %u keep=%d n=%zu", id, keep, params->count);
    for (size_t i = 0; i < params->count; i++)
        logf_(t, " %.20s=%.20s(%zu)", params->items[i].name, params->items[i].value,
              params->items[i].value_len);
    logf_(t, "\n");
    if (t->end_on_ready) {
        int rc = cg_fcgi_conn_end_request(t->conn, id, 7, CG_FCGI_REQUEST_COMPLETE);
        if (t->fail_writes)
            t->end_failures += rc != 0;
        else
            ck_assert_int_eq(rc, 0);
    }
}

static void t_on_abort(void *ctx, uint16_t id)
{
    tctx_t *t = ctx;
    t->aborts++;
    logf_(t, "abort %u\n", id);
    if (t->end_on_abort)
        ck_assert_int_eq(cg_fcgi_conn_end_request(t->conn, id, 0, CG_FCGI_REQUEST_COMPLETE), 0);
}

static int t_on_write(void *ctx, const void *bytes, size_t len)
{
    tctx_t *t = ctx;
    if (t->fail_writes)
        return -1;
    t->writes++;
    logf_(t, "write %zu:", len);
    for (size_t i = 0; i < len; i++)
        logf_(t, "%02x", ((const uint8_t *)bytes)[i]);
    logf_(t, "\n");
    append_raw(&t->out, bytes, len);
    return 0;
}

static void t_on_refused(void *ctx, uint16_t id, const char *why)
{
    tctx_t *t = ctx;
    t->refusals++;
    logf_(t, "refused %u %s\n", id, why);
}

static const cg_fcgi_callbacks_t t_cb = {t_on_request, t_on_abort, t_on_write, t_on_refused};

static tctx_t *tctx_new(unsigned per_conn)
{
    tctx_t *t = calloc(1, sizeof *t);
    cg_fcgi_limits_t lim = {.max_conns = 100, .max_reqs = 5000, .max_reqs_per_conn = per_conn};
    t->conn = cg_fcgi_conn_new(&lim, &t_cb, t);
    ck_assert_ptr_nonnull(t->conn);
    return t;
}

static tctx_t *tctx_new_limits(const cg_fcgi_limits_t *lim)
{
    tctx_t *t = calloc(1, sizeof *t);
    t->conn = cg_fcgi_conn_new(lim, &t_cb, t);
    ck_assert_ptr_nonnull(t->conn);
    return t;
}

static void tctx_free(tctx_t *t)
{
    cg_fcgi_conn_free(t->conn);
    cg_fcgi_buf_free(&t->out);
    free(t);
}

static void feed_ok(tctx_t *t, const void *d, size_t len)
{
    char err[256] = "";
    int rc = cg_fcgi_conn_feed(t->conn, d, len, err, sizeof err);
    ck_assert_msg(rc == 0, "feed failed: %s", err);
}

static int feed_rc(tctx_t *t, const void *d, size_t len, char *err, size_t errlen)
{
    return cg_fcgi_conn_feed(t->conn, d, len, err, errlen);
}

/* The output so far, parsed; clears it. */
static size_t take_out(tctx_t *t, trec_t *recs)
{
    size_t n = parse_all(t->out.data, t->out.len, recs);
    t->out.len = 0;
    return n;
}

/* ---- the record parser ---- */

START_TEST(parser_one_record)
{
    uint8_t buf[64];
    size_t n = cg_fcgi_encode_record(buf, sizeof buf, CG_FCGI_STDOUT, 0x1234, "hello", 5, true);
    ck_assert_uint_eq(n, 16); /* 8 + 5 + 3 padding */
    n += cg_fcgi_encode_record(buf + n, sizeof buf - n, CG_FCGI_STDIN, 0xFFFF, NULL, 0, true);
    cg_fcgi_parser_t p;
    cg_fcgi_parser_init(&p);
    cg_fcgi_record_t r;
    size_t used;
    char err[128];
    ck_assert_int_eq(cg_fcgi_parse(&p, buf, n, &used, &r, err, sizeof err), 1);
    ck_assert_int_eq(r.version, 1);
    ck_assert_int_eq(r.type, CG_FCGI_STDOUT);
    ck_assert_int_eq(r.request_id, 0x1234);
    ck_assert_int_eq(r.content_len, 5);
    ck_assert_int_eq(r.padding_len, 3);
    ck_assert(r.content == buf + 8); /* a whole record is not copied */
    ck_assert_mem_eq(r.content, "hello", 5);
    ck_assert_uint_eq(used, 13); /* padding is skipped on the next call */
    ck_assert(cg_fcgi_parser_mid_record(&p));
    size_t off = used;
    ck_assert_int_eq(cg_fcgi_parse(&p, buf + off, n - off, &used, &r, err, sizeof err), 1);
    ck_assert_int_eq(r.type, CG_FCGI_STDIN);
    ck_assert_int_eq(r.request_id, 0xFFFF);
    ck_assert_int_eq(r.content_len, 0);
    ck_assert_uint_eq(used, 3 + 8);
    off += used;
    ck_assert_int_eq(cg_fcgi_parse(&p, buf + off, n - off, &used, &r, err, sizeof err), 0);
    ck_assert_uint_eq(used, 0);
    ck_assert(!cg_fcgi_parser_mid_record(&p));
    ck_assert_uint_eq(cg_fcgi_parser_memory(&p), 0);
    cg_fcgi_parser_clear(&p);
}
END_TEST

/* A conversation of records of every size class: empty, 1 byte, up to 65535
 * bytes, 255 bytes of padding. */
static size_t mixed_big; /* the third record's length */

static cg_fcgi_buf_t mixed_records(size_t big_len)
{
    cg_fcgi_buf_t b = {0};
    static uint8_t big[CG_FCGI_MAX_CONTENT];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7 + 3);
    mixed_big = big_len;
    add_record(&b, CG_FCGI_PARAMS, 1, NULL, 0);
    add_record(&b, CG_FCGI_STDIN, 2, "x", 1);
    ck_assert_int_eq(cg_fcgi_buf_record(&b, CG_FCGI_STDOUT, 3, big, big_len, true), 0);
    add_padded(&b, 42, 4, "padded", 6, 255);
    add_record(&b, CG_FCGI_DATA, 5, "tail", 4);
    return b;
}

static const struct {
    uint8_t type;
    uint16_t id;
    size_t len;
} mixed_expect[] = {{CG_FCGI_PARAMS, 1, 0},
                    {CG_FCGI_STDIN, 2, 1},
                    {CG_FCGI_STDOUT, 3, 0 /* mixed_big */},
                    {42, 4, 6},
                    {CG_FCGI_DATA, 5, 4}};

/* Feeds b in the chunks that `cuts` (sorted offsets) make; checks every record. */
static void parse_in_chunks(const cg_fcgi_buf_t *b, const size_t *cuts, size_t ncuts)
{
    cg_fcgi_parser_t p;
    cg_fcgi_parser_init(&p);
    size_t seen = 0, start = 0;
    char err[128];
    for (size_t c = 0; c <= ncuts; c++) {
        size_t end = c < ncuts ? cuts[c] : b->len;
        size_t off = start, used;
        cg_fcgi_record_t r;
        int rc;
        while ((rc = cg_fcgi_parse(&p, b->data + off, end - off, &used, &r, err, sizeof err)) ==
               1) {
            ck_assert_uint_lt(seen, 5);
            ck_assert_int_eq(r.type, mixed_expect[seen].type);
            ck_assert_int_eq(r.request_id, mixed_expect[seen].id);
            ck_assert_uint_eq(r.content_len, seen == 2 ? mixed_big : mixed_expect[seen].len);
            ck_assert_uint_le(cg_fcgi_parser_memory(&p), CG_FCGI_MAX_CONTENT);
            if (seen == 2) {
                /* One assertion, not one per byte: each costs a write to Check's pipe. */
                size_t i = 0;
                while (i < r.content_len && r.content[i] == (uint8_t)(i * 7 + 3))
                    i++;
                ck_assert_uint_eq(i, r.content_len);
            }
            if (seen == 3)
                ck_assert_mem_eq(r.content, "padded", 6);
            seen++;
            off += used;
        }
        ck_assert_int_eq(rc, 0);
        ck_assert_uint_eq(off + used, end);
        start = end;
    }
    ck_assert_uint_eq(seen, 5);
    ck_assert(!cg_fcgi_parser_mid_record(&p));
    cg_fcgi_parser_clear(&p);
}

START_TEST(parser_several_records_in_one_read)
{
    cg_fcgi_buf_t b = mixed_records(CG_FCGI_MAX_CONTENT);
    size_t none = 0;
    parse_in_chunks(&b, &none, 0);
    cg_fcgi_buf_free(&b);
}
END_TEST

START_TEST(parser_records_split_at_every_offset)
{
    /* Every offset of records of 1000 bytes or less... */
    cg_fcgi_buf_t b = mixed_records(1000);
    for (size_t k = 0; k <= b.len; k++)
        parse_in_chunks(&b, &k, 1);
    cg_fcgi_buf_free(&b);
    /* ...and with a record of 65535 bytes, near its ends and every 331 bytes. */
    b = mixed_records(CG_FCGI_MAX_CONTENT);
    for (size_t k = 0; k <= b.len; k++)
        if (k < 64 || b.len - k < 320 || (k > 65500 && k < 65600) || k % 331 == 0)
            parse_in_chunks(&b, &k, 1);
    /* Byte by byte, and in uneven chunks. */
    size_t *cuts = malloc(b.len * sizeof *cuts);
    for (size_t k = 0; k < b.len; k++)
        cuts[k] = k + 1;
    parse_in_chunks(&b, cuts, b.len - 1);
    size_t n = 0, at = 0;
    for (unsigned step = 1; at + step < b.len; step = step * 3 % 1021 + 1)
        cuts[n++] = at += step;
    parse_in_chunks(&b, cuts, n);
    free(cuts);
    cg_fcgi_buf_free(&b);
}
END_TEST

START_TEST(parser_bad_version)
{
    uint8_t rec[16];
    cg_fcgi_encode_record(rec, sizeof rec, CG_FCGI_STDIN, 1, NULL, 0, false);
    for (int version = 0; version < 256; version += 2) { /* 0, 2, 4...: never 1 */
        rec[0] = (uint8_t)version;
        cg_fcgi_parser_t p;
        cg_fcgi_parser_init(&p);
        cg_fcgi_record_t r;
        size_t used;
        char err[128] = "";
        /* Byte by byte: the header is only judged whole. */
        for (int i = 0; i < 7; i++)
            ck_assert_int_eq(cg_fcgi_parse(&p, rec + i, 1, &used, &r, err, sizeof err), 0);
        ck_assert_int_eq(cg_fcgi_parse(&p, rec + 7, 1, &used, &r, err, sizeof err), -1);
        ck_assert_ptr_nonnull(strstr(err, "version"));
        /* Every later call fails too, even on good bytes. */
        uint8_t good[8];
        cg_fcgi_encode_record(good, sizeof good, CG_FCGI_STDIN, 1, NULL, 0, false);
        ck_assert_int_eq(cg_fcgi_parse(&p, good, 8, &used, &r, err, sizeof err), -1);
        cg_fcgi_parser_clear(&p);
    }
}
END_TEST

START_TEST(parser_reports_mid_record)
{
    static uint8_t content[1000];
    memset(content, 'c', sizeof content);
    cg_fcgi_buf_t b = {0};
    add_padded(&b, CG_FCGI_STDIN, 9, content, sizeof content, 5);
    cg_fcgi_parser_t p;
    cg_fcgi_parser_init(&p);
    cg_fcgi_record_t r;
    size_t used;
    char err[128];
    const uint8_t *d = b.data;
    ck_assert(!cg_fcgi_parser_mid_record(&p));
    ck_assert_int_eq(cg_fcgi_parse(&p, d, 3, &used, &r, err, sizeof err), 0);
    ck_assert_uint_eq(used, 3);
    ck_assert(cg_fcgi_parser_mid_record(&p));
    ck_assert_int_eq(cg_fcgi_parse(&p, d + 3, 5, &used, &r, err, sizeof err), 0);
    ck_assert(cg_fcgi_parser_mid_record(&p));
    ck_assert_uint_eq(cg_fcgi_parser_memory(&p), 0); /* a header alone holds nothing */
    ck_assert_int_eq(cg_fcgi_parse(&p, d + 8, 10, &used, &r, err, sizeof err), 0);
    ck_assert(cg_fcgi_parser_mid_record(&p));
    ck_assert_uint_eq(cg_fcgi_parser_memory(&p), 1000); /* the content's length, no more */
    ck_assert_int_eq(cg_fcgi_parse(&p, d + 18, 990, &used, &r, err, sizeof err), 1);
    ck_assert_uint_eq(used, 990);
    ck_assert_uint_eq(r.content_len, 1000);
    ck_assert_int_eq(r.padding_len, 5);
    ck_assert(r.content != d + 8); /* gathered */
    ck_assert_mem_eq(r.content, content, 1000);
    ck_assert(cg_fcgi_parser_mid_record(&p)); /* the padding is still due */
    ck_assert_int_eq(cg_fcgi_parse(&p, d + 1008, 4, &used, &r, err, sizeof err), 0);
    ck_assert(cg_fcgi_parser_mid_record(&p));
    ck_assert_uint_eq(cg_fcgi_parser_memory(&p), 0); /* freed once handled */
    ck_assert_int_eq(cg_fcgi_parse(&p, d + 1012, 1, &used, &r, err, sizeof err), 0);
    ck_assert(!cg_fcgi_parser_mid_record(&p));
    ck_assert_uint_eq(b.len, 1013);
    cg_fcgi_parser_clear(&p);
    cg_fcgi_buf_free(&b);
}
END_TEST

/* ---- name-value pairs ---- */

START_TEST(nv_pairs_one_and_four_byte_lengths)
{
    uint8_t buf[2048];
    /* 1-byte lengths: 127 is the largest. */
    char n127[128], v128[129];
    memset(n127, 'a', 127);
    n127[127] = '\0';
    memset(v128, 'b', 128);
    v128[128] = '\0';
    ck_assert_uint_eq(cg_fcgi_nv_size(127, 0), 1 + 1 + 127);
    ck_assert_uint_eq(cg_fcgi_nv_size(127, 128), 1 + 4 + 127 + 128);
    ck_assert_uint_eq(cg_fcgi_nv_size(128, 128), 4 + 4 + 128 + 128);
    ck_assert_uint_eq(cg_fcgi_nv_size(0x80000000u, 0), 0);
    size_t n = cg_fcgi_nv_encode(buf, sizeof buf, n127, 127, v128, 128);
    ck_assert_uint_eq(n, 1 + 4 + 127 + 128);
    ck_assert_int_eq(buf[0], 127);
    ck_assert_int_eq(buf[1], 0x80); /* the high bit: a 4-byte length */
    ck_assert_int_eq(buf[4], 128);
    cg_fcgi_nv_t nv;
    size_t used;
    ck_assert_int_eq(cg_fcgi_nv_decode(buf, n, &nv, &used), 1);
    ck_assert_uint_eq(used, n);
    ck_assert_uint_eq(nv.name_len, 127);
    ck_assert_uint_eq(nv.value_len, 128);
    ck_assert_mem_eq(nv.name, n127, 127);
    ck_assert_mem_eq(nv.value, v128, 128);
    /* Every strict prefix is incomplete, never a pair. */
    for (size_t k = 0; k < n; k++)
        ck_assert_int_eq(cg_fcgi_nv_decode(buf, k, &nv, &used), 0);
    /* A short length in 4-byte form is still read (the high bit decides). */
    const uint8_t four[] = {0x80, 0, 0, 2, 1, 'h', 'i', 'x'};
    ck_assert_int_eq(cg_fcgi_nv_decode(four, sizeof four, &nv, &used), 1);
    ck_assert_uint_eq(nv.name_len, 2);
    ck_assert_uint_eq(nv.value_len, 1);
    ck_assert_mem_eq(nv.name, "hi", 2);
    ck_assert_uint_eq(used, 8);
    /* Lengths that run past the data, however large. */
    const uint8_t huge[] = {0xFF, 0xFF, 0xFF, 0xFF, 0x01, 'a'};
    ck_assert_int_eq(cg_fcgi_nv_decode(huge, sizeof huge, &nv, &used), 0);
    const uint8_t huge_value[] = {0x01, 0xFF, 0xFF, 0xFF, 0xFF, 'a', 'b'};
    ck_assert_int_eq(cg_fcgi_nv_decode(huge_value, sizeof huge_value, &nv, &used), 0);
    const uint8_t past[] = {0x03, 0x02, 'a', 'b', 'c', 'd'};
    ck_assert_int_eq(cg_fcgi_nv_decode(past, sizeof past, &nv, &used), 0);
    ck_assert_int_eq(cg_fcgi_nv_decode(past, sizeof past - 1 + 1, &nv, &used), 0);
    const uint8_t cut_len[] = {0x01, 0x80, 0x00};
    ck_assert_int_eq(cg_fcgi_nv_decode(cut_len, sizeof cut_len, &nv, &used), 0);
    const uint8_t empty[] = {0, 0};
    ck_assert_int_eq(cg_fcgi_nv_decode(empty, 2, &nv, &used), 1);
    ck_assert_uint_eq(nv.name_len + nv.value_len, 0);
    /* Too small a buffer: the size, nothing written. */
    memset(buf, 0x5A, 16);
    ck_assert_uint_eq(cg_fcgi_nv_encode(buf, 4, "name", 4, "value", 5), 11);
    ck_assert_int_eq(buf[0], 0x5A);
}
END_TEST

/* ---- a connection ---- */

START_TEST(responder_request)
{
    tctx_t *t = tctx_new(1);
    cg_fcgi_buf_t b = {0};
    add_request(&b, 1, CG_FCGI_KEEP_CONN, std_params);
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->ready, 1);
    ck_assert_int_eq(t->last_id, 1);
    ck_assert(t->last_keep);
    ck_assert_uint_eq(t->last_count, 7);
    ck_assert_str_eq(t->method, "GET");
    ck_assert_str_eq(t->uri, "/events?ns=app.orders");
    ck_assert_str_eq(t->lei, "82000000010000000");
    ck_assert(t->origin_present);
    ck_assert_str_eq(t->origin, "");
    ck_assert_uint_eq(t->long_len, 300);
    ck_assert_int_eq(t->writes, 0); /* nothing is answered for the application */
    ck_assert(cg_fcgi_conn_is_active(t->conn, 1));
    ck_assert_uint_eq(cg_fcgi_conn_active(t->conn), 1);

    ck_assert_int_eq(cg_fcgi_conn_end_request(t->conn, 1, 0, CG_FCGI_REQUEST_COMPLETE), 0);
    trec_t r[MAX_RECS];
    ck_assert_uint_eq(take_out(t, r), 2);
    ck_assert_int_eq(r[0].type, CG_FCGI_STDOUT); /* the stream's end */
    ck_assert_int_eq(r[0].id, 1);
    ck_assert_uint_eq(r[0].len, 0);
    expect_end_request(&r[1], 1, 0, CG_FCGI_REQUEST_COMPLETE);
    free_recs(r, 2);
    ck_assert(!cg_fcgi_conn_is_active(t->conn, 1));
    ck_assert(!cg_fcgi_conn_should_close(t->conn)); /* KEEP_CONN */
    ck_assert_int_eq(cg_fcgi_conn_end_request(t->conn, 1, 0, CG_FCGI_REQUEST_COMPLETE), -1);
    ck_assert_uint_eq(cg_fcgi_conn_memory(t->conn), 0);

    /* The id is used again on the same connection. */
    b.len = 0;
    add_request(&b, 1, CG_FCGI_KEEP_CONN, std_params);
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->ready, 2);
    cg_fcgi_buf_free(&b);
    tctx_free(t);
}
END_TEST

START_TEST(without_keep_conn_the_application_closes)
{
    tctx_t *t = tctx_new(4);
    cg_fcgi_buf_t b = {0};
    add_request(&b, 1, 0, std_params);
    add_request(&b, 2, CG_FCGI_KEEP_CONN, std_params);
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->ready, 2);
    ck_assert_ptr_nonnull(strstr(t->log, "ready 1 keep=0 "));
    ck_assert_ptr_nonnull(strstr(t->log, "ready 2 keep=1 "));
    ck_assert(!cg_fcgi_conn_should_close(t->conn));
    ck_assert_int_eq(cg_fcgi_conn_end_request(t->conn, 1, 0, CG_FCGI_REQUEST_COMPLETE), 0);
    /* Not while request 2 is served over the same connection. */
    ck_assert(!cg_fcgi_conn_should_close(t->conn));
    ck_assert_int_eq(cg_fcgi_conn_end_request(t->conn, 2, 0, CG_FCGI_REQUEST_COMPLETE), 0);
    ck_assert(cg_fcgi_conn_should_close(t->conn));
    cg_fcgi_buf_free(&b);
    tctx_free(t);
}
END_TEST

/* The pairs' bytes split into two PARAMS records at every offset, then into
 * records of one byte each. */
START_TEST(pairs_split_across_params_records)
{
    uint8_t s[4096];
    size_t n = nv_stream(s, sizeof s, std_params);
    for (size_t k = 0; k <= n + 1; k++) {
        tctx_t *t = tctx_new(1);
        cg_fcgi_buf_t b = {0};
        add_begin(&b, 1, CG_FCGI_RESPONDER, 0);
        if (k <= n) {
            if (k)
                add_record(&b, CG_FCGI_PARAMS, 1, s, k);
            if (n - k)
                add_record(&b, CG_FCGI_PARAMS, 1, s + k, n - k);
        } else {
            for (size_t i = 0; i < n; i++)
                add_record(&b, CG_FCGI_PARAMS, 1, s + i, 1);
        }
        feed_ok(t, b.data, b.len);
        ck_assert_int_eq(t->ready, 0); /* not before the stream's end */
        b.len = 0;
        add_record(&b, CG_FCGI_PARAMS, 1, NULL, 0);
        feed_ok(t, b.data, b.len);
        ck_assert_int_eq(t->ready, 1);
        ck_assert_uint_eq(t->last_count, 7);
        ck_assert_str_eq(t->uri, "/events?ns=app.orders");
        ck_assert_uint_eq(t->long_len, 300);
        cg_fcgi_buf_free(&b);
        tctx_free(t);
    }
}
END_TEST

/* Management, multiplexed requests, padding, a body, ignored records, an
 * abort, a refusal: one conversation. */
static cg_fcgi_buf_t conversation(void)
{
    cg_fcgi_buf_t b = {0};
    uint8_t q[256], s1[4096], s2[256];
    const char *query[] = {"FCGI_MAX_CONNS",
                           "",
                           "FCGI_MAX_REQS",
                           "",
                           "FCGI_MPXS_CONNS",
                           "",
                           "NOT_A_VARIABLE",
                           "",
                           NULL};
    add_record(&b, CG_FCGI_GET_VALUES, 0, q, nv_stream(q, sizeof q, query));
    size_t n1 = nv_stream(s1, sizeof s1, std_params);
    const char *p2[] = {"REQUEST_METHOD", "GET", "REQUEST_URI", "/poll", NULL};
    size_t n2 = nv_stream(s2, sizeof s2, p2);
    add_begin(&b, 1, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    add_record(&b, CG_FCGI_PARAMS, 1, s1, 100); /* within the long name's pair */
    add_begin(&b, 2, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    add_record(&b, CG_FCGI_PARAMS, 1, s1 + 100, n1 - 100);
    add_padded(&b, CG_FCGI_PARAMS, 2, s2, n2, 255);
    add_record(&b, CG_FCGI_PARAMS, 1, NULL, 0);
    add_record(&b, CG_FCGI_STDIN, 1, "a body nobody reads", 19);
    add_record(&b, CG_FCGI_STDIN, 1, NULL, 0);
    add_record(&b, CG_FCGI_PARAMS, 2, NULL, 0);
    add_record(&b, 42, 0, "?", 1);                     /* unknown management type */
    add_record(&b, CG_FCGI_PARAMS, 9, s2, n2);         /* inactive id */
    add_record(&b, CG_FCGI_ABORT_REQUEST, 2, NULL, 0); /* the client of 2 left */
    add_begin(&b, 3, CG_FCGI_AUTHORIZER, 0);           /* refused */
    add_begin(&b, 1, CG_FCGI_RESPONDER, 0);            /* 1 is live: ignored */
    add_record(&b, CG_FCGI_STDIN, 2, NULL, 0);         /* 2 has ended: ignored */
    add_padded(&b, CG_FCGI_DATA, 1, "d", 1, 7);        /* a Responder gets no DATA */
    return b;
}

static tctx_t *conversation_ctx(void)
{
    tctx_t *t = tctx_new(8);
    t->end_on_abort = true;
    return t;
}

START_TEST(conversation_whole)
{
    cg_fcgi_buf_t b = conversation();
    tctx_t *t = conversation_ctx();
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->ready, 2);
    ck_assert_int_eq(t->aborts, 1);
    ck_assert_int_eq(t->refusals, 1);
    ck_assert_uint_eq(cg_fcgi_conn_ignored(t->conn), 4);
    ck_assert(cg_fcgi_conn_is_active(t->conn, 1));
    ck_assert(!cg_fcgi_conn_is_active(t->conn, 2));
    ck_assert(!cg_fcgi_conn_mid_record(t->conn));
    trec_t r[MAX_RECS];
    size_t n = take_out(t, r);
    ck_assert_uint_eq(n, 5);
    ck_assert_int_eq(r[0].type, CG_FCGI_GET_VALUES_RESULT);
    ck_assert_int_eq(r[1].type, CG_FCGI_UNKNOWN_TYPE);
    ck_assert_int_eq(r[1].content[0], 42);
    ck_assert_int_eq(r[2].type, CG_FCGI_STDOUT); /* 2 ended by its abort */
    ck_assert_int_eq(r[2].id, 2);
    expect_end_request(&r[3], 2, 0, CG_FCGI_REQUEST_COMPLETE);
    expect_end_request(&r[4], 3, 0, CG_FCGI_UNKNOWN_ROLE);
    free_recs(r, n);
    cg_fcgi_buf_free(&b);
    tctx_free(t);
}
END_TEST

/* What the connection reports is the same however the bytes arrive. */
START_TEST(conversation_split_at_every_offset)
{
    cg_fcgi_buf_t b = conversation();
    tctx_t *whole = conversation_ctx();
    feed_ok(whole, b.data, b.len);
    ck_assert_uint_gt(whole->log_len, 0);
    for (size_t k = 0; k <= b.len; k++) {
        tctx_t *t = conversation_ctx();
        feed_ok(t, b.data, k);
        feed_ok(t, b.data + k, b.len - k);
        ck_assert_msg(t->log_len == whole->log_len && memcmp(t->log, whole->log, t->log_len) == 0,
                      "split at %zu:\n%s\nwhole:\n%s", k, t->log, whole->log);
        ck_assert_uint_eq(cg_fcgi_conn_ignored(t->conn), 4);
        tctx_free(t);
    }
    tctx_t *t = conversation_ctx();
    for (size_t k = 0; k < b.len; k++) {
        feed_ok(t, b.data + k, 1);
        ck_assert_uint_le(cg_fcgi_conn_memory(t->conn), 2 * CG_FCGI_MAX_PARAMS_BYTES);
    }
    ck_assert_str_eq(t->log, whole->log);
    tctx_free(t);
    tctx_free(whole);
    cg_fcgi_buf_free(&b);
}
END_TEST

START_TEST(multiplexed_requests)
{
    tctx_t *t = tctx_new(2);
    cg_fcgi_buf_t b = {0};
    uint8_t s1[256], s2[256];
    const char *p1[] = {"REQUEST_METHOD", "GET", "REQUEST_URI", "/events", NULL};
    const char *p2[] = {"REQUEST_METHOD", "POST", "REQUEST_URI", "/poll", NULL};
    size_t n1 = nv_stream(s1, sizeof s1, p1), n2 = nv_stream(s2, sizeof s2, p2);
    add_begin(&b, 7, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    add_begin(&b, 300, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    add_record(&b, CG_FCGI_PARAMS, 300, s2, 5);
    add_record(&b, CG_FCGI_PARAMS, 7, s1, n1);
    add_record(&b, CG_FCGI_PARAMS, 300, s2 + 5, n2 - 5);
    add_record(&b, CG_FCGI_PARAMS, 300, NULL, 0);
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->ready, 1);
    ck_assert_int_eq(t->last_id, 300);
    ck_assert_str_eq(t->method, "POST");
    ck_assert_str_eq(t->uri, "/poll");
    b.len = 0;
    add_record(&b, CG_FCGI_PARAMS, 7, NULL, 0);
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->ready, 2);
    ck_assert_int_eq(t->last_id, 7);
    ck_assert_str_eq(t->method, "GET");
    ck_assert_str_eq(t->uri, "/events");
    ck_assert_uint_eq(cg_fcgi_conn_active(t->conn), 2);

    /* A third while two are live: OVERLOADED (this connection multiplexes). */
    b.len = 0;
    add_begin(&b, 8, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    add_record(&b, CG_FCGI_PARAMS, 8, s1, n1);
    add_record(&b, CG_FCGI_PARAMS, 8, NULL, 0);
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->ready, 2);
    trec_t r[MAX_RECS];
    ck_assert_uint_eq(take_out(t, r), 1);
    expect_end_request(&r[0], 8, 0, CG_FCGI_OVERLOADED);
    free_recs(r, 1);
    /* One ends: the next is taken. */
    ck_assert_int_eq(cg_fcgi_conn_end_request(t->conn, 300, 0, CG_FCGI_REQUEST_COMPLETE), 0);
    t->out.len = 0;
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->ready, 3);
    ck_assert_int_eq(t->last_id, 8);
    ck_assert_uint_eq(t->out.len, 0);
    cg_fcgi_buf_free(&b);
    tctx_free(t);

    /* A connection that takes one request at a time: CANT_MPX_CONN. */
    t = tctx_new(1);
    b = (cg_fcgi_buf_t){0};
    add_begin(&b, 1, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    add_begin(&b, 2, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    feed_ok(t, b.data, b.len);
    ck_assert_uint_eq(take_out(t, r), 1);
    expect_end_request(&r[0], 2, 0, CG_FCGI_CANT_MPX_CONN);
    free_recs(r, 1);
    ck_assert_int_eq(t->refusals, 1);
    ck_assert(cg_fcgi_conn_is_active(t->conn, 1));
    ck_assert(!cg_fcgi_conn_is_active(t->conn, 2));
    cg_fcgi_buf_free(&b);
    tctx_free(t);
}
END_TEST

START_TEST(abort_request)
{
    tctx_t *t = tctx_new(4);
    cg_fcgi_buf_t b = {0};
    trec_t r[MAX_RECS];
    /* Before it is ready: answered here, the front end never hears of it. */
    add_begin(&b, 5, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    add_record(&b, CG_FCGI_ABORT_REQUEST, 5, NULL, 0);
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->aborts, 0);
    ck_assert_uint_eq(take_out(t, r), 1);
    expect_end_request(&r[0], 5, 0, CG_FCGI_REQUEST_COMPLETE);
    free_recs(r, 1);
    ck_assert(!cg_fcgi_conn_is_active(t->conn, 5));

    /* After: the front end's, once. */
    b.len = 0;
    add_request(&b, 6, CG_FCGI_KEEP_CONN, std_params);
    add_record(&b, CG_FCGI_ABORT_REQUEST, 6, NULL, 0);
    add_record(&b, CG_FCGI_ABORT_REQUEST, 6, NULL, 0);
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->ready, 1);
    ck_assert_int_eq(t->aborts, 1);
    ck_assert_uint_eq(t->out.len, 0);
    ck_assert_uint_eq(cg_fcgi_conn_ignored(t->conn), 1);
    ck_assert(cg_fcgi_conn_is_active(t->conn, 6)); /* until the front end ends it */
    ck_assert_int_eq(cg_fcgi_conn_end_request(t->conn, 6, 0, CG_FCGI_REQUEST_COMPLETE), 0);
    t->out.len = 0;
    /* After it ended: an inactive id, ignored. */
    b.len = 0;
    add_record(&b, CG_FCGI_ABORT_REQUEST, 6, NULL, 0);
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->aborts, 1);
    ck_assert_uint_eq(t->out.len, 0);
    ck_assert_uint_eq(cg_fcgi_conn_ignored(t->conn), 2);
    cg_fcgi_buf_free(&b);
    tctx_free(t);
}
END_TEST

/* The GET_VALUES_RESULT's pairs, as "NAME=VALUE;". */
static void result_pairs(const trec_t *r, char *out, size_t cap)
{
    ck_assert_int_eq(r->type, CG_FCGI_GET_VALUES_RESULT);
    ck_assert_int_eq(r->id, 0);
    out[0] = '\0';
    size_t off = 0, used, w = 0;
    cg_fcgi_nv_t nv;
    while (off < r->len) {
        ck_assert_int_eq(cg_fcgi_nv_decode(r->content + off, r->len - off, &nv, &used), 1);
        w += (size_t)snprintf(out + w, cap - w, "%.*s=%.*s;", (int)nv.name_len, nv.name,
                              (int)nv.value_len, nv.value);
        off += used;
    }
}

START_TEST(get_values)
{
    const char *query[] = {"FCGI_MPXS_CONNS",
                           "",
                           "FCGI_UNKNOWN",
                           "",
                           "FCGI_MAX_CONNS",
                           "",
                           "FCGI_MAX_REQS",
                           "",
                           "fcgi_max_reqs",
                           "",
                           "FCGI_MAX_CONNS",
                           "x",
                           NULL};
    uint8_t q[512];
    size_t qn = nv_stream(q, sizeof q, query);
    trec_t r[MAX_RECS];
    char pairs[256];
    for (unsigned per_conn = 1; per_conn <= 2; per_conn++) {
        tctx_t *t = tctx_new(per_conn);
        cg_fcgi_buf_t b = {0};
        add_record(&b, CG_FCGI_GET_VALUES, 0, q, qn);
        add_record(&b, CG_FCGI_GET_VALUES, 0, NULL, 0); /* nothing asked */
        feed_ok(t, b.data, b.len);
        ck_assert_uint_eq(take_out(t, r), 2);
        result_pairs(&r[0], pairs, sizeof pairs);
        /* In the order asked, each once, unknown names (and case) omitted. */
        ck_assert_str_eq(pairs, per_conn == 1
                                    ? "FCGI_MPXS_CONNS=0;FCGI_MAX_CONNS=100;FCGI_MAX_REQS=5000;"
                                    : "FCGI_MPXS_CONNS=1;FCGI_MAX_CONNS=100;FCGI_MAX_REQS=5000;");
        ck_assert_uint_eq(r[0].padding, cg_fcgi_padding_for(r[0].len));
        ck_assert_uint_eq(r[1].len, 0);
        free_recs(r, 2);
        ck_assert_int_eq(t->ready + t->aborts + t->refusals, 0);
        /* Malformed pairs in a management record: a protocol error. */
        b.len = 0;
        add_record(&b, CG_FCGI_GET_VALUES, 0,
                   "\x0e\x05"
                   "FCGI_MAX",
                   10);
        char err[128] = "";
        ck_assert_int_eq(feed_rc(t, b.data, b.len, err, sizeof err), -1);
        ck_assert_ptr_nonnull(strstr(err, "GET_VALUES"));
        cg_fcgi_buf_free(&b);
        tctx_free(t);
    }
}
END_TEST

START_TEST(unknown_management_types)
{
    tctx_t *t = tctx_new(1);
    cg_fcgi_buf_t b = {0};
    add_record(&b, 200, 0, "abc", 3);
    add_begin(&b, 0, CG_FCGI_RESPONDER, 0);                /* BEGIN is no management type */
    add_record(&b, CG_FCGI_GET_VALUES_RESULT, 0, NULL, 0); /* ours to send, not to get */
    feed_ok(t, b.data, b.len);
    trec_t r[MAX_RECS];
    ck_assert_uint_eq(take_out(t, r), 3);
    const uint8_t types[3] = {200, CG_FCGI_BEGIN_REQUEST, CG_FCGI_GET_VALUES_RESULT};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(r[i].type, CG_FCGI_UNKNOWN_TYPE);
        ck_assert_int_eq(r[i].id, 0);
        ck_assert_uint_eq(r[i].len, 8);
        ck_assert_int_eq(r[i].content[0], types[i]);
        for (int j = 1; j < 8; j++)
            ck_assert_int_eq(r[i].content[j], 0);
    }
    free_recs(r, 3);
    ck_assert_int_eq(t->ready, 0);
    ck_assert_uint_eq(cg_fcgi_conn_active(t->conn), 0);
    cg_fcgi_buf_free(&b);
    tctx_free(t);
}
END_TEST

START_TEST(unknown_roles)
{
    const uint16_t roles[] = {CG_FCGI_AUTHORIZER, CG_FCGI_FILTER, 0, 4, 0x0101, 0xFFFF};
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
        tctx_t *t = tctx_new(1);
        cg_fcgi_buf_t b = {0};
        uint8_t s[4096];
        size_t n = nv_stream(s, sizeof s, std_params);
        add_begin(&b, 4, roles[i], CG_FCGI_KEEP_CONN);
        add_record(&b, CG_FCGI_PARAMS, 4, s, n);
        add_record(&b, CG_FCGI_PARAMS, 4, NULL, 0);
        feed_ok(t, b.data, b.len);
        ck_assert_int_eq(t->ready, 0);
        ck_assert_int_eq(t->refusals, 1);
        ck_assert_uint_eq(cg_fcgi_conn_ignored(t->conn), 2); /* the PARAMS records */
        trec_t r[MAX_RECS];
        ck_assert_uint_eq(take_out(t, r), 1);
        expect_end_request(&r[0], 4, 0, CG_FCGI_UNKNOWN_ROLE);
        free_recs(r, 1);
        ck_assert(!cg_fcgi_conn_should_close(t->conn));
        cg_fcgi_buf_free(&b);
        tctx_free(t);
    }
    /* Without KEEP_CONN, the refusal closes the connection. */
    tctx_t *t = tctx_new(1);
    cg_fcgi_buf_t b = {0};
    add_begin(&b, 4, CG_FCGI_FILTER, 0);
    feed_ok(t, b.data, b.len);
    ck_assert(cg_fcgi_conn_should_close(t->conn));
    cg_fcgi_buf_free(&b);
    tctx_free(t);
}
END_TEST

START_TEST(bad_version_fails_the_connection)
{
    tctx_t *t = tctx_new(1);
    char err[128] = "";
    const char *http = "GET /events HTTP/1.1\r\nHost: x\r\n\r\n"; /* HTTP to the FastCGI port */
    ck_assert_int_eq(feed_rc(t, http, strlen(http), err, sizeof err), -1);
    ck_assert_msg(strstr(err, "version 71") != NULL, "%s", err); /* 'G' */
    cg_fcgi_buf_t b = {0};
    add_request(&b, 1, 0, std_params);
    ck_assert_int_eq(feed_rc(t, b.data, b.len, err, sizeof err), -1);
    ck_assert_int_eq(t->ready, 0);
    ck_assert_int_eq(t->writes, 0);
    tctx_free(t);

    /* Good records first, then one of version 2. */
    t = tctx_new(1);
    uint8_t bad[8];
    cg_fcgi_encode_header(bad, CG_FCGI_STDIN, 1, 0, 0);
    bad[0] = 2;
    append_raw(&b, bad, sizeof bad);
    ck_assert_int_eq(feed_rc(t, b.data, b.len, err, sizeof err), -1);
    ck_assert_int_eq(t->ready, 1);
    ck_assert_ptr_nonnull(strstr(err, "version 2"));
    cg_fcgi_buf_free(&b);
    tctx_free(t);
}
END_TEST

START_TEST(begin_request_body_must_be_8_bytes)
{
    for (size_t len = 0; len < 12; len += 1) {
        if (len == 8)
            continue;
        tctx_t *t = tctx_new(1);
        cg_fcgi_buf_t b = {0};
        uint8_t body[12] = {0, 1, 1};
        add_record(&b, CG_FCGI_BEGIN_REQUEST, 1, body, len);
        char err[128] = "";
        ck_assert_int_eq(feed_rc(t, b.data, b.len, err, sizeof err), -1);
        ck_assert_ptr_nonnull(strstr(err, "BEGIN_REQUEST"));
        cg_fcgi_buf_free(&b);
        tctx_free(t);
    }
}
END_TEST

/* The text of request id's STDOUT stream in recs. */
static void stdout_text(const trec_t *recs, size_t n, uint16_t id, char *out, size_t cap)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (recs[i].type != CG_FCGI_STDOUT || recs[i].id != id)
            continue;
        ck_assert_uint_lt(w + recs[i].len, cap);
        memcpy(out + w, recs[i].content, recs[i].len);
        w += recs[i].len;
    }
    out[w] = '\0';
}

/* An HTTP error answered here: the Status line, a JSON body, the empty
 * STDOUT, END_REQUEST. */
static void expect_http_refusal(tctx_t *t, uint16_t id, const char *status, const char *code)
{
    trec_t r[MAX_RECS];
    size_t n = take_out(t, r);
    ck_assert_uint_ge(n, 3);
    char text[2048];
    stdout_text(r, n, id, text, sizeof text);
    ck_assert_msg(strncmp(text, status, strlen(status)) == 0, "%s", text);
    ck_assert_ptr_nonnull(strstr(text, "Content-Type: application/json\r\n"));
    const char *body = strstr(text, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    json_error_t je;
    json_t *j = json_loads(body + 4, 0, &je);
    ck_assert_msg(j != NULL, "%s: %s", je.text, body + 4);
    ck_assert_str_eq(json_string_value(json_object_get(j, "error")), code);
    ck_assert_ptr_nonnull(json_string_value(json_object_get(j, "message")));
    json_decref(j);
    ck_assert_int_eq(r[n - 2].type, CG_FCGI_STDOUT);
    ck_assert_uint_eq(r[n - 2].len, 0);
    expect_end_request(&r[n - 1], id, 0, CG_FCGI_REQUEST_COMPLETE);
    free_recs(r, n);
    ck_assert(!cg_fcgi_conn_is_active(t->conn, id));
    ck_assert_int_eq(t->ready, 0);
}

START_TEST(lengths_that_overrun)
{
    cg_fcgi_buf_t b = {0};
    /* The last pair's value runs past the stream's end: 400 at the end. */
    const uint8_t past_value[] = {2, 'O', 'K', '1', 5, 3, 'H', 'O', 'S', 'T', 'x'};
    const uint8_t past_name[] = {40, 1, 'a', 'b'};
    const uint8_t cut_length[] = {1, 0x80, 0};
    const struct {
        const uint8_t *s;
        size_t n;
    } cases[] = {{past_value, sizeof past_value},
                 {past_name, sizeof past_name},
                 {cut_length, sizeof cut_length}};
    for (size_t i = 0; i < 3; i++) {
        tctx_t *t = tctx_new(1);
        b.len = 0;
        add_begin(&b, 1, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
        add_record(&b, CG_FCGI_PARAMS, 1, cases[i].s, cases[i].n);
        feed_ok(t, b.data, b.len);
        ck_assert_uint_eq(t->out.len, 0); /* the rest may come in the next record */
        b.len = 0;
        add_record(&b, CG_FCGI_PARAMS, 1, NULL, 0);
        add_record(&b, CG_FCGI_STDIN, 1, NULL, 0);
        feed_ok(t, b.data, b.len);
        expect_http_refusal(t, 1, "Status: 400 Bad Request\r\n", "bad_request");
        tctx_free(t);
    }
    /* A 4-byte length beyond any limit: 431 at once, not after 2 GB. */
    const uint8_t huge_name[] = {0xFF, 0xFF, 0xFF, 0xFF, 1, 'a'};
    const uint8_t huge_value[] = {4, 0xFF, 0xFF, 0xFF, 0xFF, 'N', 'A', 'M', 'E', 'v'};
    const uint8_t over_by_one[] = {0x80, 0, 0xFF, 0xFC, 0, 'n'}; /* 4+1+65532 > 64 KiB */
    const uint8_t *huge[] = {huge_name, huge_value, over_by_one};
    const size_t huge_n[] = {sizeof huge_name, sizeof huge_value, sizeof over_by_one};
    for (size_t i = 0; i < 3; i++) {
        tctx_t *t = tctx_new(1);
        b.len = 0;
        add_begin(&b, 1, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
        add_record(&b, CG_FCGI_PARAMS, 1, huge[i], huge_n[i]);
        feed_ok(t, b.data, b.len);
        expect_http_refusal(t, 1, "Status: 431 Request Header Fields Too Large\r\n",
                            "headers_too_large");
        /* What follows for the refused id is ignored. */
        b.len = 0;
        add_record(&b, CG_FCGI_PARAMS, 1, "xx", 2);
        add_record(&b, CG_FCGI_PARAMS, 1, NULL, 0);
        feed_ok(t, b.data, b.len);
        ck_assert_int_eq(t->ready, 0);
        ck_assert_uint_eq(t->out.len, 0);
        tctx_free(t);
    }
    /* Exactly at the limit is fine: one pair of 64 KiB in two records. */
    tctx_t *t = tctx_new(1);
    size_t vlen = CG_FCGI_MAX_PARAMS_BYTES - 1 - 4 - 4; /* lengths 1 + 4 bytes, name 4 */
    uint8_t *s = malloc(CG_FCGI_MAX_PARAMS_BYTES), *v = malloc(vlen);
    memset(v, 'v', vlen);
    ck_assert_uint_eq(cg_fcgi_nv_encode(s, CG_FCGI_MAX_PARAMS_BYTES, "HTTP", 4, v, vlen),
                      CG_FCGI_MAX_PARAMS_BYTES);
    free(v);
    b.len = 0;
    add_begin(&b, 1, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    add_record(&b, CG_FCGI_PARAMS, 1, s, 60000);
    add_record(&b, CG_FCGI_PARAMS, 1, s + 60000, CG_FCGI_MAX_PARAMS_BYTES - 60000);
    add_record(&b, CG_FCGI_PARAMS, 1, NULL, 0);
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->ready, 1);
    ck_assert_uint_le(cg_fcgi_conn_memory(t->conn), CG_FCGI_MAX_PARAMS_BYTES + 256);
    tctx_free(t);
    /* One byte more, even in separate records: 431. */
    t = tctx_new(1);
    b.len = 0;
    add_begin(&b, 1, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    add_record(&b, CG_FCGI_PARAMS, 1, s, 60000);
    add_record(&b, CG_FCGI_PARAMS, 1, s, CG_FCGI_MAX_PARAMS_BYTES - 60000);
    add_record(&b, CG_FCGI_PARAMS, 1, "x", 1);
    feed_ok(t, b.data, b.len);
    expect_http_refusal(t, 1, "Status: 431 ", "headers_too_large");
    tctx_free(t);
    free(s);
    /* Too many pairs. */
    cg_fcgi_limits_t lim = {.max_reqs_per_conn = 1, .max_params = 3};
    t = tctx_new_limits(&lim);
    const char *four[] = {"A", "1", "B", "2", "C", "3", "D", "4", NULL};
    const char *three[] = {"A", "1", "B", "2", "C", "3", NULL};
    b.len = 0;
    add_request(&b, 1, CG_FCGI_KEEP_CONN, three);
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->ready, 1);
    ck_assert_int_eq(cg_fcgi_conn_end_request(t->conn, 1, 0, CG_FCGI_REQUEST_COMPLETE), 0);
    t->out.len = 0;
    t->ready = 0;
    b.len = 0;
    add_request(&b, 2, CG_FCGI_KEEP_CONN, four);
    feed_ok(t, b.data, b.len);
    expect_http_refusal(t, 2, "Status: 431 ", "headers_too_large");
    tctx_free(t);
    cg_fcgi_buf_free(&b);
}
END_TEST

START_TEST(second_begin_for_a_live_id_is_ignored)
{
    tctx_t *t = tctx_new(4);
    cg_fcgi_buf_t b = {0};
    uint8_t s[4096];
    size_t n = nv_stream(s, sizeof s, std_params);
    add_begin(&b, 1, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    add_record(&b, CG_FCGI_PARAMS, 1, s, 10);
    add_begin(&b, 1, CG_FCGI_FILTER, 0); /* neither refused nor restarting the request */
    add_record(&b, CG_FCGI_PARAMS, 1, s + 10, n - 10);
    add_record(&b, CG_FCGI_PARAMS, 1, NULL, 0);
    add_begin(&b, 1, CG_FCGI_RESPONDER, 0); /* after it is ready, too */
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->ready, 1);
    ck_assert(t->last_keep); /* the first BEGIN's flags */
    ck_assert_uint_eq(t->last_count, 7);
    ck_assert_int_eq(t->writes, 0);
    ck_assert_int_eq(t->refusals, 0);
    ck_assert_uint_eq(cg_fcgi_conn_ignored(t->conn), 2);
    ck_assert_uint_eq(cg_fcgi_conn_active(t->conn), 1);
    cg_fcgi_buf_free(&b);
    tctx_free(t);
}
END_TEST

/* A small deterministic generator: the same garbage every run. */
static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

START_TEST(garbage_is_a_protocol_error)
{
    size_t len = 64 * 1024;
    uint8_t *g = malloc(len);
    for (uint32_t seed = 1; seed <= 200; seed++) {
        uint32_t s = seed;
        for (size_t i = 0; i < len; i++)
            g[i] = (uint8_t)lcg(&s);
        if (seed % 2 == 0)
            g[0] = CG_FCGI_VERSION_1; /* a plausible first header, then garbage */
        tctx_t *t = tctx_new(4);
        char err[128] = "";
        int rc = 0;
        size_t off = 0, fed = 0;
        /* In uneven chunks, bounded memory all along. Garbage that happens to
         * start with a version-1 header may be one record of up to 65798
         * bytes: then more garbage (the same again) must fail. */
        while (rc == 0 && fed < 4 * len) {
            size_t n = 1 + lcg(&s) % 9000;
            n = n < len - off ? n : len - off;
            rc = feed_rc(t, g + off, n, err, sizeof err);
            ck_assert_uint_le(cg_fcgi_conn_memory(t->conn),
                              CG_FCGI_MAX_CONTENT + 4 * (CG_FCGI_MAX_PARAMS_BYTES + 32768));
            off = (off + n) % len;
            fed += n;
        }
        ck_assert_msg(rc == -1, "seed %u: 256 KiB of garbage passed", seed);
        if (g[0] != CG_FCGI_VERSION_1)
            ck_assert_uint_eq(fed, off); /* at once: within the first 64 KiB */
        ck_assert_uint_gt(strlen(err), 0);
        tctx_free(t);
    }
    free(g);
}
END_TEST

START_TEST(closed_mid_record)
{
    cg_fcgi_buf_t b = {0};
    add_request(&b, 1, CG_FCGI_KEEP_CONN, std_params);
    /* Record boundaries of b: header, BEGIN body, PARAMS... */
    size_t bounds[8] = {0};
    size_t nb = 0;
    {
        size_t off = 0;
        while (off < b.len) {
            bounds[nb++] = off;
            off += 8 + (size_t)(b.data[off + 4] << 8 | b.data[off + 5]) + b.data[off + 6];
        }
        bounds[nb++] = off;
    }
    ck_assert_uint_eq(nb, 5);
    for (size_t k = 0; k <= b.len; k++) {
        tctx_t *t = tctx_new(1);
        feed_ok(t, b.data, k);
        bool boundary = false;
        for (size_t i = 0; i < nb; i++)
            boundary |= bounds[i] == k;
        ck_assert_msg(cg_fcgi_conn_mid_record(t->conn) == !boundary, "at %zu", k);
        tctx_free(t);
    }
    /* Padding still due is mid-record too. */
    tctx_t *t = tctx_new(1);
    b.len = 0;
    add_padded(&b, CG_FCGI_STDIN, 1, "abc", 3, 5);
    feed_ok(t, b.data, b.len - 1);
    ck_assert(cg_fcgi_conn_mid_record(t->conn));
    feed_ok(t, b.data + b.len - 1, 1);
    ck_assert(!cg_fcgi_conn_mid_record(t->conn));
    tctx_free(t);
    cg_fcgi_buf_free(&b);
}
END_TEST

START_TEST(split_record_memory_is_bounded_and_freed)
{
    static uint8_t big[CG_FCGI_MAX_CONTENT];
    cg_fcgi_buf_t b = {0};
    add_record(&b, CG_FCGI_STDIN, 3, big, sizeof big);
    tctx_t *t = tctx_new(1);
    size_t max_seen = 0;
    for (size_t off = 0; off < b.len; off += 1000) {
        size_t n = b.len - off < 1000 ? b.len - off : 1000;
        feed_ok(t, b.data + off, n);
        size_t m = cg_fcgi_conn_memory(t->conn);
        max_seen = m > max_seen ? m : max_seen;
    }
    ck_assert_uint_eq(max_seen, CG_FCGI_MAX_CONTENT);   /* exactly one record's content */
    ck_assert_uint_eq(cg_fcgi_conn_memory(t->conn), 0); /* and none once handled */
    tctx_free(t);
    cg_fcgi_buf_free(&b);
}
END_TEST

START_TEST(stdin_body_is_discarded)
{
    tctx_t *t = tctx_new(1);
    cg_fcgi_buf_t b = {0};
    static uint8_t body[CG_FCGI_MAX_CONTENT];
    memset(body, 'B', sizeof body);
    uint8_t s[4096];
    size_t n = nv_stream(s, sizeof s, std_params);
    add_begin(&b, 1, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    add_record(&b, CG_FCGI_PARAMS, 1, s, n);
    add_record(&b, CG_FCGI_PARAMS, 1, NULL, 0);
    for (int i = 0; i < 3; i++)
        add_record(&b, CG_FCGI_STDIN, 1, body, sizeof body);
    add_record(&b, CG_FCGI_STDIN, 1, NULL, 0);
    add_record(&b, CG_FCGI_ABORT_REQUEST, 1, NULL, 0); /* still framed right after the body */
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->ready, 1);
    ck_assert_int_eq(t->aborts, 1);
    ck_assert_int_eq(t->writes, 0);
    ck_assert_uint_eq(cg_fcgi_conn_ignored(t->conn), 0);
    ck_assert_uint_lt(cg_fcgi_conn_memory(t->conn), 8192); /* the body was not kept */
    cg_fcgi_buf_free(&b);
    tctx_free(t);
}
END_TEST

START_TEST(records_for_inactive_ids_are_ignored)
{
    tctx_t *t = tctx_new(1);
    cg_fcgi_buf_t b = {0};
    uint8_t s[4096];
    size_t n = nv_stream(s, sizeof s, std_params);
    add_record(&b, CG_FCGI_PARAMS, 7, s, n);
    add_record(&b, CG_FCGI_PARAMS, 7, NULL, 0);
    add_record(&b, CG_FCGI_STDIN, 7, "x", 1);
    add_record(&b, CG_FCGI_ABORT_REQUEST, 7, NULL, 0);
    add_record(&b, CG_FCGI_END_REQUEST, 7, "12345678", 8);
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->ready + t->aborts + t->writes + t->refusals, 0);
    ck_assert_uint_eq(cg_fcgi_conn_ignored(t->conn), 5);
    /* Types a Responder never gets, for an active id. */
    b.len = 0;
    add_begin(&b, 7, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    add_record(&b, CG_FCGI_DATA, 7, "d", 1);
    add_record(&b, CG_FCGI_STDOUT, 7, "o", 1);
    add_record(&b, CG_FCGI_GET_VALUES, 7, NULL, 0);
    add_record(&b, 99, 7, NULL, 0);
    feed_ok(t, b.data, b.len);
    ck_assert_uint_eq(cg_fcgi_conn_ignored(t->conn), 9);
    ck_assert_int_eq(t->writes, 0);
    cg_fcgi_buf_free(&b);
    tctx_free(t);
}
END_TEST

START_TEST(callbacks_may_end_requests)
{
    tctx_t *t = tctx_new(2);
    t->end_on_ready = true;
    cg_fcgi_buf_t b = {0};
    add_request(&b, 1, 0, std_params);
    add_request(&b, 2, CG_FCGI_KEEP_CONN, std_params);
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(t->ready, 2);
    ck_assert_uint_eq(cg_fcgi_conn_active(t->conn), 0);
    ck_assert(cg_fcgi_conn_should_close(t->conn)); /* request 1 had no KEEP_CONN */
    trec_t r[MAX_RECS];
    ck_assert_uint_eq(take_out(t, r), 4);
    ck_assert_int_eq(r[0].type, CG_FCGI_STDOUT);
    expect_end_request(&r[1], 1, 7, CG_FCGI_REQUEST_COMPLETE);
    ck_assert_int_eq(r[2].type, CG_FCGI_STDOUT);
    expect_end_request(&r[3], 2, 7, CG_FCGI_REQUEST_COMPLETE);
    free_recs(r, 4);
    /* A refusal by the front end: END_REQUEST alone. */
    t->end_on_ready = false;
    b.len = 0;
    add_request(&b, 3, CG_FCGI_KEEP_CONN, std_params);
    feed_ok(t, b.data, b.len);
    ck_assert_int_eq(cg_fcgi_conn_end_request(t->conn, 3, 0, CG_FCGI_OVERLOADED), 0);
    ck_assert_uint_eq(take_out(t, r), 1);
    expect_end_request(&r[0], 3, 0, CG_FCGI_OVERLOADED);
    free_recs(r, 1);
    cg_fcgi_buf_free(&b);
    tctx_free(t);
}
END_TEST

START_TEST(failed_writes_fail_the_connection)
{
    tctx_t *t = tctx_new(1);
    t->fail_writes = true;
    cg_fcgi_buf_t b = {0};
    add_record(&b, 50, 0, NULL, 0); /* answered with UNKNOWN_TYPE */
    char err[128] = "";
    ck_assert_int_eq(feed_rc(t, b.data, b.len, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "could not be queued"));
    ck_assert_int_eq(feed_rc(t, b.data, b.len, err, sizeof err), -1);
    tctx_free(t);
    /* From a callback's end_request: the feed stops after that record. */
    t = tctx_new(2);
    t->fail_writes = true;
    t->end_on_ready = true;
    b.len = 0;
    add_request(&b, 1, CG_FCGI_KEEP_CONN, std_params);
    add_request(&b, 2, CG_FCGI_KEEP_CONN, std_params);
    ck_assert_int_eq(feed_rc(t, b.data, b.len, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "could not be queued"));
    ck_assert_int_eq(t->ready, 1);
    ck_assert_int_eq(t->end_failures, 1);
    ck_assert(!cg_fcgi_conn_is_active(t->conn, 1));
    ck_assert_int_eq(cg_fcgi_conn_end_request(t->conn, 2, 0, CG_FCGI_REQUEST_COMPLETE), -1);
    ck_assert_int_eq(feed_rc(t, "", 0, err, sizeof err), -1);
    tctx_free(t);
    /* A request still active when the connection fails: ending it writes
     * nothing, and frees it all the same. */
    t = tctx_new(2);
    b.len = 0;
    add_request(&b, 1, CG_FCGI_KEEP_CONN, std_params);
    feed_ok(t, b.data, b.len);
    t->fail_writes = true;
    b.len = 0;
    add_record(&b, 50, 0, NULL, 0);
    ck_assert_int_eq(feed_rc(t, b.data, b.len, err, sizeof err), -1);
    ck_assert(cg_fcgi_conn_is_active(t->conn, 1));
    t->fail_writes = false;
    ck_assert_int_eq(cg_fcgi_conn_end_request(t->conn, 1, 0, CG_FCGI_REQUEST_COMPLETE), -1);
    ck_assert(!cg_fcgi_conn_is_active(t->conn, 1));
    ck_assert_uint_eq(t->out.len, 0);
    cg_fcgi_buf_free(&b);
    tctx_free(t);
}
END_TEST

START_TEST(drop_params_keeps_the_request)
{
    tctx_t *t = tctx_new(1);
    cg_fcgi_buf_t b = {0};
    add_request(&b, 1, CG_FCGI_KEEP_CONN, std_params);
    feed_ok(t, b.data, b.len);
    size_t before = cg_fcgi_conn_memory(t->conn);
    ck_assert_uint_gt(before, 1024);
    cg_fcgi_conn_drop_params(t->conn, 1);
    ck_assert_uint_lt(cg_fcgi_conn_memory(t->conn), 256);
    ck_assert(cg_fcgi_conn_is_active(t->conn, 1));
    ck_assert_int_eq(cg_fcgi_conn_end_request(t->conn, 1, 0, CG_FCGI_REQUEST_COMPLETE), 0);
    cg_fcgi_buf_free(&b);
    tctx_free(t);
}
END_TEST

/* ---- parameters to a routing target ---- */

/* A ready request's parameters from kv, through a connection. */
typedef struct {
    cg_fcgi_target_t target;
    int rc;
    char err[128];
    char value_check[64];
    char method[16], query[64]; /* copies: the target's are borrowed from the request */
} target_result_t;

static target_result_t target_result;

static void target_on_request(void *ctx, uint16_t id, const cg_fcgi_params_t *params, bool keep)
{
    target_result.rc = cg_fcgi_params_target(params, &target_result.target, target_result.err,
                                             sizeof target_result.err);
    if (target_result.rc == 0) {
        snprintf(target_result.method, sizeof target_result.method, "%s",
                 target_result.target.method);
        snprintf(target_result.query, sizeof target_result.query, "%s", target_result.target.query);
    }
    size_t len = 0;
    const char *v = cg_fcgi_params_get(params, "BIN", &len);
    snprintf(target_result.value_check, sizeof target_result.value_check, "%s/%zu",
             v ? v : "(none)", len);
}

static int discard_write(void *ctx, const void *bytes, size_t len)
{
    return 0;
}

static void no_abort(void *ctx, uint16_t id) {}

static void target_of(const char *const *kv)
{
    cg_fcgi_callbacks_t cb = {target_on_request, no_abort, discard_write, NULL};
    cg_fcgi_limits_t lim = {0};
    cg_fcgi_conn_t *c = cg_fcgi_conn_new(&lim, &cb, NULL);
    cg_fcgi_buf_t b = {0};
    memset(&target_result, 0, sizeof target_result);
    target_result.rc = 99;
    add_request(&b, 1, 0, kv);
    char err[128];
    ck_assert_int_eq(cg_fcgi_conn_feed(c, b.data, b.len, err, sizeof err), 0);
    ck_assert_int_ne(target_result.rc, 99);
    cg_fcgi_buf_free(&b);
    cg_fcgi_conn_free(c);
}

START_TEST(params_to_target)
{
    const char *nginx[] = {
        "REQUEST_METHOD", "GET",          "REQUEST_URI", "/ev%65nts?ns=a%2Eb&x=1",
        "QUERY_STRING",   "ns=a%2Eb&x=1", NULL};
    target_of(nginx);
    ck_assert_int_eq(target_result.rc, 0);
    ck_assert_str_eq(target_result.method, "GET");
    ck_assert_str_eq(target_result.target.path, "/events");
    ck_assert_str_eq(target_result.query, "ns=a%2Eb&x=1"); /* raw: the router decodes */
    cg_fcgi_target_clear(&target_result.target);

    /* QUERY_STRING wins (a rewrite may have changed it); without it, the URI's. */
    const char *rewritten[] = {"REQUEST_METHOD", "GET", "REQUEST_URI", "/poll?a=1",
                               "QUERY_STRING",   "b=2", NULL};
    target_of(rewritten);
    ck_assert_str_eq(target_result.target.path, "/poll");
    ck_assert_str_eq(target_result.query, "b=2");
    cg_fcgi_target_clear(&target_result.target);
    const char *no_qs[] = {"REQUEST_METHOD", "GET", "REQUEST_URI", "/poll?a=1", NULL};
    target_of(no_qs);
    ck_assert_str_eq(target_result.query, "a=1");
    cg_fcgi_target_clear(&target_result.target);
    const char *bare[] = {"REQUEST_METHOD", "GET", "REQUEST_URI", "/healthz", NULL};
    target_of(bare);
    ck_assert_str_eq(target_result.target.path, "/healthz");
    ck_assert_str_eq(target_result.query, "");
    cg_fcgi_target_clear(&target_result.target);
    /* Invalid escapes stay as they are, like libmicrohttpd's. */
    const char *odd[] = {"REQUEST_METHOD", "GET", "REQUEST_URI", "/a%zz%4", NULL};
    target_of(odd);
    ck_assert_str_eq(target_result.target.path, "/a%zz%4");
    cg_fcgi_target_clear(&target_result.target);

    /* Without REQUEST_URI: SCRIPT_NAME + PATH_INFO, as decoded by the server. */
    const char *cgi[] = {"REQUEST_METHOD", "GET",          "SCRIPT_NAME", "/events", "PATH_INFO",
                         "/more%20x",      "QUERY_STRING", "ns=a",        NULL};
    target_of(cgi);
    ck_assert_int_eq(target_result.rc, 0);
    ck_assert_str_eq(target_result.target.path, "/events/more%20x");
    ck_assert_str_eq(target_result.query, "ns=a");
    cg_fcgi_target_clear(&target_result.target);

    const char *no_method[] = {"REQUEST_URI", "/events", NULL};
    target_of(no_method);
    ck_assert_int_eq(target_result.rc, -1);
    ck_assert_ptr_nonnull(strstr(target_result.err, "REQUEST_METHOD"));
    const char *no_path[] = {"REQUEST_METHOD", "GET", NULL};
    target_of(no_path);
    ck_assert_int_eq(target_result.rc, -1);
    const char *nul[] = {"REQUEST_METHOD", "GET", "REQUEST_URI", "/events%00.json", NULL};
    target_of(nul);
    ck_assert_int_eq(target_result.rc, -1);
    ck_assert_ptr_nonnull(strstr(target_result.err, "%00"));
    const char *relative[] = {"REQUEST_METHOD", "GET", "REQUEST_URI", "events", NULL};
    target_of(relative);
    ck_assert_int_eq(target_result.rc, -1);
    ck_assert_ptr_nonnull(strstr(target_result.err, "'/'"));
    ck_assert_str_eq(target_result.value_check, "(none)/0");
}
END_TEST

START_TEST(param_values_may_hold_nuls)
{
    /* Built by hand: strings with NULs do not go through nv_stream(). */
    uint8_t s[64];
    size_t n = cg_fcgi_nv_encode(s, sizeof s, "BIN", 3, "a\0b", 3);
    n += cg_fcgi_nv_encode(s + n, sizeof s - n, "REQUEST_METHOD", 14, "GET", 3);
    n += cg_fcgi_nv_encode(s + n, sizeof s - n, "REQUEST_URI", 11, "/x", 2);
    cg_fcgi_callbacks_t cb = {target_on_request, no_abort, discard_write, NULL};
    cg_fcgi_limits_t lim = {0};
    cg_fcgi_conn_t *c = cg_fcgi_conn_new(&lim, &cb, NULL);
    cg_fcgi_buf_t b = {0};
    add_begin(&b, 1, CG_FCGI_RESPONDER, 0);
    add_record(&b, CG_FCGI_PARAMS, 1, s, n);
    add_record(&b, CG_FCGI_PARAMS, 1, NULL, 0);
    memset(&target_result, 0, sizeof target_result);
    char err[128];
    ck_assert_int_eq(cg_fcgi_conn_feed(c, b.data, b.len, err, sizeof err), 0);
    ck_assert_str_eq(target_result.value_check, "a/3"); /* the length tells the truth */
    ck_assert_int_eq(target_result.rc, 0);
    cg_fcgi_target_clear(&target_result.target);
    cg_fcgi_buf_free(&b);
    cg_fcgi_conn_free(c);
}
END_TEST

/* ---- encoders ---- */

START_TEST(encode_stdout_splits_and_pads)
{
    size_t len = 200000;
    uint8_t *data = malloc(len);
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)(i % 251);
    ck_assert_uint_eq(cg_fcgi_stdout_records(len), 4);
    ck_assert_uint_eq(cg_fcgi_stdout_records(0), 0);
    ck_assert_uint_eq(cg_fcgi_stdout_records(CG_FCGI_MAX_CONTENT), 1);
    ck_assert_uint_eq(cg_fcgi_stdout_records(CG_FCGI_MAX_CONTENT + 1), 2);
    for (int pad = 0; pad <= 1; pad++) {
        size_t size = cg_fcgi_encode_stdout(NULL, 0, 77, data, len, pad);
        /* 3 x 65535 (padding 1 each) and 3395 (padding 5). */
        ck_assert_uint_eq(size, 4 * 8 + len + (pad ? 3 * 1 + 5 : 0));
        uint8_t *out = malloc(size);
        memset(out, 0xAB, size);
        ck_assert_uint_eq(cg_fcgi_encode_stdout(out, size - 1, 77, data, len, pad), size);
        ck_assert_int_eq(out[0], 0xAB); /* too small: nothing written */
        ck_assert_uint_eq(cg_fcgi_encode_stdout(out, size, 77, data, len, pad), size);
        if (pad)
            ck_assert_uint_eq(size % 8, 0);
        trec_t r[MAX_RECS];
        ck_assert_uint_eq(parse_all(out, size, r), 4);
        size_t off = 0;
        for (int i = 0; i < 4; i++) {
            ck_assert_int_eq(r[i].type, CG_FCGI_STDOUT);
            ck_assert_int_eq(r[i].id, 77);
            ck_assert_uint_eq(r[i].len, i < 3 ? CG_FCGI_MAX_CONTENT : len - 3 * 65535);
            ck_assert_uint_eq(r[i].padding, pad ? cg_fcgi_padding_for(r[i].len) : 0);
            ck_assert(memcmp(r[i].content, data + off, r[i].len) == 0);
            off += r[i].len;
        }
        ck_assert_uint_eq(off, len);
        free_recs(r, 4);
        free(out);
    }
    ck_assert_uint_eq(cg_fcgi_encode_stdout(NULL, 0, 1, data, 0, true), 0);
    free(data);
}
END_TEST

/* writev's view (header + the caller's bytes + padding) equals the copying
 * encoder's bytes, and points at the data itself. */
START_TEST(stdout_headers_for_writev)
{
    uint8_t hdr[8];
    ck_assert_uint_eq(cg_fcgi_stdout_header(hdr, 0x0102, 100, true), 4);
    const uint8_t expect[8] = {1, CG_FCGI_STDOUT, 0x01, 0x02, 0, 100, 4, 0};
    ck_assert_mem_eq(hdr, expect, 8);
    ck_assert_uint_eq(cg_fcgi_stdout_header(hdr, 1, 100, false), 0);
    ck_assert_int_eq(hdr[6], 0);
    ck_assert_uint_eq(cg_fcgi_stdout_header(hdr, 1, 65535, true), 1);
    ck_assert_int_eq(hdr[4], 0xFF);
    ck_assert_int_eq(hdr[5], 0xFF);

    const size_t sizes[] = {1, 8, 100, 65535, 65536, 200000};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t len = sizes[si];
        uint8_t *data = malloc(len);
        for (size_t i = 0; i < len; i++)
            data[i] = (uint8_t)(i * 13);
        for (int pad = 0; pad <= 1; pad++) {
            uint8_t hdrs[8][CG_FCGI_HEADER_LEN];
            struct iovec iov[24];
            size_t records = cg_fcgi_stdout_records(len);
            size_t niov = cg_fcgi_stdout_iov(5, data, len, pad, hdrs, 8, iov, 24);
            ck_assert_uint_ge(niov, 2 * records);
            ck_assert_uint_le(niov, 3 * records);
            ck_assert(iov[1].iov_base == data); /* not copied */
            size_t size = cg_fcgi_encode_stdout(NULL, 0, 5, data, len, pad);
            uint8_t *flat = malloc(size), *ref = malloc(size);
            size_t w = 0;
            for (size_t i = 0; i < niov; i++) {
                ck_assert_uint_le(w + iov[i].iov_len, size);
                memcpy(flat + w, iov[i].iov_base, iov[i].iov_len);
                w += iov[i].iov_len;
            }
            ck_assert_uint_eq(w, size);
            cg_fcgi_encode_stdout(ref, size, 5, data, len, pad);
            ck_assert(memcmp(flat, ref, size) == 0);
            /* Too few headers or iovecs: nothing. */
            ck_assert_uint_eq(cg_fcgi_stdout_iov(5, data, len, pad, hdrs, records - 1, iov, 24), 0);
            ck_assert_uint_eq(cg_fcgi_stdout_iov(5, data, len, pad, hdrs, 8, iov, niov - 1), 0);
            free(flat);
            free(ref);
        }
        free(data);
    }
    uint8_t hdrs[1][CG_FCGI_HEADER_LEN];
    struct iovec iov[3];
    ck_assert_uint_eq(cg_fcgi_stdout_iov(5, "", 0, true, hdrs, 1, iov, 3), 0);
}
END_TEST

START_TEST(fixed_records_bytes)
{
    uint8_t out[16];
    cg_fcgi_encode_end_request(out, 0xABCD, 0x01020304, CG_FCGI_OVERLOADED);
    const uint8_t end[16] = {1, 3, 0xAB, 0xCD, 0, 8, 0, 0, 1, 2, 3, 4, 2, 0, 0, 0};
    ck_assert_mem_eq(out, end, 16);
    cg_fcgi_encode_unknown_type(out, 0x77);
    const uint8_t unknown[16] = {1, 11, 0, 0, 0, 8, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0};
    ck_assert_mem_eq(out, unknown, 16);
    cg_fcgi_encode_stdout_end(out, 0x0300);
    const uint8_t stdout_end[8] = {1, 6, 3, 0, 0, 0, 0, 0};
    ck_assert_mem_eq(out, stdout_end, 8);
    /* One record's content at most. */
    static uint8_t big[CG_FCGI_MAX_CONTENT + 1];
    ck_assert_uint_eq(cg_fcgi_encode_record(NULL, 0, CG_FCGI_STDERR, 1, big, sizeof big, 0), 0);
    cg_fcgi_buf_t b = {0};
    ck_assert_int_eq(cg_fcgi_buf_record(&b, CG_FCGI_STDERR, 1, big, sizeof big, false), -1);
    ck_assert_uint_eq(b.len, 0);
    /* GET_VALUES_RESULT into too small a buffer: 0, never a partial record. */
    uint8_t q[64], res[256];
    cg_fcgi_limits_t lim = {.max_conns = 1, .max_reqs = 2, .max_reqs_per_conn = 1};
    const char *query[] = {"FCGI_MAX_CONNS", "", NULL};
    size_t qn = nv_stream(q, sizeof q, query);
    size_t n = cg_fcgi_encode_get_values_result(res, sizeof res, &lim, q, qn);
    ck_assert_uint_eq(n, 8 + 1 + 1 + 14 + 1 + 7); /* padded to 32 */
    ck_assert_uint_eq(cg_fcgi_encode_get_values_result(res, n - 1, &lim, q, qn), 0);
    cg_fcgi_buf_free(&b);
}
END_TEST

/* Encoders in, parser out: every record the application writes survives. */
START_TEST(round_trip)
{
    cg_fcgi_buf_t b = {0};
    const char *frame = "id: 82AB\ndata: {\"x\":1}\n\n";
    ck_assert_int_eq(cg_fcgi_buf_stdout(&b, 9, "Status: 200 OK\r\n\r\n", 18, true), 0);
    ck_assert_int_eq(cg_fcgi_buf_stdout(&b, 9, frame, strlen(frame), false), 0);
    ck_assert_int_eq(cg_fcgi_buf_stdout(&b, 9, "", 0, true), 0); /* nothing */
    ck_assert_int_eq(cg_fcgi_buf_stdout_end(&b, 9), 0);
    ck_assert_int_eq(cg_fcgi_buf_end_request(&b, 9, 0, CG_FCGI_REQUEST_COMPLETE), 0);
    cg_fcgi_nv_t pairs[2] = {{(const uint8_t *)"A", 1, (const uint8_t *)"1", 1},
                             {(const uint8_t *)long_name, 200, (const uint8_t *)long_value, 300}};
    uint8_t rec[1024];
    size_t n = cg_fcgi_encode_pairs(rec, sizeof rec, CG_FCGI_PARAMS, 4, pairs, 2, true);
    ck_assert_uint_le(n, sizeof rec);
    append_raw(&b, rec, n);
    trec_t r[MAX_RECS];
    size_t nr = parse_all(b.data, b.len, r);
    ck_assert_uint_eq(nr, 5);
    ck_assert_str_eq((char *)r[0].content, "Status: 200 OK\r\n\r\n");
    ck_assert_uint_eq(r[0].padding, 6);
    ck_assert_str_eq((char *)r[1].content, frame);
    ck_assert_uint_eq(r[1].padding, 0);
    ck_assert_uint_eq(r[2].len, 0);
    expect_end_request(&r[3], 9, 0, CG_FCGI_REQUEST_COMPLETE);
    ck_assert_int_eq(r[4].type, CG_FCGI_PARAMS);
    cg_fcgi_nv_t nv;
    size_t used;
    ck_assert_int_eq(cg_fcgi_nv_decode(r[4].content, r[4].len, &nv, &used), 1);
    ck_assert_mem_eq(nv.name, "A", 1);
    ck_assert_int_eq(cg_fcgi_nv_decode(r[4].content + used, r[4].len - used, &nv, &used), 1);
    ck_assert_uint_eq(nv.name_len, 200);
    ck_assert_uint_eq(nv.value_len, 300);
    free_recs(r, nr);
    /* Pairs beyond one record: 0. */
    static uint8_t big[40000];
    cg_fcgi_nv_t two_big[2] = {{big, 10, big, sizeof big}, {big, 10, big, sizeof big}};
    ck_assert_uint_eq(cg_fcgi_encode_pairs(NULL, 0, CG_FCGI_PARAMS, 1, two_big, 2, false), 0);
    cg_fcgi_buf_free(&b);
}
END_TEST

int main(void)
{
    init_long();
    Suite *s = suite_create("fcgi_proto");
    TCase *tc = tcase_create("parser");
    tcase_add_test(tc, parser_one_record);
    tcase_add_test(tc, parser_several_records_in_one_read);
    tcase_add_test(tc, parser_records_split_at_every_offset);
    tcase_add_test(tc, parser_bad_version);
    tcase_add_test(tc, parser_reports_mid_record);
    tcase_add_test(tc, nv_pairs_one_and_four_byte_lengths);
    suite_add_tcase(s, tc);
    tc = tcase_create("connection");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, responder_request);
    tcase_add_test(tc, without_keep_conn_the_application_closes);
    tcase_add_test(tc, pairs_split_across_params_records);
    tcase_add_test(tc, conversation_whole);
    tcase_add_test(tc, conversation_split_at_every_offset);
    tcase_add_test(tc, multiplexed_requests);
    tcase_add_test(tc, abort_request);
    tcase_add_test(tc, get_values);
    tcase_add_test(tc, unknown_management_types);
    tcase_add_test(tc, unknown_roles);
    tcase_add_test(tc, bad_version_fails_the_connection);
    tcase_add_test(tc, begin_request_body_must_be_8_bytes);
    tcase_add_test(tc, lengths_that_overrun);
    tcase_add_test(tc, second_begin_for_a_live_id_is_ignored);
    tcase_add_test(tc, garbage_is_a_protocol_error);
    tcase_add_test(tc, closed_mid_record);
    tcase_add_test(tc, split_record_memory_is_bounded_and_freed);
    tcase_add_test(tc, stdin_body_is_discarded);
    tcase_add_test(tc, records_for_inactive_ids_are_ignored);
    tcase_add_test(tc, callbacks_may_end_requests);
    tcase_add_test(tc, failed_writes_fail_the_connection);
    tcase_add_test(tc, drop_params_keeps_the_request);
    tcase_add_test(tc, params_to_target);
    tcase_add_test(tc, param_values_may_hold_nuls);
    suite_add_tcase(s, tc);
    tc = tcase_create("encoder");
    tcase_add_test(tc, encode_stdout_splits_and_pads);
    tcase_add_test(tc, stdout_headers_for_writev);
    tcase_add_test(tc, fixed_records_bytes);
    tcase_add_test(tc, round_trip);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
