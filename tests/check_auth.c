/* Unit tests for src/auth.c: rule templates, filling them from claims, and a
 * token's own filter and fields. */
#include <check.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "match.h"
#include "testutil.h"

static cg_auth_rule_t *rule(const char *json)
{
    char err[256] = "";
    cg_auth_rule_t *r = cg_auth_rule_new(json, err, sizeof err);
    ck_assert_msg(r != NULL, "%s: %s", json, err);
    return r;
}

/* The template is refused, with a message containing want. */
static void bad_rule(const char *json, const char *want)
{
    char err[256] = "";
    cg_auth_rule_t *r = cg_auth_rule_new(json, err, sizeof err);
    ck_assert_msg(r == NULL, "accepted: %s", json);
    ck_assert_msg(strncmp(err, "auth-rule", 9) == 0, "%s: '%s'", json, err);
    ck_assert_msg(strstr(err, want) != NULL, "%s: '%s' lacks '%s'", json, err, want);
}

static json_t *claims(const char *json)
{
    json_error_t e;
    json_t *c = json_loads(json, 0, &e);
    ck_assert_msg(c != NULL, "%s", e.text);
    return c;
}

/* The query for a template (NULL: none) and claims; must not be refused. */
static bson_t *query_for(const char *tmpl, const char *claims_json)
{
    cg_auth_rule_t *r = tmpl ? rule(tmpl) : NULL;
    json_t *c = claims_json ? claims(claims_json) : NULL;
    bool refused = true;
    cg_auth_refusal_t why;
    bson_t *q = cg_auth_rule_for(r, c, &refused, &why);
    ck_assert_msg(!refused, "%s with %s: %s %s", tmpl, claims_json, why.code, why.message);
    json_decref(c);
    cg_auth_rule_free(r);
    return q;
}

/* The token is refused with code (and a message containing want). */
static void refused_for(const char *tmpl, const char *claims_json, const char *code,
                        const char *want)
{
    cg_auth_rule_t *r = tmpl ? rule(tmpl) : NULL;
    json_t *c = claims_json ? claims(claims_json) : NULL;
    bool refused = false;
    cg_auth_refusal_t why;
    bson_t *q = cg_auth_rule_for(r, c, &refused, &why);
    ck_assert_msg(refused && q == NULL, "%s with %s: not refused", tmpl, claims_json);
    ck_assert_msg(strcmp(why.code, code) == 0, "%s with %s: %s (%s), not %s", tmpl, claims_json,
                  why.code, why.message, code);
    ck_assert_msg(strstr(why.message, want) != NULL, "'%s' lacks '%s'", why.message, want);
    json_decref(c);
    cg_auth_rule_free(r);
}

/* Evaluates a query on a document given as JSON. */
static bool eval(const bson_t *q, const char *doc_json)
{
    char err[256];
    cg_match_t *m = cg_match_compile(q, "rule", err, sizeof err);
    ck_assert_msg(m != NULL, "%s", err);
    bson_error_t e;
    bson_t *d = bson_new_from_json((const uint8_t *)doc_json, -1, &e);
    ck_assert_msg(d != NULL, "%s", e.message);
    bool r = cg_match_eval(m, d);
    bson_destroy(d);
    cg_match_free(m);
    return r;
}

static bool owner_is(const bson_t *q, const char *owner)
{
    char doc[128];
    snprintf(doc, sizeof doc, "{\"fullDocument\": {\"owner\": \"%s\"}}", owner);
    return eval(q, doc);
}

/* The BSON type of q[field][op] (fields are dotted keys, so no find_descendant). */
static bson_type_t type_at(const bson_t *q, const char *field, const char *op)
{
    bson_iter_t it, sub;
    ck_assert(bson_iter_init_find(&it, q, field) && BSON_ITER_HOLDS_DOCUMENT(&it));
    ck_assert(bson_iter_recurse(&it, &sub) && bson_iter_find(&sub, op));
    return bson_iter_type(&sub);
}

/* ---- templates ---- */

