/* access.c: who may subscribe, and to what (see access.h). */
#include "access.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "auth.h"
#include "hub.h"
#include "jwt.h"

#define CG_ACCESS_FOREVER_S (100LL * 365 * 24 * 3600)

struct cg_access {
    bool jwt;
    cg_jwt_keys_t *keys;
    cg_jwt_policy_t policy;
    char *audience, *issuer; /* the policy points here */
    cg_auth_rule_t *rule;    /* NULL without --auth-rule */
    char *cookie;            /* --jwt-cookie, or NULL */
    bool query_token;
    bool ops_loopback_only;
};

cg_access_t *cg_access_new(const cg_config_t *cfg, char *err, size_t errlen)
{
    cg_access_t *a = bson_malloc0(sizeof *a);
    a->ops_loopback_only = cfg->ops_loopback_only;
    if (!cfg->auth_jwt)
        return a;
    a->jwt = true;
    a->keys = cg_jwt_keys_new();
    char why[512];
    if (cfg->jwt_secret_file &&
        cg_jwt_keys_add_secret_file(a->keys, cfg->jwt_secret_file, why, sizeof why) != 0) {
        snprintf(err, errlen, "--jwt-secret-file: %s", why);
        goto fail;
    }
    for (size_t i = 0; i < cfg->n_jwt_public_keys; i++) {
        if (cg_jwt_keys_add_public_key_file(a->keys, cfg->jwt_public_keys[i], why, sizeof why) !=
            0) {
            snprintf(err, errlen, "--jwt-public-key %s: %s", cfg->jwt_public_keys[i], why);
            goto fail;
        }
    }
    cg_jwt_policy_init(&a->policy);
    a->policy.algorithms = cg_jwt_keys_algorithms(a->keys);
    if (cfg->jwt_algorithms) {
        if (cg_jwt_parse_algorithms(cfg->jwt_algorithms, &a->policy.algorithms, why, sizeof why) !=
                0 ||
            cg_jwt_keys_check_algorithms(a->keys, a->policy.algorithms, why, sizeof why) != 0) {
            snprintf(err, errlen, "--jwt-algorithms: %s", why);
            goto fail;
        }
    }
    a->audience = cfg->jwt_audience ? bson_strdup(cfg->jwt_audience) : NULL;
    a->issuer = cfg->jwt_issuer ? bson_strdup(cfg->jwt_issuer) : NULL;
    a->policy.audience = a->audience;
    a->policy.issuer = a->issuer;
    a->policy.leeway_s = cfg->jwt_leeway;
    a->policy.max_bytes = CG_ACCESS_MAX_TOKEN;
    if (cfg->auth_rule) {
        a->rule = cg_auth_rule_new(cfg->auth_rule, why, sizeof why);
        if (!a->rule) {
            snprintf(err, errlen, "--auth-rule: %s", why);
            goto fail;
        }
    }
    a->cookie = cfg->jwt_cookie ? bson_strdup(cfg->jwt_cookie) : NULL;
    a->query_token = cfg->access_token_param;
    return a;
fail:
    cg_access_free(a);
    return NULL;
}

void cg_access_free(cg_access_t *a)
{
    if (!a)
        return;
    cg_jwt_keys_free(a->keys);
    cg_auth_rule_free(a->rule);
    bson_free(a->audience);
    bson_free(a->issuer);
    bson_free(a->cookie);
    bson_free(a);
}

bool cg_access_query_token(const cg_access_t *a)
{
    return a->jwt && a->query_token;
}

/* The wall clock in whole seconds, read precisely: time(2) is the coarse
 * clock, which may still say second N for a few milliseconds after the
 * issuer's clock (on this machine, say) has said N+1, and refuse a token
 * just issued there as not yet valid. */
static int64_t wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

/* The token of "Bearer <token>" (the scheme in any case), or NULL. */
static const char *bearer(const char *authorization, size_t *len)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    const char *t = authorization + 7;
    while (*t == ' ')
        t++;
    size_t n = strcspn(t, " \t");
    if (!n || t[n + strspn(t + n, " \t")] != '\0')
        return NULL;
    *len = n;
    return t;
}

