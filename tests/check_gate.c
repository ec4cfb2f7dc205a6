/* Unit tests for src/gate.c: how request heads are classified, and the gate's
 * thread on a real loopback socket (heads arriving byte by byte, rejected
 * heads answered with JSON, clients leaving half-way). */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gate.h"
#include "testutil.h"

#define BUDGET 8192

static cg_gate_verdict_t classify(const char *head)
{
    cg_gate_verdict_t v;
    cg_gate_classify(head, strlen(head), BUDGET, &v);
    return v;
}

/* A head "GET /events?x=<pad> HTTP/1.1\r\n<fields>\r\n" of exactly `len` bytes. */
static char *head_of_length(size_t len, const char *fields)
{
    const char *pre = "GET /events?x=", *post = " HTTP/1.1\r\n";
    size_t fixed = strlen(pre) + strlen(post) + strlen(fields) + 2;
    ck_assert_uint_ge(len, fixed);
    char *h = malloc(len + 1);
    size_t pad = len - fixed;
    strcpy(h, pre);
    memset(h + strlen(pre), 'a', pad);
    strcpy(h + strlen(pre) + pad, post);
    strcat(h, fields);
    strcat(h, "\r\n");
    ck_assert_uint_eq(strlen(h), len);
    return h;
}

START_TEST(incomplete_heads_wait)
{
    ck_assert_int_eq(classify("").cls, CG_GATE_WAIT);
    ck_assert_int_eq(classify("GET /events HTTP/1.1").cls, CG_GATE_WAIT);
    ck_assert_int_eq(classify("GET /events HTTP/1.1\r\nHost: x\r\n").cls, CG_GATE_WAIT);
    ck_assert_int_eq(classify("GET /events HTTP/1.1\r\nHost: x\r\n\r").cls, CG_GATE_WAIT);
    ck_assert_int_eq(classify("GET /events HTTP/1.1\r\nHost: x\r\n\r\n").cls, CG_GATE_SMALL);
    ck_assert_int_eq(classify("GET /events HTTP/1.0\n\n").cls, CG_GATE_SMALL); /* bare LF */
}
END_TEST

/* The cost of a head is its length plus 64 bytes per field, parameter and
 * cookie part: exactly the budget stays small, one byte more is large. */
static cg_gate_verdict_t classify_n(const char *head, size_t len)
{
    cg_gate_verdict_t v;
    cg_gate_classify(head, len, BUDGET, &v);
    return v;
}

static void expect_400(cg_gate_verdict_t v, const char *code)
{
    ck_assert_int_eq(v.cls, CG_GATE_REJECT);
    ck_assert_int_eq(v.status, 400);
    ck_assert_str_eq(v.error, code);
}

/* What libmicrohttpd would misread is refused with JSON, naming the position
 * when it is the Last-Event-ID that is malformed. */