START_TEST(good_templates_are_accepted)
{
    const char *good[] = {
        "{\"fullDocument.owner_id\": \"$$jwt.sub\"}",
        "{\"fullDocument.tenant\": {\"$in\": \"$$jwt.org.tenants\"}}",
        "{\"fullDocument.tenant\": {\"$nin\": \"$$jwt.blocked\"}}",
        "{\"fullDocument.tags\": {\"$all\": \"$$jwt.tags\"}}",
        "{\"fullDocument.x\": {\"$in\": [\"$$jwt.sub\", \"admin\"]}}",
        "{\"fullDocument.level\": {\"$lte\": \"$$jwt.level\", \"$gt\": 0}}",
        "{\"fullDocument.owner\": {\"$eq\": \"$$jwt.sub\"}, \"ns.db\": \"shop\"}",
        "{\"fullDocument.owner\": {\"$ne\": \"$$jwt.sub\"}}",
        "{\"$or\": [{\"fullDocument.owner\": \"$$jwt.sub\"},"
        " {\"fullDocument.readers\": {\"$all\": [\"$$jwt.sub\"]}}]}",
        "{\"$and\": [{\"$nor\": [{\"fullDocument.hidden_from\": \"$$jwt.sub\"}]}]}",
        "{\"fullDocument.items\": {\"$elemMatch\": {\"owner\": \"$$jwt.sub\"}}}",
        "{\"fullDocument.tags\": {\"$elemMatch\": {\"$eq\": \"$$jwt.sub\"}}}",
        "{\"fullDocument.tags\": {\"$all\": [{\"$elemMatch\": {\"who\": \"$$jwt.sub\"}}]}}",
        "{\"fullDocument.a\": {\"$not\": {\"$eq\": \"$$jwt.sub\"}}}",
        /* the filter language's own keys still work beside placeholders */
        "{\"fullDocument.o\": \"$$jwt.sub\", \"fullDocument.t\": {\"$type\": \"string\"},"
        " \"fullDocument.n\": {\"$regex\": \"^a\", \"$options\": \"i\"}}",
        "{\"fullDocument.aud\": {\"$in\": \"$$jwt.aud\"}}", /* aud may be an array */
        "{\"fullDocument.exp\": {\"$lt\": \"$$jwt.exp\"}}",
        "{\"ns.db\": \"public\"}",        /* no placeholder: a fixed rule */
        "{\"note\": \"costs $$ a lot\"}", /* "$$" alone is no placeholder */
        "{\"fullDocument.o\": \"$$jwt.a-b.c_d.\\u00e9\"}",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        cg_auth_rule_free(rule(good[i]));
}
END_TEST

START_TEST(placeholders_only_in_value_positions)
{
    bad_rule("{\"$$jwt.sub\": 1}", "field name");
    bad_rule("{\"fullDocument.$$jwt.sub\": 1}", "field name");
    bad_rule("{\"$or\": [{\"$$jwt.sub\": 1}]}", "field name");
    bad_rule("{\"fullDocument.o\": {\"$$jwt.op\": 1}}", "operator");
    bad_rule("{\"fullDocument.o\": {\"$not\": {\"$$jwt.op\": 1}}}", "operator");
    bad_rule("{\"fullDocument.o\": {\"id\": \"$$jwt.sub\"}}", "literal");
    bad_rule("{\"fullDocument.o\": [\"$$jwt.sub\"]}", "literal");
    bad_rule("{\"fullDocument.o\": {\"$eq\": {\"id\": \"$$jwt.sub\"}}}", "literal");
    bad_rule("{\"fullDocument.o\": {\"$eq\": {\"$$jwt.sub\": 1}}}", "field name or an operator");
    bad_rule("{\"fullDocument.o\": {\"$in\": [[\"$$jwt.sub\"]]}}", "$in");
    bad_rule("{\"fullDocument.o\": {\"$regex\": \"$$jwt.sub\"}}", "$regex");
    bad_rule("{\"fullDocument.o\": {\"$size\": \"$$jwt.n\"}}", "$size");
    bad_rule("{\"fullDocument.o\": {\"$exists\": \"$$jwt.b\"}}", "$exists");
    bad_rule("{\"fullDocument.o\": {\"$type\": \"$$jwt.t\"}}", "$type");
    bad_rule("{\"$comment\": \"$$jwt.sub\", \"a\": 1}", "$comment");
    bad_rule("{\"$and\": [\"$$jwt.sub\"]}", "$and");
    bad_rule("{\"$and\": \"$$jwt.sub\"}", "$and");
    bad_rule("{\"fullDocument.o\": {\"$not\": \"$$jwt.sub\"}}", "$not");
    bad_rule("{\"fullDocument.o\": {\"$elemMatch\": \"$$jwt.sub\"}}", "$elemMatch");
    /* where it is is named */
    bad_rule("{\"$or\": [{\"a\": 1}, {\"fullDocument.o\": {\"$regex\": \"$$jwt.sub\"}}]}",
             "auth-rule.$or.1.fullDocument.o.$regex:");
}
END_TEST

START_TEST(malformed_placeholders_are_refused)
{
    const char *bad[] = {"$$jwt",    "$$jwt.",   "$$jwt..sub",     "$$jwt.a..b",
                         "$$jwt.a.", "$$jwtsub", "user-$$jwt.sub", "$$jwt.sub $$jwt.x",
                         "x$$jwt"};
    char json[128];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(json, sizeof json, "{\"fullDocument.o\": \"%s\"}", bad[i]);
        bad_rule(json, "placeholder");
        snprintf(json, sizeof json, "{\"fullDocument.o\": {\"$in\": [1, \"%s\"]}}", bad[i]);
        bad_rule(json, "placeholder");
    }
    bad_rule("{\"fullDocument.o\": \"$$jwt.a\\u0000b\"}", "NUL");
    char many[400] = "{\"o\": \"$$jwt.a";
    for (int i = 1; i < CG_MATCH_MAX_DEPTH + 1; i++)
        strcat(many, ".a");
    strcat(many, "\"}");
    bad_rule(many, "segments");
    char longpath[400] = "{\"o\": \"$$jwt.";
    size_t at = strlen(longpath);
    memset(longpath + at, 'a', CG_AUTH_MAX_CLAIM_PATH + 1);
    strcpy(longpath + at + CG_AUTH_MAX_CLAIM_PATH + 1, "\"}");
    bad_rule(longpath, "too long");
}
END_TEST

