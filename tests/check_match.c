/* Unit tests for src/match.c: MongoDB query filters on BSON.
 *
 * JSON in these tests is written with single quotes for readability; q()
 * turns them into double quotes before libbson parses it. The "docs_*" tests
 * transcribe the examples of the MongoDB manual's operator pages and query
 * tutorials (collection, query, expected _ids). */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "match.h"

/* ---- helpers ---- */

static char *q(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(n + 1);
    ck_assert_ptr_nonnull(out);
    for (size_t i = 0; i <= n; i++)
        out[i] = s[i] == '\'' ? '"' : s[i];
    return out;
}

static bson_t *doc(const char *json)
{
    char *j = q(json);
    bson_error_t e;
    bson_t *b = bson_new_from_json((const uint8_t *)j, -1, &e);
    ck_assert_msg(b != NULL, "bad test document %s: %s", json, e.message);
    free(j);
    return b;
}

static cg_match_t *compile(const char *filter)
{
    char *j = q(filter);
    char err[512];
    cg_match_t *m = cg_match_compile_json(j, strlen(j), "filter", err, sizeof err);
    ck_assert_msg(m != NULL, "filter %s did not compile: %s", filter, err);
    free(j);
    return m;
}

static bool matches(const char *filter, const char *document)
{
    cg_match_t *m = compile(filter);
    bson_t *d = doc(document);
    bool r = cg_match_eval(m, d);
    bson_destroy(d);
    cg_match_free(m);
    return r;
}

#define YES(f, d) ck_assert_msg(matches(f, d), "%s should match %s", f, d)
#define NO(f, d) ck_assert_msg(!matches(f, d), "%s should not match %s", f, d)

/* The compile error for filter (NULL when it compiles). */
static const char *compile_error(const char *filter, char *err, size_t errlen)
{
    char *j = q(filter);
    cg_match_t *m = cg_match_compile_json(j, strlen(j), "filter", err, errlen);
    free(j);
    if (m) {
        cg_match_free(m);
        return NULL;
    }
    return err;
}

#define ERR_IS(f, want)                                                                            \
    do {                                                                                           \
        char err_[512];                                                                            \
        const char *got_ = compile_error(f, err_, sizeof err_);                                    \
        ck_assert_msg(got_ != NULL, "%s should not compile", f);                                   \
        ck_assert_str_eq(got_, want);                                                              \
    } while (0)

#define ERR_HAS(f, want)                                                                           \
    do {                                                                                           \
        char err_[512];                                                                            \
        const char *got_ = compile_error(f, err_, sizeof err_);                                    \
        ck_assert_msg(got_ != NULL, "%s should not compile", f);                                   \
        ck_assert_msg(strstr(got_, want) != NULL, "error for %s is \"%s\", wanted \"%s\"", f,      \
                      got_, want);                                                                 \
    } while (0)

/* Runs filter over a collection (documents with an _id) and checks the _ids
 * that match, written like "1 3". */
static void expect_ids(const char *filter, const char *const *docs, const char *want)
{
    cg_match_t *m = compile(filter);
    char got[512] = "";
    for (size_t i = 0; docs[i]; i++) {
        bson_t *d = doc(docs[i]);
        if (cg_match_eval(m, d)) {
            bson_iter_t it;
            ck_assert(bson_iter_init_find(&it, d, "_id"));
            char id[64];
            if (BSON_ITER_HOLDS_UTF8(&it))
                snprintf(id, sizeof id, "%s", bson_iter_utf8(&it, NULL));
            else
                snprintf(id, sizeof id, "%lld", (long long)bson_iter_as_int64(&it));
            if (got[0])
                strcat(got, " ");
            strcat(got, id);
        }
        bson_destroy(d);
    }
    cg_match_free(m);
    ck_assert_msg(strcmp(got, want) == 0, "%s matched [%s], wanted [%s]", filter, got, want);
}

static bson_value_t value_of(const bson_t *d, const char *key)
{
    bson_iter_t it;
    ck_assert(bson_iter_init_find(&it, d, key));
    return *bson_iter_value(&it);
}

/* ---- implicit equality, $eq, $ne ---- */

START_TEST(eq_scalars)
{
    YES("{'a': 1}", "{'a': 1}");
    NO("{'a': 1}", "{'a': 2}");
    NO("{'a': 1}", "{'b': 1}");
    YES("{'a': 'x'}", "{'a': 'x'}");
    NO("{'a': 'x'}", "{'a': 'xy'}");
    NO("{'a': 'x'}", "{'a': 'X'}");
    YES("{'a': true}", "{'a': true}");
    NO("{'a': true}", "{'a': 1}");
    NO("{'a': '1'}", "{'a': 1}");
    YES("{'a': {'$eq': 5}}", "{'a': 5}");
    NO("{'a': {'$eq': 5}}", "{'a': 6}");
    YES("{}", "{'a': 1}");
    YES("{'a': 1, 'b': 2}", "{'a': 1, 'b': 2}");
    NO("{'a': 1, 'b': 2}", "{'a': 1, 'b': 3}");
}
END_TEST

START_TEST(eq_numbers_across_types)
{
    YES("{'a': 5}", "{'a': 5.0}");
    YES("{'a': 5}", "{'a': {'$numberLong': '5'}}");
    YES("{'a': 5}", "{'a': {'$numberDecimal': '5.00'}}");
    YES("{'a': {'$numberDecimal': '5'}}", "{'a': 5.0}");
    YES("{'a': 0}", "{'a': {'$numberDouble': '-0.0'}}");
    YES("{'a': {'$numberDecimal': '-0'}}", "{'a': 0}");
    NO("{'a': 5}", "{'a': 5.5}");
    YES("{'a': 0.5}", "{'a': {'$numberDecimal': '0.5'}}");
    /* 9.99 as a double is not exactly 9.99 (manual: decimal BSON type) */
    NO("{'a': 9.99}", "{'a': {'$numberDecimal': '9.99'}}");
    NO("{'a': {'$numberDecimal': '9.99'}}", "{'a': 9.99}");
    YES("{'a': {'$numberDecimal': '9.99'}}", "{'a': {'$numberDecimal': '9.990'}}");
    /* exact int64 vs double */
    YES("{'a': {'$numberLong': '9007199254740992'}}", "{'a': 9007199254740992.0}");
    NO("{'a': {'$numberLong': '9007199254740993'}}", "{'a': 9007199254740992.0}");
    YES("{'a': {'$numberDouble': 'NaN'}}", "{'a': {'$numberDouble': 'NaN'}}");
    YES("{'a': {'$numberDouble': 'NaN'}}", "{'a': {'$numberDecimal': 'NaN'}}");
    YES("{'a': {'$numberDouble': 'Infinity'}}", "{'a': {'$numberDecimal': 'Infinity'}}");
    NO("{'a': {'$numberDouble': 'Infinity'}}", "{'a': {'$numberDecimal': '-Infinity'}}");
}
END_TEST

START_TEST(eq_documents_and_arrays)
{
    YES("{'a': {'b': 1, 'c': 2}}", "{'a': {'b': 1, 'c': 2}}");
    NO("{'a': {'b': 1, 'c': 2}}", "{'a': {'c': 2, 'b': 1}}"); /* field order matters */
    NO("{'a': {'b': 1}}", "{'a': {'b': 1, 'c': 2}}");
    YES("{'a': {'b': 1}}", "{'a': {'b': 1.0}}");
    YES("{'a': {}}", "{'a': {}}");
    YES("{'a': [1, 2]}", "{'a': [1, 2]}");
    NO("{'a': [1, 2]}", "{'a': [2, 1]}");
    YES("{'a': [1, 2]}", "{'a': [[1, 2], 3]}"); /* an element equals the array */
    YES("{'a': []}", "{'a': []}");
    YES("{'a': []}", "{'a': [[]]}");
    NO("{'a': []}", "{'a': [1]}");
    /* a scalar matches an element of an array */
    YES("{'a': 2}", "{'a': [1, 2, 3]}");
    NO("{'a': 4}", "{'a': [1, 2, 3]}");
    /* but not an element of a nested array */
    NO("{'a': 1}", "{'a': [[1]]}");
}
END_TEST

START_TEST(eq_other_types)
{
    YES("{'_id': {'$oid': '5234cc89687ea597eabee675'}}",
        "{'_id': {'$oid': '5234cc89687ea597eabee675'}}");
    NO("{'_id': {'$oid': '5234cc89687ea597eabee675'}}",
       "{'_id': {'$oid': '5234cc89687ea597eabee676'}}");
    YES("{'t': {'$date': '2024-01-02T03:04:05Z'}}",
        "{'t': {'$date': {'$numberLong': '1704164645000'}}}");
    NO("{'t': {'$date': '2024-01-02T03:04:05Z'}}", "{'t': 1704164645000}");
    YES("{'t': {'$timestamp': {'t': 5, 'i': 1}}}", "{'t': {'$timestamp': {'t': 5, 'i': 1}}}");
    YES("{'b': {'$binary': {'base64': 'AQID', 'subType': '00'}}}",
        "{'b': {'$binary': {'base64': 'AQID', 'subType': '00'}}}");
    NO("{'b': {'$binary': {'base64': 'AQID', 'subType': '00'}}}",
       "{'b': {'$binary': {'base64': 'AQID', 'subType': '05'}}}");
    YES("{'s': 'abc'}", "{'s': {'$symbol': 'abc'}}");
    YES("{'k': {'$minKey': 1}}", "{'k': {'$minKey': 1}}");
    NO("{'k': {'$minKey': 1}}", "{'k': {'$maxKey': 1}}");
    YES("{'r': {'$eq': {'$regularExpression': {'pattern': 'a', 'options': 'i'}}}}",
        "{'r': {'$regularExpression': {'pattern': 'a', 'options': 'i'}}}");
}
END_TEST

START_TEST(ne_is_not_eq)
{
    YES("{'a': {'$ne': 1}}", "{'a': 2}");
    NO("{'a': {'$ne': 1}}", "{'a': 1}");
    YES("{'a': {'$ne': 1}}", "{'b': 1}"); /* missing */
    NO("{'a': {'$ne': 1}}", "{'a': [0, 1]}");
    YES("{'a': {'$ne': 1}}", "{'a': [0, 2]}");
    NO("{'a': {'$ne': 1}}", "{'a': 1.0}");
    NO("{'a': {'$ne': null}}", "{'b': 1}");
    NO("{'a': {'$ne': null}}", "{'a': null}");
    NO("{'a': {'$ne': null}}", "{'a': [1, null]}");
    YES("{'a': {'$ne': null}}", "{'a': 0}");
    NO("{'a': {'$ne': [1, 2]}}", "{'a': [1, 2]}");
    YES("{'a': {'$ne': [1, 2]}}", "{'a': [1, 2, 3]}");
}
END_TEST

/* ---- null, missing, undefined ---- */

START_TEST(null_matches_missing_and_null)
{
    YES("{'a': null}", "{'a': null}");
    YES("{'a': null}", "{'b': 1}");
    YES("{'a': null}", "{'a': [1, null]}");
    NO("{'a': null}", "{'a': 0}");
    NO("{'a': null}", "{'a': []}");
    NO("{'a': null}", "{'a': [1]}");
    /* MongoDB 8.0: null no longer matches undefined */
    NO("{'a': null}", "{'a': {'$undefined': true}}");
    NO("{'a': {'$in': [null]}}", "{'a': {'$undefined': true}}");
    YES("{'a': {'$in': [null]}}", "{'b': 1}");
    YES("{'a': {'$gte': null}}", "{'b': 1}");
    YES("{'a': {'$lte': null}}", "{'a': null}");
    NO("{'a': {'$gt': null}}", "{'a': null}");
    NO("{'a': {'$lt': null}}", "{'b': 1}");
    NO("{'a': {'$gte': null}}", "{'a': 1}");
    /* through paths: a scalar on the way means missing */
    YES("{'a.b': null}", "{'a': 5}");
    YES("{'a.b': null}", "{'a': {'c': 1}}");
    YES("{'a.b': null}", "{'a': [{'c': 1}]}");
    YES("{'a.b': null}", "{'a': [{'b': 1}, {'c': 1}]}");
    NO("{'a.b': null}", "{'a': [{'b': 1}, {'b': 2}]}");
    NO("{'a.b': null}", "{'a': [1, 2]}");
    NO("{'a.b': null}", "{'a': []}");
}
END_TEST

