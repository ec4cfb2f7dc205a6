/* Unit tests for src/project.c: the `fields` projection. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "project.h"
#include "testutil.h"

static const char *EVENT =
    "{\"_id\": {\"_data\": \"82AB\"}, \"operationType\": \"update\","
    " \"clusterTime\": {\"$timestamp\": {\"t\": 1, \"i\": 2}}, \"wallTime\": {\"$date\": 0},"
    " \"ns\": {\"db\": \"shop\", \"coll\": \"orders\"}, \"documentKey\": {\"_id\": 7},"
    " \"updateDescription\": {\"updatedFields\": {\"status\": \"paid\", \"qty\": 2},"
    " \"removedFields\": []},"
    " \"fullDocument\": {\"_id\": 7, \"owner\": \"ann\", \"qty\": 2, \"status\": \"paid\","
    " \"lines\": [{\"sku\": \"a\", \"n\": 1}, {\"sku\": \"b\", \"n\": 2}, 5, [{\"sku\": \"c\"}]],"
    " \"addr\": {\"city\": \"Oslo\", \"zip\": \"0150\"}}}";

/* Projects EVENT with csv and compares with the expected relaxed JSON. */
static void expect(const char *csv, const char *want_json)
{
    char err[256];
    cg_project_t *p = cg_project_new(csv, err, sizeof err);
    ck_assert_msg(p != NULL, "%s", err);
    bson_error_t e;
    bson_t *doc = bson_new_from_json((const uint8_t *)EVENT, -1, &e);
    bson_t *want = bson_new_from_json((const uint8_t *)want_json, -1, &e);
    ck_assert_msg(want != NULL, "%s", e.message);
    bson_t out = BSON_INITIALIZER;
    cg_project_apply(p, doc, &out);
    char *got = bson_as_relaxed_extended_json(&out, NULL);
    char *exp = bson_as_relaxed_extended_json(want, NULL);
    ck_assert_str_eq(got, exp);
    bson_free(got);
    bson_free(exp);
    bson_destroy(&out);
    bson_destroy(doc);
    bson_destroy(want);
    cg_project_free(p);
}

#define KEPT                                                                                       \
    "\"_id\": {\"_data\": \"82AB\"}, \"operationType\": \"update\","                               \
    " \"clusterTime\": {\"$timestamp\": {\"t\": 1, \"i\": 2}},"                                    \
    " \"ns\": {\"db\": \"shop\", \"coll\": \"orders\"}, \"documentKey\": {\"_id\": 7}"

START_TEST(identity_fields_are_always_kept)
{
    expect("wallTime", "{\"_id\": {\"_data\": \"82AB\"}, \"operationType\": \"update\","
                       " \"clusterTime\": {\"$timestamp\": {\"t\": 1, \"i\": 2}},"
                       " \"wallTime\": {\"$date\": 0},"
                       " \"ns\": {\"db\": \"shop\", \"coll\": \"orders\"},"
                       " \"documentKey\": {\"_id\": 7}}");
}
END_TEST

START_TEST(dotted_paths_keep_only_the_named_parts_in_document_order)
{
    expect("fullDocument.qty,fullDocument.owner",
           "{" KEPT ", \"fullDocument\": {\"owner\": \"ann\", \"qty\": 2}}");
    expect("updateDescription.updatedFields.status",
           "{" KEPT ", \"updateDescription\": {\"updatedFields\": {\"status\": \"paid\"}}}");
}
END_TEST

START_TEST(paths_reach_into_arrays_of_documents)
{
    /* like MongoDB: scalars in the array are dropped, nested arrays are walked */
    expect("fullDocument.lines.sku",
           "{" KEPT ", \"fullDocument\": {\"lines\": [{\"sku\": \"a\"}, {\"sku\": \"b\"},"
           " [{\"sku\": \"c\"}]]}}");
}
END_TEST