START_TEST(claims_tokens_cannot_fill_are_refused)
{
    bad_rule("{\"fullDocument.o\": \"$$jwt.sub.id\"}", "sub is always a string");
    bad_rule("{\"fullDocument.o\": {\"$in\": \"$$jwt.sub\"}}", "$in needs an array");
    bad_rule("{\"fullDocument.o\": {\"$all\": \"$$jwt.iss\"}}", "$all needs an array");
    bad_rule("{\"fullDocument.o\": {\"$nin\": \"$$jwt.exp\"}}", "exp is always a number");
    bad_rule("{\"fullDocument.o\": \"$$jwt.changegate.fields\"}", "changegate claim");
    bad_rule("{\"fullDocument.o\": \"$$jwt.changegate\"}", "changegate claim");
}
END_TEST

START_TEST(templates_must_compile_and_respect_the_limits)
{
    bad_rule("{", "invalid JSON");
    bad_rule("[1]", "not a JSON object");
    bad_rule("{\"a\": 1} x", "not a JSON object");
    bad_rule("{\"fullDocument.o\": \"$$jwt.sub\", \"$where\": \"1\"}", "$where is not allowed");
    bad_rule("{\"fullDocument.o\": {\"$gt\": \"$$jwt.sub\", \"$foo\": 1}}", "unknown operator");
    bad_rule("{\"fullDocument.o\": {\"$in\": \"$$jwt.t\", \"$size\": \"x\"}}", "$size");
    /* over the filter size limit */
    size_t n = CG_MATCH_MAX_JSON + 100;
    char *big = malloc(n + 1);
    strcpy(big, "{\"fullDocument.o\": \"$$jwt.sub\", \"a\": \"");
    size_t at = strlen(big);
    memset(big + at, 'x', n - at - 2);
    strcpy(big + n - 2, "\"}");
    bad_rule(big, "longer than");
    free(big);
    /* nesting: 31 levels compile alone but not once ANDed with a token's filter */
    char deep[512] = "";
    for (int i = 0; i < 15; i++)
        strcat(deep, "{\"$and\": [");
    strcat(deep, "{\"fullDocument.o\": \"$$jwt.sub\"}");
    for (int i = 0; i < 15; i++)
        strcat(deep, "]}");
    bad_rule(deep, "nesting deeper than 30");
    deep[0] = '\0';
    for (int i = 0; i < 14; i++)
        strcat(deep, "{\"$and\": [");
    strcat(deep, "{\"fullDocument.o\": \"$$jwt.sub\"}");
    for (int i = 0; i < 14; i++)
        strcat(deep, "]}");
    cg_auth_rule_free(rule(deep));
}
END_TEST

