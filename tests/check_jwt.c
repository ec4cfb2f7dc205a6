/* check_jwt.c: unit tests for jwt.c (token verification).
 *
 * The keys and tokens are fixtures minted by tests/fixtures/jwt/make.py with
 * PyJWT, an independent implementation; each token's line carries the reason
 * code expected under the policy below, at the fixed time NOW, so that the
 * fixtures never expire. */
#include "jwt.h"

#include <check.h>
#include <openssl/err.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define NOW INT64_C(1700000000)
#define FAR INT64_C(4102444800)
#define MAX_TOKENS 128

static char dir[4096];
static struct {
    char *name, *expected, *token;
} tokens[MAX_TOKENS];
static size_t n_tokens;
static cg_jwt_keys_t *keys; /* hs.secret, rsa1.pem, rsa2.pem, ec1.pem */
static char err[1024];
static char tmp_path[64];

static const char *fixture(const char *name)
{
    static char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static void load_tokens(void)
{
    FILE *f = fopen(fixture("tokens.txt"), "r");
    ck_assert_msg(f != NULL, "cannot open %s", fixture("tokens.txt"));
    char line[16384];
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#')
            continue;
        line[strcspn(line, "\n")] = '\0';
        char *name = strtok(line, " "), *expected = strtok(NULL, " "), *tok = strtok(NULL, " ");
        ck_assert_msg(name && expected && tok, "bad line in tokens.txt");
        ck_assert_uint_lt(n_tokens, MAX_TOKENS);
        tokens[n_tokens].name = strdup(name);
        tokens[n_tokens].expected = strdup(expected);
        tokens[n_tokens].token = strdup(tok);
        n_tokens++;
    }
    fclose(f);
    ck_assert_uint_gt(n_tokens, 50);
}

static const char *token(const char *name)
{
    for (size_t i = 0; i < n_tokens; i++)
        if (strcmp(tokens[i].name, name) == 0)
            return tokens[i].token;
    ck_abort_msg("no token '%s' in tokens.txt", name);
    return NULL;
}

static cg_jwt_keys_t *load_keys(const char *secret, const char *const *specs)
{
    cg_jwt_keys_t *k = cg_jwt_keys_new();
    ck_assert_ptr_nonnull(k);
    if (secret)
        ck_assert_msg(cg_jwt_keys_add_secret_file(k, fixture(secret), err, sizeof err) == 0, "%s",
                      err);
    for (; specs && *specs; specs++)
        ck_assert_msg(cg_jwt_keys_add_public_key_file(k, *specs, err, sizeof err) == 0, "%s", err);
    return k;
}

static void setup(void)
{
    const char *src = getenv("CG_SRCDIR");
    snprintf(dir, sizeof dir, "%s/tests/fixtures/jwt", src ? src : ".");
    load_tokens();
    char rsa1[4200], rsa2[4200], ec1[4200];
    snprintf(rsa1, sizeof rsa1, "%s", fixture("rsa1.pem"));
    snprintf(rsa2, sizeof rsa2, "%s", fixture("rsa2.pem"));
    snprintf(ec1, sizeof ec1, "%s", fixture("ec1.pem"));
    keys = load_keys("hs.secret", (const char *const[]){rsa1, rsa2, ec1, NULL});
    err[0] = '\0';
    tmp_path[0] = '\0';
}

static void teardown(void)
{
    cg_jwt_keys_free(keys);
    for (size_t i = 0; i < n_tokens; i++) {
        free(tokens[i].name);
        free(tokens[i].expected);
        free(tokens[i].token);
    }
    n_tokens = 0;
    if (tmp_path[0])
        unlink(tmp_path);
}

/* The fixtures' policy: see the head of tokens.txt. */
static cg_jwt_policy_t policy(void)
{
    cg_jwt_policy_t p;
    cg_jwt_policy_init(&p);
    p.audience = "changegate";
    p.issuer = "https://issuer.example";
    return p;
}

static cg_jwt_rc_t verify_with(const cg_jwt_keys_t *k, const cg_jwt_policy_t *p, const char *tok,
                               size_t len, int64_t now)
{
    json_t *claims = (json_t *)1;
    int64_t exp = -1;
    cg_jwt_rc_t rc = cg_jwt_verify(k, p, tok, len, now, &claims, &exp);
    if (rc == CG_JWT_OK) {
        ck_assert(json_is_object(claims));
        json_decref(claims);
    } else {
        ck_assert_ptr_null(claims);
        ck_assert_int_eq(exp, 0);
    }
    return rc;
}