START_TEST(docs_null_or_missing)
{
    /* manual: Query for Null or Missing Fields */
    const char *inventory[] = {"{'_id': 1, 'item': null}", "{'_id': 2}", NULL};
    expect_ids("{'item': null}", inventory, "1 2");
    expect_ids("{'item': {'$type': 10}}", inventory, "1");
    expect_ids("{'item': {'$exists': false}}", inventory, "2");
    expect_ids("{'item': {'$ne': null}}", inventory, "");
    /* manual: Migrate Undefined Data and Queries (8.0) */
    const char *people[] = {"{'_id': 1, 'name': null}", "{'_id': 2, 'name': {'$undefined': true}}",
                            "{'_id': 3, 'name': ['Gabriel', {'$undefined': true}]}",
                            "{'_id': 4, 'names': ['Alice', 'Charu']}", NULL};
    expect_ids("{'name': null}", people, "1 4");
    expect_ids("{'name': {'$type': 'undefined'}}", people, "2 3");
}
END_TEST

/* ---- comparisons ---- */

START_TEST(comparisons_basic)
{
    YES("{'a': {'$gt': 1}}", "{'a': 2}");
    NO("{'a': {'$gt': 1}}", "{'a': 1}");
    YES("{'a': {'$gte': 1}}", "{'a': 1}");
    YES("{'a': {'$lt': 1}}", "{'a': 0}");
    NO("{'a': {'$lt': 1}}", "{'a': 1}");
    YES("{'a': {'$lte': 1}}", "{'a': 1.0}");
    YES("{'a': {'$gt': 1, '$lt': 3}}", "{'a': 2}");
    NO("{'a': {'$gt': 1, '$lt': 3}}", "{'a': 3}");
    NO("{'a': {'$gt': 1}}", "{'b': 2}");
    YES("{'a': {'$gt': 'abc'}}", "{'a': 'abd'}");
    YES("{'a': {'$gt': 'abc'}}", "{'a': 'abcd'}");
    NO("{'a': {'$gt': 'abc'}}", "{'a': 'ab'}");
    YES("{'a': {'$lt': 'a'}}", "{'a': 'B'}"); /* binary, not collation */
    YES("{'a': {'$gt': {'$date': '2024-01-01T00:00:00Z'}}}",
        "{'a': {'$date': '2024-06-01T00:00:00Z'}}");
    YES("{'a': {'$lt': true}}", "{'a': false}");
    YES("{'a': {'$gt': {'$oid': '000000000000000000000001'}}}",
        "{'a': {'$oid': '000000000000000000000002'}}");
    YES("{'a': {'$gt': {'$timestamp': {'t': 5, 'i': 1}}}}",
        "{'a': {'$timestamp': {'t': 5, 'i': 2}}}");
}
END_TEST

START_TEST(comparisons_stay_in_type_bracket)
{
    NO("{'a': {'$gt': 1}}", "{'a': 'x'}");
    NO("{'a': {'$lt': 'x'}}", "{'a': 1}");
    NO("{'a': {'$gt': 0}}", "{'a': true}");
    NO("{'a': {'$gt': 0}}", "{'a': null}");
    NO("{'a': {'$lt': {'$date': '2024-01-01T00:00:00Z'}}}", "{'a': 5}");
    NO("{'a': {'$gt': {'$date': '1970-01-01T00:00:00Z'}}}",
       "{'a': {'$timestamp': {'t': 5, 'i': 1}}}");
    NO("{'a': {'$gte': {}}}", "{'a': []}");
    YES("{'a': {'$gte': {}}}", "{'a': {'x': 1}}");
    YES("{'a': {'$gt': 'a'}}", "{'a': {'$symbol': 'b'}}");
}
END_TEST

START_TEST(comparisons_numbers_exact)
{
    YES("{'a': {'$gt': 1}}", "{'a': 1.5}");
    YES("{'a': {'$lt': 2}}", "{'a': {'$numberDecimal': '1.999999999999999999999999999999'}}");
    YES("{'a': {'$gt': {'$numberLong': '9007199254740992'}}}",
        "{'a': {'$numberLong': '9007199254740993'}}");
    NO("{'a': {'$gt': 9007199254740992.0}}", "{'a': {'$numberLong': '9007199254740992'}}");
    YES("{'a': {'$gt': 9007199254740992.0}}", "{'a': {'$numberLong': '9007199254740993'}}");
    /* decimal vs double compare exact values: 0.1 (double) is a bit above 0.1 */
    YES("{'a': {'$gt': {'$numberDecimal': '0.1'}}}", "{'a': 0.1}");
    YES("{'a': {'$lt': 0.1}}", "{'a': {'$numberDecimal': '0.1'}}");
    YES("{'a': {'$gte': {'$numberDecimal': '0.5'}}}", "{'a': 0.5}");
    YES("{'a': {'$lte': {'$numberDecimal': '0.5'}}}", "{'a': 0.5}");
    YES("{'a': {'$gt': {'$numberDecimal': '-1E+400'}}}", "{'a': -1e300}");
    YES("{'a': {'$lt': {'$numberDecimal': '1E+400'}}}", "{'a': 1e308}");
    YES("{'a': {'$gt': {'$numberDecimal': '1E-400'}}}", "{'a': 5e-324}");
    NO("{'a': {'$lt': {'$numberDecimal': '1E-500'}}}", "{'a': 5e-324}");
    YES("{'a': {'$gt': {'$numberDecimal': '1E-500'}}}", "{'a': 5e-324}");
    YES("{'a': {'$gt': 1e300}}",
        "{'a': {'$numberDecimal': '1.000000000000000052504760255204421E+300'}}");
    YES("{'a': {'$gt': 1}}", "{'a': {'$numberDouble': 'Infinity'}}");
    YES("{'a': {'$lt': {'$numberDecimal': '-1E+6000'}}}", "{'a': {'$numberDouble': '-Infinity'}}");
    /* NaN only equals NaN, never orders */
    NO("{'a': {'$gt': 0}}", "{'a': {'$numberDouble': 'NaN'}}");
    NO("{'a': {'$lt': 0}}", "{'a': {'$numberDouble': 'NaN'}}");
    YES("{'a': {'$gte': {'$numberDouble': 'NaN'}}}", "{'a': {'$numberDouble': 'NaN'}}");
    NO("{'a': {'$gt': {'$numberDouble': 'NaN'}}}", "{'a': {'$numberDouble': 'NaN'}}");
    NO("{'a': {'$lte': {'$numberDouble': 'NaN'}}}", "{'a': 5}");
}
END_TEST

START_TEST(comparisons_minkey_maxkey)
{
    YES("{'a': {'$gt': {'$minKey': 1}}}", "{'a': 'x'}");
    YES("{'a': {'$gt': {'$minKey': 1}}}", "{'a': null}");
    YES("{'a': {'$gte': {'$minKey': 1}}}", "{'a': {'$minKey': 1}}");
    NO("{'a': {'$gt': {'$minKey': 1}}}", "{'a': {'$minKey': 1}}");
    NO("{'a': {'$lt': {'$minKey': 1}}}", "{'a': 1}");
    YES("{'a': {'$lt': {'$maxKey': 1}}}", "{'a': [1]}");
    YES("{'a': {'$lte': {'$maxKey': 1}}}", "{'a': {'$maxKey': 1}}");
    NO("{'a': {'$gt': {'$maxKey': 1}}}", "{'a': 5}");
    NO("{'a': {'$lt': 1}}", "{'a': {'$minKey': 1}}");
}
END_TEST

START_TEST(comparisons_on_arrays)
{
    /* any element may satisfy each condition (not necessarily the same one) */
    YES("{'a': {'$gt': 15, '$lt': 20}}", "{'a': [14, 21]}");
    NO("{'a': {'$gt': 25}}", "{'a': [14, 21]}");
    /* the array as a whole compares with an array operand */
    YES("{'a': {'$gt': [1, 2]}}", "{'a': [1, 3]}");
    YES("{'a': {'$lt': [1, 2]}}", "{'a': [1]}");
    NO("{'a': {'$gt': [1, 2]}}", "{'a': [1, 2]}");
    YES("{'a': {'$gt': [1]}}", "{'a': [1, 'x']}");
    /* documents compare field by field: type, then name, then value */
    YES("{'a': {'$gt': {'x': 1}}}", "{'a': {'x': 2}}");
    YES("{'a': {'$gt': {'x': 1}}}", "{'a': {'y': 0}}");
    YES("{'a': {'$gt': {'x': 1}}}", "{'a': {'x': 'a'}}");
    YES("{'a': {'$gt': {'x': 1}}}", "{'a': {'x': 1, 'y': 1}}");
}
END_TEST

START_TEST(docs_comparison_pages)
{
    /* manual: $gt / $gte / $lt / $lte */
    const char *inventory[] = {
        "{'_id': 1, 'item': 'nuts', 'quantity': 30, 'carrier': {'name': 'Shipit', 'fee': 3}}",
        "{'_id': 2, 'item': 'bolts', 'quantity': 50, 'carrier': {'name': 'Shipit', 'fee': 4}}",
        "{'_id': 3, 'item': 'washers', 'quantity': 10, 'carrier': {'name': 'Shipit', 'fee': 1}}",
        NULL};
    expect_ids("{'quantity': {'$gt': 20}}", inventory, "1 2");
    expect_ids("{'carrier.fee': {'$gt': 2}}", inventory, "1 2");
    expect_ids("{'quantity': {'$gte': 20}}", inventory, "1 2");
    expect_ids("{'quantity': {'$lt': 20}}", inventory, "3");
    expect_ids("{'quantity': {'$lte': 20}}", inventory, "3");
    expect_ids("{'carrier.fee': {'$lte': 3}}", inventory, "1 3");
    expect_ids("{'quantity': {'$ne': 20}}", inventory, "1 2 3");
    expect_ids("{'carrier.state': {'$ne': 'NY'}}", inventory, "1 2 3");
}
END_TEST

START_TEST(docs_eq_page)
{
    /* manual: $eq */
    const char *inventory[] = {
        "{'_id': 1, 'item': {'name': 'ab', 'code': '123'}, 'qty': 15, 'tags': ['A', 'B', 'C']}",
        "{'_id': 2, 'item': {'name': 'cd', 'code': '123'}, 'qty': 20, 'tags': ['B']}",
        "{'_id': 3, 'item': {'name': 'ij', 'code': '456'}, 'qty': 25, 'tags': ['A', 'B']}",
        "{'_id': 4, 'item': {'name': 'xy', 'code': '456'}, 'qty': 30, 'tags': ['B', 'A']}",
        "{'_id': 5, 'item': {'name': 'mn', 'code': '000'}, 'qty': 20, 'tags': [['A', 'B'], 'C']}",
        NULL};
    expect_ids("{'qty': {'$eq': 20}}", inventory, "2 5");
    expect_ids("{'qty': 20}", inventory, "2 5");
    expect_ids("{'item.name': {'$eq': 'ab'}}", inventory, "1");
    expect_ids("{'tags': {'$eq': 'B'}}", inventory, "1 2 3 4");
    expect_ids("{'tags': {'$eq': ['A', 'B']}}", inventory, "3 5");
    expect_ids("{'tags': ['A', 'B']}", inventory, "3 5");
    const char *companies[] = {"{'_id': 1, 'company': 'MongoDB'}",
                               "{'_id': 2, 'company': 'MongoDB2'}", NULL};
    expect_ids("{'company': 'MongoDB'}", companies, "1");
    expect_ids("{'company': {'$eq': 'MongoDB'}}", companies, "1");
    expect_ids(
        "{'company': {'$eq': {'$regularExpression': {'pattern': 'MongoDB', 'options': ''}}}}",
        companies, "");
    expect_ids("{'company': {'$regularExpression': {'pattern': 'MongoDB', 'options': ''}}}",
               companies, "1 2");
    expect_ids(
        "{'company': {'$regex': {'$regularExpression': {'pattern': 'MongoDB', 'options': ''}}}}",
        companies, "1 2");
}
END_TEST