/* ---- filling from claims ---- */

START_TEST(strings_numbers_and_booleans_fill_equalities)
{
    bson_t *q = query_for("{\"fullDocument.owner\": \"$$jwt.sub\"}", "{\"sub\": \"ann\"}");
    ck_assert(owner_is(q, "ann"));
    ck_assert(!owner_is(q, "bob"));
    ck_assert(!eval(q, "{\"fullDocument\": {}}"));
    ck_assert(!eval(q, "{}"));
    bson_destroy(q);

    /* integers become int64, and compare with any number type */
    q = query_for("{\"fullDocument.level\": {\"$lte\": \"$$jwt.level\"}}", "{\"level\": 3}");
    ck_assert_int_eq(type_at(q, "fullDocument.level", "$lte"), BSON_TYPE_INT64);
    ck_assert(eval(q, "{\"fullDocument\": {\"level\": 2}}"));
    ck_assert(eval(q, "{\"fullDocument\": {\"level\": 3.0}}"));
    ck_assert(!eval(q, "{\"fullDocument\": {\"level\": 4}}"));
    bson_destroy(q);

    q = query_for("{\"fullDocument.score\": {\"$gte\": \"$$jwt.min\"}}", "{\"min\": 2.5}");
    ck_assert_int_eq(type_at(q, "fullDocument.score", "$gte"), BSON_TYPE_DOUBLE);
    ck_assert(eval(q, "{\"fullDocument\": {\"score\": 3}}"));
    ck_assert(!eval(q, "{\"fullDocument\": {\"score\": 2}}"));
    bson_destroy(q);

    q = query_for("{\"fullDocument.public\": \"$$jwt.guest\"}", "{\"guest\": true}");
    ck_assert(eval(q, "{\"fullDocument\": {\"public\": true}}"));
    ck_assert(!eval(q, "{\"fullDocument\": {\"public\": false}}"));
    bson_destroy(q);

    /* a claim is only ever a value: a string that looks like an operator is a string */
    q = query_for("{\"fullDocument.owner\": \"$$jwt.sub\"}", "{\"sub\": \"$$jwt.sub\"}");
    ck_assert(owner_is(q, "$$jwt.sub"));
    ck_assert(!owner_is(q, "ann"));
    bson_destroy(q);
}
END_TEST

START_TEST(arrays_fill_in_and_nested_paths_reach_into_claims)
{
    const char *c = "{\"sub\": \"ann\", \"org\": {\"id\": 7, \"tenants\": [\"t1\", \"t2\", 3]}}";
    bson_t *q = query_for("{\"fullDocument.tenant\": {\"$in\": \"$$jwt.org.tenants\"}}", c);
    ck_assert(eval(q, "{\"fullDocument\": {\"tenant\": \"t2\"}}"));
    ck_assert(eval(q, "{\"fullDocument\": {\"tenant\": 3}}"));
    ck_assert(!eval(q, "{\"fullDocument\": {\"tenant\": \"t3\"}}"));
    ck_assert(!eval(q, "{\"fullDocument\": {}}"));
    bson_destroy(q);

    q = query_for("{\"fullDocument.org\": \"$$jwt.org.id\","
                  " \"fullDocument.who\": {\"$in\": [\"$$jwt.sub\", \"admin\"]}}",
                  c);
    ck_assert(eval(q, "{\"fullDocument\": {\"org\": 7, \"who\": \"ann\"}}"));
    ck_assert(eval(q, "{\"fullDocument\": {\"org\": 7, \"who\": \"admin\"}}"));
    ck_assert(!eval(q, "{\"fullDocument\": {\"org\": 8, \"who\": \"ann\"}}"));
    bson_destroy(q);

    /* an empty array is a valid claim: $in [] matches nothing */
    q = query_for("{\"fullDocument.tenant\": {\"$in\": \"$$jwt.tenants\"}}", "{\"tenants\": []}");
    ck_assert(!eval(q, "{\"fullDocument\": {\"tenant\": \"t1\"}}"));
    ck_assert(!eval(q, "{}"));
    bson_destroy(q);

    q = query_for("{\"$or\": [{\"fullDocument.owner\": \"$$jwt.sub\"},"
                  " {\"fullDocument.items\": {\"$elemMatch\": {\"owner\": \"$$jwt.sub\"}}}]}",
                  c);
    ck_assert(owner_is(q, "ann"));
    ck_assert(eval(q, "{\"fullDocument\": {\"items\": [{\"owner\": \"bob\"}, {\"owner\": "
                      "\"ann\"}]}}"));
    ck_assert(!eval(q, "{\"fullDocument\": {\"items\": [{\"owner\": \"bob\"}]}}"));
    bson_destroy(q);
}
END_TEST

