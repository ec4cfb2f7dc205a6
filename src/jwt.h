/* jwt.h: JSON Web Tokens (RFC 7519, JWS compact form) verified with OpenSSL.
 *
 * Only what changegate needs to admit a bearer token: HS256/384/512 with one
 * shared secret, RS256 and ES256 with PEM public keys (several, chosen by
 * "kid", for rotation). No encryption (JWE), no JSON serialization, no nested
 * tokens, no JWS extensions ("crit" is refused), and keys are never taken from
 * the token itself ("jwk", "jku", "x5u", "x5c" are ignored).
 *
 * How the open points are settled:
 *   - "alg" is case-sensitive (RFC 7515 4.1.1) and must be in the policy's
 *     allow-list; "none" can never be allowed (cg_jwt_parse_algorithms()
 *     refuses it, and cg_jwt_verify() has no code path for it).
 *   - Each algorithm family verifies only with its own kind of key: HS* with
 *     the secret, RS256 with RSA keys, ES256 with P-256 keys. This is what
 *     stops algorithm confusion (an HS256 token "signed" with a public key's
 *     PEM text as the secret).
 *   - "kid" matters for RS256/ES256 only (there is one secret): it selects the
 *     public key with that id, an id no key has is unknown_key (never a
 *     fallback to the other keys), and an id naming a key of the other type is
 *     algorithm_not_allowed. Without "kid" each key of the right type is tried.
 *   - Nesting deeper than CG_JWT_MAX_DEPTH in the header or the payload is
 *     malformed, so that whatever walks the claims later recurses boundedly
 *     (jansson's own parser stops at 2048).
 *   - An absent "exp" means the token does not expire: RFC 7519 makes every
 *     claim optional. The front end decides whether to warn or refuse.
 *   - A present "aud" must name the configured audience, and a token with an
 *     "aud" is refused when no audience is configured (RFC 7519 4.1.3: the
 *     recipient MUST reject a token whose audience it is not in).
 *   - "iat" later than now (beyond the leeway) is not yet valid, as PyJWT does.
 *
 * The module never logs, so neither tokens nor claims reach a log from here;
 * error messages name files and reasons, never token contents.
 *
 * Threads: a cg_jwt_keys_t is filled at start-up, then only read; any number
 * of threads may call cg_jwt_verify() with it at once. */
#ifndef CG_JWT_H
#define CG_JWT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define CG_JWT_DEFAULT_LEEWAY_S 30
#define CG_JWT_DEFAULT_MAX_BYTES 8192
#define CG_JWT_MIN_SECRET 32     /* bytes; RFC 7518 3.2: at least the hash size */
#define CG_JWT_MIN_RSA_BITS 2048 /* RFC 7518 3.3 */
#define CG_JWT_MAX_DEPTH 64      /* nesting of objects/arrays in a header or payload */

typedef struct cg_jwt_keys cg_jwt_keys_t; /* owned by the caller; immutable once loaded;
                                             shareable across threads */

/* Returns NULL only when OpenSSL cannot provide SHA-256/384/512. */
cg_jwt_keys_t *cg_jwt_keys_new(void);
void cg_jwt_keys_free(cg_jwt_keys_t *k);

/* --jwt-secret-file FILE: the HMAC secret is the file's bytes, one trailing
 * "\n" (or "\r\n") removed. Refuses an empty secret, one shorter than
 * CG_JWT_MIN_SECRET bytes, a file over 64 KiB, and a second secret file. */
int cg_jwt_keys_add_secret_file(cg_jwt_keys_t *k, const char *path, char *err, size_t errlen);

/* --jwt-public-key [KID=]FILE: a PEM public key ("PUBLIC KEY", or PKCS#1
 * "RSA PUBLIC KEY"), or the key of the first PEM certificate in FILE: RSA of at
 * least CG_JWT_MIN_RSA_BITS for RS256, EC P-256 for ES256. Private keys are
 * refused (the gateway needs only the public half). Repeatable for rotation;
 * ids must be unique. KID= is recognised when the text before the first '='
 * is not empty and has no '/' (write ./a=b.pem for a file named a=b.pem);
 * without it the id is the file name without directory and extension
 * ("/etc/changegate/2024-06.pem" -> "2024-06"). */
