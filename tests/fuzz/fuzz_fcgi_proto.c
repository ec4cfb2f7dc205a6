/* fuzz_fcgi_proto.c: libFuzzer target for src/fcgi_proto.c.
 *
 * Input: two bytes of settings, then what a web server sends.
 *   byte 0: bits 0-1  live requests per connection - 1 (1..4)
 *           bit 2     the front end ends each request as soon as it is ready
 *           bit 3     ... and each aborted request at once
 *           bit 4     it drops each ready request's parameters
 *           bit 5     its writes fail after (byte 1 & 15) of them
 *           bit 6     small limits (256 bytes, 8 pairs of parameters)
 *   byte 1: seeds how the bytes are cut into reads
 *
 * Besides the sanitizers, it checks what the protocol promises:
 *   - the same events and the same output whether the bytes come whole or cut
 *     into reads anywhere;
 *   - a request is handed over at most once while active, aborted at most
 *     once, only after it was handed over;
 *   - parameters are NUL-terminated where their lengths say;
 *   - memory stays within one record's content plus each live request's
 *     parameters;
 *   - what the connection writes is whole, well-formed records.
 * Any broken promise abort()s, which libFuzzer reports as a crash.
 *
 * Build and run: tests/fuzz/run.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fcgi_proto.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: broken promise: %s\n", __FILE__, __LINE__, #cond);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct fctx {
    cg_fcgi_conn_t *conn;
    unsigned flags;
    int writes_left; /* -1: writes never fail */
    uint64_t hash;   /* of every event, in order */
    cg_fcgi_buf_t out;
    uint8_t ready[65536 / 8], aborted[65536 / 8]; /* by request id */
} fctx_t;

static bool bit(const uint8_t *set, uint16_t id)
{
    return set[id / 8] >> (id % 8) & 1;
}

static void set_bit(uint8_t *set, uint16_t id, bool on)
{
    if (on)
        set[id / 8] |= (uint8_t)(1u << (id % 8));
    else
        set[id / 8] &= (uint8_t) ~(1u << (id % 8));
}

/* FNV-1a over the event's bytes. */
static void mix(fctx_t *f, const void *bytes, size_t len)
{
    const uint8_t *b = bytes;
    for (size_t i = 0; i < len; i++)
        f->hash = (f->hash ^ b[i]) * 1099511628211u;
}

static void mix_event(fctx_t *f, char kind, uint16_t id)
{
    uint8_t e[3] = {(uint8_t)kind, (uint8_t)(id >> 8), (uint8_t)id};
    mix(f, e, sizeof e);
}

static void end(fctx_t *f, uint16_t id)
{
    cg_fcgi_status_t status = id & 1 ? CG_FCGI_REQUEST_COMPLETE : CG_FCGI_OVERLOADED;
    CHECK(cg_fcgi_conn_is_active(f->conn, id));
    set_bit(f->ready, id, false);
    set_bit(f->aborted, id, false);
    int rc = cg_fcgi_conn_end_request(f->conn, id, id, status);
    CHECK(rc == 0 || f->writes_left == 0);
    CHECK(!cg_fcgi_conn_is_active(f->conn, id));
}

static void on_request(void *ctx, uint16_t id, const cg_fcgi_params_t *params, bool keep_conn)
{
    fctx_t *f = ctx;
    CHECK(id != 0);
    CHECK(!bit(f->ready, id));
    CHECK(cg_fcgi_conn_is_active(f->conn, id));
    set_bit(f->ready, id, true);
    mix_event(f, keep_conn ? 'R' : 'r', id);
    for (size_t i = 0; i < params->count; i++) {
        const cg_fcgi_param_t *p = &params->items[i];
        CHECK(p->name[p->name_len] == '\0' && p->value[p->value_len] == '\0');
        mix(f, p->name, p->name_len + 1);
        mix(f, p->value, p->value_len + 1);
    }
    if (params->count) {
        /* The last pair is found by its name (the first of that name is),
         * unless the name holds a NUL: a C string cannot ask for it. */
        const cg_fcgi_param_t *last = &params->items[params->count - 1];
        size_t vlen;
        const char *v = cg_fcgi_params_get(params, last->name, &vlen);
        if (strlen(last->name) == last->name_len)
            CHECK(v != NULL && v[vlen] == '\0');
    }
    cg_fcgi_target_t t;
    char err[128];
    if (cg_fcgi_params_target(params, &t, err, sizeof err) == 0) {
        CHECK(t.path[0] == '/' && t.method[0] != '\0' && t.query != NULL);
        mix(f, t.path, strlen(t.path));
        mix(f, t.query, strlen(t.query));
        cg_fcgi_target_clear(&t);
    } else {
        mix(f, err, strlen(err));
    }
    if (f->flags & 0x04)
        end(f, id);
    else if (f->flags & 0x10)
        cg_fcgi_conn_drop_params(f->conn, id);
}

static void on_abort(void *ctx, uint16_t id)
{
    fctx_t *f = ctx;
    CHECK(bit(f->ready, id) && !bit(f->aborted, id));
    set_bit(f->aborted, id, true);
    mix_event(f, 'a', id);
    if (f->flags & 0x08)
        end(f, id);
}