START_TEST(missing_claims_are_refused)
{
    const char *own = "{\"fullDocument.owner\": \"$$jwt.sub\"}";
    refused_for(own, "{}", "claim_missing", "sub");
    refused_for(own, "{\"sub\": null}", "claim_missing", "sub");
    refused_for(own, "{\"other\": \"ann\"}", "claim_missing", "sub");
    refused_for(own, NULL, "claim_missing", "sub"); /* no claims at all: never the samples */
    refused_for(own, "[\"ann\"]", "claim_missing", "sub");
    const char *ten = "{\"fullDocument.t\": {\"$in\": \"$$jwt.org.tenants\"}}";
    refused_for(ten, "{\"sub\": \"ann\"}", "claim_missing", "org.tenants");
    refused_for(ten, "{\"org\": null}", "claim_missing", "org.tenants");
    refused_for(ten, "{\"org\": {}}", "claim_missing", "org.tenants");
    /* in every branch, even one that would not be needed for some documents */
    refused_for("{\"$or\": [{\"fullDocument.owner\": \"$$jwt.sub\"},"
                " {\"fullDocument.team\": \"$$jwt.team\"}]}",
                "{\"sub\": \"ann\"}", "claim_missing", "team");
    refused_for("{\"fullDocument.owner\": {\"$ne\": \"$$jwt.sub\"}}", "{}", "claim_missing", "sub");
}
END_TEST

START_TEST(claims_of_the_wrong_kind_are_refused)
{
    const char *own = "{\"fullDocument.owner\": \"$$jwt.sub\"}";
    refused_for(own, "{\"sub\": {\"$gt\": \"\"}}", "claim_type", "object"); /* no injection */
    refused_for(own, "{\"sub\": [\"ann\", \"bob\"]}", "claim_type", "array");
    refused_for("{\"fullDocument.o\": {\"$gt\": \"$$jwt.n\"}}", "{\"n\": {}}", "claim_type",
                "object");
    const char *ten = "{\"fullDocument.t\": {\"$in\": \"$$jwt.tenants\"}}";
    refused_for(ten, "{\"tenants\": \"t1\"}", "claim_type", "needs an array");
    refused_for(ten, "{\"tenants\": 5}", "claim_type", "a number");
    refused_for(ten, "{\"tenants\": {\"0\": \"t1\"}}", "claim_type", "an object");
    refused_for(ten, "{\"tenants\": [\"t1\", null]}", "claim_type", "null");
    refused_for(ten, "{\"tenants\": [\"t1\", {\"$gt\": \"\"}]}", "claim_type", "object");
    refused_for(ten, "{\"tenants\": [[\"t1\"]]}", "claim_type", "array");
    refused_for("{\"fullDocument.t\": {\"$in\": [\"$$jwt.sub\"]}}", "{\"sub\": [\"a\"]}",
                "claim_type", "array");
    /* a path through something that is not an object */
    refused_for("{\"fullDocument.t\": \"$$jwt.org.id\"}", "{\"org\": \"acme\"}", "claim_type",
                "claim org is a string");
    refused_for("{\"fullDocument.t\": \"$$jwt.org.id\"}", "{\"org\": [{\"id\": 1}]}", "claim_type",
                "array");
    /* too large a claim for the rule */
    json_t *c = json_object(), *arr = json_array();
    char v[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(v, sizeof v, "tenant-%d", i);
        json_array_append_new(arr, json_string(v));
    }
    json_object_set_new(c, "tenants", arr);
    cg_auth_rule_t *r = rule(ten);
    bool refused;
    cg_auth_refusal_t why;
    ck_assert_ptr_null(cg_auth_rule_for(r, c, &refused, &why));
    ck_assert(refused);
    ck_assert_str_eq(why.code, "claim_too_large");
    cg_auth_rule_free(r);
    json_decref(c);
}
END_TEST

