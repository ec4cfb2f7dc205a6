/* auth.c: rule templates, filled from a token's claims.
 *
 * One walk over the template serves both start-up and each token: it copies
 * the query, filling placeholders through fill(). At start-up fill() puts a
 * sample value of the kind the position takes (a string, or an array of one
 * string) and the result must compile; for a token it puts the claim's value
 * or refuses. Because both go through the same walk, a template accepted at
 * start-up has no placeholder that a token could leave in the query, and a
 * claim can only ever become a plain value (no operator, no document: a
 * claim {"$gt": ""} is refused, not spliced in). */
#include "auth.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "match.h"
#include "project.h"

#define PREFIX "$$jwt"
#define PREFIX_LEN 5
#define WHAT "auth-rule"

typedef enum { SLOT_SCALAR, SLOT_ARRAY } slot_t;

struct cg_auth_rule {
    bson_t *tmpl;
};

typedef struct {
    bool checking;        /* the template, at start-up: samples are filled in */
    const json_t *claims; /* else: the verified claims (may be NULL: none) */
    char *err;            /* template errors (checking) */
    size_t errlen;
    cg_auth_refusal_t *why; /* refusals (filling) */
    char loc[256];          /* where in the template, for errors: "fullDocument.tenant.$in" */
    size_t loclen;
} walk_t;

static bool walk_query(walk_t *w, const uint8_t *data, uint32_t len, bson_t *out);
static bool walk_ops(walk_t *w, const uint8_t *data, uint32_t len, bson_t *out);