static cg_jwt_rc_t verify_str(const char *tok)
{
    cg_jwt_policy_t p = policy();
    return verify_with(keys, &p, tok, strlen(tok), NOW);
}

#define ASSERT_RC(got, want)                                                                       \
    ck_assert_msg((got) == (want), "got %s, want %s", cg_jwt_rc_code(got), cg_jwt_rc_code(want))

/* Every fixture token gives the code make.py recorded for it. */
START_TEST(test_fixture_table)
{
    int failures = 0;
    for (size_t i = 0; i < n_tokens; i++) {
        const char *got = cg_jwt_rc_code(verify_str(tokens[i].token));
        if (strcmp(got, tokens[i].expected) != 0) {
            fprintf(stderr, "%s: got %s, want %s\n", tokens[i].name, got, tokens[i].expected);
            failures++;
        }
    }
    ck_assert_int_eq(failures, 0);
}
END_TEST

START_TEST(test_valid_claims)
{
    cg_jwt_policy_t p = policy();
    const char *names[] = {"hs256",
                           "hs384",
                           "hs512",
                           "rs256_kid",
                           "rs256_nokid",
                           "rs256_rsa2_kid",
                           "rs256_rsa2_nokid",
                           "es256_kid",
                           "es256_nokid"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *t = token(names[i]);
        json_t *claims = NULL;
        int64_t exp = 0;
        cg_jwt_rc_t rc = cg_jwt_verify(keys, &p, t, strlen(t), NOW, &claims, &exp);
        ck_assert_msg(rc == CG_JWT_OK, "%s: %s", names[i], cg_jwt_rc_code(rc));
        ck_assert_str_eq(json_string_value(json_object_get(claims, "sub")), "alice");
        ck_assert_int_eq(json_array_size(json_object_get(claims, "tenants")), 2);
        ck_assert_int_eq(exp, FAR);
        ck_assert_int_eq(claims->refcount, 1);
        json_decref(claims);
    }
    /* Outputs are optional. */
    ck_assert_int_eq(
        cg_jwt_verify(keys, &p, token("hs256"), strlen(token("hs256")), NOW, NULL, NULL),
        CG_JWT_OK);
    /* NULL policy: the defaults, which refuse a token with an audience when
     * none is configured (RFC 7519 4.1.3). */
    ck_assert_int_eq(
        cg_jwt_verify(keys, NULL, token("hs256"), strlen(token("hs256")), NOW, NULL, NULL),
        CG_JWT_WRONG_AUDIENCE);
}
END_TEST

START_TEST(test_exp_output)
{
    cg_jwt_policy_t p = policy();
    struct {
        const char *name;
        int64_t exp;
    } cases[] = {{"no_exp", 0}, {"exp_real", NOW + 1}, {"exp_huge", INT64_MAX}};
    for (size_t i = 0; i < 3; i++) {
        const char *t = token(cases[i].name);
        int64_t exp = -1;
        ck_assert_int_eq(cg_jwt_verify(keys, &p, t, strlen(t), NOW, NULL, &exp), CG_JWT_OK);
        ck_assert_msg(exp == cases[i].exp, "%s: exp %lld", cases[i].name, (long long)exp);
    }
}
END_TEST

/* The token need not be NUL-terminated: only token[0..len) is read. */
START_TEST(test_length_not_nul)
{
    const char *t = token("es256_kid");
    size_t n = strlen(t);
    char *buf = malloc(n + 4);
    memcpy(buf, t, n);
    memcpy(buf + n, ".AB", 4);
    cg_jwt_policy_t p = policy();
    ASSERT_RC(verify_with(keys, &p, buf, n, NOW), CG_JWT_OK);
    ASSERT_RC(verify_with(keys, &p, buf, n + 3, NOW), CG_JWT_MALFORMED);
    free(buf);
}
END_TEST