START_TEST(a_token_filter_is_anded)
{
    const char *own = "{\"fullDocument.owner\": \"$$jwt.sub\"}";
    const char *c = "{\"sub\": \"ann\", \"changegate\": {\"filter\": {\"fullDocument.status\":"
                    " \"open\", \"fullDocument.kind\": {\"$type\": \"string\"}}}}";
    bson_t *q = query_for(own, c);
    ck_assert(eval(q, "{\"fullDocument\": {\"owner\": \"ann\", \"status\": \"open\", \"kind\": "
                      "\"a\"}}"));
    ck_assert(!eval(q, "{\"fullDocument\": {\"owner\": \"ann\", \"status\": \"shut\", \"kind\": "
                       "\"a\"}}"));
    ck_assert(!eval(q, "{\"fullDocument\": {\"owner\": \"bob\", \"status\": \"open\", \"kind\": "
                       "\"a\"}}"));
    bson_destroy(q);
    /* without a rule: the token's filter alone */
    q = query_for(NULL, c);
    ck_assert(eval(q, "{\"fullDocument\": {\"owner\": \"bob\", \"status\": \"open\", \"kind\": "
                      "\"a\"}}"));
    ck_assert(!eval(q, "{\"fullDocument\": {\"status\": \"shut\", \"kind\": \"a\"}}"));
    bson_destroy(q);
    /* Extended JSON values work as in `filter` */
    q = query_for(NULL, "{\"changegate\": {\"filter\": {\"documentKey._id\": {\"$oid\":"
                        " \"65a000000000000000000001\"}}}}");
    ck_assert(eval(q, "{\"documentKey\": {\"_id\": {\"$oid\": \"65a000000000000000000001\"}}}"));
    ck_assert(!eval(q, "{\"documentKey\": {\"_id\": \"65a000000000000000000001\"}}"));
    bson_destroy(q);
    /* no rule, no token filter: no restriction; a changegate claim without a filter too */
    ck_assert_ptr_null(query_for(NULL, "{\"sub\": \"ann\"}"));
    ck_assert_ptr_null(query_for(NULL, "{\"changegate\": {\"fields\": \"fullDocument.a\"}}"));
    ck_assert_ptr_null(query_for(NULL, NULL));
    /* a rule without a token filter is the rule alone */
    q = query_for(own, "{\"sub\": \"ann\", \"changegate\": {}}");
    ck_assert(owner_is(q, "ann"));
    ck_assert(!owner_is(q, "bob"));
    bson_destroy(q);
}
END_TEST