static void refuse(cg_auth_refusal_t *why, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void refuse(cg_auth_refusal_t *why, const char *code, const char *fmt, ...)
{
    snprintf(why->code, sizeof why->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why->message, sizeof why->message, fmt, ap);
    va_end(ap);
}

/* A template error, prefixed with where it is. Only while checking. */
static bool fail(walk_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool fail(walk_t *w, const char *fmt, ...)
{
    if (!w->err || !w->errlen)
        return false;
    int n = snprintf(w->err, w->errlen, "%s%s%s: ", WHAT, w->loclen ? "." : "", w->loc);
    if (n >= 0 && (size_t)n < w->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->err + n, w->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return false;
}

static size_t loc_push(walk_t *w, const char *seg)
{
    size_t old = w->loclen;
    int n = snprintf(w->loc + old, sizeof w->loc - old, "%s%s", old ? "." : "", seg);
    size_t end = n > 0 ? old + (size_t)n : old;
    w->loclen = end < sizeof w->loc ? end : sizeof w->loc - 1; /* truncated: messages only */
    return old;
}

static void loc_pop(walk_t *w, size_t old)
{
    w->loclen = old;
    w->loc[old] = '\0';
}

/* ---- placeholders ---- */

typedef enum { NOT_PLACEHOLDER, PLACEHOLDER, MALFORMED } ph_t;

/* Classifies a value. "$$jwt" anywhere in a string makes it a placeholder
 * attempt: it must then be the whole string, well formed, since a string
 * half-filled ("user-$$jwt.sub") is not something we do and must not be
 * mistaken for a literal by whoever wrote it. */
static ph_t placeholder(const bson_iter_t *it, const char **path, const char **why)
{
    if (!BSON_ITER_HOLDS_UTF8(it))
        return NOT_PLACEHOLDER;
    uint32_t len;
    const char *s = bson_iter_utf8(it, &len);
    const char *at = strstr(s, PREFIX);
    if (!at)
        return NOT_PLACEHOLDER;
    if (strlen(s) != len) {
        *why = "a placeholder cannot contain a NUL byte";
        return MALFORMED;
    }
    if (at != s) {
        *why = "a placeholder must be the whole string value";
        return MALFORMED;
    }
    if (s[PREFIX_LEN] != '.' || s[PREFIX_LEN + 1] == '\0') {
        *why = "a placeholder is \"$$jwt.\" followed by a claim path (\"$$jwt.sub\")";
        return MALFORMED;
    }
    const char *p = s + PREFIX_LEN + 1;
    size_t plen = len - PREFIX_LEN - 1;
    if (strstr(p, PREFIX)) {
        *why = "a placeholder must be the whole string value";
        return MALFORMED;
    }
    if (plen > CG_AUTH_MAX_CLAIM_PATH) {
        *why = "a placeholder's claim path is too long";
        return MALFORMED;
    }
    unsigned segs = 1;
    for (size_t i = 0; i < plen; i++) {
        if (p[i] == '.') {
            if (i == 0 || p[i - 1] == '.' || i + 1 == plen) {
                *why = "a placeholder's claim path has an empty segment";
                return MALFORMED;
            }
            segs++;
        }
    }
    if (segs > CG_MATCH_MAX_DEPTH) {
        *why = "a placeholder's claim path has too many segments";
        return MALFORMED;
    }
    *path = p;
    return PLACEHOLDER;
}

/* The claims RFC 7519 gives a fixed kind: their members, and arrays made of
 * them, are claims no token can fill. aud may be a string or an array. */
static const struct {
    const char *name;
    const char *kind;
} registered[] = {{"iss", "a string"}, {"sub", "a string"}, {"jti", "a string"},
                  {"exp", "a number"}, {"nbf", "a number"}, {"iat", "a number"}};

static bool claim_fillable(walk_t *w, const char *path, slot_t kind, const char *op)
{
    const char *dot = strchr(path, '.');
    size_t first = dot ? (size_t)(dot - path) : strlen(path);
    if (first == 10 && memcmp(path, "changegate", 10) == 0)
        return fail(w,
                    "\"$$jwt.%s\": the changegate claim is the token's own filter and fields, "
                    "not a value",
                    path);
    for (size_t i = 0; i < sizeof registered / sizeof *registered; i++) {
        if (strlen(registered[i].name) != first || memcmp(path, registered[i].name, first) != 0)
            continue;
        if (dot)
            return fail(w, "\"$$jwt.%s\": %s is always %s (RFC 7519): it has no members", path,
                        registered[i].name, registered[i].kind);
        if (kind == SLOT_ARRAY)
            return fail(w, "\"$$jwt.%s\": %s needs an array, and %s is always %s (RFC 7519)", path,
                        op, registered[i].name, registered[i].kind);
    }
    return true;
}

static const char *kind_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* The claim at a dotted path, or NULL (refused, why filled). */
static const json_t *resolve(const json_t *claims, const char *path, cg_auth_refusal_t *why)
{
    const json_t *cur = json_is_object(claims) ? claims : NULL;
    const char *seg = path;
    for (;;) {
        const char *dot = strchr(seg, '.');
        size_t len = dot ? (size_t)(dot - seg) : strlen(seg);
        if (cur && !json_is_object(cur)) {
            refuse(why, "claim_type", "claim %.*s is %s; the auth rule needs its member %s",
                   (int)(seg - 1 - path), path, kind_of(cur), path);
            return NULL;
        }
        char name[CG_AUTH_MAX_CLAIM_PATH + 1];
        memcpy(name, seg, len);
        name[len] = '\0';
        cur = cur ? json_object_get(cur, name) : NULL;
        if (!cur || json_is_null(cur)) {
            refuse(why, "claim_missing", "the token has no claim %s, which the auth rule needs",
                   path);
            return NULL;
        }
        if (!dot)
            return cur;
        seg = dot + 1;
    }
}

/* Appends one JSON scalar (string, number, boolean) as BSON; false for
 * anything else. */
static bool append_scalar(bson_t *out, const char *key, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return bson_append_utf8(out, key, -1, json_string_value(v), (int)json_string_length(v));
    case JSON_INTEGER:
        return bson_append_int64(out, key, -1, (int64_t)json_integer_value(v));
    case JSON_REAL:
        return bson_append_double(out, key, -1, json_real_value(v));
    case JSON_TRUE:
    case JSON_FALSE:
        return bson_append_bool(out, key, -1, json_is_true(v));
    default:
        return false;
    }
}

/* Puts the value for a placeholder at key: a sample while checking, else the
 * claim's value. op names the position for messages ("equality", "$in"). */
static bool fill(walk_t *w, const char *key, const char *path, slot_t kind, const char *op,
                 bson_t *out)
{
    if (w->checking) {
        if (!claim_fillable(w, path, kind, op))
            return false;
        if (kind == SLOT_SCALAR)
            return BSON_APPEND_UTF8(out, key, "sample");
        bson_t arr;
        bson_append_array_begin(out, key, -1, &arr);
        BSON_APPEND_UTF8(&arr, "0", "sample");
        return bson_append_array_end(out, &arr);
    }
    const json_t *v = resolve(w->claims, path, w->why);
    if (!v)
        return false;
    if (kind == SLOT_SCALAR) {
        if (!append_scalar(out, key, v)) {
            refuse(w->why, "claim_type",
                   "claim %s is %s; the auth rule needs a string, number or boolean (for %s)", path,
                   kind_of(v), op);
            return false;
        }
        return true;
    }
    if (!json_is_array(v)) {
        refuse(w->why, "claim_type",
               "claim %s is %s; the auth rule needs an array of strings, numbers or booleans "
               "(for %s)",
               path, kind_of(v), op);
        return false;
    }
    bson_t arr;
    bson_append_array_begin(out, key, -1, &arr);
    size_t i;
    const json_t *e;
    json_array_foreach(v, i, e)
    {
        char buf[16];
        const char *ikey;
        bson_uint32_to_string((uint32_t)i, &ikey, buf, sizeof buf);
        /* null is refused too: {$in: [null]} would match documents without
         * the field at all */
        if (!append_scalar(&arr, ikey, e)) {
            refuse(w->why, "claim_type",
                   "claim %s holds %s; the auth rule needs an array of strings, numbers or "
                   "booleans (for %s)",
                   path, kind_of(e), op);
            bson_append_array_end(out, &arr);
            return false;
        }
    }
    return bson_append_array_end(out, &arr);
}

/* ---- the walk ---- */

static bool key_is_placeholder(const char *key)
{
    return strstr(key, PREFIX) != NULL;
}

/* Appends a value that is copied as it is, after checking it holds no
 * placeholder (in a key or a value, at any depth). `op` names the operator
 * whose argument it is, or NULL for a literal compared by equality. */
static bool no_placeholder_in(walk_t *w, const bson_iter_t *it, const char *op)
{
    const char *path, *why;
    ph_t ph = placeholder(it, &path, &why);
    if (ph == MALFORMED)
        return fail(w, "%s", why);
    if (ph == PLACEHOLDER) {
        if (op)
            return fail(w,
                        "a placeholder cannot be the argument of %s (only of equality, $eq, "
                        "$ne, $gt, $gte, $lt, $lte, $in, $nin, $all)",
                        op);
        return fail(w, "a placeholder cannot be inside a literal document or array (compare a "
                       "field with it instead: {\"a.b\": \"$$jwt.sub\"})");
    }
    if (BSON_ITER_HOLDS_DOCUMENT(it) || BSON_ITER_HOLDS_ARRAY(it)) {
        bson_iter_t child;
        if (!bson_iter_recurse(it, &child))
            return true;
        while (bson_iter_next(&child)) {
            if (key_is_placeholder(bson_iter_key(&child)))
                return fail(w, "a placeholder cannot be a field name or an operator, only a "
                               "value");
            if (!no_placeholder_in(w, &child, op))
                return false;
        }
    }
    return true;
}

static bool copy_plain(walk_t *w, const bson_iter_t *it, const char *op, bson_t *out)
{
    if (!no_placeholder_in(w, it, op))
        return false;
    return bson_append_iter(out, NULL, -1, it);
}

/* Runs a walk over the document at it into a sub-document of out. */
static bool sub_document(walk_t *w, const bson_iter_t *it, bool ops, bson_t *out)
{
    uint32_t len;
    const uint8_t *data;
    bson_iter_document(it, &len, &data);
    bson_t child;
    bson_append_document_begin(out, bson_iter_key(it), -1, &child);
    bool ok = ops ? walk_ops(w, data, len, &child) : walk_query(w, data, len, &child);
    bson_append_document_end(out, &child);
    return ok;
}

/* A document whose first key is an operator, as the matcher reads
 * {field: {...}} (and not a DBRef). */
static bool is_operator_doc(const bson_iter_t *it)
{
    bson_iter_t child;
    if (!BSON_ITER_HOLDS_DOCUMENT(it) || !bson_iter_recurse(it, &child) || !bson_iter_next(&child))
        return false;
    const char *k = bson_iter_key(&child);
    return k[0] == '$' && strcmp(k, "$ref") != 0 && strcmp(k, "$id") != 0 && strcmp(k, "$db") != 0;
}

/* $elemMatch's argument: operators on the element itself ({$gt: 1}) or a
 * query on its fields ({a: 1}, {$and: ...}), as the matcher tells them. */
static bool elem_match_is_ops(const bson_iter_t *it)
{
    static const char *const query_ops[] = {"$and",  "$or",      "$nor",  "$where",
                                            "$expr", "$comment", "$text", "$jsonSchema"};
    bson_iter_t child;
    if (!is_operator_doc(it) || !bson_iter_recurse(it, &child) || !bson_iter_next(&child))
        return false;
    for (size_t i = 0; i < sizeof query_ops / sizeof *query_ops; i++)
        if (strcmp(bson_iter_key(&child), query_ops[i]) == 0)
            return false;
    return true;
}

static bool elem_match(walk_t *w, const bson_iter_t *it, bson_t *out)
{
    if (!BSON_ITER_HOLDS_DOCUMENT(it))
        return copy_plain(w, it, "$elemMatch", out);
    return sub_document(w, it, elem_match_is_ops(it), out);
}

/* The array argument of $in, $nin, $all: each element may be a placeholder
 * for one value; $all's {$elemMatch: ...} elements are walked. */
static bool value_list(walk_t *w, const bson_iter_t *it, const char *op, bson_t *out)
{
    bson_iter_t el;
    bson_t arr;
    if (!bson_iter_recurse(it, &el))
        return copy_plain(w, it, op, out);
    bson_append_array_begin(out, bson_iter_key(it), -1, &arr);
    bool ok = true;
    while (ok && bson_iter_next(&el)) {
        const char *path, *why;
        size_t old = loc_push(w, bson_iter_key(&el));
        ph_t ph = placeholder(&el, &path, &why);
        if (ph == MALFORMED) {
            ok = fail(w, "%s", why);
        } else if (ph == PLACEHOLDER) {
            ok = fill(w, bson_iter_key(&el), path, SLOT_SCALAR, op, &arr);
        } else if (strcmp(op, "$all") == 0 && is_operator_doc(&el)) {
            bson_iter_t em;
            bson_t doc;
            bson_iter_recurse(&el, &em);
            bson_append_document_begin(&arr, bson_iter_key(&el), -1, &doc);
            while (ok && bson_iter_next(&em)) {
                if (strcmp(bson_iter_key(&em), "$elemMatch") == 0)
                    ok = elem_match(w, &em, &doc);
                else
                    ok = copy_plain(w, &em, op, &doc);
            }
            bson_append_document_end(&arr, &doc);
        } else {
            ok = copy_plain(w, &el, op, &arr);
        }
        loc_pop(w, old);
    }
    bson_append_array_end(out, &arr);
    return ok;
}

static bool one_of(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

/* {$op: arg, ...} of one field. */
static bool walk_ops(walk_t *w, const uint8_t *data, uint32_t len, bson_t *out)
{
    static const char *const one_value[] = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", NULL};
    static const char *const many_values[] = {"$in", "$nin", "$all", NULL};
    bson_iter_t it;
    if (!bson_iter_init_from_data(&it, data, len))
        return fail(w, "invalid BSON");
    bool ok = true;
    while (ok && bson_iter_next(&it)) {
        const char *op = bson_iter_key(&it), *path, *why;
        size_t old = loc_push(w, op);
        if (key_is_placeholder(op)) {
            ok = fail(w, "a placeholder cannot be an operator, only a value");
            loc_pop(w, old);
            break;
        }
        ph_t ph = placeholder(&it, &path, &why);
        if (ph == MALFORMED)
            ok = fail(w, "%s", why);
        else if (ph == PLACEHOLDER && one_of(op, one_value))
            ok = fill(w, op, path, SLOT_SCALAR, op, out);
        else if (ph == PLACEHOLDER && one_of(op, many_values))
            ok = fill(w, op, path, SLOT_ARRAY, op, out);
        else if (one_of(op, many_values) && BSON_ITER_HOLDS_ARRAY(&it))
            ok = value_list(w, &it, op, out);
        else if (strcmp(op, "$not") == 0 && BSON_ITER_HOLDS_DOCUMENT(&it))
            ok = sub_document(w, &it, true, out);
        else if (strcmp(op, "$elemMatch") == 0)
            ok = elem_match(w, &it, out);
        else
            ok = copy_plain(w, &it, one_of(op, one_value) ? NULL : op, out);
        loc_pop(w, old);
    }
    return ok;
}

/* A query document: fields and $and/$or/$nor. */
static bool walk_query(walk_t *w, const uint8_t *data, uint32_t len, bson_t *out)
{
    bson_iter_t it;
    if (!bson_iter_init_from_data(&it, data, len))
        return fail(w, "invalid BSON");
    bool ok = true;
    while (ok && bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it), *path, *why;
        size_t old = loc_push(w, key);
        if (key_is_placeholder(key)) {
            ok = fail(w, "a placeholder cannot be a field name, only a value");
            loc_pop(w, old);
            break;
        }
        if (key[0] == '$') {
            if ((strcmp(key, "$and") == 0 || strcmp(key, "$or") == 0 || strcmp(key, "$nor") == 0) &&
                BSON_ITER_HOLDS_ARRAY(&it)) {
                bson_iter_t el;
                bson_t arr;
                bson_iter_recurse(&it, &el);
                bson_append_array_begin(out, key, -1, &arr);
                while (ok && bson_iter_next(&el)) {
                    size_t o2 = loc_push(w, bson_iter_key(&el));
                    ok = BSON_ITER_HOLDS_DOCUMENT(&el) ? sub_document(w, &el, false, &arr)
                                                       : copy_plain(w, &el, key, &arr);
                    loc_pop(w, o2);
                }
                bson_append_array_end(out, &arr);
            } else {
                ok = copy_plain(w, &it, key, out); /* the matcher judges the rest */
            }
        } else {
            ph_t ph = placeholder(&it, &path, &why);
            if (ph == MALFORMED)
                ok = fail(w, "%s", why);
            else if (ph == PLACEHOLDER)
                ok = fill(w, key, path, SLOT_SCALAR, "equality", out);
            else if (is_operator_doc(&it))
                ok = sub_document(w, &it, true, out);
            else
                ok = copy_plain(w, &it, NULL, out);
        }
        loc_pop(w, old);
    }
    return ok;
}

/* ---- rules ---- */

/* {"$and": [a, b]}: how the rule and a token's filter are combined. */
static bson_t *and_of(const bson_t *a, const bson_t *b)
{
    bson_t *q = bson_new(), arr;
    bson_append_array_begin(q, "$and", -1, &arr);
    BSON_APPEND_DOCUMENT(&arr, "0", a);
    BSON_APPEND_DOCUMENT(&arr, "1", b);
    bson_append_array_end(q, &arr);
    return q;
}

cg_auth_rule_t *cg_auth_rule_new(const char *json, char *err, size_t errlen)
{
    bson_t *tmpl = cg_match_parse_json(json, strlen(json), WHAT, err, errlen);
    if (!tmpl)
        return NULL;
    walk_t w = {.checking = true, .err = err, .errlen = errlen};
    bson_t sample = BSON_INITIALIZER;
    bool ok = walk_query(&w, bson_get_data(tmpl), tmpl->len, &sample);
    if (ok) {
        cg_match_t *m = cg_match_compile(&sample, WHAT, err, errlen);
        ok = m != NULL;
        cg_match_free(m);
    }
    if (ok) {
        /* it must still compile once ANDed with a token's filter (two more
         * levels of nesting) */
        bson_t empty = BSON_INITIALIZER;
        bson_t *both = and_of(&sample, &empty);
        char inner[256];
        cg_match_t *m = cg_match_compile(both, WHAT, inner, sizeof inner);
        if (!m)
            snprintf(err, errlen, "%s: nesting deeper than %d (it is ANDed with tokens' filters)",
                     WHAT, CG_MATCH_MAX_DEPTH - 2);
        ok = m != NULL;
        cg_match_free(m);
        bson_destroy(both);
    }
    bson_destroy(&sample);
    if (!ok) {
        bson_destroy(tmpl);
        return NULL;
    }
    cg_auth_rule_t *r = bson_malloc0(sizeof *r);
    r->tmpl = tmpl;
    return r;
}

void cg_auth_rule_free(cg_auth_rule_t *r)
{
    if (!r)
        return;
    bson_destroy(r->tmpl);
    bson_free(r);
}

/* The changegate claim: NULL when absent; *bad when present but not an
 * object. */
static const json_t *changegate_claim(const json_t *claims, bool *bad)
{
    *bad = false;
    const json_t *cg = json_is_object(claims) ? json_object_get(claims, "changegate") : NULL;
    if (cg && !json_is_object(cg)) {
        *bad = true;
        return NULL;
    }
    return cg;
}

/* The token's changegate.filter as a query, or NULL (absent, or refused). */
static bson_t *token_filter(const json_t *claims, bool *refused, cg_auth_refusal_t *why)
{
    bool bad;
    const json_t *cg = changegate_claim(claims, &bad);
    if (bad) {
        refuse(why, "invalid_token_filter", "the changegate claim is not an object");
        *refused = true;
        return NULL;
    }
    const json_t *f = cg ? json_object_get(cg, "filter") : NULL;
    if (!f) /* absent; a JSON null is present, and refused below */
        return NULL;
    if (!json_is_object(f)) {
        refuse(why, "invalid_token_filter", "changegate.filter is %s, not a query object",
               kind_of(f));
        *refused = true;
        return NULL;
    }
    char *text = json_dumps(f, JSON_COMPACT);
    char err[256];
    bson_t *q =
        text ? cg_match_parse_json(text, strlen(text), "changegate.filter", err, sizeof err) : NULL;
    if (!text)
        snprintf(err, sizeof err, "changegate.filter: cannot be written as JSON");
    free(text); /* jansson's allocator */
    cg_match_t *m = q ? cg_match_compile(q, "changegate.filter", err, sizeof err) : NULL;
    if (!m) {
        if (q)
            bson_destroy(q);
        refuse(why, "invalid_token_filter", "%s", err);
        *refused = true;
        return NULL;
    }
    cg_match_free(m);
    return q;
}

bson_t *cg_auth_rule_for(const cg_auth_rule_t *r, const json_t *claims, bool *refused,
                         cg_auth_refusal_t *why)
{
    *refused = false;
    why->code[0] = why->message[0] = '\0';
    bson_t *rule = NULL;
    if (r) {
        walk_t w = {.claims = claims, .why = why};
        rule = bson_new();
        if (!walk_query(&w, bson_get_data(r->tmpl), r->tmpl->len, rule)) {
            if (!why->code[0]) /* cannot happen: the template was checked */
                refuse(why, "claim_type", "the auth rule cannot be filled from this token");
            bson_destroy(rule);
            *refused = true;
            return NULL;
        }
        if (rule->len > CG_AUTH_MAX_RULE) {
            refuse(why, "claim_too_large",
                   "the auth rule filled from this token's claims is over %d bytes",
                   CG_AUTH_MAX_RULE);
            bson_destroy(rule);
            *refused = true;
            return NULL;
        }
    }
    bson_t *filter = token_filter(claims, refused, why);
    if (*refused) {
        if (rule)
            bson_destroy(rule);
        return NULL;
    }
    if (!filter)
        return rule;
    if (!rule)
        return filter;
    bson_t *both = and_of(rule, filter);
    bson_destroy(rule);
    bson_destroy(filter);
    /* the template was checked for this nesting; the token's filter was not */
    char err[256];
    cg_match_t *m = cg_match_compile(both, "changegate.filter", err, sizeof err);
    if (!m) {
        bson_destroy(both);
        refuse(why, "invalid_token_filter", "%s", err);
        *refused = true;
        return NULL;
    }
    cg_match_free(m);
    return both;
}

/* ---- fields ---- */

static char *fields_refused(bool *refused, cg_auth_refusal_t *why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static char *fields_refused(bool *refused, cg_auth_refusal_t *why, const char *fmt, ...)
{
    snprintf(why->code, sizeof why->code, "invalid_token_fields");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why->message, sizeof why->message, fmt, ap);
    va_end(ap);
    *refused = true;
    return NULL;
}

char *cg_auth_token_fields(const json_t *claims, bool *refused, cg_auth_refusal_t *why)
{
    *refused = false;
    why->code[0] = why->message[0] = '\0';
    bool bad;
    const json_t *cg = changegate_claim(claims, &bad);
    if (bad)
        return fields_refused(refused, why, "the changegate claim is not an object");
    const json_t *f = cg ? json_object_get(cg, "fields") : NULL;
    if (!f)
        return NULL;
    bson_string_t *csv = bson_string_new("");
    if (json_is_string(f)) {
        if (strlen(json_string_value(f)) != json_string_length(f)) {
            bson_string_free(csv, true);
            return fields_refused(refused, why, "changegate.fields contains a NUL byte");
        }
        bson_string_append(csv, json_string_value(f));
    } else if (json_is_array(f)) {
        size_t i;
        const json_t *e;
        json_array_foreach(f, i, e)
        {
            const char *s = json_string_value(e);
            if (!s || strlen(s) != json_string_length(e) || strchr(s, ',')) {
                bson_string_free(csv, true);
                return fields_refused(refused, why,
                                      "changegate.fields[%zu] is not one path (a string without "
                                      "',')",
                                      i);
            }
            bson_string_append_printf(csv, "%s%s", i ? "," : "", s);
        }
    } else {
        bson_string_free(csv, true);
        return fields_refused(refused, why,
                              "changegate.fields is %s, not a string or an array of strings",
                              kind_of(f));
    }
    if (csv->len == 0) {
        bson_string_free(csv, true);
        return fields_refused(refused, why,
                              "changegate.fields is empty (for the identity fields only, give "
                              "\"_id\")");
    }
    char err[200];
    cg_project_t *p = cg_project_new(csv->str, err, sizeof err);
    if (!p) {
        bson_string_free(csv, true);
        return fields_refused(refused, why, "changegate.%s", err);
    }
    cg_project_free(p);
    return bson_string_free(csv, false);
}