/* ---- $in, $nin ---- */

START_TEST(in_nin)
{
    YES("{'a': {'$in': [1, 2]}}", "{'a': 2}");
    YES("{'a': {'$in': [1, 2]}}", "{'a': 2.0}");
    NO("{'a': {'$in': [1, 2]}}", "{'a': 3}");
    NO("{'a': {'$in': []}}", "{'a': 3}");
    YES("{'a': {'$in': [1, 'x', true]}}", "{'a': [false, 'x']}");
    YES("{'a': {'$in': [[1, 2]]}}", "{'a': [1, 2]}");
    YES("{'a': {'$in': [[1, 2]]}}", "{'a': [[1, 2], 3]}");
    YES("{'a': {'$in': [{'b': 1}]}}", "{'a': {'b': 1}}");
    YES("{'a': {'$in': [null]}}", "{'a': null}");
    NO("{'a': {'$in': [1]}}", "{'b': 1}");
    YES("{'a': {'$in': [{'$regularExpression': {'pattern': '^x', 'options': ''}}, 5]}}",
        "{'a': 'xyz'}");
    YES("{'a': {'$in': [{'$regularExpression': {'pattern': '^x', 'options': ''}}, 5]}}",
        "{'a': 5}");
    NO("{'a': {'$in': [{'$regularExpression': {'pattern': '^x', 'options': ''}}]}}", "{'a': 'yx'}");
    /* many values: sorted and binary-searched */
    YES("{'a': {'$in': [9, 8, 7, 6, 5, 4, 3, 2, 1, 'a', 'b', 'c', 10.5, {'$numberLong': '11'}]}}",
        "{'a': {'$numberDecimal': '11'}}");
    YES("{'a': {'$in': [9, 8, 7, 6, 5, 4, 3, 2, 1, 'a', 'b', 'c', 10.5]}}", "{'a': 'b'}");
    NO("{'a': {'$in': [9, 8, 7, 6, 5, 4, 3, 2, 1, 'a', 'b', 'c', 10.5]}}", "{'a': 10}");
    YES("{'a': {'$nin': [1, 2]}}", "{'a': 3}");
    NO("{'a': {'$nin': [1, 2]}}", "{'a': 1}");
    YES("{'a': {'$nin': [1, 2]}}", "{'b': 1}");
    NO("{'a': {'$nin': [1, 2]}}", "{'a': [3, 2]}");
    NO("{'a': {'$nin': [null]}}", "{'b': 1}");
    YES("{'a': {'$nin': []}}", "{'a': 1}");
}
END_TEST

START_TEST(docs_in_nin_pages)
{
    /* manual: $in and $nin */
    const char *inventory[] = {
        "{'_id': 1, 'item': 'Pens', 'quantity': 350, 'tags': ['school', 'office']}",
        "{'_id': 2, 'item': 'Erasers', 'quantity': 15, 'tags': ['school', 'home']}",
        "{'_id': 3, 'item': 'Maps', 'tags': ['office', 'storage']}",
        "{'_id': 4, 'item': 'Books', 'quantity': 5, 'tags': ['school', 'storage', 'home']}", NULL};
    expect_ids("{'quantity': {'$in': [5, 15]}}", inventory, "2 4");
    expect_ids("{'tags': {'$in': ['home', 'school']}}", inventory, "1 2 4");
    expect_ids("{'tags': {'$in': [{'$regularExpression': {'pattern': '^be', 'options': ''}}, "
               "{'$regularExpression': {'pattern': '^st', 'options': ''}}]}}",
               inventory, "3 4");
    expect_ids("{'quantity': {'$nin': [5, 15]}}", inventory, "1 3");
    expect_ids("{'tags': {'$nin': ['school']}}", inventory, "3");
}
END_TEST

/* ---- logical ---- */

START_TEST(and_or_nor)
{
    YES("{'$and': [{'a': 1}, {'b': 2}]}", "{'a': 1, 'b': 2}");
    NO("{'$and': [{'a': 1}, {'b': 2}]}", "{'a': 1, 'b': 3}");
    YES("{'$or': [{'a': 1}, {'b': 2}]}", "{'a': 0, 'b': 2}");
    NO("{'$or': [{'a': 1}, {'b': 2}]}", "{'a': 0, 'b': 3}");
    YES("{'$nor': [{'a': 1}, {'b': 2}]}", "{'a': 0, 'b': 3}");
    NO("{'$nor': [{'a': 1}, {'b': 2}]}", "{'a': 1}");
    YES("{'$or': [{}]}", "{'a': 1}");
    YES("{'$and': [{'$or': [{'a': 1}, {'a': 2}]}, {'$or': [{'b': 1}, {'b': 2}]}]}",
        "{'a': 2, 'b': 1}");
    NO("{'$and': [{'$or': [{'a': 1}, {'a': 2}]}, {'$or': [{'b': 1}, {'b': 2}]}]}",
       "{'a': 2, 'b': 3}");
    YES("{'a': 1, '$comment': 'ignored'}", "{'a': 1}");
}
END_TEST

START_TEST(docs_logical_pages)
{
    /* manual: $and, $or, $nor, $not */
    const char *inventory[] = {
        "{'_id': 1, 'item': 'Freezer', 'price': 4.5, 'qty': 10, 'sale': true}",
        "{'_id': 2, 'item': 'Pen', 'price': 1.99, 'qty': 30, 'sale': false}",
        "{'_id': 3, 'item': 'Pencil', 'price': 0.5, 'qty': 15}",
        "{'_id': 4, 'item': 'paper', 'qty': 100, 'sale': true}",
        "{'_id': 5, 'item': 'Pin', 'price': 1.99, 'sale': true}",
        NULL};
    expect_ids("{'$and': [{'price': {'$ne': 1.99}}, {'price': {'$exists': true}}]}", inventory,
               "1 3");
    expect_ids("{'$or': [{'qty': {'$lt': 20}}, {'price': 10}]}", inventory, "1 3");
    expect_ids("{'$nor': [{'price': 1.99}, {'sale': true}]}", inventory, "3");
    expect_ids("{'$nor': [{'price': 1.99}, {'qty': {'$lt': 20}}, {'sale': true}]}", inventory, "");
    expect_ids("{'price': {'$not': {'$gt': 1.99}}}", inventory, "2 3 4 5");
    expect_ids("{'item': {'$not': {'$regularExpression': {'pattern': '^p.*', 'options': ''}}}}",
               inventory, "1 2 3 5");
    expect_ids("{'item': {'$not': {'$regex': '^p.*'}}}", inventory, "1 2 3 5");
    expect_ids("{'item': {'$not': {'$regex': '^p.*', '$options': 'i'}}}", inventory, "1");
}
END_TEST

START_TEST(not_operator)
{
    YES("{'a': {'$not': {'$gt': 5}}}", "{'a': 3}");
    NO("{'a': {'$not': {'$gt': 5}}}", "{'a': 7}");
    YES("{'a': {'$not': {'$gt': 5}}}", "{'b': 7}");
    NO("{'a': {'$not': {'$gt': 5}}}", "{'a': [1, 7]}");
    YES("{'a': {'$not': {'$gt': 1, '$lt': 5}}}", "{'a': 7}");
    NO("{'a': {'$not': {'$gt': 1, '$lt': 5}}}", "{'a': 3}");
    YES("{'a': {'$not': {'$gt': 5}}}", "{'a': 'x'}"); /* not comparable: not > 5 */
    YES("{'a': {'$not': {'$in': [1, 2]}}}", "{'a': 3}");
    NO("{'a': {'$not': {'$exists': true}}}", "{'a': 3}");
    YES("{'a': {'$not': {'$not': {'$eq': 1}}}}", "{'a': 1}");
}
END_TEST

/* ---- element ---- */

START_TEST(exists)
{
    YES("{'a': {'$exists': true}}", "{'a': null}");
    YES("{'a': {'$exists': true}}", "{'a': []}");
    NO("{'a': {'$exists': true}}", "{'b': 1}");
    YES("{'a': {'$exists': false}}", "{'b': 1}");
    NO("{'a': {'$exists': false}}", "{'a': 0}");
    YES("{'a': {'$exists': 1}}", "{'a': 0}");
    YES("{'a': {'$exists': 0}}", "{'b': 0}");
    YES("{'a.b': {'$exists': true}}", "{'a': [{'c': 1}, {'b': 2}]}");
    NO("{'a.b': {'$exists': true}}", "{'a': [{'c': 1}, 5]}");
    YES("{'a.b': {'$exists': false}}", "{'a': [1, 2]}");
    YES("{'a.1': {'$exists': true}}", "{'a': [1, 2]}");
    NO("{'a.2': {'$exists': true}}", "{'a': [1, 2]}");
}
END_TEST

START_TEST(docs_exists_page)
{
    const char *records[] = {"{'_id': 1, 'a': 5, 'b': 5, 'c': null}",
                             "{'_id': 2, 'a': 3, 'b': null, 'c': 8}",
                             "{'_id': 3, 'a': null, 'b': 3, 'c': 9}",
                             "{'_id': 4, 'a': 1, 'b': 2, 'c': 3}",
                             "{'_id': 5, 'a': 2, 'c': 5}",
                             "{'_id': 6, 'a': 3, 'b': 2}",
                             "{'_id': 7, 'a': 4}",
                             "{'_id': 8, 'b': 2, 'c': 4}",
                             "{'_id': 9, 'b': 2}",
                             "{'_id': 10, 'c': 6}",
                             NULL};
    expect_ids("{'a': {'$exists': true}}", records, "1 2 3 4 5 6 7");
    expect_ids("{'b': {'$exists': false}}", records, "5 7 10");
    expect_ids("{'c': {'$exists': true, '$nin': [5, 15]}}", records, "1 2 3 4 8 10");
    /* manual: $exists with spices and $ne */
    const char *spices[] = {"{'_id': 1, 'saffron': 5, 'cinnamon': 5, 'mustard': null}",
                            "{'_id': 2, 'saffron': 3, 'cinnamon': null, 'mustard': 8}",
                            "{'_id': 3, 'saffron': null, 'cinnamon': 3, 'mustard': 9}",
                            "{'_id': 4, 'saffron': 1, 'cinnamon': 2, 'mustard': 3}",
                            "{'_id': 5, 'saffron': 2, 'mustard': 5}",
                            "{'_id': 6, 'saffron': 3, 'cinnamon': 2}",
                            "{'_id': 7, 'saffron': 4}",
                            "{'_id': 8, 'cinnamon': 2, 'mustard': 4}",
                            "{'_id': 9, 'cinnamon': 2}",
                            "{'_id': 10, 'mustard': 6}",
                            NULL};
    expect_ids("{'saffron': {'$exists': true}}", spices, "1 2 3 4 5 6 7");
    expect_ids("{'cinnamon': {'$exists': false}}", spices, "5 7 10");
}
END_TEST