START_TEST(an_invalid_token_filter_is_refused)
{
    const char *own = "{\"fullDocument.owner\": \"$$jwt.sub\"}";
    refused_for(own, "{\"sub\": \"a\", \"changegate\": \"x\"}", "invalid_token_filter",
                "changegate claim is not an object");
    refused_for(NULL, "{\"changegate\": [1]}", "invalid_token_filter", "not an object");
    refused_for(own, "{\"sub\": \"a\", \"changegate\": {\"filter\": \"x\"}}",
                "invalid_token_filter", "a string");
    refused_for(NULL, "{\"changegate\": {\"filter\": null}}", "invalid_token_filter", "null");
    refused_for(NULL, "{\"changegate\": {\"filter\": [{\"a\": 1}]}}", "invalid_token_filter",
                "an array");
    refused_for(own, "{\"sub\": \"a\", \"changegate\": {\"filter\": {\"$where\": \"1\"}}}",
                "invalid_token_filter", "changegate.filter: $where is not allowed");
    refused_for(NULL, "{\"changegate\": {\"filter\": {\"a\": {\"$gt\": 1, \"$bad\": 2}}}}",
                "invalid_token_filter", "changegate.filter.a: unknown operator $bad");
    /* over the filter limits: nesting, and size */
    char deep[512] = "{\"changegate\": {\"filter\": ";
    for (int i = 0; i < 20; i++)
        strcat(deep, "{\"$and\": [");
    strcat(deep, "{\"a\": 1}");
    for (int i = 0; i < 20; i++)
        strcat(deep, "]}");
    strcat(deep, "}}");
    refused_for(NULL, deep, "invalid_token_filter", "nesting deeper");
    /* deep enough to pass alone, not once ANDed with the rule */
    strcpy(deep, "{\"sub\": \"a\", \"changegate\": {\"filter\": ");
    for (int i = 0; i < 15; i++)
        strcat(deep, "{\"$and\": [");
    strcat(deep, "{\"a\": 1}");
    for (int i = 0; i < 15; i++)
        strcat(deep, "]}");
    strcat(deep, "}}");
    refused_for(own, deep, "invalid_token_filter", "nesting deeper");
    json_t *c = claims("{\"sub\": \"a\", \"changegate\": {\"filter\": {}}}");
    char *big = malloc(CG_MATCH_MAX_JSON + 1);
    memset(big, 'x', CG_MATCH_MAX_JSON);
    big[CG_MATCH_MAX_JSON] = '\0';
    json_object_set_new(json_object_get(json_object_get(c, "changegate"), "filter"), "a",
                        json_string(big));
    free(big);
    cg_auth_rule_t *r = rule(own);
    bool refused;
    cg_auth_refusal_t why;
    ck_assert_ptr_null(cg_auth_rule_for(r, c, &refused, &why));
    ck_assert(refused);
    ck_assert_str_eq(why.code, "invalid_token_filter");
    ck_assert_ptr_nonnull(strstr(why.message, "longer than"));
    cg_auth_rule_free(r);
    json_decref(c);
}
END_TEST

/* Never a query that matches everything: for many tokens, each either is
 * refused or gets a query that does not match another user's document. */
START_TEST(no_token_gets_a_rule_that_matches_everything)
{
    const char *tmpl[] = {
        "{\"fullDocument.owner\": \"$$jwt.sub\"}",
        "{\"fullDocument.owner\": {\"$in\": \"$$jwt.subs\"}}",
        "{\"fullDocument.owner\": {\"$in\": [\"$$jwt.sub\"]}}",
        "{\"fullDocument.owner\": {\"$eq\": \"$$jwt.org.sub\"}}",
        "{\"$or\": [{\"fullDocument.owner\": \"$$jwt.sub\"}, {\"fullDocument.x\": \"$$jwt.x\"}]}",
    };
    const char *tokens[] = {
        "{}",
        "{\"sub\": null}",
        "{\"sub\": {}}",
        "{\"sub\": []}",
        "{\"sub\": [null]}",
        "{\"sub\": {\"$exists\": true}}",
        "{\"sub\": {\"$ne\": \"x\"}}",
        "{\"subs\": null}",
        "{\"subs\": {}}",
        "{\"subs\": [null]}",
        "{\"subs\": [{\"$exists\": true}]}",
        "{\"subs\": \"ann\"}",
        "{\"org\": null}",
        "{\"org\": \"x\"}",
        "{\"org\": {\"sub\": null}}",
        "{\"sub\": \"ann\", \"x\": null}",
        "{\"sub\": \"ann\", \"subs\": [\"ann\"], \"org\": {\"sub\": \"ann\"}, \"x\": 1}",
        "{\"sub\": \"ann\", \"changegate\": {\"filter\": {}}}",
        "{\"sub\": \"ann\", \"changegate\": {\"filter\": {\"$or\": [{\"a\": 1}, {}]}}}",
    };
    const char *others[] = {"{\"fullDocument\": {\"owner\": \"bob\"}}", "{\"fullDocument\": {}}",
                            "{}", "{\"fullDocument\": {\"owner\": null}}"};
    for (size_t i = 0; i < sizeof tmpl / sizeof *tmpl; i++) {
        cg_auth_rule_t *r = rule(tmpl[i]);
        for (size_t j = 0; j < sizeof tokens / sizeof *tokens; j++) {
            json_t *c = claims(tokens[j]);
            bool refused;
            cg_auth_refusal_t why;
            bson_t *q = cg_auth_rule_for(r, c, &refused, &why);
            ck_assert_msg(refused == (q == NULL), "%s / %s", tmpl[i], tokens[j]);
            if (q) {
                for (size_t k = 0; k < sizeof others / sizeof *others; k++)
                    ck_assert_msg(!eval(q, others[k]), "%s / %s matches %s", tmpl[i], tokens[j],
                                  others[k]);
                bson_destroy(q);
            } else {
                ck_assert(why.code[0] != '\0' && why.message[0] != '\0');
            }
            json_decref(c);
        }
        cg_auth_rule_free(r);
    }
}
END_TEST

