/* Unit tests for src/outlet.c: a stream's bytes on a real socket (one end of
 * a socketpair, as libmicrohttpd would hand over), with a real hub. */
#include <check.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "outlet.h"
#include "testutil.h"

static cg_hub_t *hub;
static cg_outlet_t *outlet;
static cg_config_t cfg;
static unsigned next_pos = 1;

static void setup(void)
{
    char err[256];
    memset(&cfg, 0, sizeof cfg);
    cfg.write_timeout = 60;
    hub = cg_hub_new(cg_journal_new(256), 4, 1);
    cg_hub_set_live(hub);
    outlet = cg_outlet_start("test", &cfg, hub, err, sizeof err);
    ck_assert_msg(outlet != NULL, "%s", err);
}

static void teardown(void)
{
    cg_hub_stop(hub);
    cg_outlet_stop(outlet);
    cg_hub_free(hub);
}

static cg_filter_t *match_all(void)
{
    cg_filter_t *f = cg_filter_new();
    char err[256];
    ck_assert_int_eq(cg_filter_compile(f, err, sizeof err), 0);
    return f;
}

/* Hands one end of a socketpair to the outlet, as http.c does, and returns
 * the client's end. */
static int take(bool ndjson, bool http10, cg_hub_rc_t want)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    cg_sub_spec_t spec = {.filter = match_all(), .heartbeats = true};
    cg_outlet_stream_t st = {.ndjson = ndjson, .http10 = http10, .headers = "X-Test: yes\r\n"};
    ck_assert_int_eq(cg_outlet_take(outlet, sv[0], &spec, &st), want);
    close(sv[0]); /* libmicrohttpd's descriptor goes; the outlet has its own */
    if (want != CG_HUB_OK) {
        close(sv[1]);
        return -1;
    }
    return sv[1];
}

static void publish(unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        char pos[16];
        test_pos(pos, sizeof pos, next_pos++);
        cg_hub_publish(hub, test_change(pos, "insert", "db", "c"));
    }
}

/* Everything the client end received, read until `want` appears or the peer
 * closed (then *eof) or 5 s passed. Ticks the hub meanwhile, as main does. */
typedef struct {
    char *buf;
    size_t len, cap;
    bool eof;
} rx_t;

static void rx_until(rx_t *rx, int fd, const char *want)
{
    for (int waited = 0; waited < 5000; waited += 20) {
        if (want && rx->buf && memmem(rx->buf, rx->len, want, strlen(want)))
            return;
        if (rx->eof)
            return;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, 20);
        cg_hub_tick(hub);
        for (;;) {
            if (rx->cap - rx->len < 4096) {
                rx->cap = rx->cap ? 2 * rx->cap : 65536;
                rx->buf = realloc(rx->buf, rx->cap + 1);
            }
            ssize_t r = read(fd, rx->buf + rx->len, rx->cap - rx->len);
            if (r == 0)
                rx->eof = true;
            if (r <= 0)
                break;
            rx->len += (size_t)r;
            rx->buf[rx->len] = '\0';
        }
    }
}

/* The body after the head, de-chunked; fails on any framing error. Sets
 * *last when the end marker (the zero-length chunk) was there. */
static char *dechunk(const rx_t *rx, bool *last)
{
    const char *p = strstr(rx->buf, "\r\n\r\n");
    ck_assert_ptr_nonnull(p);
    p += 4;
    const char *end = rx->buf + rx->len;
    char *out = calloc(1, rx->len + 1);
    size_t n = 0;
    *last = false;
    while (p < end) {
        char *eol;
        unsigned long size = strtoul(p, &eol, 16);
        ck_assert_msg(eol > p && eol + 2 <= end && eol[0] == '\r' && eol[1] == '\n',
                      "bad chunk-size line at byte %td", p - rx->buf);
        p = eol + 2;
        if (size == 0) {
            ck_assert_msg(end - p == 2 && p[0] == '\r' && p[1] == '\n', "bytes after the end");
            *last = true;
            break;
        }
        ck_assert_msg((size_t)(end - p) >= size + 2, "a chunk cut short");
        memcpy(out + n, p, size);
        n += size;
        p += size;
        ck_assert_msg(p[0] == '\r' && p[1] == '\n', "no CRLF after a chunk");
        p += 2;
    }
    return out;
}

static unsigned count(const char *s, const char *needle)
{
    unsigned n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void wait_subscribers(size_t n)
{
    for (int i = 0; i < 250 && cg_hub_subscriber_count(hub) != n; i++)
        nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL);
    ck_assert_uint_eq(cg_hub_subscriber_count(hub), n);
}