START_TEST(type_operator)
{
    YES("{'a': {'$type': 'string'}}", "{'a': 'x'}");
    YES("{'a': {'$type': 2}}", "{'a': 'x'}");
    YES("{'a': {'$type': 2.0}}", "{'a': 'x'}");
    YES("{'a': {'$type': {'$numberLong': '2'}}}", "{'a': 'x'}");
    NO("{'a': {'$type': 'string'}}", "{'a': 1}");
    YES("{'a': {'$type': 'int'}}", "{'a': 1}");
    YES("{'a': {'$type': 'long'}}", "{'a': {'$numberLong': '1'}}");
    YES("{'a': {'$type': 'double'}}", "{'a': 1.5}");
    YES("{'a': {'$type': 'decimal'}}", "{'a': {'$numberDecimal': '1'}}");
    YES("{'a': {'$type': 'number'}}", "{'a': {'$numberDecimal': '1'}}");
    NO("{'a': {'$type': 'number'}}", "{'a': '1'}");
    YES("{'a': {'$type': 'object'}}", "{'a': {}}");
    YES("{'a': {'$type': 'array'}}", "{'a': []}");
    YES("{'a': {'$type': 'array'}}", "{'a': [[1]]}");
    YES("{'a': {'$type': 'bool'}}", "{'a': false}");
    YES("{'a': {'$type': 'date'}}", "{'a': {'$date': '2024-01-01T00:00:00Z'}}");
    YES("{'a': {'$type': 'null'}}", "{'a': null}");
    NO("{'a': {'$type': 'null'}}", "{'b': null}");
    YES("{'a': {'$type': 'objectId'}}", "{'a': {'$oid': '5234cc89687ea597eabee675'}}");
    YES("{'a': {'$type': 'regex'}}",
        "{'a': {'$regularExpression': {'pattern': 'x', 'options': ''}}}");
    YES("{'a': {'$type': 'timestamp'}}", "{'a': {'$timestamp': {'t': 1, 'i': 1}}}");
    YES("{'a': {'$type': 'binData'}}", "{'a': {'$binary': {'base64': '', 'subType': '00'}}}");
    YES("{'a': {'$type': 'minKey'}}", "{'a': {'$minKey': 1}}");
    YES("{'a': {'$type': -1}}", "{'a': {'$minKey': 1}}");
    YES("{'a': {'$type': 'maxKey'}}", "{'a': {'$maxKey': 1}}");
    YES("{'a': {'$type': 127}}", "{'a': {'$maxKey': 1}}");
    YES("{'a': {'$type': 'undefined'}}", "{'a': {'$undefined': true}}");
    YES("{'a': {'$type': 'javascript'}}", "{'a': {'$code': 'x'}}");
    YES("{'a': {'$type': 'symbol'}}", "{'a': {'$symbol': 'x'}}");
    YES("{'a': {'$type': ['string', 'int']}}", "{'a': 1}");
    NO("{'a': {'$type': []}}", "{'a': 1}");
    YES("{'a': {'$type': 'int'}}", "{'a': ['x', 1]}");
}
END_TEST

START_TEST(docs_type_page)
{
    const char *addressBook[] = {
        "{'_id': 1, 'address': '2030 Martian Way', 'zipCode': '90698345'}",
        "{'_id': 2, 'address': '156 Lunar Place', 'zipCode': 43339374.0}",
        "{'_id': 3, 'address': '2324 Pluto Place', 'zipCode': {'$numberLong': '3921412'}}",
        "{'_id': 4, 'address': '55 Saturn Ring', 'zipCode': {'$numberInt': '88602117'}}",
        "{'_id': 5, 'address': '104 Venus Drive', 'zipCode': ['834847278', '1893289032']}",
        NULL};
    expect_ids("{'zipCode': {'$type': 2}}", addressBook, "1 5");
    expect_ids("{'zipCode': {'$type': 'string'}}", addressBook, "1 5");
    expect_ids("{'zipCode': {'$type': 1}}", addressBook, "2");
    expect_ids("{'zipCode': {'$type': 'double'}}", addressBook, "2");
    expect_ids("{'zipCode': {'$type': 'number'}}", addressBook, "2 3 4");
    const char *grades[] = {
        "{'_id': 1, 'name': 'Alice King', 'classAverage': 87.33333333333333}",
        "{'_id': 2, 'name': 'Bob Jenkins', 'classAverage': '83.52'}",
        "{'_id': 3, 'name': 'Cathy Hart', 'classAverage': '94.06'}",
        "{'_id': 4, 'name': 'Drew Williams', 'classAverage': {'$numberInt': '93'}}", NULL};
    expect_ids("{'classAverage': {'$type': [2, 1]}}", grades, "1 2 3");
    expect_ids("{'classAverage': {'$type': ['string', 'double']}}", grades, "1 2 3");
    const char *data[] = {"{'_id': 1, 'x': {'$minKey': 1}}", "{'_id': 2, 'y': {'$maxKey': 1}}",
                          NULL};
    expect_ids("{'x': {'$type': 'minKey'}}", data, "1");
    expect_ids("{'y': {'$type': 'maxKey'}}", data, "2");
    const char *sensor[] = {"{'_id': 1, 'readings': [25, 23, ['Warn: High Temp!', 55], ['ERROR: "
                            "SYSTEM SHUTDOWN!', 66]]}",
                            "{'_id': 2, 'readings': [25, 25, 24, 23]}",
                            "{'_id': 3, 'readings': [22, 24, []]}",
                            "{'_id': 4, 'readings': []}",
                            "{'_id': 5, 'readings': 24}",
                            NULL};
    expect_ids("{'readings': {'$type': 'array'}}", sensor, "1 2 3 4");
}
END_TEST

/* ---- arrays ---- */

START_TEST(all_operator)
{
    YES("{'a': {'$all': [1, 2]}}", "{'a': [2, 3, 1]}");
    NO("{'a': {'$all': [1, 2]}}", "{'a': [2, 3]}");
    YES("{'a': {'$all': [1]}}", "{'a': 1}");
    NO("{'a': {'$all': []}}", "{'a': [1]}");
    YES("{'a': {'$all': [[1, 2]]}}", "{'a': [1, 2]}");
    YES("{'a': {'$all': [[1, 2]]}}", "{'a': [[1, 2], 3]}");
    YES("{'a': {'$all': [{'$regularExpression': {'pattern': '^a', 'options': ''}}, 'bc']}}",
        "{'a': ['ab', 'bc']}");
    YES("{'a': {'$all': [{'$elemMatch': {'$gt': 5}}, {'$elemMatch': {'$lt': 2}}]}}",
        "{'a': [1, 7]}");
    NO("{'a': {'$all': [{'$elemMatch': {'$gt': 5}}, {'$elemMatch': {'$lt': 2}}]}}",
       "{'a': [3, 7]}");
}
END_TEST

START_TEST(docs_all_page)
{
    const char *inventory[] = {
        "{'_id': 1, 'code': 'xyz', 'tags': ['school', 'book', 'bag', 'headphone', 'appliance'],"
        " 'qty': [{'size': 'S', 'num': 10, 'color': 'blue'}, {'size': 'M', 'num': 45, 'color': "
        "'blue'}, {'size': 'L', 'num': 100, 'color': 'green'}]}",
        "{'_id': 2, 'code': 'abc', 'tags': ['appliance', 'school', 'book'],"
        " 'qty': [{'size': '6', 'num': 100, 'color': 'green'}, {'size': '6', 'num': 50, 'color': "
        "'blue'}, {'size': '8', 'num': 100, 'color': 'brown'}]}",
        "{'_id': 3, 'code': 'efg', 'tags': ['school', 'book'],"
        " 'qty': [{'size': 'S', 'num': 10, 'color': 'blue'}, {'size': 'M', 'num': 100, 'color': "
        "'blue'}, {'size': 'L', 'num': 100, 'color': 'green'}]}",
        "{'_id': 4, 'code': 'ijk', 'tags': ['electronics', 'school'],"
        " 'qty': [{'size': 'M', 'num': 100, 'color': 'green'}]}",
        NULL};
    expect_ids("{'tags': {'$all': ['appliance', 'school', 'book']}}", inventory, "1 2");
    expect_ids("{'qty': {'$all': [{'$elemMatch': {'size': 'M', 'num': {'$gt': 50}}},"
               " {'$elemMatch': {'num': 100, 'color': 'green'}}]}}",
               inventory, "3 4");
    expect_ids("{'qty.num': {'$all': [50]}}", inventory, "2");
    expect_ids("{'qty.num': 50}", inventory, "2");
    const char *articles[] = {"{'_id': 1, 'tags': [['ssl', 'security'], 'x']}",
                              "{'_id': 2, 'tags': ['ssl', 'security']}",
                              "{'_id': 3, 'tags': ['security', 'ssl']}", NULL};
    expect_ids("{'tags': {'$all': [['ssl', 'security']]}}", articles, "1 2");
    expect_ids("{'tags': {'$all': ['ssl', 'security']}}", articles, "2 3");
}
END_TEST

START_TEST(elem_match_operator_form)
{
    YES("{'a': {'$elemMatch': {'$gte': 80, '$lt': 85}}}", "{'a': [82, 85, 88]}");
    NO("{'a': {'$elemMatch': {'$gte': 80, '$lt': 85}}}", "{'a': [75, 88, 89]}");
    NO("{'a': {'$elemMatch': {'$gt': 1}}}", "{'a': 5}"); /* not an array */
    NO("{'a': {'$elemMatch': {'$eq': 5}}}", "{'a': [[5]]}");
    YES("{'a': {'$elemMatch': {'$eq': [5]}}}", "{'a': [[5]]}");
    YES("{'a': {'$elemMatch': {'$ne': 5}}}", "{'a': [5, 6]}");
    NO("{'a': {'$elemMatch': {'$ne': 5}}}", "{'a': [5, 5]}");
    YES("{'a': {'$elemMatch': {'$not': {'$gt': 5}}}}", "{'a': [9, 2]}");
    YES("{'a': {'$elemMatch': {'$in': ['x', 'y']}}}", "{'a': ['z', 'y']}");
    YES("{'a': {'$elemMatch': {'$type': 'string', '$regex': '^b'}}}", "{'a': [1, 'bc']}");
    YES("{'a': {'$elemMatch': {'$size': 2}}}", "{'a': [[1], [1, 2]]}");
    YES("{'a': {'$elemMatch': {'$elemMatch': {'$gt': 3}}}}", "{'a': [[1], [1, 4]]}");
    NO("{'a': {'$elemMatch': {'$exists': false}}}", "{'a': [1]}");
    YES("{'a.b': {'$elemMatch': {'$gt': 3}}}", "{'a': [{'b': [1]}, {'b': [5]}]}");
}
END_TEST

START_TEST(elem_match_query_form)
{
    YES("{'a': {'$elemMatch': {'b': 1, 'c': 2}}}", "{'a': [{'b': 1, 'c': 1}, {'b': 1, 'c': 2}]}");
    NO("{'a': {'$elemMatch': {'b': 1, 'c': 2}}}", "{'a': [{'b': 1, 'c': 1}, {'b': 2, 'c': 2}]}");
    YES("{'a': {'b': 1, 'c': 1}}", "{'a': [{'b': 1, 'c': 1}]}");
    YES("{'a.b': 1, 'a.c': 2}", "{'a': [{'b': 1, 'c': 1}, {'b': 2, 'c': 2}]}");
    YES("{'a': {'$elemMatch': {}}}", "{'a': [1, {}]}");
    NO("{'a': {'$elemMatch': {}}}", "{'a': [1, 2]}");
    YES("{'a': {'$elemMatch': {'$or': [{'b': 1}, {'c': 1}]}}}", "{'a': [{'c': 1}]}");
    YES("{'a': {'$elemMatch': {'b.c': {'$gt': 1}}}}", "{'a': [{'b': [{'c': 0}, {'c': 2}]}]}");
    YES("{'a': {'$elemMatch': {'0': 5}}}", "{'a': [[5, 6]]}");
    NO("{'a': {'$elemMatch': {'b': 1}}}", "{'a': {'b': 1}}");
}
END_TEST

START_TEST(docs_elem_match_page)
{
    const char *scores[] = {"{'_id': 1, 'results': [82, 85, 88]}",
                            "{'_id': 2, 'results': [75, 88, 89]}", NULL};
    expect_ids("{'results': {'$elemMatch': {'$gte': 80, '$lt': 85}}}", scores, "1");
    const char *survey[] = {
        "{'_id': 1, 'results': [{'product': 'abc', 'score': 10}, {'product': 'xyz', 'score': 5}]}",
        "{'_id': 2, 'results': [{'product': 'abc', 'score': 8}, {'product': 'xyz', 'score': 7}]}",
        "{'_id': 3, 'results': [{'product': 'abc', 'score': 7}, {'product': 'xyz', 'score': 8}]}",
        "{'_id': 4, 'results': [{'product': 'abc', 'score': 7}, {'product': 'def', 'score': 8}]}",
        "{'_id': 5, 'results': {'product': 'xyz', 'score': 7}}",
        NULL};
    expect_ids("{'results': {'$elemMatch': {'product': 'xyz', 'score': {'$gte': 8}}}}", survey,
               "3");
    expect_ids("{'results': {'$elemMatch': {'product': 'xyz'}}}", survey, "1 2 3");
    expect_ids("{'results.product': 'xyz'}", survey, "1 2 3 5");
    expect_ids("{'results': {'$elemMatch': {'product': {'$ne': 'xyz'}}}}", survey, "1 2 3 4");
    expect_ids("{'results.product': {'$ne': 'xyz'}}", survey, "4");
}
END_TEST

