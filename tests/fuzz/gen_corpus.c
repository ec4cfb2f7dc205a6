/* gen_corpus.c: writes the seed corpus of fuzz_fcgi_proto into a directory
 * (tests/fuzz/corpus/fcgi), the conversations check_fcgi_proto.c uses, made
 * with the module's own encoders. Each seed starts with the fuzz target's
 * two bytes of settings (see fuzz_fcgi_proto.c).
 *
 *   cc -I src tests/fuzz/gen_corpus.c src/fcgi_proto.c -o gen && ./gen DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fcgi_proto.h"

static cg_fcgi_buf_t b;

static void raw(const void *d, size_t n)
{
    if (b.cap - b.len < n) {
        b.cap = (b.len + n) * 2;
        b.data = realloc(b.data, b.cap);
        if (!b.data)
            exit(1);
    }
    if (n)
        memcpy(b.data + b.len, d, n);
    b.len += n;
}

static void record(uint8_t type, uint16_t id, const void *content, size_t len)
{
    if (cg_fcgi_buf_record(&b, type, id, content, len, false) != 0)
        exit(1);
}

static void begin(uint16_t id, uint16_t role, uint8_t flags)
{
    uint8_t body[8] = {(uint8_t)(role >> 8), (uint8_t)role, flags};
    record(CG_FCGI_BEGIN_REQUEST, id, body, sizeof body);
}

static size_t pairs(uint8_t *out, size_t cap, const char *const *kv)
{
    size_t len = 0;
    for (size_t i = 0; kv[i]; i += 2)
        len += cg_fcgi_nv_encode(out + len, cap - len, kv[i], strlen(kv[i]), kv[i + 1],
                                 strlen(kv[i + 1]));
    return len;
}

static const char *nginx[] = {"REQUEST_METHOD",
                              "GET",
                              "REQUEST_URI",
                              "/events?ns=app.orders&op=insert",
                              "QUERY_STRING",
                              "ns=app.orders&op=insert",
                              "SCRIPT_NAME",
                              "/events",
                              "HTTP_LAST_EVENT_ID",
                              "8200000001000000012B022C0100296E5A1004",
                              "HTTP_ACCEPT",
                              "text/event-stream",
                              "HTTP_ORIGIN",
                              "https://example.com",
                              NULL};

static void request(uint16_t id, uint8_t flags, const char *const *kv)
{
    uint8_t s[4096];
    size_t n = pairs(s, sizeof s, kv);
    begin(id, CG_FCGI_RESPONDER, flags);
    record(CG_FCGI_PARAMS, id, s, n);
    record(CG_FCGI_PARAMS, id, NULL, 0);
    record(CG_FCGI_STDIN, id, NULL, 0);
}

static void seed(const char *dir, const char *name, uint8_t flags, uint8_t cut)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    uint8_t settings[2] = {flags, cut};
    if (!f || fwrite(settings, 1, 2, f) != 2 || fwrite(b.data, 1, b.len, f) != b.len ||
        fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    b.len = 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    uint8_t s[4096], q[256];

    request(1, CG_FCGI_KEEP_CONN, nginx);
    seed(dir, "nginx-get", 0x00, 7);

    request(1, 0, nginx);
    seed(dir, "nginx-get-ended", 0x04, 3);

    /* Multiplexed, GET_VALUES, padding, a body, an abort, a refusal, ignored records. */
    const char *query[] = {
        "FCGI_MAX_CONNS", "", "FCGI_MAX_REQS", "", "FCGI_MPXS_CONNS", "", "OTHER", "", NULL};
    record(CG_FCGI_GET_VALUES, 0, q, pairs(q, sizeof q, query));
    size_t n = pairs(s, sizeof s, nginx);
    begin(1, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    record(CG_FCGI_PARAMS, 1, s, 20);
    begin(2, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    record(CG_FCGI_PARAMS, 1, s + 20, n - 20);
    uint8_t hdr[8], pad[255] = {0};
    cg_fcgi_encode_header(hdr, CG_FCGI_PARAMS, 2, (uint16_t)n, 255);
    raw(hdr, 8);
    raw(s, n);
    raw(pad, 255);
    record(CG_FCGI_PARAMS, 1, NULL, 0);
    record(CG_FCGI_STDIN, 1, "body", 4);
    record(CG_FCGI_STDIN, 1, NULL, 0);
    record(CG_FCGI_PARAMS, 2, NULL, 0);
    record(42, 0, "?", 1);
    record(CG_FCGI_PARAMS, 9, s, 10);
    record(CG_FCGI_ABORT_REQUEST, 2, NULL, 0);
    begin(3, CG_FCGI_AUTHORIZER, 0);
    begin(1, CG_FCGI_RESPONDER, 0);
    record(CG_FCGI_DATA, 1, "d", 1);
    seed(dir, "multiplexed", 0x0B, 11);

    /* Parameters one byte per record. */
    begin(5, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    for (size_t i = 0; i < n; i++)
        record(CG_FCGI_PARAMS, 5, s + i, 1);
    record(CG_FCGI_PARAMS, 5, NULL, 0);
    record(CG_FCGI_ABORT_REQUEST, 5, NULL, 0);
    seed(dir, "params-bytewise", 0x18, 1);

    /* A 4-byte length beyond any limit; a pair cut short; too many pairs. */
    const uint8_t huge[] = {0xFF, 0xFF, 0xFF, 0xFF, 1, 'a'};
    begin(1, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    record(CG_FCGI_PARAMS, 1, huge, sizeof huge);
    record(CG_FCGI_PARAMS, 1, NULL, 0);
    const uint8_t cut[] = {2, 5, 'O', 'K', 'v'};
    begin(2, CG_FCGI_RESPONDER, CG_FCGI_KEEP_CONN);
    record(CG_FCGI_PARAMS, 2, cut, sizeof cut);
    record(CG_FCGI_PARAMS, 2, NULL, 0);
    const char *many[] = {"A", "1", "B", "2", "C", "3", "D", "4", "E", "5",
                          "F", "6", "G", "7", "H", "8", "I", "9", NULL};
    request(3, CG_FCGI_KEEP_CONN, many);
    seed(dir, "params-refused", 0x41, 5);

    /* Management only. */
    record(CG_FCGI_GET_VALUES, 0, q, pairs(q, sizeof q, query));
    record(CG_FCGI_GET_VALUES, 0, NULL, 0);
    record(CG_FCGI_UNKNOWN_TYPE, 0, NULL, 0);
    begin(0, CG_FCGI_RESPONDER, 0);
    seed(dir, "management", 0x00, 2);

    /* HTTP sent to the FastCGI port. */
    const char *http = "GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n";
    raw(http, strlen(http));
    seed(dir, "http", 0x00, 0);

    /* A large body, records of maximal size. */
    static uint8_t big[CG_FCGI_MAX_CONTENT];
    memset(big, 'B', sizeof big);
    request(7, CG_FCGI_KEEP_CONN, nginx);
    b.len -= 8; /* the empty STDIN goes after the body */
    record(CG_FCGI_STDIN, 7, big, sizeof big);
    record(CG_FCGI_STDIN, 7, NULL, 0);
    seed(dir, "large-body", 0x10, 200);

    /* Four requests on a connection that takes two; writes that fail. */
    for (uint16_t id = 1; id <= 4; id++)
        request(id, CG_FCGI_KEEP_CONN, nginx);
    seed(dir, "overloaded", 0x01, 9);
    for (uint16_t id = 1; id <= 4; id++)
        request(id, CG_FCGI_KEEP_CONN, nginx);
    seed(dir, "failing-writes", 0x25, 0x33);

    /* What routing makes of the parameters: escapes, %00, CGI's SCRIPT_NAME
     * and PATH_INFO, a relative path, no method. */
    const char *escaped[] = {"REQUEST_METHOD", "GET", "REQUEST_URI", "/ev%65nts%2F?ns=a%2Eb", NULL};
    const char *nul[] = {"REQUEST_METHOD", "GET", "REQUEST_URI", "/events%00.json", NULL};
    const char *cgi[] = {"REQUEST_METHOD", "GET",       "SCRIPT_NAME", "/poll", "PATH_INFO", "/x",
                         "QUERY_STRING",   "timeout=5", NULL};
    const char *relative[] = {"REQUEST_METHOD", "GET", "REQUEST_URI", "events", NULL};
    const char *no_method[] = {"REQUEST_URI", "/events", NULL};
    request(1, CG_FCGI_KEEP_CONN, escaped);
    request(2, CG_FCGI_KEEP_CONN, nul);
    request(3, CG_FCGI_KEEP_CONN, cgi);
    request(4, CG_FCGI_KEEP_CONN, relative);
    request(5, CG_FCGI_KEEP_CONN, no_method);
    seed(dir, "routing", 0x07, 4);

    cg_fcgi_buf_free(&b);
    return 0;
}
