/* access.h: who may subscribe, and to what.
 *
 * With --auth jwt, every subscription (/events, /poll) carries a token: the
 * Authorization header's Bearer token, else the --jwt-cookie cookie (an
 * EventSource cannot set headers but sends cookies), else the access_token
 * query parameter (unless --access-token-param off). The token is verified
 * (jwt.c) and turned into a grant: the subscriber's rule (auth.c: --auth-rule
 * filled from the claims, ANDed with the token's own changegate.filter), the
 * most it may see (changegate.fields) and when it expires. Refusals are 401
 * (no valid token) or 403 (a valid token that cannot fill the rule), with a
 * reason code and nothing that helps an attacker beyond it.
 *
 * /healthz and /metrics need no token; --ops-access loopback (the default
 * with --auth jwt) answers them to loopback peers only.
 *
 * Transport-free: front ends pass the header values they have. Built once at
 * start from the configuration; immutable afterwards and shared by every
 * front-end thread. */
#ifndef CG_ACCESS_H
#define CG_ACCESS_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "request.h"

typedef struct cg_access cg_access_t;

/* Tokens longer than this are refused before anything else is done with them. */
#define CG_ACCESS_MAX_TOKEN 8192

/* Loads the keys and compiles the rule the configuration names. NULL with a
 * message in err when one cannot be used (the same check --check-config
 * runs). With --auth none, an access that admits everyone. */
cg_access_t *cg_access_new(const cg_config_t *cfg, char *err, size_t errlen);
void cg_access_free(cg_access_t *a);

/* What a verified token allows one subscriber. */
typedef struct cg_grant {
    bson_t *rule;       /* ANDed with the subscriber's filter, on the event's subject; or NULL */
    char *fields;       /* the most it may see (a `fields` value), or NULL */
    int64_t expires_ms; /* cg_hub_now_ms() time at which its stream ends; 0: never */
} cg_grant_t;

/* Admits a subscription or refuses it. authorization, cookie: the headers'
 * values, or NULL; query_token: the access_token parameter, or NULL. On
 * success fills *grant (clear it with cg_grant_clear()) and applies it to
 * req: the rule to its filter, the fields to its projection. On refusal sets
 * req's error (401 or 403) and returns -1. */
int cg_access_check(const cg_access_t *a, cg_request_t *req, const char *authorization,
                    const char *cookie, const char *query_token, cg_grant_t *grant);
void cg_grant_clear(cg_grant_t *g);

/* Whether requests may carry their token as ?access_token= (front ends then
 * let the parameter through: cg_request_t.access_token_ok). */
bool cg_access_query_token(const cg_access_t *a);

/* The WWW-Authenticate header's value on a 401 (RFC 6750). */
#define CG_ACCESS_CHALLENGE "Bearer realm=\"changegate\""
/* The message of the 403 for /healthz or /metrics from a peer not allowed. */
#define CG_ACCESS_OPS_REFUSED                                                                      \
    "/healthz and /metrics answer loopback peers only (--ops-access loopback)"

/* A subscriber's deadline: the earlier of its own (a poll's timeout; 0: none)
 * and its token's expiry (0: none). */
static inline int64_t cg_access_deadline(int64_t deadline_ms, int64_t expires_ms)
{
    if (!expires_ms)
        return deadline_ms;
    return deadline_ms && deadline_ms < expires_ms ? deadline_ms : expires_ms;
}

/* Whether /healthz and /metrics may be answered to a peer (NULL: unknown,
 * refused when they are limited to loopback). */
bool cg_access_ops_allowed(const cg_access_t *a, const struct sockaddr *peer);
/* The same for a peer given as text (FastCGI's REMOTE_ADDR). */
bool cg_access_ops_allowed_text(const cg_access_t *a, const char *peer);

#endif
