/* Unit tests for src/filter.c: shorthands and the filter query, compiled together. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"
#include "testutil.h"

static bool matches(const char *ns, const char *op, const char *ev_op, const char *db,
                    const char *coll)
{
    cg_filter_t *f = cg_filter_new();
    char err[256];
    if (ns)
        ck_assert_int_eq(cg_filter_add_ns(f, ns, err, sizeof err), 0);
    if (op)
        ck_assert_int_eq(cg_filter_add_ops(f, op, err, sizeof err), 0);
    ck_assert_int_eq(cg_filter_compile(f, err, sizeof err), 0);
    cg_event_t *ev = test_change("8201", ev_op, db, coll);
    bool m = cg_filter_match(f, ev);
    cg_event_unref(ev);
    cg_filter_free(f);
    return m;
}

START_TEST(empty_filter_matches_every_change)
{
    ck_assert(matches(NULL, NULL, "insert", "a", "b"));
}
END_TEST

START_TEST(ns_matches_a_database_or_one_collection)
{
    ck_assert(matches("shop", NULL, "insert", "shop", "orders"));
    ck_assert(matches("shop.orders", NULL, "insert", "shop", "orders"));
    ck_assert(!matches("shop.orders", NULL, "insert", "shop", "users"));
    ck_assert(!matches("shop", NULL, "insert", "shopping", "orders"));
    ck_assert(matches("crm,shop.orders", NULL, "insert", "crm", "x"));
    ck_assert(matches("crm,shop.orders", NULL, "insert", "shop", "orders"));
    /* collection names may contain dots: the database ends at the first one */
    ck_assert(matches("shop.a.b", NULL, "insert", "shop", "a.b"));
}
END_TEST

START_TEST(op_and_ns_must_both_hold)
{
    ck_assert(matches("shop", "insert,delete", "delete", "shop", "x"));
    ck_assert(!matches("shop", "insert,delete", "update", "shop", "x"));
    ck_assert(!matches("shop", "insert", "insert", "crm", "x"));
}
END_TEST

START_TEST(events_without_ns_match_only_without_an_ns_filter)
{
    bson_t *b = BCON_NEW("_id", "{", "_data", "8202", "}", "operationType", "invalidate");
    char err[128];
    cg_event_t *ev = cg_event_new_change(b, err, sizeof err);
    cg_filter_t *f = cg_filter_new();
    ck_assert_int_eq(cg_filter_compile(f, err, sizeof err), 0);
    ck_assert(cg_filter_match(f, ev));
    cg_filter_free(f);
    f = cg_filter_new();
    cg_filter_add_ns(f, "shop", err, sizeof err);
    ck_assert_int_eq(cg_filter_compile(f, err, sizeof err), 0);
    ck_assert(!cg_filter_match(f, ev));
    cg_filter_free(f);
    cg_event_unref(ev);
    bson_destroy(b);
}
END_TEST

START_TEST(resets_and_marks_are_not_changes)
{
    char err[256];
    cg_filter_t *f = cg_filter_new();
    ck_assert_int_eq(cg_filter_compile(f, err, sizeof err), 0);
    cg_event_t *r = cg_event_new_reset("82", "x"), *m = cg_event_new_mark("82");
    ck_assert(!cg_filter_match(f, r));
    ck_assert(!cg_filter_match(f, m));
    cg_event_unref(r);
    cg_event_unref(m);
    cg_filter_free(f);
}
END_TEST

/* A change event with a fullDocument, for the query tests. */
static cg_event_t *order_event(const char *op, int id, const char *owner, int qty)
{
    bson_t *b = BCON_NEW("_id", "{", "_data", "8203", "}", "operationType", BCON_UTF8(op), "ns",
                         "{", "db", "shop", "coll", "orders", "}", "documentKey", "{", "_id",
                         BCON_INT32(id), "}", "fullDocument", "{", "_id", BCON_INT32(id), "owner",
                         BCON_UTF8(owner), "qty", BCON_INT32(qty), "}");
    char err[128];
    cg_event_t *ev = cg_event_new_change(b, err, sizeof err);
    bson_destroy(b);
    return ev;
}