/* The value of cookie `name` in a Cookie header ("a=1; name=v; b=2"), or NULL. */
static const char *cookie_value(const char *header, const char *name, size_t *len)
{
    size_t nlen = strlen(name);
    for (const char *p = header; p && *p;) {
        p += strspn(p, " \t");
        const char *end = strchr(p, ';');
        size_t plen = end ? (size_t)(end - p) : strlen(p);
        if (plen > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
            const char *v = p + nlen + 1;
            size_t vlen = plen - nlen - 1;
            while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                vlen--;
            if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
                v++;
                vlen -= 2;
            }
            *len = vlen;
            return v;
        }
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

static int refuse(cg_request_t *req, int status, const char *code, const char *message)
{
    cg_request_fail(req, status, code, "%s", message);
    req->www_authenticate = status == 401;
    return -1;
}

static const char *jwt_message(cg_jwt_rc_t rc)
{
    switch (rc) {
    case CG_JWT_TOO_LARGE:
        return "the token is too large";
    case CG_JWT_ALG_NOT_ALLOWED:
        return "the token's algorithm is not accepted";
    case CG_JWT_UNKNOWN_KEY:
        return "the token names a key this server does not have";
    case CG_JWT_BAD_SIGNATURE:
        return "the token's signature does not verify";
    case CG_JWT_EXPIRED:
        return "the token has expired; get a fresh one and reconnect with your position";
    case CG_JWT_NOT_YET_VALID:
        return "the token is not valid yet";
    case CG_JWT_WRONG_AUDIENCE:
        return "the token is for another audience";
    case CG_JWT_WRONG_ISSUER:
        return "the token is from another issuer";
    default:
        return "the token is not a well-formed JWT";
    }
}

int cg_access_check(const cg_access_t *a, cg_request_t *req, const char *authorization,
                    const char *cookie, const char *query_token, cg_grant_t *grant)
{
    memset(grant, 0, sizeof *grant);
    if (!a->jwt)
        return 0;
    size_t len = 0;
    const char *token = bearer(authorization, &len);
    if (!token && authorization)
        return refuse(req, 401, "malformed_token",
                      "the Authorization header must be \"Bearer <token>\"");
    if (!token && a->cookie && cookie) {
        token = cookie_value(cookie, a->cookie, &len);
        if (token && !len) /* an emptied cookie (a logout) */
            token = NULL;
    }
    if (!token && a->query_token && query_token && *query_token) {
        token = query_token;
        len = strlen(query_token);
    }
    if (!token) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "this server needs a token: an Authorization: Bearer header%s%s%s",
                 a->cookie ? ", the cookie " : "", a->cookie ? a->cookie : "",
                 a->query_token ? ", or an access_token parameter" : "");
        return refuse(req, 401, "token_missing", msg);
    }
    json_t *claims = NULL;
    int64_t exp = 0;
    int64_t now = wall_seconds();
    cg_jwt_rc_t rc = cg_jwt_verify(a->keys, &a->policy, token, len, now, &claims, &exp);
    if (rc != CG_JWT_OK)
        return refuse(req, 401, cg_jwt_rc_code(rc), jwt_message(rc));
    bool refused = false;
    cg_auth_refusal_t why;
    grant->rule = cg_auth_rule_for(a->rule, claims, &refused, &why);
    if (!refused)
        grant->fields = cg_auth_token_fields(claims, &refused, &why);
    json_decref(claims);
    if (refused) {
        cg_grant_clear(grant);
        return refuse(req, 403, why.code, why.message);
    }
    /* The stream ends when the token stops being admitted: at exp plus the
     * leeway (else a client told `expired` would be let in again at once).
     * Wall-clock seconds become the hub's monotonic milliseconds; an exp
     * centuries away (2^63-1, 1e300) is no expiry rather than an overflow. */
    int64_t left = exp ? exp - now : 0;
    if (exp && left < CG_ACCESS_FOREVER_S)
        grant->expires_ms = cg_hub_now_ms() + (left + (int64_t)a->policy.leeway_s) * 1000;
    if (cg_request_grant(req, grant->rule, grant->fields) != 0) {
        cg_grant_clear(grant);
        req->www_authenticate = false;
        return -1;
    }
    return 0;
}

void cg_grant_clear(cg_grant_t *g)
{
    if (g->rule)
        bson_destroy(g->rule);
    bson_free(g->fields);
    memset(g, 0, sizeof *g);
}

bool cg_access_ops_allowed(const cg_access_t *a, const struct sockaddr *peer)
{
    if (!a->ops_loopback_only)
        return true;
    if (!peer)
        return false;
    if (peer->sa_family == AF_UNIX)
        return true;
    if (peer->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)peer)->sin_addr.s_addr) >> 24) == 127;
    if (peer->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)peer)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6))
            return a6->s6_addr[12] == 127;
        return IN6_IS_ADDR_LOOPBACK(a6);
    }
    return false;
}

bool cg_access_ops_allowed_text(const cg_access_t *a, const char *peer)
{
    if (!a->ops_loopback_only)
        return true;
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
    struct sockaddr_in s4 = {.sin_family = AF_INET};
    if (peer && inet_pton(AF_INET, peer, &s4.sin_addr) == 1)
        return cg_access_ops_allowed(a, (struct sockaddr *)&s4);
    if (peer && inet_pton(AF_INET6, peer, &s6.sin6_addr) == 1)
        return cg_access_ops_allowed(a, (struct sockaddr *)&s6);
    return false;
}
