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

/* An event about an order of owner `owner`: insert (fullDocument), delete
 * with a pre-image, or delete without one. */
typedef enum { INSERT, DELETE_PRE, DELETE_BARE } kind_t;

static cg_event_t *owned_event(kind_t kind, const char *owner, int qty)
{
    bson_t *b = BCON_NEW("_id", "{", "_data", "8204", "}", "operationType",
                         BCON_UTF8(kind == INSERT ? "insert" : "delete"), "ns", "{", "db", "shop",
                         "coll", "orders", "}", "documentKey", "{", "_id", BCON_INT32(1), "}");
    if (kind != DELETE_BARE) {
        bson_t d;
        bson_append_document_begin(b, kind == INSERT ? "fullDocument" : "fullDocumentBeforeChange",
                                   -1, &d);
        BSON_APPEND_UTF8(&d, "owner", owner);
        BSON_APPEND_INT32(&d, "qty", qty);
        bson_append_document_end(b, &d);
    }
    char err[128];
    cg_event_t *ev = cg_event_new_change(b, err, sizeof err);
    ck_assert_msg(ev != NULL, "%s", err);
    bson_destroy(b);
    return ev;
}

static cg_filter_t *ruled(const char *query, const char *rule_json)
{
    char err[256];
    cg_filter_t *f = cg_filter_new();
    if (query)
        ck_assert_int_eq(cg_filter_set_query(f, query, err, sizeof err), 0);
    bson_error_t e;
    bson_t *rule = bson_new_from_json((const uint8_t *)rule_json, -1, &e);
    ck_assert_msg(rule != NULL, "%s", e.message);
    ck_assert_int_eq(cg_filter_set_rule(f, rule, err, sizeof err), 0);
    bson_destroy(rule); /* copied */
    ck_assert_int_eq(cg_filter_compile(f, err, sizeof err), 0);
    return f;
}

static bool wants(const cg_filter_t *f, kind_t kind, const char *owner, int qty)
{
    cg_event_t *ev = owned_event(kind, owner, qty);
    bool m = cg_filter_match(f, ev);
    cg_event_unref(ev);
    return m;
}

START_TEST(a_rule_is_evaluated_on_the_document_the_event_is_about)
{
    cg_filter_t *f = ruled(NULL, "{\"fullDocument.owner\": \"ann\"}");
    ck_assert(wants(f, INSERT, "ann", 1));
    ck_assert(!wants(f, INSERT, "bob", 1));
    /* the delete of ann's document reaches ann, bob's does not */
    ck_assert(wants(f, DELETE_PRE, "ann", 1));
    ck_assert(!wants(f, DELETE_PRE, "bob", 1));
    /* a delete whose document is unknown reaches no one with a rule */
    ck_assert(!wants(f, DELETE_BARE, "ann", 1));
    cg_filter_t *none = ruled(NULL, "{}"); /* even a rule that asks nothing */
    ck_assert(!wants(none, DELETE_BARE, "ann", 1));
    ck_assert(wants(none, DELETE_PRE, "bob", 1));
    cg_filter_free(none);
    cg_event_t *r = cg_event_new_reset("82", "x");
    ck_assert(!cg_filter_match(f, r));
    cg_event_unref(r);
    cg_filter_free(f);
}
END_TEST

START_TEST(the_users_filter_stays_on_the_real_event)
{
    /* qty >= 3 on the event: a delete has no fullDocument, so it is not wanted,
     * even though its pre-image (the subject) has qty 5 */
    cg_filter_t *f =
        ruled("{\"fullDocument.qty\": {\"$gte\": 3}}", "{\"fullDocument.owner\": \"ann\"}");
    ck_assert(wants(f, INSERT, "ann", 5));
    ck_assert(!wants(f, INSERT, "ann", 2));
    ck_assert(!wants(f, INSERT, "bob", 5));
    ck_assert(!wants(f, DELETE_PRE, "ann", 5));
    cg_filter_free(f);
    /* and the user can ask for the pre-image by its own path */
    f = ruled("{\"fullDocumentBeforeChange.qty\": {\"$gte\": 3}}",
              "{\"fullDocument.owner\": \"ann\"}");
    ck_assert(wants(f, DELETE_PRE, "ann", 5));
    ck_assert(!wants(f, DELETE_PRE, "ann", 2));
    ck_assert(!wants(f, DELETE_PRE, "bob", 5));
    cg_filter_free(f);
}
END_TEST

START_TEST(the_index_tree_has_the_rules_equality_first)
{
    cg_filter_t *f =
        ruled("{\"fullDocument.status\": \"open\"}", "{\"fullDocument.owner\": \"ann\"}");
    const cg_match_eq_t *eqs;
    size_t n = cg_match_required_equalities(cg_filter_tree(f), &eqs);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(eqs[0].path, "fullDocument.owner");
    ck_assert_str_eq(eqs[1].path, "fullDocument.status");
    cg_filter_free(f);
    /* a rule's $in is an equality too */
    f = ruled(NULL, "{\"fullDocument.tenant\": {\"$in\": [\"t1\", \"t2\"]}}");
    n = cg_match_required_equalities(cg_filter_tree(f), &eqs);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(eqs[0].n_values, 2);
    cg_filter_free(f);
}
END_TEST

START_TEST(a_rule_is_checked_and_given_once)
{
    char err[256];
    cg_filter_t *f = cg_filter_new();
    bson_t *bad = BCON_NEW("$where", "1");
    ck_assert_int_eq(cg_filter_set_rule(f, bad, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "auth rule"));
    bson_destroy(bad);
    bson_t *good = BCON_NEW("fullDocument.owner", "ann");
    ck_assert_int_eq(cg_filter_set_rule(f, good, err, sizeof err), 0);
    ck_assert_int_eq(cg_filter_set_rule(f, good, err, sizeof err), -1);
    cg_filter_free(f); /* never compiled: nothing leaks */
    f = cg_filter_new();
    ck_assert_int_eq(cg_filter_compile(f, err, sizeof err), 0);
    ck_assert_int_eq(cg_filter_set_rule(f, good, err, sizeof err), -1); /* too late */
    cg_filter_free(f);
    bson_destroy(good);
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
    tc = tcase_create("auth rule");
    tcase_add_test(tc, a_rule_is_evaluated_on_the_document_the_event_is_about);
    tcase_add_test(tc, the_users_filter_stays_on_the_real_event);
    tcase_add_test(tc, the_index_tree_has_the_rules_equality_first);
    tcase_add_test(tc, a_rule_is_checked_and_given_once);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