START_TEST(the_filter_query_is_anded_with_the_shorthands)
{
    char err[256];
    cg_filter_t *f = cg_filter_new();
    ck_assert_int_eq(
        cg_filter_set_query(f, "{\"fullDocument.qty\": {\"$gte\": 3}}", err, sizeof err), 0);
    ck_assert_int_eq(cg_filter_add_ops(f, "insert", err, sizeof err), 0);
    ck_assert_int_eq(cg_filter_add_id(f, "7", err, sizeof err), 0);
    ck_assert_int_eq(cg_filter_add_id(f, "{\"$numberLong\": \"8\"}", err, sizeof err), 0);
    ck_assert_int_eq(cg_filter_compile(f, err, sizeof err), 0);
    struct {
        const char *op;
        int id, qty;
        bool want;
    } cases[] = {{"insert", 7, 3, true},
                 {"insert", 8, 5, true},
                 {"update", 7, 3, false},
                 {"insert", 9, 3, false},
                 {"insert", 7, 2, false}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cg_event_t *ev = order_event(cases[i].op, cases[i].id, "ann", cases[i].qty);
        ck_assert_msg(cg_filter_match(f, ev) == cases[i].want, "case %zu", i);
        cg_event_unref(ev);
    }
    /* the shorthands' equalities are there for the index */
    const cg_match_eq_t *eqs;
    size_t n = cg_match_required_equalities(cg_filter_tree(f), &eqs);
    bool op_eq = false, id_eq = false;
    for (size_t i = 0; i < n; i++) {
        op_eq |= strcmp(eqs[i].path, "operationType") == 0 && eqs[i].n_values == 1;
        id_eq |= strcmp(eqs[i].path, "documentKey._id") == 0 && eqs[i].n_values == 2;
    }
    ck_assert(op_eq && id_eq);
    cg_filter_free(f);
}
END_TEST

START_TEST(bad_queries_and_ids_are_refused)
{
    char err[256];
    cg_filter_t *f = cg_filter_new();
    ck_assert_int_eq(cg_filter_set_query(f, "{\"a\": {\"$where\": 1}}", err, sizeof err), -1);
    ck_assert(strncmp(err, "filter", 6) == 0);
    ck_assert_int_eq(cg_filter_set_query(f, "{}", err, sizeof err), 0);
    ck_assert_int_eq(cg_filter_set_query(f, "{}", err, sizeof err), -1); /* twice */
    const char *bad_ids[] = {"abc", "", "1 2",
                             "{\"$regularExpression\": {\"pattern\": \"a\", "
                             "\"options\": \"\"}}"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++) {
        err[0] = '\0';
        ck_assert_msg(cg_filter_add_id(f, bad_ids[i], err, sizeof err) == -1, "id %s", bad_ids[i]);
        ck_assert(strstr(err, "id") != NULL);
    }
    cg_filter_free(f);
}
END_TEST

START_TEST(bad_values_are_refused_with_a_message)
{
    const char *bad_ns[] = {"", ",", "shop,", ".orders", "shop.", "a b", "sh$op", "a/b"};
    const char *bad_op[] = {"", "insert,", "Insert", "upsert", "insert,,delete"};
    char err[256];
    for (size_t i = 0; i < sizeof bad_ns / sizeof *bad_ns; i++) {
        cg_filter_t *f = cg_filter_new();
        err[0] = '\0';
        ck_assert_msg(cg_filter_add_ns(f, bad_ns[i], err, sizeof err) == -1, "ns '%s'", bad_ns[i]);
        ck_assert(strstr(err, "ns") != NULL);
        cg_filter_free(f);
    }
    for (size_t i = 0; i < sizeof bad_op / sizeof *bad_op; i++) {
        cg_filter_t *f = cg_filter_new();
        err[0] = '\0';
        ck_assert_msg(cg_filter_add_ops(f, bad_op[i], err, sizeof err) == -1, "op '%s'", bad_op[i]);
        ck_assert(strstr(err, "op") != NULL);
        cg_filter_free(f);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("filter");
    TCase *tc = tcase_create("shorthands");
    tcase_add_test(tc, empty_filter_matches_every_change);
    tcase_add_test(tc, ns_matches_a_database_or_one_collection);
    tcase_add_test(tc, op_and_ns_must_both_hold);
    tcase_add_test(tc, events_without_ns_match_only_without_an_ns_filter);
    tcase_add_test(tc, resets_and_marks_are_not_changes);
    tcase_add_test(tc, bad_values_are_refused_with_a_message);
    tcase_add_test(tc, the_filter_query_is_anded_with_the_shorthands);
    tcase_add_test(tc, bad_queries_and_ids_are_refused);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