/* exp is exclusive, nbf inclusive, both widened by the leeway. */
START_TEST(test_leeway_edges)
{
    cg_jwt_policy_t p = policy();
    const char *far = token("hs256_no_typ"); /* exp FAR */
    ASSERT_RC(verify_with(keys, &p, far, strlen(far), FAR + 29), CG_JWT_OK);
    ASSERT_RC(verify_with(keys, &p, far, strlen(far), FAR + 30), CG_JWT_EXPIRED);

    const char *expired = token("expired"); /* exp NOW - 3600 */
    size_t n = strlen(expired);
    ASSERT_RC(verify_with(keys, &p, expired, n, NOW - 3600 + 29), CG_JWT_OK);
    ASSERT_RC(verify_with(keys, &p, expired, n, NOW - 3600 + 30), CG_JWT_EXPIRED);
    p.leeway_s = 3600;
    ASSERT_RC(verify_with(keys, &p, expired, n, NOW), CG_JWT_EXPIRED);
    p.leeway_s = 3601;
    ASSERT_RC(verify_with(keys, &p, expired, n, NOW), CG_JWT_OK);

    p.leeway_s = 30;
    const char *nbf = token("nbf_future"); /* nbf NOW + 3600 */
    n = strlen(nbf);
    ASSERT_RC(verify_with(keys, &p, nbf, n, NOW + 3600 - 30), CG_JWT_OK);
    ASSERT_RC(verify_with(keys, &p, nbf, n, NOW + 3600 - 31), CG_JWT_NOT_YET_VALID);
    const char *iat = token("iat_future"); /* iat NOW + 3600 */
    ASSERT_RC(verify_with(keys, &p, iat, strlen(iat), NOW + 3600 - 30), CG_JWT_OK);
    ASSERT_RC(verify_with(keys, &p, iat, strlen(iat), NOW + 3600 - 31), CG_JWT_NOT_YET_VALID);

    p.leeway_s = 0;
    const char *ok29 = token("exp_edge_ok"); /* exp NOW - 29 */
    ASSERT_RC(verify_with(keys, &p, ok29, strlen(ok29), NOW), CG_JWT_EXPIRED);
    ASSERT_RC(verify_with(keys, &p, ok29, strlen(ok29), NOW - 30), CG_JWT_OK);
    const char *nbf30 = token("nbf_edge_ok"); /* nbf NOW + 30 */
    ASSERT_RC(verify_with(keys, &p, nbf30, strlen(nbf30), NOW), CG_JWT_NOT_YET_VALID);
    ASSERT_RC(verify_with(keys, &p, nbf30, strlen(nbf30), NOW + 30), CG_JWT_OK);

    /* Extreme clocks do not overflow. */
    p.leeway_s = 30;
    const char *hs = token("hs256");
    ASSERT_RC(verify_with(keys, &p, hs, strlen(hs), INT64_MAX), CG_JWT_EXPIRED);
    ASSERT_RC(verify_with(keys, &p, hs, strlen(hs), INT64_MIN), CG_JWT_NOT_YET_VALID);
}
END_TEST

/* Replaces the character at i with another base64url character whose two
 * low bits are zero, so the text stays canonical but decodes differently. */
static char *flipped(const char *tok, size_t i)
{
    char *t = strdup(tok);
    t[i] = t[i] == 'A' ? 'E' : 'A';
    return t;
}

START_TEST(test_flipped_bytes)
{
    const char *names[] = {"hs256",       "hs512",     "rs256_kid",
                           "rs256_nokid", "es256_kid", "es256_nokid"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *t = token(names[i]);
        const char *dot1 = strchr(t, '.'), *dot2 = strrchr(t, '.');
        size_t positions[] = {(size_t)(dot2 - t) + 1, (size_t)(dot2 - t) + 10,
                              (size_t)(dot1 - t) + 5, (size_t)(dot1 - t) + 20};
        for (size_t j = 0; j < 4; j++) {
            char *bad = flipped(t, positions[j]);
            cg_jwt_rc_t rc = verify_str(bad);
            ck_assert_msg(rc == CG_JWT_BAD_SIGNATURE, "%s, byte %zu: %s", names[i], positions[j],
                          cg_jwt_rc_code(rc));
            free(bad);
        }
    }
}
END_TEST