START_TEST(size_operator)
{
    YES("{'a': {'$size': 2}}", "{'a': [1, 2]}");
    NO("{'a': {'$size': 2}}", "{'a': [1]}");
    YES("{'a': {'$size': 0}}", "{'a': []}");
    NO("{'a': {'$size': 0}}", "{'b': []}");
    NO("{'a': {'$size': 1}}", "{'a': 'x'}");
    NO("{'a': {'$size': 2}}", "{'a': [[1, 2]]}"); /* the leaf array itself, not its elements */
    YES("{'a': {'$size': 1}}", "{'a': [[1, 2]]}");
    YES("{'a.b': {'$size': 2}}", "{'a': [{'b': [1]}, {'b': [1, 2]}]}");
    YES("{'a': {'$size': 2.0}}", "{'a': [1, 2]}");
    YES("{'a': {'$size': {'$numberDecimal': '2'}}}", "{'a': [1, 2]}");
    YES("{'a': {'$not': {'$size': 2}}}", "{'a': [1]}");
}
END_TEST

/* ---- manual: Query an Array / Query an Array of Embedded Documents ---- */

START_TEST(docs_query_arrays_tutorial)
{
    const char *inventory[] = {
        "{'_id': 1, 'item': 'journal', 'qty': 25, 'tags': ['blank', 'red'], 'dim_cm': [14, 21]}",
        "{'_id': 2, 'item': 'notebook', 'qty': 50, 'tags': ['red', 'blank'], 'dim_cm': [14, 21]}",
        "{'_id': 3, 'item': 'paper', 'qty': 100, 'tags': ['red', 'blank', 'plain'], 'dim_cm': [14, "
        "21]}",
        "{'_id': 4, 'item': 'planner', 'qty': 75, 'tags': ['blank', 'red'], 'dim_cm': [22.85, 30]}",
        "{'_id': 5, 'item': 'postcard', 'qty': 45, 'tags': ['blue'], 'dim_cm': [10, 15.25]}",
        NULL};
    expect_ids("{'tags': ['red', 'blank']}", inventory, "2");
    expect_ids("{'tags': {'$all': ['red', 'blank']}}", inventory, "1 2 3 4");
    expect_ids("{'tags': 'red'}", inventory, "1 2 3 4");
    expect_ids("{'dim_cm': {'$gt': 25}}", inventory, "4");
    expect_ids("{'dim_cm': {'$gt': 15, '$lt': 20}}", inventory, "1 2 3 5");
    expect_ids("{'dim_cm': {'$elemMatch': {'$gt': 22, '$lt': 30}}}", inventory, "4");
    expect_ids("{'dim_cm.1': {'$gt': 25}}", inventory, "4");
    expect_ids("{'tags': {'$size': 3}}", inventory, "3");
}
END_TEST

START_TEST(docs_query_embedded_arrays_tutorial)
{
    const char *inventory[] = {
        "{'_id': 1, 'item': 'journal', 'instock': [{'warehouse': 'A', 'qty': 5}, {'warehouse': "
        "'C', 'qty': 15}]}",
        "{'_id': 2, 'item': 'notebook', 'instock': [{'warehouse': 'C', 'qty': 5}]}",
        "{'_id': 3, 'item': 'paper', 'instock': [{'warehouse': 'A', 'qty': 60}, {'warehouse': 'B', "
        "'qty': 15}]}",
        "{'_id': 4, 'item': 'planner', 'instock': [{'warehouse': 'A', 'qty': 40}, {'warehouse': "
        "'B', 'qty': 5}]}",
        "{'_id': 5, 'item': 'postcard', 'instock': [{'warehouse': 'B', 'qty': 15}, {'warehouse': "
        "'C', 'qty': 35}]}",
        NULL};
    expect_ids("{'instock': {'warehouse': 'A', 'qty': 5}}", inventory, "1");
    expect_ids("{'instock': {'qty': 5, 'warehouse': 'A'}}", inventory, "");
    expect_ids("{'instock.qty': {'$lte': 20}}", inventory, "1 2 3 4 5");
    expect_ids("{'instock.0.qty': {'$lte': 20}}", inventory, "1 2 5");
    expect_ids("{'instock': {'$elemMatch': {'qty': 5, 'warehouse': 'A'}}}", inventory, "1");
    expect_ids("{'instock': {'$elemMatch': {'qty': {'$gt': 10, '$lte': 20}}}}", inventory, "1 3 5");
    expect_ids("{'instock.qty': {'$gt': 10, '$lte': 20}}", inventory, "1 3 4 5");
    expect_ids("{'instock.qty': 5, 'instock.warehouse': 'A'}", inventory, "1 4");
}
END_TEST

/* ---- paths ---- */

START_TEST(paths_through_arrays)
{
    YES("{'a.b': 2}", "{'a': [{'b': 1}, {'b': 2}]}");
    NO("{'a.b': 3}", "{'a': [{'b': 1}, {'b': 2}]}");
    YES("{'a.b': 2}", "{'a': [{'b': [1, 2]}]}");
    YES("{'a.b.c': 3}", "{'a': [{'b': [{'c': 1}, {'c': 3}]}]}");
    YES("{'a.b.c': 3}", "{'a': {'b': [{'c': 3}]}}");
    YES("{'a.0': 5}", "{'a': [5, 6]}");
    NO("{'a.1': 5}", "{'a': [5, 6]}");
    YES("{'a.0.b': 1}", "{'a': [{'b': 1}, {'b': 2}]}");
    NO("{'a.0.b': 2}", "{'a': [{'b': 1}, {'b': 2}]}");
    YES("{'a.0.0': 5}", "{'a': [[5, 6]]}");
    YES("{'a.0.b': 1}", "{'a': [[{'b': 1}]]}");
    YES("{'a.0': 7}", "{'a': {'0': 7}}");
    YES("{'a.0': 7}", "{'a': [{'0': 7}]}");
    NO("{'a.00': 5}", "{'a': [5]}");
    NO("{'a.b': 1}", "{'a': [[{'b': 1}]]}"); /* nested arrays are not traversed */
    YES("{'a.0': [1]}", "{'a': [[1]]}");
    YES("{'a.b': [1, 2]}", "{'a': [{'b': [1, 2]}]}");
    YES("{'a': {'b': [1]}}", "{'a': {'b': [1]}}");
}
END_TEST

START_TEST(change_events)
{
    const char *ev_insert =
        "{'_id': {'_data': '8263'}, 'operationType': 'insert', 'ns': {'db': 'shop', 'coll': "
        "'orders'}, 'documentKey': {'_id': {'$oid': '65a000000000000000000001'}}, 'fullDocument': "
        "{'_id': {'$oid': '65a000000000000000000001'}, 'owner': 'ann', 'qty': 7, 'items': [{'sku': "
        "'a1', 'n': 2}, {'sku': 'b2', 'n': 5}]}}";
    const char *ev_update =
        "{'_id': {'_data': '8264'}, 'operationType': 'update', 'ns': {'db': 'shop', 'coll': "
        "'orders'}, 'documentKey': {'_id': 42}, 'updateDescription': {'updatedFields': {'status': "
        "'shipped', 'qty': 3}, 'removedFields': ['note']}, 'fullDocumentBeforeChange': {'x': 1, "
        "'status': 'new'}}";
    YES("{'operationType': 'insert', 'ns.coll': 'orders'}", ev_insert);
    NO("{'operationType': 'insert', 'ns.coll': 'orders'}", ev_update);
    YES("{'operationType': {'$in': ['insert', 'update']}}", ev_update);
    YES("{'documentKey._id': {'$oid': '65a000000000000000000001'}}", ev_insert);
    YES("{'documentKey._id': 42}", ev_update);
    YES("{'documentKey._id': {'$numberLong': '42'}}", ev_update);
    YES("{'fullDocument.owner': 'ann', 'fullDocument.qty': {'$gte': 5}}", ev_insert);
    NO("{'fullDocument.owner': 'ann'}", ev_update);
    YES("{'fullDocument.items.sku': 'b2'}", ev_insert);
    YES("{'fullDocument.items': {'$elemMatch': {'sku': 'b2', 'n': {'$gt': 4}}}}", ev_insert);
    NO("{'fullDocument.items': {'$elemMatch': {'sku': 'a1', 'n': {'$gt': 4}}}}", ev_insert);
    YES("{'updateDescription.updatedFields.status': 'shipped'}", ev_update);
    YES("{'updateDescription.removedFields': 'note'}", ev_update);
    YES("{'fullDocumentBeforeChange.x': {'$exists': true}, 'fullDocumentBeforeChange.status': "
        "{'$ne': 'shipped'}}",
        ev_update);
    YES("{'$or': [{'fullDocument.owner': 'bob'}, {'updateDescription.updatedFields.qty': {'$lt': "
        "5}}]}",
        ev_update);
    YES("{'ns.coll': {'$regex': '^ord'}}", ev_insert);
}
END_TEST

/* ---- $regex ---- */

START_TEST(regex_operator)
{
    YES("{'a': {'$regex': 'b+'}}", "{'a': 'abbc'}");
    NO("{'a': {'$regex': '^b'}}", "{'a': 'abbc'}");
    YES("{'a': {'$regex': '^B', '$options': 'i'}}", "{'a': 'bc'}");
    YES("{'a': {'$options': 'i', '$regex': '^B'}}", "{'a': 'bc'}");
    YES("{'a': {'$regularExpression': {'pattern': '^B', 'options': 'i'}}}", "{'a': 'bc'}");
    YES("{'a': {'$regex': {'$regularExpression': {'pattern': '^B', 'options': ''}}, '$options': "
        "'i'}}",
        "{'a': 'bc'}");
    YES("{'a': {'$regex': '^x'}}", "{'a': ['y', 'xz']}");
    NO("{'a': {'$regex': 'x'}}", "{'a': 5}");
    YES("{'a': {'$regex': 'x'}}", "{'a': {'$symbol': 'axb'}}");
    YES("{'a': {'$regex': 'x', '$options': 'i'}}",
        "{'a': {'$regularExpression': {'pattern': 'x', 'options': 'i'}}}");
    NO("{'a': {'$regex': 'x', '$options': 'i'}}",
       "{'a': {'$regularExpression': {'pattern': 'x', 'options': 'm'}}}");
    YES("{'a': {'$regex': 'é'}}", "{'a': 'café'}");
    YES("{'a': {'$regex': '^.$'}}", "{'a': 'é'}"); /* UTF-8 mode */
    YES("{'a': {'$regex': '^a.c$', '$options': 's'}}", "{'a': 'a\\nc'}");
    NO("{'a': {'$regex': '^a.c$'}}", "{'a': 'a\\nc'}");
    YES("{'a': {'$regex': 'a b c', '$options': 'x'}}", "{'a': 'abc'}");
    YES("{'a': {'$regex': 'b', '$gt': 'a'}}", "{'a': 'b'}");
    /* operator keys libbson would read as legacy Extended JSON still work,
     * and the same words as values or escaped strings are left alone */
    YES("{'a': '$type', 'b': {'$in': ['$regex', '$options']}}", "{'a': '$type', 'b': '$options'}");
    YES("{'a': {'$type': 'string', '$regex': '^\\\"\\\\$type\\\": '}}",
        "{'a': '\\\"$type\\\": 1'}");
    YES("{'a': {'$not': {'$type': [16, 'string']}}}", "{'a': 1.5}");
}
END_TEST