START_TEST(malformed_heads_are_refused)
{
    static const char nul_lei[] = "GET /events HTTP/1.1\r\nLast-Event-ID: 82AB\0CD\r\n\r\n";
    expect_400(classify_n(nul_lei, sizeof nul_lei - 1), "invalid_position");
    static const char nul_line[] = "GET /ev\0ents HTTP/1.1\r\n\r\n";
    expect_400(classify_n(nul_line, sizeof nul_line - 1), "bad_request");
    expect_400(classify("GET /poll%00/x HTTP/1.1\r\n\r\n"), "bad_request");
    /* %00 in the query is the parameters' business (http.c), not the path's. */
    ck_assert_int_eq(classify("GET /poll?ns=a%00b HTTP/1.1\r\n\r\n").cls, CG_GATE_SMALL);
    expect_400(classify("GET / HTTP/1.1\r\nLast-Event-ID: 82AB\r\n CD\r\n\r\n"),
               "invalid_position");
    expect_400(classify("GET / HTTP/1.1\r\nAccept: a\r\n\tb\r\n\r\n"), "bad_request");
    expect_400(classify("GET / HTTP/1.1\r\nlast-event-id: 82AB\rCD\r\n\r\n"), "invalid_position");
    expect_400(classify("GET / HTTP/1.1\r\nLast-Event-ID: 82AB\nCD\r\n\r\n"), "bad_request");
    expect_400(classify("GET / HTTP/1.1\r\nLast-Event-ID: 82AB\r\nLast-Event-ID: 82CD\r\n\r\n"),
               "invalid_position");
    cg_gate_verdict_t v = classify("GET / HTTP/2.0\r\n\r\n");
    ck_assert_int_eq(v.cls, CG_GATE_REJECT);
    ck_assert_int_eq(v.status, 505);
    ck_assert_int_eq(classify("GET / HTTP/1.0\r\n\r\n").cls, CG_GATE_SMALL);
    expect_400(classify("HELLO\r\n\r\n"), "bad_request");
    expect_400(classify("GET /\r\n\r\n"), "bad_request"); /* HTTP/0.9 */
    /* Bare LF line ends and empty values stay fine. */
    ck_assert_int_eq(classify("GET / HTTP/1.1\nLast-Event-ID: 82AB\nX-Empty:\n\n").cls,
                     CG_GATE_SMALL);
}
END_TEST

START_TEST(cost_decides_the_pool)
{
    const char *fields = "Host: x\r\nCookie: a=1; b=2\r\n"; /* 2 fields + 1 ';' */
    size_t items = 1 /* x= */ + 2 + 1;
    char *h = head_of_length(BUDGET - 64 * items, fields);
    ck_assert_int_eq(classify(h).cls, CG_GATE_SMALL);
    free(h);
    h = head_of_length(BUDGET - 64 * items + 1, fields);
    ck_assert_int_eq(classify(h).cls, CG_GATE_LARGE);
    free(h);
}
END_TEST

START_TEST(request_line_limit)
{
    /* 64 KiB plus CRLF is allowed; one more byte is 414, complete or not. */
    char *h = head_of_length(CG_GATE_MAX_REQUEST_LINE + 2 + 2, "");
    ck_assert_int_eq(classify(h).cls, CG_GATE_LARGE);
    free(h);
    h = head_of_length(CG_GATE_MAX_REQUEST_LINE + 3 + 2, "");
    cg_gate_verdict_t v = classify(h);
    ck_assert_int_eq(v.cls, CG_GATE_REJECT);
    ck_assert_int_eq(v.status, 414);
    ck_assert_str_eq(v.error, "uri_too_long");
    h[CG_GATE_MAX_REQUEST_LINE + 2] = '\0'; /* 64 KiB + 2 bytes and no line end yet */
    v = classify(h);
    ck_assert_int_eq(v.status, 414);
    free(h);
}
END_TEST