/* ---- fields ---- */

static void expect_fields(const char *claims_json, const char *want)
{
    json_t *c = claims(claims_json);
    bool refused = true;
    cg_auth_refusal_t why;
    char *f = cg_auth_token_fields(c, &refused, &why);
    ck_assert_msg(!refused, "%s: %s", claims_json, why.message);
    if (want)
        ck_assert_str_eq(f, want);
    else
        ck_assert_ptr_null(f);
    bson_free(f);
    json_decref(c);
}

static void bad_fields(const char *claims_json, const char *want)
{
    json_t *c = claims(claims_json);
    bool refused = false;
    cg_auth_refusal_t why;
    ck_assert_ptr_null(cg_auth_token_fields(c, &refused, &why));
    ck_assert_msg(refused, "%s", claims_json);
    ck_assert_str_eq(why.code, "invalid_token_fields");
    ck_assert_msg(strstr(why.message, want) != NULL, "'%s' lacks '%s'", why.message, want);
    json_decref(c);
}

START_TEST(token_fields_are_a_field_list)
{
    expect_fields("{\"sub\": \"a\"}", NULL);
    expect_fields("{\"changegate\": {\"filter\": {}}}", NULL);
    expect_fields("{\"changegate\": {\"fields\": \"fullDocument.a,fullDocument.b\"}}",
                  "fullDocument.a,fullDocument.b");
    expect_fields("{\"changegate\": {\"fields\": [\"fullDocument.a\", \"updateDescription\"]}}",
                  "fullDocument.a,updateDescription");
    bad_fields("{\"changegate\": 1}", "changegate claim is not an object");
    bad_fields("{\"changegate\": {\"fields\": null}}", "null");
    bad_fields("{\"changegate\": {\"fields\": 5}}", "a number");
    bad_fields("{\"changegate\": {\"fields\": {\"a\": 1}}}", "an object");
    bad_fields("{\"changegate\": {\"fields\": \"\"}}", "empty");
    bad_fields("{\"changegate\": {\"fields\": []}}", "empty");
    bad_fields("{\"changegate\": {\"fields\": [\"a,b\"]}}", "fields[0]");
    bad_fields("{\"changegate\": {\"fields\": [\"a\", 1]}}", "fields[1]");
    bad_fields("{\"changegate\": {\"fields\": \"a..b\"}}", "changegate.fields: 'a..b'");
    bad_fields("{\"changegate\": {\"fields\": [\"a\", \"$x\"]}}", "'$'");
    bad_fields("{\"changegate\": {\"fields\": \"a,,b\"}}", "empty path");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("templates");
    tcase_add_test(tc, good_templates_are_accepted);
    tcase_add_test(tc, placeholders_only_in_value_positions);
    tcase_add_test(tc, malformed_placeholders_are_refused);
    tcase_add_test(tc, claims_tokens_cannot_fill_are_refused);
    tcase_add_test(tc, templates_must_compile_and_respect_the_limits);
    suite_add_tcase(s, tc);
    tc = tcase_create("tokens");
    tcase_add_test(tc, strings_numbers_and_booleans_fill_equalities);
    tcase_add_test(tc, arrays_fill_in_and_nested_paths_reach_into_claims);
    tcase_add_test(tc, missing_claims_are_refused);
    tcase_add_test(tc, claims_of_the_wrong_kind_are_refused);
    tcase_add_test(tc, a_token_filter_is_anded);
    tcase_add_test(tc, an_invalid_token_filter_is_refused);
    tcase_add_test(tc, no_token_gets_a_rule_that_matches_everything);
    tcase_add_test(tc, token_fields_are_a_field_list);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
