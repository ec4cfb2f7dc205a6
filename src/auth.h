/* auth.h: what one verified token may see (issue 7), transport-free.
 *
 * An auth rule (--auth-rule) is a MongoDB query over the change event, in
 * the language of the `filter` parameter, whose string values
 * "$$jwt.<claim path>" are placeholders filled from a verified token's
 * claims: {"fullDocument.owner_id": "$$jwt.sub"},
 * {"fullDocument.tenant": {"$in": "$$jwt.org.tenants"}}. The rule made for a
 * token is ANDed with every filter of that token's subscriptions
 * (cg_filter_set_rule) and evaluated on the document the event is about
 * (cg_event_subject), so deletes reach their owner and no one else.
 *
 * A placeholder is a whole string value, "$$jwt." followed by a dotted path
 * of non-empty segments into the claims (objects only). It may stand where
 * one value is compared (implicit equality, $eq $ne $gt $gte $lt $lte, or an
 * element of an $in/$nin/$all array: filled with a string, number or
 * boolean) or for a whole $in/$nin/$all array (filled with an array of
 * those). Anywhere else (a field name, an operator, inside a literal
 * document or array, the argument of $regex, $size, ...) it is refused when
 * the rule is made, so a token can never leave one unfilled.
 *
 * Tokens may narrow themselves: a "changegate" claim with a "filter" (a
 * query, ANDed with the rule) and "fields" (the most the token may see; see
 * cg_project_restrict). jwt.c verifies tokens; front ends turn refusals into
 * 403 answers with the code. */
#ifndef CG_AUTH_H
#define CG_AUTH_H

#include <bson/bson.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define CG_AUTH_MAX_CLAIM_PATH 256   /* bytes of a placeholder's claim path */
#define CG_AUTH_MAX_RULE (64 * 1024) /* bytes (BSON) of a rule filled from a token */

typedef struct cg_auth_rule cg_auth_rule_t;

/* Checks and keeps a rule template (JSON text of at most CG_MATCH_MAX_JSON
 * bytes). At start-up and by --check-config: the JSON parses; every
 * placeholder is well formed and in a value position; no placeholder names a
 * claim that tokens cannot fill (a member of a registered claim that RFC 7519
 * makes a string or a number, such as "$$jwt.sub.x"; an array wanted from one
 * of those, such as {"$in": "$$jwt.sub"}; the token's own "changegate"
 * claim); and the template compiles as a query, also once ANDed with a
 * token's filter, when each placeholder is replaced by a value of the kind
 * it takes. NULL with err ("auth-rule.fullDocument.owner: ...") otherwise. */
cg_auth_rule_t *cg_auth_rule_new(const char *json, char *err, size_t errlen);
void cg_auth_rule_free(cg_auth_rule_t *r);

/* Why a token is refused: code is one of
 *   claim_missing         a placeholder's claim is absent or null
 *   claim_type            a claim of the wrong kind (an object, an array
 *                         where one value is needed, not an array of
 *                         strings/numbers/booleans where $in needs one)
 *   claim_too_large       the filled rule is over CG_AUTH_MAX_RULE bytes
 *   invalid_token_filter  the changegate claim is not an object, or its
 *                         filter is not an object, not a valid query, or
 *                         over the filter limits
 *   invalid_token_fields  (cg_auth_token_fields) changegate.fields malformed
 * and message says it for the client (claim names, never claim values). */
typedef struct cg_auth_refusal {
    char code[32];
    char message[256];
} cg_auth_refusal_t;

/* The query for one verified token: the rule (may be NULL) with its
 * placeholders filled from claims (integers as int64, reals as double,
 * strings, booleans), ANDed with the token's changegate.filter when present.
 * Returns a new query (bson_destroy()); NULL with *refused false only when
 * there is no rule and no token filter (no restriction); NULL with *refused
 * true and why filled when the token cannot be given a rule. Never a query
 * that matches everything because a claim was missing. */
bson_t *cg_auth_rule_for(const cg_auth_rule_t *r, const json_t *claims, bool *refused,
                         cg_auth_refusal_t *why);

/* The token's "changegate": {"fields": "a,b"} or {"fields": ["a", "b"]}: the
 * most it may see, as a field list for cg_project_new() (checked by it; a new
 * string, bson_free()); NULL when absent, or with *refused true and why
 * (invalid_token_fields) when malformed or empty. */
char *cg_auth_token_fields(const json_t *claims, bool *refused, cg_auth_refusal_t *why);

#endif