static int on_write(void *ctx, const void *bytes, size_t len)
{
    fctx_t *f = ctx;
    if (f->writes_left == 0)
        return -1;
    if (f->writes_left > 0)
        f->writes_left--;
    mix_event(f, 'w', (uint16_t)len);
    mix(f, bytes, len);
    if (f->out.cap - f->out.len < len) {
        size_t cap = (f->out.len + len) * 2;
        f->out.data = realloc(f->out.data, cap);
        CHECK(f->out.data != NULL);
        f->out.cap = cap;
    }
    memcpy(f->out.data + f->out.len, bytes, len);
    f->out.len += len;
    return 0;
}

static void on_refused(void *ctx, uint16_t id, const char *why)
{
    fctx_t *f = ctx;
    mix_event(f, 'x', id);
    mix(f, why, strlen(why));
}

static const cg_fcgi_callbacks_t callbacks = {on_request, on_abort, on_write, on_refused};

typedef struct result {
    int rc;
    uint64_t hash, ignored;
    size_t active;
    bool mid_record, should_close;
    char err[160];
} result_t;

static size_t lcg(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* Feeds data[0..len) to a new connection, whole (seed 0) or in reads of
 * random sizes; checks the output is whole records. */
static result_t run(const cg_fcgi_limits_t *lim, unsigned flags, int writes, const uint8_t *data,
                    size_t len, uint32_t seed, fctx_t *f, uint8_t **out, size_t *out_len)
{
    memset(f, 0, sizeof *f);
    f->flags = flags;
    f->writes_left = writes;
    f->hash = 14695981039346656037u;
    f->conn = cg_fcgi_conn_new(lim, &callbacks, f);
    CHECK(f->conn != NULL);
    size_t bound = CG_FCGI_MAX_CONTENT +
                   lim->max_reqs_per_conn *
                       (lim->max_params_bytes + lim->max_params * sizeof(cg_fcgi_param_t) + 256);
    result_t r = {0};
    size_t off = 0;
    while (off < len && r.rc == 0) {
        size_t n = len - off;
        if (seed) {
            /* Mostly small reads, sometimes large ones. */
            size_t pick = lcg(&seed);
            n = pick % 4 == 0 ? 1 + pick % 7000 : 1 + pick % 24;
            n = n < len - off ? n : len - off;
        }
        r.rc = cg_fcgi_conn_feed(f->conn, data + off, n, r.err, sizeof r.err);
        CHECK(cg_fcgi_conn_memory(f->conn) <= bound);
        off += n;
    }
    r.hash = f->hash;
    r.ignored = cg_fcgi_conn_ignored(f->conn);
    r.active = cg_fcgi_conn_active(f->conn);
    r.mid_record = cg_fcgi_conn_mid_record(f->conn);
    r.should_close = cg_fcgi_conn_should_close(f->conn);
    CHECK(r.rc == 0 || r.err[0] != '\0');

    /* The output: whole records of version 1, END_REQUEST bodies of 8 bytes. */
    cg_fcgi_parser_t p;
    cg_fcgi_parser_init(&p);
    size_t o = 0, used;
    cg_fcgi_record_t rec;
    int prc;
    const uint8_t *od = f->out.data ? f->out.data : (const uint8_t *)"";
    while ((prc = cg_fcgi_parse(&p, od + o, f->out.len - o, &used, &rec, NULL, 0)) == 1) {
        o += used;
        CHECK(rec.request_id != 0 || rec.type == CG_FCGI_GET_VALUES_RESULT ||
              rec.type == CG_FCGI_UNKNOWN_TYPE);
        if (rec.type == CG_FCGI_END_REQUEST || rec.type == CG_FCGI_UNKNOWN_TYPE)
            CHECK(rec.content_len == 8);
    }
    CHECK(prc == 0 && !cg_fcgi_parser_mid_record(&p));
    cg_fcgi_parser_clear(&p);

    cg_fcgi_conn_free(f->conn);
    *out = f->out.data;
    *out_len = f->out.len;
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned flags = data[0];
    uint32_t seed = 1u + data[1];
    int writes = flags & 0x20 ? data[1] & 15 : -1;
    cg_fcgi_limits_t lim = {.max_conns = 10, .max_reqs = 50};
    lim.max_reqs_per_conn = 1 + (flags & 3);
    lim.max_params_bytes = flags & 0x40 ? 256 : CG_FCGI_MAX_PARAMS_BYTES;
    lim.max_params = flags & 0x40 ? 8 : CG_FCGI_MAX_PARAMS;
    data += 2;
    size -= 2;

    /* Two contexts of 16 KiB: on the heap, not the fuzzer's stack. */
    fctx_t *f = malloc(sizeof *f);
    CHECK(f != NULL);
    uint8_t *out1, *out2;
    size_t len1, len2;
    result_t whole = run(&lim, flags, writes, data, size, 0, f, &out1, &len1);
    result_t cut = run(&lim, flags, writes, data, size, seed, f, &out2, &len2);
    free(f);
    CHECK(whole.rc == cut.rc && whole.hash == cut.hash && whole.ignored == cut.ignored);
    CHECK(whole.active == cut.active && whole.should_close == cut.should_close);
    CHECK(strcmp(whole.err, cut.err) == 0);
    CHECK(len1 == len2 && (len1 == 0 || memcmp(out1, out2, len1) == 0));
    if (whole.rc == 0)
        CHECK(whole.mid_record == cut.mid_record);
    free(out1);
    free(out2);
    return 0;
}
