/* Unit tests for src/index.c: who is a candidate for an event. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "index.h"
#include "testutil.h"

static cg_match_t *compile(const char *json)
{
    char err[256];
    cg_match_t *m = cg_match_compile_json(json, strlen(json), "filter", err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    return m;
}

static bson_t *doc(const char *json)
{
    bson_error_t e;
    bson_t *b = bson_new_from_json((const uint8_t *)json, -1, &e);
    ck_assert_msg(b != NULL, "%s", e.message);
    return b;
}

/* Collects candidates as a bit set of small integers (the "subscribers"). */
static void collect(void *sub, void *ctx)
{
    *(unsigned *)ctx |= 1u << (uintptr_t)sub;
}

static unsigned candidates(cg_index_t *idx, const char *json)
{
    bson_t *d = doc(json);
    unsigned set = 0;
    cg_index_candidates(idx, d, collect, &set);
    bson_destroy(d);
    return set;
}

#define SUB(n) ((void *)(uintptr_t)(n))
#define BIT(n) (1u << (n))

START_TEST(equalities_find_their_subscribers_by_value)
{
    cg_index_t *idx = cg_index_new();
    cg_match_t *m[4] = {
        compile("{\"fullDocument.owner\": \"ann\"}"),
        compile("{\"fullDocument.owner\": {\"$in\": [\"bob\", \"carl\"]}, \"x\": {\"$gt\": 1}}"),
        compile("{\"fullDocument.owner\": {\"$eq\": \"bob\"}}"),
        compile("{\"fullDocument.qty\": 5}"),
    };
    cg_index_reg_t *r[4];
    for (int i = 0; i < 4; i++)
        r[i] = cg_index_add(idx, SUB(i), m[i]);
    ck_assert_uint_eq(cg_index_indexed_count(idx), 4);
    ck_assert_uint_eq(cg_index_scanned_count(idx), 0);
    ck_assert_uint_eq(candidates(idx, "{\"fullDocument\": {\"owner\": \"ann\"}}"), BIT(0));
    ck_assert_uint_eq(candidates(idx, "{\"fullDocument\": {\"owner\": \"bob\"}}"), BIT(1) | BIT(2));
    ck_assert_uint_eq(candidates(idx, "{\"fullDocument\": {\"owner\": \"zed\"}}"), 0);
    /* numbers of any BSON type meet: 5.0 finds the subscriber that asked for 5 */
    ck_assert_uint_eq(candidates(idx, "{\"fullDocument\": {\"qty\": 5.0}}"), BIT(3));
    ck_assert_uint_eq(candidates(idx, "{\"fullDocument\": {\"qty\": {\"$numberLong\": \"5\"}}}"),
                      BIT(3));
    /* arrays: each element is a value at the path */
    ck_assert_uint_eq(candidates(idx, "{\"fullDocument\": {\"owner\": [\"carl\", \"ann\"]}}"),
                      BIT(0) | BIT(1));
    for (int i = 0; i < 4; i++) {
        cg_index_remove(idx, r[i]);
        cg_match_free(m[i]);
    }
    ck_assert_uint_eq(cg_index_indexed_count(idx), 0);
    cg_index_free(idx);
}
END_TEST

START_TEST(unindexable_filters_are_scanned)
{
    cg_index_t *idx = cg_index_new();
    cg_match_t *m[3] = {
        compile("{\"fullDocument.qty\": {\"$gt\": 3}}"),
        compile("{\"$or\": [{\"a\": 1}, {\"b\": 2}]}"),
        compile("{\"a\": null}"),
    };
    cg_index_reg_t *r[4];
    for (int i = 0; i < 3; i++)
        r[i] = cg_index_add(idx, SUB(i), m[i]);
    r[3] = cg_index_add(idx, SUB(3), NULL); /* no filter at all */
    ck_assert_uint_eq(cg_index_scanned_count(idx), 4);
    ck_assert_uint_eq(candidates(idx, "{}"), BIT(0) | BIT(1) | BIT(2) | BIT(3));
    cg_index_remove(idx, r[1]);
    ck_assert_uint_eq(candidates(idx, "{}"), BIT(0) | BIT(2) | BIT(3));
    for (int i = 0; i < 4; i++) {
        if (i != 1)
            cg_index_remove(idx, r[i]);
        if (i < 3)
            cg_match_free(m[i]);
    }
    cg_index_free(idx);
}
END_TEST

START_TEST(a_selective_equality_is_preferred_to_operation_type)
{
    cg_index_t *idx = cg_index_new();
    cg_match_t *m = compile("{\"operationType\": \"insert\", \"fullDocument.owner\": \"ann\"}");
    cg_index_reg_t *r = cg_index_add(idx, SUB(0), m);
    /* an insert by someone else is not a candidate: the owner is the key */
    ck_assert_uint_eq(candidates(idx, "{\"operationType\": \"insert\","
                                      " \"fullDocument\": {\"owner\": \"bob\"}}"),
                      0);
    ck_assert_uint_eq(candidates(idx, "{\"operationType\": \"insert\","
                                      " \"fullDocument\": {\"owner\": \"ann\"}}"),
                      BIT(0));
    cg_index_remove(idx, r);
    cg_match_free(m);
    cg_index_free(idx);
}
END_TEST

START_TEST(many_subscribers_come_and_go)
{
    /* 5,000 distinct owners: growth, look-ups, removal in any order */
    enum { N = 5000 };
    cg_index_t *idx = cg_index_new();
    cg_match_t **m = calloc(N, sizeof *m);
    cg_index_reg_t **r = calloc(N, sizeof *r);
    char json[128];
    for (int i = 0; i < N; i++) {
        snprintf(json, sizeof json, "{\"fullDocument.owner\": \"u%d\"}", i);
        m[i] = compile(json);
        r[i] = cg_index_add(idx, SUB(i % 31), m[i]);
    }
    for (int i = 0; i < N; i += 2)
        cg_index_remove(idx, r[i]);
    for (int i = 0; i < N; i++) {
        snprintf(json, sizeof json, "{\"fullDocument\": {\"owner\": \"u%d\"}}", i);
        ck_assert_uint_eq(candidates(idx, json), i % 2 ? BIT(i % 31) : 0);
    }
    for (int i = 1; i < N; i += 2)
        cg_index_remove(idx, r[i]);
    ck_assert_uint_eq(cg_index_indexed_count(idx), 0);
    for (int i = 0; i < N; i++)
        cg_match_free(m[i]);
    free(m);
    free(r);
    cg_index_free(idx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("index");
    TCase *tc = tcase_create("candidates");
    tcase_add_test(tc, equalities_find_their_subscribers_by_value);
    tcase_add_test(tc, unindexable_filters_are_scanned);
    tcase_add_test(tc, a_selective_equality_is_preferred_to_operation_type);
    tcase_add_test(tc, many_subscribers_come_and_go);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