START_TEST(a_whole_field_covers_its_sub_paths)
{
    expect("fullDocument.addr.city,fullDocument.addr",
           "{" KEPT ", \"fullDocument\": {\"addr\": {\"city\": \"Oslo\", \"zip\": \"0150\"}}}");
    expect("fullDocument.addr,fullDocument.addr.city",
           "{" KEPT ", \"fullDocument\": {\"addr\": {\"city\": \"Oslo\", \"zip\": \"0150\"}}}");
}
END_TEST

START_TEST(missing_and_scalar_parents_are_omitted)
{
    expect("fullDocument.nothing,fullDocument.qty.x,fullDocumentBeforeChange",
           "{" KEPT ", \"fullDocument\": {}}");
}
END_TEST

START_TEST(equivalent_lists_share_a_canonical_key)
{
    char err[256];
    cg_project_t *a = cg_project_new("fullDocument.b,fullDocument.a,fullDocument.a", err, 256);
    cg_project_t *b = cg_project_new("fullDocument.a,fullDocument.b,ns.db", err, 256);
    cg_project_t *c = cg_project_new("fullDocument.a", err, 256);
    ck_assert_str_eq(cg_project_key(a), cg_project_key(b));
    ck_assert_str_ne(cg_project_key(a), cg_project_key(c));
    ck_assert_str_eq(cg_project_key(c),
                     "_id,clusterTime,documentKey,fullDocument.a,ns,operationType");
    cg_project_free(a);
    cg_project_free(b);
    cg_project_free(c);
}
END_TEST

START_TEST(malformed_paths_are_refused)
{
    const char *bad[] = {"", ",", "a,", "a..b", ".a", "a.", "$where", "a.$b", "a\tb"};
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        cg_project_t *p = cg_project_new(bad[i], err, sizeof err);
        ck_assert_msg(p == NULL, "accepted '%s'", bad[i]);
        ck_assert_msg(strncmp(err, "fields: ", 8) == 0, "message '%s'", err);
    }
    char many[1024] = "";
    for (int i = 0; i < 70; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%sf%d", i ? "," : "", i);
    ck_assert_ptr_null(cg_project_new(many, err, sizeof err));
}
END_TEST

/* cg_project_restrict on field lists (NULL: none); want: the resulting key,
 * NULL for no projection, or "!path" for a refusal naming path. */
static void restrict_to(const char *asked, const char *allowed, const char *want)
{
    char err[256];
    cg_project_t *a = asked ? cg_project_new(asked, err, sizeof err) : NULL;
    cg_project_t *l = allowed ? cg_project_new(allowed, err, sizeof err) : NULL;
    ck_assert(!asked || a);
    ck_assert(!allowed || l);
    cg_project_t *out = (cg_project_t *)1;
    err[0] = '\0';
    int rc = cg_project_restrict(a, l, &out, err, sizeof err);
    if (want && want[0] == '!') {
        ck_assert_msg(rc == -1, "%s within %s: accepted", asked, allowed);
        ck_assert_ptr_null(out);
        char named[300];
        snprintf(named, sizeof named, "'%s' is not within the fields the token allows", want + 1);
        ck_assert_msg(strstr(err, named) != NULL, "'%s' lacks '%s'", err, named);
        ck_assert(strncmp(err, "fields: ", 8) == 0);
    } else {
        ck_assert_msg(rc == 0, "%s within %s: %s", asked, allowed, err);
        if (want) {
            ck_assert_ptr_nonnull(out);
            ck_assert_ptr_ne(out, a); /* a new projection: the caller frees its inputs */
            ck_assert_ptr_ne(out, l);
            ck_assert_str_eq(cg_project_key(out), want);
        } else {
            ck_assert_ptr_null(out);
        }
    }
    cg_project_free(out);
    cg_project_free(a);
    cg_project_free(l);
}

#define IDS(middle) "_id,clusterTime,documentKey," middle "ns,operationType"