START_TEST(test_sse_chunked)
{
    int fd = take(false, false, CG_HUB_OK);
    rx_t rx = {0};
    rx_until(&rx, fd, "retry: 3000");
    ck_assert_msg(strncmp(rx.buf, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", rx.buf);
    ck_assert_ptr_nonnull(strstr(rx.buf, "\r\nX-Test: yes\r\n"));
    ck_assert_ptr_nonnull(strstr(rx.buf, "\r\nTransfer-Encoding: chunked\r\n"));
    publish(3);
    rx_until(&rx, fd, "id: 8200000003");
    bool last;
    char *body = dechunk(&rx, &last);
    ck_assert(!last);
    ck_assert_msg(strncmp(body, CG_SSE_PREAMBLE, strlen(CG_SSE_PREAMBLE)) == 0, "%s", body);
    const char *a = strstr(body, "id: 8200000001\n"), *b = strstr(body, "id: 8200000002\n"),
               *c = strstr(body, "id: 8200000003\n");
    ck_assert(a && b && c && a < b && b < c);
    ck_assert_uint_eq(count(body, "\ndata: "), 3);
    free(body);
    /* The hub stopping ends the stream with the end marker, then closes it. */
    cg_hub_stop(hub);
    rx_until(&rx, fd, NULL);
    ck_assert(rx.eof);
    body = dechunk(&rx, &last);
    ck_assert_msg(last, "no end marker");
    free(body);
    wait_subscribers(0);
    free(rx.buf);
    close(fd);
}
END_TEST

/* HTTP/1.0 has no chunked coding: the body is the bytes themselves, and the
 * connection's close ends it. */
START_TEST(test_http10_unchunked)
{
    int fd = take(false, true, CG_HUB_OK);
    rx_t rx = {0};
    publish(2);
    rx_until(&rx, fd, "id: 8200000002");
    ck_assert_ptr_nonnull(strstr(rx.buf, "\r\nConnection: close\r\n"));
    ck_assert_ptr_null(strstr(rx.buf, "Transfer-Encoding"));
    const char *body = strstr(rx.buf, "\r\n\r\n") + 4;
    ck_assert_msg(strncmp(body, CG_SSE_PREAMBLE "id: 8200000001\n", strlen(CG_SSE_PREAMBLE) + 15) ==
                      0,
                  "%s", body);
    cg_hub_stop(hub);
    rx_until(&rx, fd, NULL);
    ck_assert(rx.eof);
    ck_assert_ptr_null(strstr(rx.buf, "\r\n0\r\n"));
    free(rx.buf);
    close(fd);
}
END_TEST

/* NDJSON starts with a heartbeat carrying the position; idle streams get
 * heartbeats at the hub's interval. */
START_TEST(test_ndjson_heartbeats)
{
    int fd = take(true, false, CG_HUB_OK);
    rx_t rx = {0};
    rx_until(&rx, fd, "\"heartbeat\"");
    publish(1);
    rx_until(&rx, fd, "8200000001");
    size_t before = rx.len;
    rx_until(&rx, fd, "\"lastEventId\":\"8200000001\"}");
    ck_assert_msg(rx.len > before, "no heartbeat after the event");
    bool last;
    char *body = dechunk(&rx, &last);
    ck_assert_uint_ge(count(body, "{\"heartbeat\":true"), 2);
    free(body);
    free(rx.buf);
    close(fd);
}
END_TEST

/* A client that reads nothing for a while gets every event afterwards, in
 * order: the stream waits for its socket instead of dropping or copying. */
START_TEST(test_slow_reader_gets_everything)
{
    int fd = take(false, false, CG_HUB_OK);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    publish(200);
    nanosleep(&(struct timespec){0, 200 * 1000000L}, NULL);
    rx_t rx = {0};
    rx_until(&rx, fd, "id: 82000000C8\n");
    bool last;
    char *body = dechunk(&rx, &last);
    ck_assert_uint_eq(count(body, "\ndata: "), 200);
    const char *p = body;
    for (unsigned i = 1; i <= 200; i++) {
        char want[32];
        snprintf(want, sizeof want, "id: 82%08X\n", i);
        const char *q = strstr(p, want);
        ck_assert_msg(q != NULL, "event %u missing or out of order", i);
        p = q + 1;
    }
    free(body);
    free(rx.buf);
    close(fd);
}
END_TEST

/* The client leaving unsubscribes at once, not at the next heartbeat. */
START_TEST(test_client_gone)
{
    int fd = take(false, false, CG_HUB_OK);
    rx_t rx = {0};
    rx_until(&rx, fd, "retry:");
    wait_subscribers(1);
    close(fd);
    wait_subscribers(0);
    free(rx.buf);
}
END_TEST

/* A full hub refuses: nothing is taken, and the caller answers. */
START_TEST(test_full_hub_refuses)
{
    int fds[4];
    for (int i = 0; i < 4; i++)
        fds[i] = take(false, false, CG_HUB_OK);
    take(false, false, CG_HUB_FULL);
    for (int i = 0; i < 4; i++)
        close(fds[i]);
    wait_subscribers(0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("outlet");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_sse_chunked);
    tcase_add_test(tc, test_http10_unchunked);
    tcase_add_test(tc, test_ndjson_heartbeats);
    tcase_add_test(tc, test_slow_reader_gets_everything);
    tcase_add_test(tc, test_client_gone);
    tcase_add_test(tc, test_full_hub_refuses);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