START_TEST(parameter_count_limit)
{
    char *h = malloc(16 * 600 + 64);
    strcpy(h, "GET /events?a");
    for (int i = 1; i < CG_GATE_MAX_QUERY_PARAMS; i++)
        strcat(h, "&a");
    strcat(h, " HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(classify(h).cls, CG_GATE_LARGE); /* 512 records cost 32 KiB */
    char *sp = strstr(h, " HTTP");
    memmove(sp + 2, sp, strlen(sp) + 1);
    memcpy(sp, "&a", 2);
    cg_gate_verdict_t v = classify(h);
    ck_assert_int_eq(v.cls, CG_GATE_REJECT);
    ck_assert_int_eq(v.status, 414);
    ck_assert_ptr_nonnull(strstr(v.message, "512"));
    free(h);
}
END_TEST

START_TEST(header_limits)
{
    char fields[4096] = "";
    for (int i = 0; i < CG_GATE_MAX_HEADER_FIELDS; i++)
        strcat(fields, "X-A: b\r\n");
    char *h = head_of_length(2000, fields);
    ck_assert_int_eq(classify(h).cls, CG_GATE_LARGE);
    free(h);
    strcat(fields, "X-A: b\r\n");
    h = head_of_length(2000, fields);
    cg_gate_verdict_t v = classify(h);
    ck_assert_int_eq(v.cls, CG_GATE_REJECT);
    ck_assert_int_eq(v.status, 431);
    ck_assert_str_eq(v.error, "headers_too_large");
    free(h);

    /* 16 KiB of fields; and, before the head even ends, more than that. */
    char *big = malloc(CG_GATE_MAX_HEADER_BYTES + 256);
    strcpy(big, "X-Big: ");
    size_t n = CG_GATE_MAX_HEADER_BYTES - strlen("X-Big: ") - 2;
    memset(big + 7, 'v', n);
    strcpy(big + 7 + n, "\r\n");
    h = head_of_length(100 + CG_GATE_MAX_HEADER_BYTES + 2, big);
    ck_assert_int_eq(classify(h).cls, CG_GATE_LARGE);
    free(h);
    strcpy(big + 7 + n, "v\r\n");
    h = head_of_length(100 + CG_GATE_MAX_HEADER_BYTES + 3, big);
    ck_assert_int_eq(classify(h).status, 431);
    free(h);
    memset(big + 7, 'v', n + 100); /* no end of line within the limit */
    big[7 + n + 100] = '\0';
    h = head_of_length(200 + CG_GATE_MAX_HEADER_BYTES + 2, big);
    h[strlen(h) - 2] = '\0';
    ck_assert_int_eq(classify(h).status, 431);
    free(h);
    /* An Authorization header that large is an oversized token: 401, as the
     * token's verifier would answer (access.c), not 431. */
    memcpy(big, "Authorization: Bearer ", 22);
    h = head_of_length(200 + CG_GATE_MAX_HEADER_BYTES + 2, big);
    h[strlen(h) - 2] = '\0';
    v = classify(h);
    ck_assert_int_eq(v.status, 401);
    ck_assert_str_eq(v.error, "token_too_large");
    free(h);

    char cookie[2048] = "Cookie: a=1";
    for (int i = 0; i < 257; i++)
        strcat(cookie, ";b");
    strcat(cookie, "\r\n");
    h = head_of_length(3000, cookie);
    ck_assert_int_eq(classify(h).status, 431);
    free(h);
    free(big);
}
END_TEST

/* ---- the gate's thread on a loopback socket ---- */

static pthread_mutex_t handed_lock = PTHREAD_MUTEX_INITIALIZER;
static int handed_fd = -1;
static cg_gate_class_t handed_cls;
static int handed_count;

static void on_handoff(void *ctx, int fd, const struct sockaddr *addr, socklen_t addrlen,
                       cg_gate_class_t cls)
{
    (void)ctx, (void)addr, (void)addrlen;
    pthread_mutex_lock(&handed_lock);
    if (handed_fd >= 0)
        close(handed_fd);
    handed_fd = fd;
    handed_cls = cls;
    handed_count++;
    pthread_mutex_unlock(&handed_lock);
}

static cg_gate_t *gate;
static struct sockaddr_in gate_addr;

static void gate_setup(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = cg_gate_listen((struct sockaddr *)&a, sizeof a);
    ck_assert_int_ge(fd, 0);
    socklen_t len = sizeof gate_addr;
    getsockname(fd, (struct sockaddr *)&gate_addr, &len);
    char err[256];
    gate = cg_gate_start(fd, "test", BUDGET, on_handoff, NULL, err, sizeof err);
    ck_assert_msg(gate != NULL, "%s", err);
    handed_fd = -1;
    handed_count = 0;
}

static void gate_teardown(void)
{
    cg_gate_free(gate);
    if (handed_fd >= 0)
        close(handed_fd);
}

static int connect_gate(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&gate_addr, sizeof gate_addr), 0);
    return fd;
}

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits up to 5 s for `count` hand-offs. */
static bool wait_handed(int count)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&handed_lock);
        bool done = handed_count >= count;
        pthread_mutex_unlock(&handed_lock);
        if (done)
            return true;
        pause_ms(10);
    }
    return false;
}