START_TEST(a_tokens_fields_limit_what_is_asked)
{
    restrict_to(NULL, NULL, NULL);
    /* nothing asked: the token's */
    restrict_to(NULL, "fullDocument.a,fullDocument.b", IDS("fullDocument.a,fullDocument.b,"));
    /* no limit: what was asked */
    restrict_to("fullDocument.a", NULL, IDS("fullDocument.a,"));
    /* asked within allowed: equal, or under an allowed path */
    restrict_to("fullDocument.a", "fullDocument.a,fullDocument.b", IDS("fullDocument.a,"));
    restrict_to("fullDocument.addr.city,fullDocument.b.x.y", "fullDocument.addr,fullDocument.b",
                IDS("fullDocument.addr.city,fullDocument.b.x.y,"));
    restrict_to("updateDescription", "fullDocument,updateDescription",
                "_id,clusterTime,documentKey,ns,operationType,updateDescription");
    /* the identity fields are within every projection, asked or not */
    restrict_to("documentKey,ns.db,_id", "fullDocument.a", IDS(""));
    /* outside: refused with the path named, not silently dropped */
    restrict_to("fullDocument.a,fullDocument.c", "fullDocument.a,fullDocument.b",
                "!fullDocument.c");
    restrict_to("fullDocumentBeforeChange", "fullDocument", "!fullDocumentBeforeChange");
    restrict_to("fullDocument.ab", "fullDocument.a",
                "!fullDocument.ab"); /* segments, not prefixes */
    /* a parent of allowed paths would show more than they do */
    restrict_to("fullDocument", "fullDocument.a,fullDocument.b", "!fullDocument");
    restrict_to("fullDocument.lines", "fullDocument.lines.sku", "!fullDocument.lines");
}
END_TEST

START_TEST(a_restricted_projection_applies_like_any_other)
{
    char err[256];
    cg_project_t *l = cg_project_new("fullDocument.addr,fullDocument.qty", err, sizeof err);
    cg_project_t *a = cg_project_new("fullDocument.addr.city", err, sizeof err), *out;
    ck_assert_int_eq(cg_project_restrict(a, l, &out, err, sizeof err), 0);
    cg_project_free(a);
    cg_project_free(l);
    bson_error_t e;
    bson_t *doc = bson_new_from_json((const uint8_t *)EVENT, -1, &e);
    bson_t got = BSON_INITIALIZER;
    cg_project_apply(out, doc, &got);
    char *json = bson_as_relaxed_extended_json(&got, NULL);
    ck_assert_ptr_nonnull(
        strstr(json, "\"fullDocument\" : { \"addr\" : { \"city\" : \"Oslo\" } }"));
    ck_assert_ptr_null(strstr(json, "qty"));
    bson_free(json);
    bson_destroy(&got);
    bson_destroy(doc);
    cg_project_free(out);
    /* a copy of a list at the path limit is still a projection (no re-parsing) */
    char many[1024] = "";
    for (int i = 0; i < CG_PROJECT_MAX_PATHS; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%sf%d", i ? "," : "", i);
    l = cg_project_new(many, err, sizeof err);
    ck_assert_ptr_nonnull(l);
    ck_assert_int_eq(cg_project_restrict(NULL, l, &out, err, sizeof err), 0);
    ck_assert_str_eq(cg_project_key(out), cg_project_key(l));
    cg_project_free(out);
    ck_assert_int_eq(cg_project_restrict(l, l, &out, err, sizeof err), 0);
    ck_assert_str_eq(cg_project_key(out), cg_project_key(l));
    cg_project_free(out);
    cg_project_free(l);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("project");
    TCase *tc = tcase_create("fields");
    tcase_add_test(tc, identity_fields_are_always_kept);
    tcase_add_test(tc, dotted_paths_keep_only_the_named_parts_in_document_order);
    tcase_add_test(tc, paths_reach_into_arrays_of_documents);
    tcase_add_test(tc, a_whole_field_covers_its_sub_paths);
    tcase_add_test(tc, missing_and_scalar_parents_are_omitted);
    tcase_add_test(tc, equivalent_lists_share_a_canonical_key);
    tcase_add_test(tc, malformed_paths_are_refused);
    suite_add_tcase(s, tc);
    tc = tcase_create("restrict");
    tcase_add_test(tc, a_tokens_fields_limit_what_is_asked);
    tcase_add_test(tc, a_restricted_projection_applies_like_any_other);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