START_TEST(test_malformed_structure)
{
    const char *hs = token("hs256");
    size_t n = strlen(hs);
    const char *dot2 = strrchr(hs, '.');
    char buf[2048];
    const char *cases[] = {"", ".", "..", "...", "a.b", "a.b.c", "e30..", NULL};
    for (size_t i = 0; cases[i]; i++)
        ASSERT_RC(verify_str(cases[i]), CG_JWT_MALFORMED);
    ASSERT_RC(verify_with(keys, NULL, NULL, 0, NOW), CG_JWT_MALFORMED);
    /* Empty payload and signature: the signature is checked first. */
    ASSERT_RC(verify_str("eyJhbGciOiJIUzI1NiJ9.."), CG_JWT_BAD_SIGNATURE);

    /* Two segments, four segments. */
    snprintf(buf, sizeof buf, "%.*s", (int)(dot2 - hs), hs);
    ASSERT_RC(verify_str(buf), CG_JWT_MALFORMED);
    snprintf(buf, sizeof buf, "%s.", hs);
    ASSERT_RC(verify_str(buf), CG_JWT_MALFORMED);
    snprintf(buf, sizeof buf, "%s.AAAA", hs);
    ASSERT_RC(verify_str(buf), CG_JWT_MALFORMED);
    /* Whitespace, a Bearer prefix, a character outside the alphabet. */
    const char *wrap[] = {"%s\n", " %s", "%s ", "Bearer %s", "%s=", NULL};
    for (size_t i = 0; wrap[i]; i++) {
        snprintf(buf, sizeof buf, wrap[i], hs);
        ASSERT_RC(verify_str(buf), CG_JWT_MALFORMED);
    }
    const char bad_chars[] = {'+', '/', '=', '%', ' ', '\0', '\x80', '\xff'};
    for (size_t i = 0; i < sizeof bad_chars; i++) {
        memcpy(buf, hs, n);
        buf[10] = bad_chars[i];
        ASSERT_RC(verify_with(keys, NULL, buf, n, NOW), CG_JWT_MALFORMED);
        memcpy(buf, hs, n);
        buf[n - 3] = bad_chars[i];
        ASSERT_RC(verify_with(keys, NULL, buf, n, NOW), CG_JWT_MALFORMED);
    }
    /* A segment whose length is 1 mod 4 cannot be base64. */
    snprintf(buf, sizeof buf, "%sAA", hs);
    ASSERT_RC(verify_str(buf), CG_JWT_MALFORMED);
}
END_TEST

START_TEST(test_too_large)
{
    /* 1 MB that would otherwise reach the signature check: a real header and
     * signature around a huge payload. */
    const char *hs = token("hs256");
    const char *dot1 = strchr(hs, '.'), *dot2 = strrchr(hs, '.');
    size_t big = 1024 * 1024;
    char *t = malloc(big);
    memset(t, 'A', big);
    memcpy(t, hs, (size_t)(dot1 - hs) + 1);
    size_t sig_len = strlen(dot2);
    memcpy(t + big - sig_len, dot2, sig_len);
    cg_jwt_policy_t p = policy();
    ASSERT_RC(verify_with(keys, &p, t, big, NOW), CG_JWT_TOO_LARGE);

    /* The boundary: max_bytes is allowed, one more is not. */
    ASSERT_RC(verify_with(keys, &p, t, CG_JWT_DEFAULT_MAX_BYTES + 1, NOW), CG_JWT_TOO_LARGE);
    ASSERT_RC(verify_with(keys, &p, t, CG_JWT_DEFAULT_MAX_BYTES, NOW), CG_JWT_MALFORMED);
    p.max_bytes = 0; /* means the default */
    ASSERT_RC(verify_with(keys, &p, t, CG_JWT_DEFAULT_MAX_BYTES + 1, NOW), CG_JWT_TOO_LARGE);
    p.max_bytes = 100;
    ASSERT_RC(verify_with(keys, &p, hs, strlen(hs), NOW), CG_JWT_TOO_LARGE);
    p.max_bytes = strlen(hs);
    ASSERT_RC(verify_with(keys, &p, hs, strlen(hs), NOW), CG_JWT_OK);
    free(t);
}
END_TEST

START_TEST(test_algorithm_policy)
{
    cg_jwt_policy_t p = policy();
    p.algorithms = CG_JWT_RS256;
    const char *refused[] = {"hs256", "hs384", "es256_kid", "alg_none", "confusion_hs256_rsa1"};
    for (size_t i = 0; i < 5; i++) {
        const char *t = token(refused[i]);
        ASSERT_RC(verify_with(keys, &p, t, strlen(t), NOW), CG_JWT_ALG_NOT_ALLOWED);
    }
    ASSERT_RC(verify_with(keys, &p, token("rs256_kid"), strlen(token("rs256_kid")), NOW),
              CG_JWT_OK);
    /* "none" cannot be allowed even by a bitmask with every bit set. */
    p.algorithms = ~0u;
    ASSERT_RC(verify_with(keys, &p, token("alg_none"), strlen(token("alg_none")), NOW),
              CG_JWT_ALG_NOT_ALLOWED);
    ASSERT_RC(verify_with(keys, &p, token("alg_None"), strlen(token("alg_None")), NOW),
              CG_JWT_ALG_NOT_ALLOWED);
}
END_TEST

/* Algorithm confusion: an HS256 token keyed with the RSA public key's PEM is
 * never accepted, whatever the configuration. */