START_TEST(docs_regex_page)
{
    const char *products[] = {
        "{'_id': 100, 'sku': 'abc123', 'description': 'Single line description.'}",
        "{'_id': 101, 'sku': 'abc789', 'description': 'First line\\nSecond line'}",
        "{'_id': 102, 'sku': 'xyz456', 'description': 'Many spaces before     line'}",
        "{'_id': 103, 'sku': 'xyz789', 'description': 'Multiple\\nline description'}",
        "{'_id': 104, 'sku': 'Abc789', 'description': 'SKU starts with A'}",
        NULL};
    expect_ids("{'sku': {'$regex': '789$'}}", products, "101 103 104");
    expect_ids("{'sku': {'$regularExpression': {'pattern': '789$', 'options': ''}}}", products,
               "101 103 104");
    expect_ids("{'sku': {'$regex': '^ABC', '$options': 'i'}}", products, "100 101 104");
    expect_ids("{'description': {'$regex': '^S', '$options': 'm'}}", products, "100 101 104");
    expect_ids("{'description': {'$regex': '^S'}}", products, "100 104");
    expect_ids("{'description': {'$regex': 'm.*line', '$options': 'si'}}", products, "102 103");
    expect_ids("{'description': {'$regex': 'm.*line', '$options': 'i'}}", products, "102");
    expect_ids("{'sku': {'$regex': '(?i)a(?-i)bc'}}", products, "100 101 104");
    expect_ids("{'sku': {'$regex': 'abc #category code\\n123 #item number', '$options': 'x'}}",
               products, "100");
    expect_ids("{'sku': {'$in': [{'$regularExpression': {'pattern': '^ABC', 'options': 'i'}}]}}",
               products, "100 101 104");
    expect_ids("{'sku': {'$nin': [{'$regularExpression': {'pattern': '^ABC', 'options': 'i'}}]}}",
               products, "102 103");
}
END_TEST

/* ---- $mod ---- */

START_TEST(mod_operator)
{
    YES("{'a': {'$mod': [4, 0]}}", "{'a': 12}");
    NO("{'a': {'$mod': [4, 0]}}", "{'a': 5}");
    YES("{'a': {'$mod': [4, 1]}}", "{'a': 5.9}"); /* dividend truncated */
    YES("{'a': {'$mod': [4, 1]}}", "{'a': {'$numberDecimal': '5.9'}}");
    YES("{'a': {'$mod': [4, 1]}}", "{'a': {'$numberLong': '9000000000000000001'}}");
    YES("{'a': {'$mod': [4, -1]}}", "{'a': -5}"); /* remainder takes the dividend's sign */
    NO("{'a': {'$mod': [4, 3]}}", "{'a': -5}");
    YES("{'a': {'$mod': [-4, 1]}}", "{'a': 5}");
    YES("{'a': {'$mod': [-1, 0]}}", "{'a': {'$numberLong': '-9223372036854775808'}}");
    NO("{'a': {'$mod': [4, 0]}}", "{'a': {'$numberDouble': 'NaN'}}");
    NO("{'a': {'$mod': [4, 0]}}", "{'a': {'$numberDouble': 'Infinity'}}");
    NO("{'a': {'$mod': [4, 0]}}", "{'a': 1e30}");
    NO("{'a': {'$mod': [4, 0]}}", "{'a': '12'}");
    YES("{'a': {'$mod': [4, 0]}}", "{'a': [3, 8]}");
    YES("{'a': {'$mod': [4.5, 0.9]}}", "{'a': 8}"); /* [4, 0] after truncation */
}
END_TEST

START_TEST(docs_mod_page)
{
    const char *inventory[] = {"{'_id': 1, 'item': 'abc123', 'qty': 0}",
                               "{'_id': 2, 'item': 'xyz123', 'qty': 5}",
                               "{'_id': 3, 'item': 'ijk123', 'qty': 12}", NULL};
    expect_ids("{'qty': {'$mod': [4, 0]}}", inventory, "1 3");
    expect_ids("{'qty': {'$mod': [4.0, 0]}}", inventory, "1 3");
    expect_ids("{'qty': {'$mod': [4.5, 0]}}", inventory, "1 3");
    expect_ids("{'qty': {'$mod': [4.99, 0]}}", inventory, "1 3");
    const char *negative[] = {"{'_id': 1, 'qty': -5}", "{'_id': 2, 'qty': 5}",
                              "{'_id': 3, 'qty': -9}", NULL};
    expect_ids("{'qty': {'$mod': [4, -1]}}", negative, "1 3");
    expect_ids("{'qty': {'$mod': [4, 1]}}", negative, "2");
}
END_TEST

/* ---- errors ---- */

START_TEST(errors_operands)
{
    ERR_IS("{'fullDocument.qty': {'$in': 5}}", "filter.fullDocument.qty: $in needs an array");
    ERR_IS("{'a': {'$nin': 'x'}}", "filter.a: $nin needs an array");
    ERR_IS("{'a': {'$all': 1}}", "filter.a: $all needs an array");
    ERR_IS("{'a': {'$gt': {'$undefined': true}}}", "filter.a: $gt needs one value, not undefined");
    ERR_IS("{'a': {'$gt': {'$regularExpression': {'pattern': 'x', 'options': ''}}}}",
           "filter.a: $gt needs one value, not a regex");
    ERR_IS("{'a': {'$ne': {'$regularExpression': {'pattern': 'x', 'options': ''}}}}",
           "filter.a: $ne needs one value, not a regex");
    ERR_IS("{'a': {'$undefined': true}}", "filter.a: cannot compare to undefined");
    ERR_IS("{'a': {'$in': [{'$gt': 1}]}}", "filter.a: $in cannot contain operator expressions");
    ERR_IS("{'a': {'$size': -1}}", "filter.a: $size needs a non-negative whole number");
    ERR_IS("{'a': {'$size': 1.5}}", "filter.a: $size needs a non-negative whole number");
    ERR_IS("{'a': {'$size': 'x'}}", "filter.a: $size needs a non-negative whole number");
    ERR_IS("{'a': {'$mod': [4]}}", "filter.a: $mod needs [divisor, remainder]");
    ERR_IS("{'a': {'$mod': [4, 1, 2]}}", "filter.a: $mod needs [divisor, remainder]");
    ERR_IS("{'a': {'$mod': []}}", "filter.a: $mod needs [divisor, remainder]");
    ERR_IS("{'a': {'$mod': 4}}", "filter.a: $mod needs [divisor, remainder]");
    ERR_IS("{'a': {'$mod': ['4', 1]}}", "filter.a: $mod needs [divisor, remainder]");
    ERR_IS("{'a': {'$mod': [{'$numberDouble': 'NaN'}, 1]}}",
           "filter.a: $mod needs [divisor, remainder]");
    ERR_IS("{'a': {'$mod': [{'$numberDouble': 'Infinity'}, 1]}}",
           "filter.a: $mod needs [divisor, remainder]");
    ERR_IS("{'a': {'$mod': [0, 1]}}", "filter.a: $mod divisor cannot be 0");
    ERR_IS("{'a': {'$mod': [0.5, 1]}}", "filter.a: $mod divisor cannot be 0");
    ERR_IS("{'a': {'$type': 'strng'}}", "filter.a: $type: unknown type name \"strng\"");
    ERR_IS("{'a': {'$type': 42}}", "filter.a: $type: unknown type code 42");
    ERR_IS("{'a': {'$type': 2.5}}", "filter.a: $type: unknown type code 2.5");
    ERR_IS("{'a': {'$type': ['string', 'nope']}}", "filter.a: $type: unknown type name \"nope\"");
    ERR_IS("{'a': {'$type': true}}",
           "filter.a: $type needs a type name or number, or an array of them");
    ERR_IS("{'a': {'$elemMatch': 5}}", "filter.a: $elemMatch needs a document");
    ERR_IS("{'a': {'$not': 5}}", "filter.a: $not needs an operator expression or a regex");
    ERR_IS("{'a': {'$not': {}}}", "filter.a: $not needs an operator expression or a regex");
    ERR_IS("{'a': {'$not': {'b': 1}}}", "filter.a: $not needs an operator expression or a regex");
    ERR_IS("{'a': {'$regex': 5}}", "filter.a: $regex needs a string or a regex");
    ERR_IS("{'a': {'$regex': 'x', '$options': 5}}", "filter.a: $options needs a string");
    ERR_IS("{'a': {'$options': 'i'}}", "filter.a: $options needs a $regex");
    ERR_IS("{'a': {'$regex': 'x', '$options': 'q'}}",
           "filter.a: invalid regex option 'q' (allowed: i, m, s, x)");
    ERR_IS("{'a': {'$regex': {'$regularExpression': {'pattern': 'x', 'options': 'i'}}, "
           "'$options': 'm'}}",
           "filter.a: regex options given both in the regex and in $options");
    ERR_IS("{'a': {'$all': [{'$elemMatch': {'b': 1}}, 5]}}",
           "filter.a: $all cannot mix $elemMatch and other values");
    ERR_IS("{'a': {'$all': [{'$gt': 5}]}}",
           "filter.a: $all cannot contain operator expressions other than $elemMatch");
    ERR_IS("{'a': {'$gt': 1, 'b': 2}}", "filter.a: cannot mix operators and fields (\"b\")");
}
END_TEST

START_TEST(errors_regex)
{
    ERR_IS("{'name': {'$regex': 'a(b'}}",
           "filter.name: invalid regex: missing closing parenthesis at offset 3");
    ERR_HAS("{'name': {'$regularExpression': {'pattern': '[z-a]', 'options': ''}}}",
            "filter.name: invalid regex: range out of order in character class at offset ");
    ERR_HAS("{'name': {'$in': [{'$regularExpression': {'pattern': '*', 'options': ''}}]}}",
            "filter.name: invalid regex: quantifier does not follow a repeatable item at offset 0");
    /* JSON cannot carry a NUL in a string (libbson refuses it); BSON can */
    bson_t *nul = bson_new();
    bson_t ops;
    bson_append_document_begin(nul, "name", -1, &ops);
    bson_append_utf8(&ops, "$regex", -1, "a\0b", 3);
    bson_append_document_end(nul, &ops);
    char err[256];
    ck_assert_ptr_null(cg_match_compile(nul, "filter", err, sizeof err));
    ck_assert_str_eq(err, "filter.name: invalid regex: it contains a NUL byte");
    bson_destroy(nul);
}
END_TEST

START_TEST(errors_operators)
{
    ERR_IS("{'a': {'$foo': 1}}", "filter.a: unknown operator $foo");
    ERR_IS("{'$foo': 1}", "filter: unknown operator $foo");
    ERR_IS("{'$text': {'$search': 'x'}}", "filter: unknown operator $text");
    ERR_IS("{'$eq': 1}", "filter: $eq must be inside a field: {field: {$eq: ...}}");
    ERR_IS("{'$where': 'this.a == 1'}",
           "filter: $where is not allowed: no code runs on the gateway");
    ERR_IS("{'$expr': {'$eq': ['$a', 1]}}",
           "filter: $expr is not allowed: no code runs on the gateway");
    ERR_IS("{'$function': {}}", "filter: $function is not allowed: no code runs on the gateway");
    ERR_IS("{'$accumulator': {}}",
           "filter: $accumulator is not allowed: no code runs on the gateway");
    ERR_IS("{'$jsonSchema': {}}",
           "filter: $jsonSchema is not allowed: no code runs on the gateway");
    ERR_IS("{'a': {'$where': 'x'}}",
           "filter.a: $where is not allowed: no code runs on the gateway");
    ERR_IS("{'a': {'$elemMatch': {'$where': 'x'}}}",
           "filter.a.$elemMatch: $where is not allowed: no code runs on the gateway");
    ERR_IS("{'$or': [{'a': 1}, {'$where': 'x'}]}",
           "filter.$or[1]: $where is not allowed: no code runs on the gateway");
    ERR_IS("{'$and': []}", "filter: $and needs a non-empty array of documents");
    ERR_IS("{'$or': {}}", "filter: $or needs a non-empty array of documents");
    ERR_IS("{'$nor': [1]}", "filter: $nor needs a non-empty array of documents");
    ERR_IS("{'$and': [{'x': {'$or': []}}]}", "filter.$and[0].x: unknown operator $or");
    ERR_IS("{'$and': [{'$or': [{'fullDocument.qty': {'$gt': 1, '$in': 3}}]}]}",
           "filter.$and[0].$or[0].fullDocument.qty: $in needs an array");
    ERR_IS("{'a': {'$not': {'$in': 1}}}", "filter.a.$not: $in needs an array");
}
END_TEST

