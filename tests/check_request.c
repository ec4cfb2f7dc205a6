/* Unit tests for src/request.c: routing, parameters, positions, errors. */
#include <check.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"
#include "testutil.h"

static cg_request_t req;

static void teardown(void)
{
    cg_request_clear(&req);
}

static void expect_error(int status, const char *code, const char *in_message)
{
    ck_assert_int_eq(req.status, status);
    ck_assert_str_eq(req.error, code);
    ck_assert_msg(strstr(req.message, in_message) != NULL, "message '%s' lacks '%s'", req.message,
                  in_message);
    char *body = cg_request_error_json(&req);
    json_error_t je;
    json_t *j = json_loads(body, 0, &je);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(j, "error")), code);
    ck_assert_str_eq(json_string_value(json_object_get(j, "message")), req.message);
    json_decref(j);
    free(body);
}

START_TEST(routes_and_methods)
{
    ck_assert_int_eq(cg_request_init(&req, "GET", "/events"), 0);
    ck_assert_int_eq(req.endpoint, CG_EP_EVENTS);
    cg_request_clear(&req);
    ck_assert_int_eq(cg_request_init(&req, "GET", "/poll"), 0);
    ck_assert_int_eq(req.endpoint, CG_EP_POLL);
    cg_request_clear(&req);
    ck_assert_int_eq(cg_request_init(&req, "GET", "/nope"), -1);
    expect_error(404, "not_found", "/nope");
    cg_request_clear(&req);
    ck_assert_int_eq(cg_request_init(&req, "POST", "/events"), -1);
    expect_error(405, "method_not_allowed", "POST");
    ck_assert_str_eq(req.allow, "GET, HEAD, OPTIONS");
}
END_TEST

START_TEST(unknown_and_misplaced_parameters_are_named)
{
    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_param(&req, "colour", "red"), -1);
    expect_error(400, "unknown_parameter", "colour");
    cg_request_clear(&req);
    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_param(&req, "timeout", "5"), -1); /* a /poll parameter */
    expect_error(400, "unknown_parameter", "timeout");
}
END_TEST

START_TEST(filter_fields_and_id_are_validated)
{
    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_param(&req, "filter", "{\"fullDocument.owner\": \"ann\"}"), 0);
    ck_assert_int_eq(cg_request_param(&req, "fields", "fullDocument.qty"), 0);
    ck_assert_int_eq(cg_request_param(&req, "id", "{\"$oid\": \"6b041f16e4cebfba5023bd1d\"}"), 0);
    ck_assert_int_eq(cg_request_finish(&req, NULL, NULL), 0);
    ck_assert_ptr_nonnull(req.project);
    cg_request_clear(&req);

    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_param(&req, "filter", "{\"a\": {\"$gt\": 1, \"$bogus\": 2}}"), -1);
    expect_error(400, "invalid_filter", "filter.a");
    cg_request_clear(&req);

    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_param(&req, "fields", "a..b"), -1);
    expect_error(400, "invalid_parameter", "fields");
    cg_request_clear(&req);

    cg_request_init(&req, "GET", "/poll");
    cg_request_param(&req, "fields", "a");
    ck_assert_int_eq(cg_request_param(&req, "fields", "b"), -1);
    expect_error(400, "invalid_parameter", "more than once");
}
END_TEST

START_TEST(poll_timeout_and_limit_are_bounded)
{
    cg_request_init(&req, "GET", "/poll");
    ck_assert_uint_eq(req.timeout_s, CG_POLL_TIMEOUT_DEFAULT);
    ck_assert_uint_eq(req.limit, CG_POLL_LIMIT_DEFAULT);
    ck_assert_int_eq(cg_request_param(&req, "timeout", "120"), 0);
    ck_assert_int_eq(cg_request_param(&req, "limit", "1"), 0);
    ck_assert_uint_eq(req.timeout_s, 120);
    ck_assert_uint_eq(req.limit, 1);
    const char *bad[][2] = {{"timeout", "121"}, {"timeout", "-1"}, {"timeout", "5s"},
                            {"limit", "0"},     {"limit", "1001"}, {"limit", ""}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cg_request_clear(&req);
        cg_request_init(&req, "GET", "/poll");
        ck_assert_int_eq(cg_request_param(&req, bad[i][0], bad[i][1]), -1);
        expect_error(400, "invalid_parameter", bad[i][0]);
    }
}
END_TEST

