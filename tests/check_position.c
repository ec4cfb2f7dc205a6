/* Unit tests for src/position.c: the token <-> position codec. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "position.h"
#include "testutil.h"

static char *roundtrip(const bson_t *token)
{
    char *pos = cg_position_from_token(token);
    ck_assert_ptr_nonnull(pos);
    bson_t back;
    char err[128];
    ck_assert_int_eq(cg_position_to_token(pos, &back, err, sizeof err), 0);
    ck_assert(bson_equal(token, &back));
    bson_destroy(&back);
    return pos;
}

START_TEST(hex_data_token_is_its_hex)
{
    bson_t *t = BCON_NEW("_data", "8263A1B2C3000000012B022C0100296E5A1004");
    char *pos = roundtrip(t);
    ck_assert_str_eq(pos, "8263A1B2C3000000012B022C0100296E5A1004");
    bson_free(pos);
    bson_destroy(t);
}
END_TEST

START_TEST(other_shapes_are_base64url_and_reversible)
{
    const char *json[] = {
        "{\"_data\": \"82abc\"}",          /* lowercase hex: not the plain form */
        "{\"_data\": \"82AB\", \"x\": 1}", /* extra field */
        "{\"ts\": {\"$timestamp\": {\"t\": 1, \"i\": 2}}, \"k\": [1, \"a\"]}",
        "{\"_data\": {\"$binary\": {\"base64\": \"AAEC\", \"subType\": \"00\"}}}",
        "{\"a\": 1}",
        "{\"ab\": 1}",
        "{\"abc\": 1}", /* every base64 tail length */
    };
    for (size_t i = 0; i < sizeof json / sizeof *json; i++) {
        bson_error_t e;
        bson_t *t = bson_new_from_json((const uint8_t *)json[i], -1, &e);
        ck_assert_ptr_nonnull(t);
        char *pos = roundtrip(t);
        ck_assert_int_eq(pos[0], '~');
        ck_assert_uint_eq(strspn(pos + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                          "0123456789-_"),
                          strlen(pos) - 1);
        bson_free(pos);
        bson_destroy(t);
    }
}
END_TEST

START_TEST(empty_token_has_no_position)
{
    bson_t empty = BSON_INITIALIZER;
    ck_assert_ptr_null(cg_position_from_token(&empty));
    ck_assert_ptr_null(cg_position_from_token(NULL));
}
END_TEST

START_TEST(malformed_positions_are_refused_with_a_reason)
{
    const char *bad[] = {"",   "82ab",  "82 AB", "xyz",          "~",
                         "~A", "~!!!!", "~AAAA", "8263A1B2C3\n", "~YWJj"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        bson_t t;
        char err[128] = "";
        ck_assert_msg(cg_position_to_token(bad[i], &t, err, sizeof err) == -1, "accepted '%s'",
                      bad[i]);
        ck_assert(strlen(err) > 0);
    }
    char *huge = malloc(CG_POSITION_MAX + 2);
    memset(huge, 'A', CG_POSITION_MAX + 1);
    huge[CG_POSITION_MAX + 1] = '\0';
    bson_t t;
    char err[128];
    ck_assert_int_eq(cg_position_to_token(huge, &t, err, sizeof err), -1);
    free(huge);
}
END_TEST

START_TEST(non_canonical_encoding_of_a_hex_token_is_refused)
{
    /* {_data: "AB"} must be written "AB"; its base64 form would be a second
     * name for the same token, which the journal could not find. */
    bson_t *t = BCON_NEW("_data", "AB");
    const uint8_t *d = bson_get_data(t);
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char enc[64] = "~";
    size_t o = 1, n = t->len;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) |
                     (i + 2 < n ? d[i + 2] : 0);
        enc[o++] = tbl[(v >> 18) & 63];
        enc[o++] = tbl[(v >> 12) & 63];
        if (i + 1 < n)
            enc[o++] = tbl[(v >> 6) & 63];
        if (i + 2 < n)
            enc[o++] = tbl[v & 63];
    }
    bson_t back;
    char err[128];
    ck_assert_int_eq(cg_position_to_token(enc, &back, err, sizeof err), -1);
    bson_destroy(t);
}
END_TEST

/* A 4.2+ token starts with its clusterTime: "82", seconds, increment. */
START_TEST(cluster_time_is_read_from_hex_tokens_only)
{
    uint32_t t = 0, i = 0;
    ck_assert(cg_position_cluster_time("826B044B37000947FF01", &t, &i));
    ck_assert_uint_eq(t, 0x6B044B37u);
    ck_assert_uint_eq(i, 0x000947FFu);
    ck_assert(cg_position_cluster_time("827FFFFFF0FFFFFFFF", &t, &i));
    ck_assert_uint_eq(t, 0x7FFFFFF0u);
    ck_assert_uint_eq(i, 0xFFFFFFFFu);
    ck_assert(!cg_position_cluster_time("826B044B37000947F", &t, &i)); /* too short */
    ck_assert(!cg_position_cluster_time("836B044B37000947FF01", &t, &i));
    ck_assert(!cg_position_cluster_time("826b044b37000947ff01", &t, &i));
    ck_assert(!cg_position_cluster_time("~FAAAAAJfZGF0YQAFAAAAAAA", &t, &i));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("position");
    TCase *tc = tcase_create("codec");
    tcase_add_test(tc, hex_data_token_is_its_hex);
    tcase_add_test(tc, other_shapes_are_base64url_and_reversible);
    tcase_add_test(tc, empty_token_has_no_position);
    tcase_add_test(tc, malformed_positions_are_refused_with_a_reason);
    tcase_add_test(tc, non_canonical_encoding_of_a_hex_token_is_refused);
    tcase_add_test(tc, cluster_time_is_read_from_hex_tokens_only);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