int cg_jwt_keys_add_public_key_file(cg_jwt_keys_t *k, const char *spec, char *err, size_t errlen);

typedef enum {
    CG_JWT_HS256 = 1,
    CG_JWT_HS384 = 2,
    CG_JWT_HS512 = 4,
    CG_JWT_RS256 = 8,
    CG_JWT_ES256 = 16
} cg_jwt_alg_t;
#define CG_JWT_ALL_ALGORITHMS 31u

/* The algorithms the loaded keys can verify: HS256 with a secret (HS384 and
 * HS512 only when the secret is at least 48 and 64 bytes, RFC 7518 3.2),
 * RS256 with an RSA key, ES256 with a P-256 key. The default allow-list. */
unsigned cg_jwt_keys_algorithms(const cg_jwt_keys_t *k);

/* "HS256,RS256" -> bitmask (names case-insensitive, spaces around names
 * allowed); -1 with err on an empty list or entry, an unknown name, or "none". */
int cg_jwt_parse_algorithms(const char *csv, unsigned *out, char *err, size_t errlen);

/* For --check-config: -1 with err naming the first allowed algorithm that no
 * loaded key can verify (such tokens could only ever be refused). */
int cg_jwt_keys_check_algorithms(const cg_jwt_keys_t *k, unsigned algorithms, char *err,
                                 size_t errlen);

typedef struct cg_jwt_policy {
    unsigned algorithms;  /* allowed: bitmask; 0 = cg_jwt_keys_algorithms() */
    const char *audience; /* required "aud" (string or array containing it), or NULL */
    const char *issuer;   /* required "iss" (exact), or NULL (then not checked) */
    unsigned leeway_s;    /* for exp/nbf/iat */
    size_t max_bytes;     /* tokens longer are refused before any parsing; 0 = default */
} cg_jwt_policy_t;

/* algorithms 0, no audience or issuer, CG_JWT_DEFAULT_LEEWAY_S,
 * CG_JWT_DEFAULT_MAX_BYTES. */
void cg_jwt_policy_init(cg_jwt_policy_t *p);

typedef enum {
    CG_JWT_OK = 0,
    CG_JWT_MALFORMED,
    CG_JWT_TOO_LARGE,
    CG_JWT_ALG_NOT_ALLOWED,
    CG_JWT_UNKNOWN_KEY,
    CG_JWT_BAD_SIGNATURE,
    CG_JWT_EXPIRED,
    CG_JWT_NOT_YET_VALID,
    CG_JWT_WRONG_AUDIENCE,
    CG_JWT_WRONG_ISSUER
} cg_jwt_rc_t;

/* Verifies token[0..len) at time now_s (seconds since the epoch); p NULL means
 * the defaults of cg_jwt_policy_init(). The signature is checked before the
 * payload is parsed, so unsigned input reaches only the header's JSON parser.
 * On CG_JWT_OK, *claims is the payload object (a new reference: json_decref
 * it) and *exp the "exp" claim rounded up to whole seconds (0 when absent);
 * otherwise *claims is NULL and *exp 0. claims and exp may be NULL. */
cg_jwt_rc_t cg_jwt_verify(const cg_jwt_keys_t *k, const cg_jwt_policy_t *p, const char *token,
                          size_t len, int64_t now_s, json_t **claims, int64_t *exp);

/* The reason code for a 401 body: "malformed_token", "token_too_large",
 * "algorithm_not_allowed", "unknown_key", "bad_signature", "token_expired",
 * "token_not_yet_valid", "wrong_audience", "wrong_issuer" ("ok" for
 * CG_JWT_OK). */
const char *cg_jwt_rc_code(cg_jwt_rc_t rc);

#endif