START_TEST(header_wins_over_parameter_and_both_are_validated)
{
    cg_request_init(&req, "GET", "/events");
    cg_request_param(&req, "lastEventId", "82AA");
    ck_assert_int_eq(cg_request_finish(&req, "82BB", NULL), 0);
    ck_assert_str_eq(req.position, "82BB");
    cg_request_clear(&req);

    cg_request_init(&req, "GET", "/events");
    cg_request_param(&req, "lastEventId", "82AA");
    ck_assert_int_eq(cg_request_finish(&req, NULL, NULL), 0);
    ck_assert_str_eq(req.position, "82AA");
    cg_request_clear(&req);

    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_finish(&req, "not a position", NULL), -1);
    expect_error(400, "invalid_position", "Last-Event-ID");
    cg_request_clear(&req);

    cg_request_init(&req, "GET", "/events");
    cg_request_param(&req, "lastEventId", "zz\x01");
    ck_assert_int_eq(cg_request_finish(&req, NULL, NULL), -1);
    expect_error(400, "invalid_position", "lastEventId");
    cg_request_clear(&req);

    cg_request_init(&req, "GET", "/events"); /* empty means none, as EventSource sends it */
    cg_request_param(&req, "lastEventId", "");
    ck_assert_int_eq(cg_request_finish(&req, "", NULL), 0);
    ck_assert_ptr_null(req.position);
}
END_TEST

START_TEST(ndjson_by_accept_or_format)
{
    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_finish(&req, NULL, "application/x-ndjson"), 0);
    ck_assert(req.ndjson);
    cg_request_clear(&req);
    cg_request_init(&req, "GET", "/events");
    cg_request_param(&req, "format", "ndjson");
    ck_assert_int_eq(cg_request_finish(&req, NULL, "text/event-stream"), 0);
    ck_assert(req.ndjson);
    cg_request_clear(&req);
    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_param(&req, "format", "xml"), -1);
    expect_error(400, "invalid_parameter", "format");
}
END_TEST

START_TEST(messages_quoting_input_stay_printable)
{
    cg_request_init(&req, "GET", "/events");
    cg_request_param(&req, "caf\xc3\xa9\n", "x");
    for (const char *p = req.message; *p; p++)
        ck_assert((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
    expect_error(400, "unknown_parameter", "caf??");
}
END_TEST

/* A raw query string is split and decoded as libmicrohttpd does it for the
 * HTTP front end, so that FastCGI requests mean the same thing. */
START_TEST(raw_query_decodes_like_libmicrohttpd)
{
    cg_request_init(&req, "GET", "/poll");
    ck_assert_int_eq(cg_request_query(&req, "timeout=%31%32&limit=5", 22), 0);
    ck_assert_uint_eq(req.timeout_s, 12);
    ck_assert_uint_eq(req.limit, 5);
    cg_request_clear(&req);
    /* '+' is a space, %2B a plus, a '%' without two hex digits stays. */
    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_query(&req, "a+b=1", 5), -1);
    expect_error(400, "unknown_parameter", "'a b'");
    cg_request_clear(&req);
    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_query(&req, "a%2Bb=1", 7), -1);
    expect_error(400, "unknown_parameter", "'a+b'");
    cg_request_clear(&req);
    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_query(&req, "x%ZZy%4", 7), -1);
    expect_error(400, "unknown_parameter", "'x%ZZy%4'");
    cg_request_clear(&req);
    /* An empty piece is a parameter with an empty name, as over HTTP. */
    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_query(&req, "ns=a&&ns=b", 10), -1);
    expect_error(400, "unknown_parameter", "''");
    cg_request_clear(&req);
    /* %00 never cuts a value short. */
    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_query(&req, "lastEventId=82%00", 17), -1);
    expect_error(400, "invalid_position", "NUL");
    cg_request_clear(&req);
    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_query(&req, "", 0), 0);
    ck_assert_int_eq(cg_request_query(&req, "format=ndjson&ns=app", 20), 0);
    ck_assert(req.ndjson);
}
END_TEST