START_TEST(test_algorithm_confusion)
{
    char rsa1[4200];
    snprintf(rsa1, sizeof rsa1, "%s", fixture("rsa1.pem"));
    cg_jwt_keys_t *rsa_only = load_keys(NULL, (const char *const[]){rsa1, NULL});
    ck_assert_uint_eq(cg_jwt_keys_algorithms(rsa_only), CG_JWT_RS256);
    const char *names[] = {"confusion_hs256_rsa1", "confusion_hs256_rsa1_kid"};
    for (size_t i = 0; i < 2; i++) {
        const char *t = token(names[i]);
        cg_jwt_policy_t p = policy();
        /* Default allow-list: what the keys verify, so HS256 is not in it. */
        ASSERT_RC(verify_with(rsa_only, &p, t, strlen(t), NOW), CG_JWT_ALG_NOT_ALLOWED);
        /* Allowed by a careless allow-list: still no secret to verify with. */
        p.algorithms = CG_JWT_HS256 | CG_JWT_RS256;
        ASSERT_RC(verify_with(rsa_only, &p, t, strlen(t), NOW), CG_JWT_UNKNOWN_KEY);
        p.algorithms = CG_JWT_ALL_ALGORITHMS;
        ASSERT_RC(verify_with(rsa_only, &p, t, strlen(t), NOW), CG_JWT_UNKNOWN_KEY);
        /* With a secret loaded too: the secret is used, and it differs. */
        ASSERT_RC(verify_with(keys, &p, t, strlen(t), NOW), CG_JWT_BAD_SIGNATURE);
    }
    cg_jwt_keys_free(rsa_only);
}
END_TEST

START_TEST(test_audience_issuer_policy)
{
    cg_jwt_policy_t p = policy();
    p.audience = NULL;
    ASSERT_RC(verify_with(keys, &p, token("hs256"), strlen(token("hs256")), NOW),
              CG_JWT_WRONG_AUDIENCE);
    ASSERT_RC(verify_with(keys, &p, token("aud_absent"), strlen(token("aud_absent")), NOW),
              CG_JWT_OK);
    p.audience = "other";
    ASSERT_RC(verify_with(keys, &p, token("aud_array_ok"), strlen(token("aud_array_ok")), NOW),
              CG_JWT_OK);
    ASSERT_RC(verify_with(keys, &p, token("aud_wrong"), strlen(token("aud_wrong")), NOW),
              CG_JWT_OK);
    p.audience = "changegate";
    p.issuer = NULL;
    ASSERT_RC(verify_with(keys, &p, token("iss_wrong"), strlen(token("iss_wrong")), NOW),
              CG_JWT_OK);
    ASSERT_RC(verify_with(keys, &p, token("iss_absent"), strlen(token("iss_absent")), NOW),
              CG_JWT_OK);
    p.issuer = "https://issuer.example/"; /* exact: a trailing slash differs */
    ASSERT_RC(verify_with(keys, &p, token("hs256"), strlen(token("hs256")), NOW),
              CG_JWT_WRONG_ISSUER);
}
END_TEST

/* Writes bytes to a fresh temp file (removed by teardown). */
static const char *write_tmp(const void *data, size_t n)
{
    if (tmp_path[0])
        unlink(tmp_path);
    strcpy(tmp_path, "/tmp/check_jwt_XXXXXX");
    int fd = mkstemp(tmp_path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, n), (ssize_t)n);
    close(fd);
    return tmp_path;
}

static int add_secret(cg_jwt_keys_t *k, const char *text, size_t n)
{
    err[0] = '\0';
    return cg_jwt_keys_add_secret_file(k, write_tmp(text, n), err, sizeof err);
}