static char *deep_json(int levels)
{
    /* {"a":{"a":...{"a":1}...}} with `levels` objects */
    char *s = malloc((size_t)levels * 6 + 8);
    ck_assert_ptr_nonnull(s);
    size_t n = 0;
    for (int i = 0; i < levels; i++)
        n += (size_t)sprintf(s + n, "{\"a\":");
    n += (size_t)sprintf(s + n, "1");
    for (int i = 0; i < levels; i++)
        s[n++] = '}';
    s[n] = '\0';
    return s;
}

START_TEST(errors_json_input)
{
    char err[256];
    cg_match_t *m;
    char *ok = deep_json(32);
    m = cg_match_compile_json(ok, strlen(ok), "filter", err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    cg_match_free(m);
    free(ok);
    char *deep = deep_json(33);
    ck_assert_ptr_null(cg_match_compile_json(deep, strlen(deep), "filter", err, sizeof err));
    ck_assert_str_eq(err, "filter: nesting deeper than 32");
    free(deep);
    char *very = deep_json(2000);
    ck_assert_ptr_null(cg_match_compile_json(very, strlen(very), "filter", err, sizeof err));
    ck_assert_str_eq(err, "filter: nesting deeper than 32");
    free(very);
    /* arrays count too */
    ERR_IS("{'a': {'$in': [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}",
           "filter: nesting deeper than 32");

    size_t big = CG_MATCH_MAX_JSON + 1;
    char *text = malloc(big + 1);
    memset(text, ' ', big);
    text[0] = '{';
    text[big - 1] = '}';
    text[big] = '\0';
    ck_assert_ptr_null(cg_match_compile_json(text, big, "filter", err, sizeof err));
    ck_assert_str_eq(err, "filter: longer than 16384 bytes");
    m = cg_match_compile_json(text, big - 1 - 1, "filter", err, sizeof err); /* unterminated */
    ck_assert_ptr_null(m);
    text[big - 2] = '}';
    m = cg_match_compile_json(text, big - 1, "filter", err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    cg_match_free(m);
    free(text);

    ERR_IS("[1, 2]", "filter: not a JSON object");
    ERR_IS("5", "filter: not a JSON object");
    ERR_IS("'x'", "filter: not a JSON object");
    ERR_IS("", "filter: not a JSON object");
    ERR_IS("{} {}", "filter: not a JSON object (text after the object)");
    ERR_HAS("{'a': }", "filter: invalid JSON: ");
    ERR_HAS("{'a': 1", "filter: invalid JSON: ");
    /* `what` prefixes every message */
    m = cg_match_compile_json("{\"$where\": 1}", 13, "ops", err, sizeof err);
    ck_assert_ptr_null(m);
    ck_assert_str_eq(err, "ops: $where is not allowed: no code runs on the gateway");
}
END_TEST

START_TEST(compile_from_bson)
{
    char err[256];
    bson_t *query = BCON_NEW("fullDocument.qty", "{", "$gt", BCON_INT32(5), "}");
    cg_match_t *m = cg_match_compile(query, "filter", err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    bson_destroy(query); /* the matcher keeps its own copy */
    bson_t *d = BCON_NEW("fullDocument", "{", "qty", BCON_DOUBLE(5.5), "}");
    ck_assert(cg_match_eval(m, d));
    bson_destroy(d);
    cg_match_free(m);

    bson_t *bad =
        BCON_NEW("fullDocument.qty", "{", "$gt", BCON_INT32(5), "$in", BCON_INT32(1), "}");
    ck_assert_ptr_null(cg_match_compile(bad, "filter", err, sizeof err));
    ck_assert_str_eq(err, "filter.fullDocument.qty: $in needs an array");
    bson_destroy(bad);

    /* depth is checked on BSON input as well */
    bson_t *deep = bson_new(), *cur = deep;
    bson_t kids[40];
    for (int i = 0; i < 33; i++) {
        bson_append_document_begin(cur, "a", 1, &kids[i]);
        cur = &kids[i];
    }
    for (int i = 32; i >= 0; i--)
        bson_append_document_end(i ? &kids[i - 1] : deep, &kids[i]);
    ck_assert_ptr_null(cg_match_compile(deep, "filter", err, sizeof err));
    ck_assert_str_eq(err, "filter: nesting deeper than 32");
    bson_destroy(deep);
}
END_TEST

/* ---- cg_match_and ---- */

START_TEST(and_combines)
{
    cg_match_t *a = compile("{'ns.coll': 'orders'}");
    cg_match_t *b = compile("{'fullDocument.qty': {'$gt': 5}}");
    a = cg_match_and(a, b);
    bson_t *d1 = doc("{'ns': {'coll': 'orders'}, 'fullDocument': {'qty': 6}}");
    bson_t *d2 = doc("{'ns': {'coll': 'orders'}, 'fullDocument': {'qty': 5}}");
    bson_t *d3 = doc("{'ns': {'coll': 'users'}, 'fullDocument': {'qty': 6}}");
    ck_assert(cg_match_eval(a, d1));
    ck_assert(!cg_match_eval(a, d2));
    ck_assert(!cg_match_eval(a, d3));
    const cg_match_eq_t *eqs;
    ck_assert_uint_eq(cg_match_required_equalities(a, &eqs), 1);
    ck_assert_str_eq(eqs[0].path, "ns.coll");
    cg_match_t *c = compile("{'operationType': {'$in': ['insert', 'update']}}");
    a = cg_match_and(a, c);
    ck_assert_uint_eq(cg_match_required_equalities(a, &eqs), 2);
    ck_assert_str_eq(eqs[1].path, "operationType");
    ck_assert_uint_eq(eqs[1].n_values, 2);
    ck_assert(!cg_match_eval(a, d1));
    bson_destroy(d1);
    bson_destroy(d2);
    bson_destroy(d3);
    cg_match_free(a);
    ck_assert_ptr_null(cg_match_and(NULL, NULL));
}
END_TEST

/* ---- required equalities ---- */

static size_t eqs_of(const char *filter, char *out, size_t outlen)
{
    cg_match_t *m = compile(filter);
    const cg_match_eq_t *eqs;
    size_t n = cg_match_required_equalities(m, &eqs);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(out);
        snprintf(out + len, outlen - len, "%s%s=%zu", i ? " " : "", eqs[i].path, eqs[i].n_values);
    }
    cg_match_free(m);
    return n;
}

#define EQS(f, want)                                                                               \
    do {                                                                                           \
        char got_[512];                                                                            \
        eqs_of(f, got_, sizeof got_);                                                              \
        ck_assert_msg(strcmp(got_, want) == 0, "equalities of %s: [%s], wanted [%s]", f, got_,     \
                      want);                                                                       \
    } while (0)

START_TEST(required_equalities)
{
    EQS("{'operationType': 'insert'}", "operationType=1");
    EQS("{'operationType': 'insert', 'ns.coll': 'orders'}", "operationType=1 ns.coll=1");
    EQS("{'a': {'$eq': 5}}", "a=1");
    EQS("{'a': {'$eq': 5, '$gt': 1}}", "a=1");
    EQS("{'a': {'$in': [1, 2, 3]}}", "a=3");
    EQS("{'a': {'$in': [1, null]}}", "");
    EQS("{'a': {'$in': [1, [2]]}}", "");
    EQS("{'a': {'$in': [1, {'$regularExpression': {'pattern': 'x', 'options': ''}}]}}", "");
    EQS("{'a': {'$in': []}}", "");
    EQS("{'$and': [{'a': 1}, {'$and': [{'b': 'x'}]}]}", "a=1 b=1");
    EQS("{'$or': [{'a': 1}, {'b': 2}]}", "");
    EQS("{'$or': [{'a': 1}]}", "");
    EQS("{'$nor': [{'a': 1}]}", "");
    EQS("{'a': {'$not': {'$eq': 1}}}", "");
    EQS("{'a': {'$ne': 1}}", "");
    EQS("{'a': null}", "");
    EQS("{'a': {'b': 1}}", "");
    EQS("{'a': [1]}", "");
    EQS("{'a': {'$regularExpression': {'pattern': 'x', 'options': ''}}}", "");
    EQS("{'a': {'$elemMatch': {'b': 1}}}", "");
    EQS("{'a': {'$gt': 1}}", "");
    EQS("{'a': true, 'd': {'$date': '2024-01-01T00:00:00Z'}, 'o': {'$oid': "
        "'5234cc89687ea597eabee675'}, 'n': 1.5, 'l': {'$numberLong': '7'}, 'x': {'$numberDecimal': "
        "'1.5'}}",
        "a=1 d=1 o=1 n=1 l=1 x=1");
    EQS("{'t': {'$timestamp': {'t': 1, 'i': 1}}}", "");

    /* the values are the literals */
    cg_match_t *m = compile("{'documentKey._id': {'$in': ['b', 'a']}}");
    const cg_match_eq_t *eqs;
    ck_assert_uint_eq(cg_match_required_equalities(m, &eqs), 1);
    ck_assert_str_eq(eqs[0].path, "documentKey._id");
    ck_assert_uint_eq(eqs[0].n_values, 2);
    bool seen_a = false, seen_b = false;
    for (size_t i = 0; i < 2; i++) {
        ck_assert_int_eq(eqs[0].values[i].value_type, BSON_TYPE_UTF8);
        seen_a |= strcmp(eqs[0].values[i].value.v_utf8.str, "a") == 0;
        seen_b |= strcmp(eqs[0].values[i].value.v_utf8.str, "b") == 0;
    }
    ck_assert(seen_a && seen_b);
    cg_match_free(m);
}
END_TEST

/* ---- hash / equal ---- */

static uint64_t hash_of(const char *json_value, bool *ok)
{
    char wrapped[512];
    snprintf(wrapped, sizeof wrapped, "{'v': %s}", json_value);
    bson_t *d = doc(wrapped);
    bson_value_t v = value_of(d, "v");
    uint64_t h = 0;
    *ok = cg_match_value_hash(&v, &h);
    bson_destroy(d);
    return h;
}

static bool equal_of(const char *x, const char *y)
{
    char wrapped[1024];
    snprintf(wrapped, sizeof wrapped, "{'x': %s, 'y': %s}", x, y);
    bson_t *d = doc(wrapped);
    bson_value_t a = value_of(d, "x"), b = value_of(d, "y");
    bool r = cg_match_value_equal(&a, &b);
    bson_destroy(d);
    return r;
}

START_TEST(hash_and_equal_agree)
{
    /* groups of values MongoDB finds equal */
    const char *groups[][6] = {
        {"5", "{'$numberLong': '5'}", "5.0", "{'$numberDecimal': '5'}",
         "{'$numberDecimal': '5.000'}", "{'$numberDecimal': '0.5E1'}"},
        {"0", "{'$numberDouble': '-0.0'}", "{'$numberDecimal': '-0'}",
         "{'$numberDecimal': '0E+10'}", "{'$numberLong': '0'}", "0.0"},
        {"0.5", "{'$numberDecimal': '0.5'}", "{'$numberDecimal': '0.50'}", NULL},
        {"{'$numberLong': '9007199254740993'}", "{'$numberDecimal': '9007199254740993'}", NULL},
        {"1e20", "{'$numberDecimal': '1E+20'}", "{'$numberDecimal': '100000000000000000000'}",
         NULL},
        {"{'$numberDouble': 'NaN'}", "{'$numberDecimal': 'NaN'}", NULL},
        {"{'$numberDouble': 'Infinity'}", "{'$numberDecimal': 'Infinity'}", NULL},
        {"{'$numberDecimal': '0.1'}", "{'$numberDecimal': '0.10'}", NULL},
        {"'abc'", "{'$symbol': 'abc'}", NULL},
        {"{'$oid': '5234cc89687ea597eabee675'}", "{'$oid': '5234cc89687ea597eabee675'}", NULL},
        {"true", "true", NULL},
        {"{'$date': '2024-01-01T00:00:00Z'}", "{'$date': {'$numberLong': '1704067200000'}}", NULL},
    };
    for (size_t g = 0; g < sizeof groups / sizeof *groups; g++) {
        bool ok;
        uint64_t h0 = hash_of(groups[g][0], &ok);
        ck_assert_msg(ok, "%s should be hashable", groups[g][0]);
        for (size_t i = 1; i < 6 && groups[g][i]; i++) {
            uint64_t h = hash_of(groups[g][i], &ok);
            ck_assert_msg(ok, "%s should be hashable", groups[g][i]);
            ck_assert_msg(equal_of(groups[g][0], groups[g][i]), "%s == %s", groups[g][0],
                          groups[g][i]);
            ck_assert_msg(h == h0, "hash(%s) != hash(%s)", groups[g][0], groups[g][i]);
        }
    }
    /* different values, different hashes (for these) and not equal */
    const char *distinct[] = {"5",
                              "6",
                              "5.5",
                              "'5'",
                              "{'$numberDecimal': '0.1'}",
                              "0.1",
                              "{'$numberLong': '9007199254740993'}",
                              "9007199254740992.0",
                              "true",
                              "false",
                              "{'$date': {'$numberLong': '5'}}",
                              "{'$oid': '5234cc89687ea597eabee676'}",
                              "''",
                              "{'$numberDecimal': '-0.1'}"};
    size_t nd = sizeof distinct / sizeof *distinct;
    for (size_t i = 0; i < nd; i++)
        for (size_t j = i + 1; j < nd; j++) {
            bool ok1, ok2;
            uint64_t h1 = hash_of(distinct[i], &ok1), h2 = hash_of(distinct[j], &ok2);
            ck_assert(ok1 && ok2);
            ck_assert_msg(!equal_of(distinct[i], distinct[j]), "%s != %s", distinct[i],
                          distinct[j]);
            ck_assert_msg(h1 != h2, "hash(%s) == hash(%s)", distinct[i], distinct[j]);
        }
    /* not hashable */
    const char *unhashable[] = {
        "null",           "[1]",
        "{'a': 1}",       "{'$regularExpression': {'pattern': 'x', 'options': ''}}",
        "{'$minKey': 1}", "{'$timestamp': {'t': 1, 'i': 1}}"};
    for (size_t i = 0; i < sizeof unhashable / sizeof *unhashable; i++) {
        bool ok;
        hash_of(unhashable[i], &ok);
        ck_assert_msg(!ok, "%s should not be hashable", unhashable[i]);
    }
}
END_TEST

START_TEST(value_equal_structures)
{
    ck_assert(equal_of("{'a': 1, 'b': [1, 2]}", "{'a': 1.0, 'b': [{'$numberLong': '1'}, 2]}"));
    ck_assert(!equal_of("{'a': 1, 'b': 2}", "{'b': 2, 'a': 1}"));
    ck_assert(!equal_of("[1, 2]", "[1, 2, 3]"));
    ck_assert(equal_of("null", "null"));
    ck_assert(!equal_of("null", "{'$undefined': true}"));
    ck_assert(!equal_of("1", "'1'"));
    ck_assert(!equal_of("{'a': null}", "{}"));
    ck_assert(equal_of("{'$regularExpression': {'pattern': 'x', 'options': 'i'}}",
                       "{'$regularExpression': {'pattern': 'x', 'options': 'i'}}"));
}
END_TEST

/* BSON type order: the same-bracket rule keeps comparisons from crossing types,
 * but the order is visible through document and array comparison. */
START_TEST(type_order_in_documents)
{
    const char *ascending[] = {"{'$minKey': 1}",
                               "null",
                               "-1e300",
                               "{'$numberDecimal': '-1.5'}",
                               "{'$numberLong': '-1'}",
                               "0",
                               "0.5",
                               "{'$numberLong': '9007199254740993'}",
                               "1e300",
                               "''",
                               "'A'",
                               "'a'",
                               "'ab'",
                               "{}",
                               "{'a': 1}",
                               "[]",
                               "[1]",
                               "{'$binary': {'base64': '', 'subType': '00'}}",
                               "{'$binary': {'base64': 'AQ==', 'subType': '00'}}",
                               "{'$oid': '000000000000000000000000'}",
                               "false",
                               "true",
                               "{'$date': {'$numberLong': '-5'}}",
                               "{'$date': {'$numberLong': '5'}}",
                               "{'$timestamp': {'t': 1, 'i': 0}}",
                               "{'$regularExpression': {'pattern': 'a', 'options': ''}}",
                               "{'$maxKey': 1}"};
    size_t n = sizeof ascending / sizeof *ascending;
    for (size_t i = 0; i + 1 < n; i++) {
        char f[512], d[512];
        /* {a: {$gt: {x: lower}}} matches {a: {x: higher}} */
        snprintf(f, sizeof f, "{'a': {'$gt': {'x': %s}}}", ascending[i]);
        snprintf(d, sizeof d, "{'a': {'x': %s}}", ascending[i + 1]);
        ck_assert_msg(matches(f, d), "%s < %s", ascending[i], ascending[i + 1]);
        snprintf(f, sizeof f, "{'a': {'$lt': [%s]}}", ascending[i + 1]);
        snprintf(d, sizeof d, "{'a': [[%s]]}", ascending[i]);
        ck_assert_msg(matches(f, d), "[%s] < [%s]", ascending[i], ascending[i + 1]);
    }
}
END_TEST

/* ---- cg_match_path_values ---- */

typedef struct {
    char buf[512];
} collect_t;

static bool collect_fn(const bson_value_t *v, void *ctx)
{
    collect_t *c = ctx;
    size_t len = strlen(c->buf);
    char one[64];
    switch (v->value_type) {
    case BSON_TYPE_INT32:
        snprintf(one, sizeof one, "%d", v->value.v_int32);
        break;
    case BSON_TYPE_UTF8:
        snprintf(one, sizeof one, "%s", v->value.v_utf8.str);
        break;
    case BSON_TYPE_ARRAY:
        snprintf(one, sizeof one, "[]");
        break;
    case BSON_TYPE_DOCUMENT:
        snprintf(one, sizeof one, "{}");
        break;
    case BSON_TYPE_NULL:
        snprintf(one, sizeof one, "null");
        break;
    default:
        snprintf(one, sizeof one, "?");
    }
    snprintf(c->buf + len, sizeof c->buf - len, "%s%s", len ? " " : "", one);
    return strcmp(one, "stop") != 0;
}

static void expect_path_values(const char *document, const char *path, const char *want)
{
    bson_t *d = doc(document);
    collect_t c = {""};
    cg_match_path_values(d, path, collect_fn, &c);
    bson_destroy(d);
    ck_assert_msg(strcmp(c.buf, want) == 0, "%s in %s: [%s], wanted [%s]", path, document, c.buf,
                  want);
}

START_TEST(path_values)
{
    expect_path_values("{'a': 1}", "a", "1");
    expect_path_values("{'a': 1}", "b", "");
    expect_path_values("{'a': {'b': 'x'}}", "a.b", "x");
    expect_path_values("{'a': [1, 2]}", "a", "1 2 []");
    expect_path_values("{'a': [{'b': 1}, {'b': [2, 3]}, {'c': 4}, 5]}", "a.b", "1 2 3 []");
    expect_path_values("{'a': [{'b': 1}, {'b': 2}]}", "a.1.b", "2");
    expect_path_values("{'a': [10, 20]}", "a.1", "20");
    expect_path_values("{'a': null}", "a", "null");
    expect_path_values("{'a': ['x', 'stop', 'y']}", "a", "x stop");
    /* a long path (more components than the on-stack split holds) */
    char path[256] = "a";
    char document[2048] = "";
    for (int i = 0; i < 40; i++)
        strcat(document, "{'a': ");
    strcat(document, "7");
    for (int i = 0; i < 40; i++)
        strcat(document, "}");
    for (int i = 1; i < 40; i++)
        strcat(path, ".a");
    expect_path_values(document, path, "7");
}
END_TEST

/* ---- threads: a compiled matcher shared by several threads ---- */

typedef struct {
    const cg_match_t *m;
    const bson_t *yes, *no;
    int failures;
} thread_arg_t;

static void *thread_main(void *p)
{
    thread_arg_t *a = p;
    for (int i = 0; i < 2000; i++) {
        if (!cg_match_eval(a->m, a->yes) || cg_match_eval(a->m, a->no))
            a->failures++;
    }
    return NULL;
}

START_TEST(threads_share_a_matcher)
{
    cg_match_t *m = compile("{'fullDocument.owner': {'$regex': '^a.*n$', '$options': 'i'}, "
                            "'fullDocument.tags': {'$in': [{'$regularExpression': {'pattern': "
                            "'^x', 'options': ''}}, 'b']}}");
    bson_t *yes = doc("{'fullDocument': {'owner': 'Ann', 'tags': ['q', 'xy']}}");
    bson_t *no = doc("{'fullDocument': {'owner': 'Bob', 'tags': ['xy']}}");
    pthread_t t[4];
    thread_arg_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg_t){m, yes, no, 0};
        ck_assert_int_eq(pthread_create(&t[i], NULL, thread_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(args[i].failures, 0);
    }
    bson_destroy(yes);
    bson_destroy(no);
    cg_match_free(m);
}
END_TEST

static Suite *match_suite(void)
{
    Suite *s = suite_create("match");
    TCase *tc;

    tc = tcase_create("equality");
    tcase_add_test(tc, eq_scalars);
    tcase_add_test(tc, eq_numbers_across_types);
    tcase_add_test(tc, eq_documents_and_arrays);
    tcase_add_test(tc, eq_other_types);
    tcase_add_test(tc, ne_is_not_eq);
    tcase_add_test(tc, null_matches_missing_and_null);
    tcase_add_test(tc, docs_null_or_missing);
    tcase_add_test(tc, docs_eq_page);
    suite_add_tcase(s, tc);

    tc = tcase_create("comparison");
    tcase_add_test(tc, comparisons_basic);
    tcase_add_test(tc, comparisons_stay_in_type_bracket);
    tcase_add_test(tc, comparisons_numbers_exact);
    tcase_add_test(tc, comparisons_minkey_maxkey);
    tcase_add_test(tc, comparisons_on_arrays);
    tcase_add_test(tc, docs_comparison_pages);
    tcase_add_test(tc, type_order_in_documents);
    tcase_add_test(tc, in_nin);
    tcase_add_test(tc, docs_in_nin_pages);
    suite_add_tcase(s, tc);

    tc = tcase_create("logical");
    tcase_add_test(tc, and_or_nor);
    tcase_add_test(tc, docs_logical_pages);
    tcase_add_test(tc, not_operator);
    suite_add_tcase(s, tc);

    tc = tcase_create("element");
    tcase_add_test(tc, exists);
    tcase_add_test(tc, docs_exists_page);
    tcase_add_test(tc, type_operator);
    tcase_add_test(tc, docs_type_page);
    suite_add_tcase(s, tc);

    tc = tcase_create("array");
    tcase_add_test(tc, all_operator);
    tcase_add_test(tc, docs_all_page);
    tcase_add_test(tc, elem_match_operator_form);
    tcase_add_test(tc, elem_match_query_form);
    tcase_add_test(tc, docs_elem_match_page);
    tcase_add_test(tc, size_operator);
    tcase_add_test(tc, docs_query_arrays_tutorial);
    tcase_add_test(tc, docs_query_embedded_arrays_tutorial);
    suite_add_tcase(s, tc);

    tc = tcase_create("paths");
    tcase_add_test(tc, paths_through_arrays);
    tcase_add_test(tc, change_events);
    tcase_add_test(tc, path_values);
    suite_add_tcase(s, tc);

    tc = tcase_create("evaluation");
    tcase_add_test(tc, regex_operator);
    tcase_add_test(tc, docs_regex_page);
    tcase_add_test(tc, mod_operator);
    tcase_add_test(tc, docs_mod_page);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_test(tc, errors_operands);
    tcase_add_test(tc, errors_regex);
    tcase_add_test(tc, errors_operators);
    tcase_add_test(tc, errors_json_input);
    tcase_add_test(tc, compile_from_bson);
    suite_add_tcase(s, tc);

    tc = tcase_create("index");
    tcase_add_test(tc, and_combines);
    tcase_add_test(tc, required_equalities);
    tcase_add_test(tc, hash_and_equal_agree);
    tcase_add_test(tc, value_equal_structures);
    tcase_add_test(tc, threads_share_a_matcher);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(match_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