START_TEST(cors_origins)
{
    char *allowed[] = {"https://app.example", "*"};
    cg_request_init(&req, "GET", "/events");
    ck_assert(cg_request_cors(&req, allowed, 2, NULL));
    ck_assert_ptr_null(req.origin);
    ck_assert(cg_request_cors(&req, allowed, 2, "https://app.example"));
    ck_assert_str_eq(req.origin, "https://app.example");
    ck_assert(req.origin_credentials);
    cg_request_clear(&req);
    cg_request_init(&req, "GET", "/events");
    ck_assert(cg_request_cors(&req, allowed, 2, "https://other.example"));
    ck_assert_str_eq(req.origin, "*");
    ck_assert(!req.origin_credentials);
    cg_request_clear(&req);
    cg_request_init(&req, "GET", "/events");
    ck_assert(!cg_request_cors(&req, allowed, 1, "https://other.example"));
    expect_error(403, "origin_not_allowed", "https://other.example");
}
END_TEST

START_TEST(history_lost_body)
{
    char *body = cg_request_history_lost_json("too_slow", "82AB");
    json_t *j = json_loads(body, 0, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(j, "error")), "history_lost");
    ck_assert_str_eq(json_string_value(json_object_get(j, "reason")), "too_slow");
    ck_assert_str_eq(json_string_value(json_object_get(j, "lastEventId")), "82AB");
    json_decref(j);
    free(body);
    body = cg_request_history_lost_json("position_not_in_journal", NULL);
    j = json_loads(body, 0, NULL);
    ck_assert(json_is_null(json_object_get(j, "lastEventId")));
    json_decref(j);
    free(body);
}
END_TEST

/* A token's fields bound what a client sees, and so what its filter may look
 * at: a filter on a hidden field would reveal it by which events arrive. */
START_TEST(grant_fields_bound_the_filter)
{
    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_param(&req, "filter",
                                      "{\"$or\": [{\"fullDocument.name\": \"a\"}, "
                                      "{\"fullDocument.name\": {\"$regex\": \"^b\"}}]}"),
                     0);
    ck_assert_int_eq(cg_request_param(&req, "ns", "shop.orders"), 0);
    ck_assert_int_eq(cg_request_grant(&req, NULL, "fullDocument.name"), 0);
    ck_assert_ptr_nonnull(req.project);
    cg_request_clear(&req);

    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_param(&req, "filter",
                                      "{\"fullDocument.name\": \"a\", "
                                      "\"$and\": [{\"fullDocument.salary\": {\"$gt\": 100}}]}"),
                     0);
    ck_assert_int_eq(cg_request_grant(&req, NULL, "fullDocument.name"), -1);
    expect_error(403, "field_not_allowed", "'fullDocument.salary'");
    cg_request_clear(&req);

    /* A parent of what is allowed shows more than it. */
    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_param(&req, "filter", "{\"fullDocument\": {\"$exists\": true}}"),
                     0);
    ck_assert_int_eq(cg_request_grant(&req, NULL, "fullDocument.name"), -1);
    expect_error(403, "field_not_allowed", "'fullDocument'");
    cg_request_clear(&req);

    /* fields asked beyond the token's. */
    cg_request_init(&req, "GET", "/events");
    ck_assert_int_eq(cg_request_param(&req, "fields", "fullDocument"), 0);
    ck_assert_int_eq(cg_request_grant(&req, NULL, "fullDocument.name"), -1);
    expect_error(403, "field_not_allowed", "fullDocument");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("request");
    TCase *tc = tcase_create("validation");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, routes_and_methods);
    tcase_add_test(tc, unknown_and_misplaced_parameters_are_named);
    tcase_add_test(tc, filter_fields_and_id_are_validated);
    tcase_add_test(tc, poll_timeout_and_limit_are_bounded);
    tcase_add_test(tc, header_wins_over_parameter_and_both_are_validated);
    tcase_add_test(tc, ndjson_by_accept_or_format);
    tcase_add_test(tc, messages_quoting_input_stay_printable);
    tcase_add_test(tc, raw_query_decodes_like_libmicrohttpd);
    tcase_add_test(tc, cors_origins);
    tcase_add_test(tc, history_lost_body);
    tcase_add_test(tc, grant_fields_bound_the_filter);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