START_TEST(test_secret_file)
{
    const char *s32 = "0123456789abcdef0123456789abcdef";
    struct {
        const char *text;
        size_t n;
        int rc;
        unsigned algs;
        const char *needle;
    } cases[] = {
        {s32, 32, 0, CG_JWT_HS256, NULL},
        {"0123456789abcdef0123456789abcdef\n", 33, 0, CG_JWT_HS256, NULL},
        {"0123456789abcdef0123456789abcdef\r\n", 34, 0, CG_JWT_HS256, NULL},
        {"0123456789abcdef0123456789abcde\n", 32, -1, 0, "31 bytes"},
        {"0123456789abcdef0123456789abcde\n\n", 33, 0, CG_JWT_HS256, NULL}, /* one \n removed */
        {"short\n", 6, -1, 0, "RFC 7518"},
        {"", 0, -1, 0, "empty"},
        {"\n", 1, -1, 0, "empty"},
        {"\r\n", 2, -1, 0, "empty"},
        {"0123456789abcdef0123456789abcdef0123456789abcdef", 48, 0, CG_JWT_HS256 | CG_JWT_HS384,
         NULL},
        {"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", 64, 0,
         CG_JWT_HS256 | CG_JWT_HS384 | CG_JWT_HS512, NULL},
        /* Binary secrets are bytes, NUL included. */
        {"\0\1\2\3\4\5\6\7\0\1\2\3\4\5\6\7\0\1\2\3\4\5\6\7\0\1\2\3\4\5\6\7", 32, 0, CG_JWT_HS256,
         NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cg_jwt_keys_t *k = cg_jwt_keys_new();
        int rc = add_secret(k, cases[i].text, cases[i].n);
        ck_assert_msg(rc == cases[i].rc, "case %zu: rc %d (%s)", i, rc, err);
        ck_assert_uint_eq(cg_jwt_keys_algorithms(k), cases[i].algs);
        if (cases[i].needle)
            ck_assert_msg(strstr(err, cases[i].needle), "case %zu: '%s' not in: %s", i,
                          cases[i].needle, err);
        cg_jwt_keys_free(k);
    }

    cg_jwt_keys_t *k = cg_jwt_keys_new();
    ck_assert_int_eq(add_secret(k, s32, 32), 0);
    ck_assert_int_eq(add_secret(k, s32, 32), -1);
    ck_assert_ptr_nonnull(strstr(err, "only one"));
    cg_jwt_keys_free(k);

    k = cg_jwt_keys_new();
    ck_assert_int_eq(cg_jwt_keys_add_secret_file(k, "/nonexistent/secret", err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/secret: cannot read"));
    char *huge = malloc(64 * 1024 + 1);
    memset(huge, 'x', 64 * 1024 + 1);
    ck_assert_int_eq(add_secret(k, huge, 64 * 1024 + 1), -1);
    ck_assert_ptr_nonnull(strstr(err, "larger than"));
    ck_assert_int_eq(add_secret(k, huge, 64 * 1024), 0);
    free(huge);
    cg_jwt_keys_free(k);
}
END_TEST

/* A secret shorter than the hash is not used for that hash. */
START_TEST(test_short_secret_for_hs384)
{
    cg_jwt_keys_t *k = cg_jwt_keys_new();
    /* The fixtures' secret cut to 40 bytes: the HS384 token cannot verify. */
    FILE *f = fopen(fixture("hs.secret"), "rb");
    char s[80];
    ck_assert_uint_eq(fread(s, 1, 40, f), 40);
    fclose(f);
    ck_assert_int_eq(add_secret(k, s, 40), 0);
    cg_jwt_policy_t p = policy();
    const char *t = token("hs384");
    ASSERT_RC(verify_with(k, &p, t, strlen(t), NOW), CG_JWT_ALG_NOT_ALLOWED);
    p.algorithms = CG_JWT_HS256 | CG_JWT_HS384;
    ASSERT_RC(verify_with(k, &p, t, strlen(t), NOW), CG_JWT_UNKNOWN_KEY);
    ck_assert_int_eq(cg_jwt_keys_check_algorithms(k, p.algorithms, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "HS384") && strstr(err, "40 bytes") && strstr(err, "48"), "%s", err);
    ck_assert_int_eq(cg_jwt_keys_check_algorithms(k, CG_JWT_HS256, err, sizeof err), 0);
    ck_assert_int_eq(cg_jwt_keys_check_algorithms(k, CG_JWT_ES256, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "P-256"));
    cg_jwt_keys_free(k);
}
END_TEST

static int add_key(cg_jwt_keys_t *k, const char *fmt, const char *name)
{
    char spec[4300];
    snprintf(spec, sizeof spec, fmt, fixture(name));
    err[0] = '\0';
    return cg_jwt_keys_add_public_key_file(k, spec, err, sizeof err);
}

START_TEST(test_public_key_files)
{
    cg_jwt_policy_t p = policy();
    const char *kid = token("rs256_kid"), *nokid = token("rs256_nokid");

    /* The id is the file name without directory and extension. */
    cg_jwt_keys_t *k = cg_jwt_keys_new();
    ck_assert_int_eq(add_key(k, "%s", "rsa1.pem"), 0);
    ASSERT_RC(verify_with(k, &p, kid, strlen(kid), NOW), CG_JWT_OK);
    ck_assert_int_eq(add_key(k, "%s", "rsa1.pem"), -1);
    ck_assert_msg(strstr(err, "'rsa1' is already used"), "%s", err);
    ck_assert_int_eq(add_key(k, "rsa1=%s", "rsa2.pem"), -1);
    cg_jwt_keys_free(k);

    /* KID= overrides it. */
    k = cg_jwt_keys_new();
    ck_assert_int_eq(add_key(k, "2024-06=%s", "rsa1.pem"), 0);
    ASSERT_RC(verify_with(k, &p, kid, strlen(kid), NOW), CG_JWT_UNKNOWN_KEY);
    ASSERT_RC(verify_with(k, &p, nokid, strlen(nokid), NOW), CG_JWT_OK);
    ck_assert_int_eq(add_key(k, "2024-06=%s", "rsa2.pem"), -1);
    ck_assert_int_eq(cg_jwt_keys_add_public_key_file(k, "x=", err, sizeof err), -1);
    ck_assert_msg(strstr(err, "no file name"), "%s", err);
    cg_jwt_keys_free(k);

    /* A certificate's key, and PKCS#1. */
    const char *other[] = {"rsa1.crt", "rsa1.pkcs1.pem"};
    for (size_t i = 0; i < 2; i++) {
        k = cg_jwt_keys_new();
        ck_assert_msg(add_key(k, "rsa1=%s", other[i]) == 0, "%s", err);
        ASSERT_RC(verify_with(k, &p, kid, strlen(kid), NOW), CG_JWT_OK);
        ASSERT_RC(verify_with(k, &p, nokid, strlen(nokid), NOW), CG_JWT_OK);
        ASSERT_RC(
            verify_with(k, &p, token("rs256_rsa2_nokid"), strlen(token("rs256_rsa2_nokid")), NOW),
            CG_JWT_BAD_SIGNATURE);
        cg_jwt_keys_free(k);
    }

    /* Refused keys, with the reason. */
    struct {
        const char *file, *needle;
    } refused[] = {{"rsa1024.pem", "1024 bits; RS256 needs at least 2048"},
                   {"ec384.pem", "secp384r1; ES256 needs P-256"},
                   {"ed25519.pem", "only RSA (RS256) and EC P-256 (ES256)"},
                   {"hs.secret", "no PEM public key"},
                   {"missing.pem", "cannot read"}};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        k = cg_jwt_keys_new();
        ck_assert_int_eq(add_key(k, "%s", refused[i].file), -1);
        ck_assert_msg(strstr(err, refused[i].needle), "%s: '%s' not in: %s", refused[i].file,
                      refused[i].needle, err);
        ck_assert_uint_eq(cg_jwt_keys_algorithms(k), 0);
        cg_jwt_keys_free(k);
    }

    k = cg_jwt_keys_new();
    const char *priv = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    ck_assert_int_eq(
        cg_jwt_keys_add_public_key_file(k, write_tmp(priv, strlen(priv)), err, sizeof err), -1);
    ck_assert_msg(strstr(err, "is a private key"), "%s", err);
    const char *junk = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    ck_assert_int_eq(
        cg_jwt_keys_add_public_key_file(k, write_tmp(junk, strlen(junk)), err, sizeof err), -1);
    ck_assert_msg(strstr(err, "cannot be decoded"), "%s", err);
    cg_jwt_keys_free(k);
    /* Nothing failed loading leaves errors behind on OpenSSL's queue. */
    ck_assert_uint_eq(ERR_peek_error(), 0);
}
END_TEST

START_TEST(test_parse_algorithms)
{
    unsigned algs = 0;
    ck_assert_int_eq(cg_jwt_parse_algorithms("HS256,RS256", &algs, err, sizeof err), 0);
    ck_assert_uint_eq(algs, CG_JWT_HS256 | CG_JWT_RS256);
    ck_assert_int_eq(cg_jwt_parse_algorithms(" hs512 , ES256,HS384", &algs, err, sizeof err), 0);
    ck_assert_uint_eq(algs, CG_JWT_HS512 | CG_JWT_ES256 | CG_JWT_HS384);
    ck_assert_int_eq(cg_jwt_parse_algorithms("RS256", &algs, err, sizeof err), 0);
    ck_assert_uint_eq(algs, CG_JWT_RS256);

    struct {
        const char *csv, *needle;
    } bad[] = {{"none", "never allowed"},    {"HS256,None", "never allowed"},
               {"", "empty entry"},          {"HS256,,RS256", "empty entry"},
               {"HS256,", "empty entry"},    {"PS256", "unknown JWT algorithm 'PS256'"},
               {"RS512", "supported: HS256"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        algs = 99;
        ck_assert_int_eq(cg_jwt_parse_algorithms(bad[i].csv, &algs, err, sizeof err), -1);
        ck_assert_msg(strstr(err, bad[i].needle), "'%s': '%s' not in: %s", bad[i].csv,
                      bad[i].needle, err);
        ck_assert_uint_eq(algs, 99);
    }
    ck_assert_uint_eq(cg_jwt_keys_algorithms(keys), CG_JWT_ALL_ALGORITHMS);
    ck_assert_int_eq(cg_jwt_keys_check_algorithms(keys, CG_JWT_ALL_ALGORITHMS, err, sizeof err), 0);
    cg_jwt_keys_t *empty = cg_jwt_keys_new();
    ck_assert_int_eq(cg_jwt_keys_check_algorithms(empty, CG_JWT_RS256, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "no RSA public key"));
    ck_assert_int_eq(cg_jwt_keys_check_algorithms(empty, CG_JWT_HS512, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "no HMAC secret"));
    /* No keys at all: every token is refused. */
    const char *t = token("hs256");
    ASSERT_RC(verify_with(empty, NULL, t, strlen(t), NOW), CG_JWT_ALG_NOT_ALLOWED);
    cg_jwt_keys_free(empty);
}
END_TEST

START_TEST(test_rc_codes)
{
    const char *codes[] = {"ok",
                           "malformed_token",
                           "token_too_large",
                           "algorithm_not_allowed",
                           "unknown_key",
                           "bad_signature",
                           "token_expired",
                           "token_not_yet_valid",
                           "wrong_audience",
                           "wrong_issuer"};
    for (int i = CG_JWT_OK; i <= CG_JWT_WRONG_ISSUER; i++)
        ck_assert_str_eq(cg_jwt_rc_code((cg_jwt_rc_t)i), codes[i]);
}
END_TEST

/* A failed verification leaves nothing on OpenSSL's per-thread error queue,
 * where the next TLS call on the thread would find it. */
START_TEST(test_error_queue_clean)
{
    ERR_clear_error();
    const char *names[] = {"rs256_tampered", "rs256_kid_mismatch", "es256_der",
                           "es256_zero",     "es256_short",        "hs256_wrong_secret"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        ASSERT_RC(verify_str(token(names[i])), CG_JWT_BAD_SIGNATURE);
        ck_assert_msg(ERR_peek_error() == 0, "%s left an OpenSSL error", names[i]);
    }
}
END_TEST

static void *verify_many(void *arg)
{
    const char *const *names = arg;
    cg_jwt_policy_t p = policy();
    long failures = 0;
    for (int round = 0; round < 200; round++)
        for (size_t i = 0; names[i]; i++) {
            const char *t = token(names[i]);
            cg_jwt_rc_t want =
                strcmp(names[i], "rs256_kid_mismatch") == 0 ? CG_JWT_BAD_SIGNATURE : CG_JWT_OK;
            failures += cg_jwt_verify(keys, &p, t, strlen(t), NOW, NULL, NULL) != want;
        }
    return (void *)failures;
}

/* One key set, verified from several threads at once. */
START_TEST(test_threads)
{
    const char *names[] = {"hs256",       "rs256_kid",          "rs256_rsa2_nokid",
                           "es256_nokid", "rs256_kid_mismatch", NULL};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, verify_many, names), 0);
    for (int i = 0; i < 4; i++) {
        void *failures;
        pthread_join(th[i], &failures);
        ck_assert_ptr_null(failures);
    }
}
END_TEST

static Suite *jwt_suite(void)
{
    Suite *s = suite_create("jwt");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_fixture_table);
    tcase_add_test(tc, test_valid_claims);
    tcase_add_test(tc, test_exp_output);
    tcase_add_test(tc, test_length_not_nul);
    tcase_add_test(tc, test_leeway_edges);
    tcase_add_test(tc, test_flipped_bytes);
    tcase_add_test(tc, test_malformed_structure);
    tcase_add_test(tc, test_too_large);
    tcase_add_test(tc, test_algorithm_policy);
    tcase_add_test(tc, test_algorithm_confusion);
    tcase_add_test(tc, test_audience_issuer_policy);
    tcase_add_test(tc, test_secret_file);
    tcase_add_test(tc, test_short_secret_for_hs384);
    tcase_add_test(tc, test_public_key_files);
    tcase_add_test(tc, test_parse_algorithms);
    tcase_add_test(tc, test_rc_codes);
    tcase_add_test(tc, test_error_queue_clean);
    tcase_add_test(tc, test_threads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(jwt_suite());
}