START_TEST(head_in_pieces_is_handed_over_unread)
{
    const char *head = "GET /events HTTP/1.1\r\nHost: x\r\n\r\n";
    int fd = connect_gate();
    for (const char *p = head; *p; p++) {
        ck_assert_int_eq(write(fd, p, 1), 1);
        pause_ms(2);
    }
    ck_assert(wait_handed(1));
    ck_assert_int_eq(handed_cls, CG_GATE_SMALL);
    /* The gate only peeked: every byte is still there for the daemon. */
    char buf[128];
    ssize_t n = recv(handed_fd, buf, sizeof buf, MSG_DONTWAIT);
    ck_assert_int_eq(n, (ssize_t)strlen(head));
    ck_assert(memcmp(buf, head, strlen(head)) == 0);
    close(fd);
}
END_TEST

START_TEST(long_head_goes_to_the_large_pool)
{
    char *head = head_of_length(20000, "Host: x\r\n");
    int fd = connect_gate();
    ck_assert_int_eq(write(fd, head, strlen(head)), (ssize_t)strlen(head));
    ck_assert(wait_handed(1));
    ck_assert_int_eq(handed_cls, CG_GATE_LARGE);
    free(head);
    close(fd);
}
END_TEST

/* A 1 MB URL: the whole of it is sent (the gate reads and discards what comes
 * after its verdict), then the answer is a JSON 414, and nothing is handed on. */
START_TEST(megabyte_url_gets_json_414)
{
    size_t len = 1 << 20;
    char *head = head_of_length(len, "Host: x\r\n");
    int fd = connect_gate();
    size_t sent = 0;
    while (sent < len) {
        ssize_t n = write(fd, head + sent, len - sent);
        ck_assert_int_gt(n, 0);
        sent += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    char resp[1024];
    size_t got = 0;
    ssize_t n;
    while ((n = read(fd, resp + got, sizeof resp - 1 - got)) > 0)
        got += (size_t)n;
    resp[got] = '\0';
    ck_assert_msg(strncmp(resp, "HTTP/1.1 414 ", 13) == 0, "%s", resp);
    ck_assert_ptr_nonnull(strstr(resp, "Content-Type: application/json"));
    ck_assert_ptr_nonnull(strstr(resp, "{\"error\":\"uri_too_long\",\"message\":"));
    ck_assert_int_eq(handed_count, 0);
    free(head);
    close(fd);
}
END_TEST

/* Clients that leave half-way through their head are dropped, not handed on;
 * the next client is served. */
START_TEST(half_heads_are_dropped)
{
    for (int i = 0; i < 50; i++) {
        int fd = connect_gate();
        ck_assert_int_eq(write(fd, "GET /events HTTP/1.1\r\nHo", 24), 24);
        close(fd);
    }
    int fd = connect_gate();
    ck_assert_int_eq(write(fd, "GET / HTTP/1.1\r\n\r\n", 18), 18);
    ck_assert(wait_handed(1));
    pause_ms(50);
    ck_assert_int_eq(handed_count, 1);
    close(fd);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gate");
    TCase *tc = tcase_create("classify");
    tcase_add_test(tc, incomplete_heads_wait);
    tcase_add_test(tc, cost_decides_the_pool);
    tcase_add_test(tc, malformed_heads_are_refused);
    tcase_add_test(tc, request_line_limit);
    tcase_add_test(tc, parameter_count_limit);
    tcase_add_test(tc, header_limits);
    suite_add_tcase(s, tc);
    tc = tcase_create("thread");
    tcase_add_checked_fixture(tc, gate_setup, gate_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, head_in_pieces_is_handed_over_unread);
    tcase_add_test(tc, long_head_goes_to_the_large_pool);
    tcase_add_test(tc, megabyte_url_gets_json_414);
    tcase_add_test(tc, half_heads_are_dropped);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
