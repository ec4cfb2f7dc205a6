/* jwt.c: JWT verification (see jwt.h for what is accepted and why). */
#include "jwt.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#define SECRET_FILE_MAX (64 * 1024)
#define KEY_FILE_MAX (1024 * 1024) /* a certificate chain, generously */

typedef struct pubkey {
    char *kid;
    EVP_PKEY *pkey;
    unsigned alg; /* CG_JWT_RS256 or CG_JWT_ES256: what this key verifies */
} pubkey_t;

struct cg_jwt_keys {
    unsigned char *secret;
    size_t secret_len;
    pubkey_t *keys;
    size_t n_keys;
    /* Fetched once: passing EVP_sha256() makes OpenSSL 3 fetch the
     * implementation again on every verification, under a global lock. */
    EVP_MD *sha256, *sha384, *sha512;
};

static const struct {
    const char *name;
    unsigned alg;
} alg_names[] = {{"HS256", CG_JWT_HS256},
                 {"HS384", CG_JWT_HS384},
                 {"HS512", CG_JWT_HS512},
                 {"RS256", CG_JWT_RS256},
                 {"ES256", CG_JWT_ES256}};
#define N_ALGS (sizeof alg_names / sizeof alg_names[0])

/* ---- keys ---- */

cg_jwt_keys_t *cg_jwt_keys_new(void)
{
    cg_jwt_keys_t *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    k->sha384 = EVP_MD_fetch(NULL, "SHA384", NULL);
    k->sha512 = EVP_MD_fetch(NULL, "SHA512", NULL);
    if (!k->sha256 || !k->sha384 || !k->sha512) {
        cg_jwt_keys_free(k);
        ERR_clear_error();
        return NULL;
    }
    return k;
}

void cg_jwt_keys_free(cg_jwt_keys_t *k)
{
    if (!k)
        return;
    if (k->secret)
        OPENSSL_cleanse(k->secret, k->secret_len);
    free(k->secret);
    for (size_t i = 0; i < k->n_keys; i++) {
        free(k->keys[i].kid);
        EVP_PKEY_free(k->keys[i].pkey);
    }
    free(k->keys);
    EVP_MD_free(k->sha256);
    EVP_MD_free(k->sha384);
    EVP_MD_free(k->sha512);
    free(k);
}

/* Reads a whole file of at most max bytes into a malloc'd buffer. */
static int read_file(const char *path, size_t max, unsigned char **out, size_t *len, char *err,
                     size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    unsigned char *buf = malloc(max + 1);
    if (!buf) {
        fclose(f);
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    /* One byte more than allowed tells "too large" from "exactly max". */
    size_t n = fread(buf, 1, max + 1, f);
    int failed = ferror(f);
    int saved = errno;
    fclose(f);
    if (failed) {
        free(buf);
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(saved));
        return -1;
    }
    if (n > max) {
        free(buf);
        snprintf(err, errlen, "%s: larger than %zu KiB", path, max / 1024);
        return -1;
    }
    *out = buf;
    *len = n;
    return 0;
}

int cg_jwt_keys_add_secret_file(cg_jwt_keys_t *k, const char *path, char *err, size_t errlen)
{
    if (k->secret) {
        snprintf(err, errlen, "%s: only one HMAC secret file can be given", path);
        return -1;
    }
    unsigned char *buf;
    size_t n;
    if (read_file(path, SECRET_FILE_MAX, &buf, &n, err, errlen) != 0)
        return -1;
    /* Editors and `echo` add a newline that is not meant as part of the
     * secret; exactly one is removed so that a secret may still end in
     * whitespace on purpose. */
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
        if (n > 0 && buf[n - 1] == '\r')
            n--;
    }
    if (n < CG_JWT_MIN_SECRET) {
        if (n == 0)
            snprintf(err, errlen, "%s: the HMAC secret is empty", path);
        else
            snprintf(err, errlen,
                     "%s: the HMAC secret is %zu bytes; it must be at least %d (RFC 7518 "
                     "section 3.2: a key at least as long as the hash, 32 bytes for HS256)",
                     path, n, CG_JWT_MIN_SECRET);
        OPENSSL_cleanse(buf, n);
        free(buf);
        return -1;
    }
    k->secret = buf;
    k->secret_len = n;
    return 0;
}

/* Decodes the first key-bearing PEM block of text: a public key (SPKI or
 * PKCS#1) or a certificate. Private keys are refused rather than reduced to
 * their public half, so that a misplaced private key is noticed. */
static EVP_PKEY *decode_pem_key(const char *path, const unsigned char *text, size_t n, char *err,
                                size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(text, (int)n);
    if (!bio) {
        snprintf(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    EVP_PKEY *pkey = NULL;
    bool found = false;
    char *name = NULL, *header = NULL;
    unsigned char *data = NULL;
    long len = 0;
    while (!found && PEM_read_bio(bio, &name, &header, &data, &len) == 1) {
        const unsigned char *p = data;
        found = true;
        if (strcmp(name, "EC PARAMETERS") == 0) {
            found = false; /* `openssl ecparam -genkey` writes it before the key */
        } else if (strcmp(name, "PUBLIC KEY") == 0) {
            if (!(pkey = d2i_PUBKEY(NULL, &p, len)))
                snprintf(err, errlen, "%s: the public key cannot be decoded", path);
        } else if (strcmp(name, "RSA PUBLIC KEY") == 0) {
            if (!(pkey = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, len)))
                snprintf(err, errlen, "%s: the RSA public key cannot be decoded", path);
        } else if (strcmp(name, "CERTIFICATE") == 0) {
            X509 *x = d2i_X509(NULL, &p, len);
            if (!x || !(pkey = X509_get_pubkey(x)))
                snprintf(err, errlen, "%s: the certificate's key cannot be decoded", path);
            X509_free(x);
        } else if (strstr(name, "PRIVATE KEY")) {
            snprintf(err, errlen,
                     "%s: is a private key; give the public key only "
                     "(openssl pkey -in KEY -pubout)",
                     path);
        } else {
            snprintf(err, errlen, "%s: unexpected PEM block '%.40s' (expected a PUBLIC KEY)", path,
                     name);
        }
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_cleanse(data, (size_t)len);
        OPENSSL_free(data);
        name = header = NULL;
        data = NULL;
    }
    if (!found)
        snprintf(err, errlen, "%s: no PEM public key or certificate in it", path);
    BIO_free(bio);
    ERR_clear_error();
    return pkey;
}

/* Which algorithm pkey may verify, or 0 with err when it is not acceptable. */
static unsigned key_algorithm(const char *path, EVP_PKEY *pkey, char *err, size_t errlen)
{
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        int bits = EVP_PKEY_get_bits(pkey);
        if (bits < CG_JWT_MIN_RSA_BITS) {
            snprintf(err, errlen,
                     "%s: an RSA key of %d bits; RS256 needs at least %d (RFC 7518 section 3.3)",
                     path, bits, CG_JWT_MIN_RSA_BITS);
            return 0;
        }
        return CG_JWT_RS256;
    }
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64] = "";
        size_t glen = 0;
        if (EVP_PKEY_get_group_name(pkey, group, sizeof group, &glen) != 1 ||
            strcmp(group, "prime256v1") != 0) {
            snprintf(err, errlen, "%s: an EC key on curve %s; ES256 needs P-256 (prime256v1)", path,
                     group[0] ? group : "(unknown)");
            ERR_clear_error();
            return 0;
        }
        return CG_JWT_ES256;
    }
    const char *type = EVP_PKEY_get0_type_name(pkey);
    snprintf(err, errlen,
             "%s: a %s key; only RSA (RS256) and EC P-256 (ES256) public keys are supported", path,
             type ? type : "unknown");
    return 0;
}

int cg_jwt_keys_add_public_key_file(cg_jwt_keys_t *k, const char *spec, char *err, size_t errlen)
{
    const char *path = spec, *kid = NULL;
    size_t kid_len = 0;
    const char *eq = strchr(spec, '=');
    if (eq && eq > spec && !memchr(spec, '/', (size_t)(eq - spec))) {
        kid = spec;
        kid_len = (size_t)(eq - spec);
        path = eq + 1;
    }
    if (!*path) {
        snprintf(err, errlen, "'%s': no file name after the key id", spec);
        return -1;
    }
    if (!kid) {
        const char *slash = strrchr(path, '/');
        kid = slash ? slash + 1 : path;
        const char *dot = strrchr(kid, '.');
        kid_len = dot && dot > kid ? (size_t)(dot - kid) : strlen(kid);
        if (kid_len == 0) {
            snprintf(err, errlen, "'%s': no key id in the file name; write KID=FILE", spec);
            return -1;
        }
    }
    for (size_t i = 0; i < k->n_keys; i++) {
        if (strlen(k->keys[i].kid) == kid_len && memcmp(k->keys[i].kid, kid, kid_len) == 0) {
            snprintf(err, errlen, "%s: key id '%.*s' is already used by another public key", path,
                     (int)kid_len, kid);
            return -1;
        }
    }

    unsigned char *text;
    size_t n;
    if (read_file(path, KEY_FILE_MAX, &text, &n, err, errlen) != 0)
        return -1;
    EVP_PKEY *pkey = decode_pem_key(path, text, n, err, errlen);
    free(text);
    if (!pkey)
        return -1;
    unsigned alg = key_algorithm(path, pkey, err, errlen);
    char *id = strndup(kid, kid_len);
    pubkey_t *keys = alg && id ? realloc(k->keys, (k->n_keys + 1) * sizeof *keys) : NULL;
    if (!keys) {
        if (alg)
            snprintf(err, errlen, "%s: out of memory", path);
        free(id);
        EVP_PKEY_free(pkey);
        return -1;
    }
    k->keys = keys;
    k->keys[k->n_keys++] = (pubkey_t){.kid = id, .pkey = pkey, .alg = alg};
    return 0;
}

unsigned cg_jwt_keys_algorithms(const cg_jwt_keys_t *k)
{
    unsigned algs = 0;
    if (k->secret_len >= 32)
        algs |= CG_JWT_HS256;
    if (k->secret_len >= 48)
        algs |= CG_JWT_HS384;
    if (k->secret_len >= 64)
        algs |= CG_JWT_HS512;
    for (size_t i = 0; i < k->n_keys; i++)
        algs |= k->keys[i].alg;
    return algs;
}

int cg_jwt_parse_algorithms(const char *csv, unsigned *out, char *err, size_t errlen)
{
    unsigned algs = 0;
    const char *s = csv;
    for (;;) {
        const char *end = strchr(s, ',');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        const char *e = s;
        while (n > 0 && (*e == ' ' || *e == '\t'))
            e++, n--;
        while (n > 0 && (e[n - 1] == ' ' || e[n - 1] == '\t'))
            n--;
        if (n == 0) {
            snprintf(err, errlen, "JWT algorithms '%s': empty entry", csv);
            return -1;
        }
        unsigned alg = 0;
        for (size_t i = 0; i < N_ALGS; i++)
            if (strlen(alg_names[i].name) == n && strncasecmp(alg_names[i].name, e, n) == 0)
                alg = alg_names[i].alg;
        if (!alg) {
            if (n == 4 && strncasecmp(e, "none", 4) == 0)
                snprintf(err, errlen,
                         "JWT algorithm 'none' is never allowed (it accepts unsigned tokens)");
            else
                snprintf(err, errlen,
                         "unknown JWT algorithm '%.*s' (supported: HS256, HS384, HS512, RS256, "
                         "ES256)",
                         (int)(n > 64 ? 64 : n), e);
            return -1;
        }
        algs |= alg;
        if (!end)
            break;
        s = end + 1;
    }
    *out = algs;
    return 0;
}

int cg_jwt_keys_check_algorithms(const cg_jwt_keys_t *k, unsigned algorithms, char *err,
                                 size_t errlen)
{
    unsigned missing = algorithms & ~cg_jwt_keys_algorithms(k);
    for (size_t i = 0; i < N_ALGS; i++) {
        unsigned alg = alg_names[i].alg;
        const char *name = alg_names[i].name;
        if (!(missing & alg))
            continue;
        if (alg == CG_JWT_RS256)
            snprintf(err, errlen, "RS256 is allowed but no RSA public key is loaded");
        else if (alg == CG_JWT_ES256)
            snprintf(err, errlen, "ES256 is allowed but no EC P-256 public key is loaded");
        else if (!k->secret)
            snprintf(err, errlen, "%s is allowed but no HMAC secret is loaded", name);
        else
            snprintf(err, errlen,
                     "%s is allowed but the HMAC secret is %zu bytes; %s needs at least %d "
                     "(RFC 7518 section 3.2)",
                     name, k->secret_len, name, alg == CG_JWT_HS384 ? 48 : 64);
        return -1;
    }
    return 0;
}

/* ---- verification ---- */

void cg_jwt_policy_init(cg_jwt_policy_t *p)
{
    *p = (cg_jwt_policy_t){.leeway_s = CG_JWT_DEFAULT_LEEWAY_S,
                           .max_bytes = CG_JWT_DEFAULT_MAX_BYTES};
}

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Strict base64url (RFC 7515 section 2): the URL-safe alphabet only, no
 * padding, no whitespace, and the unused low bits of the last character zero,
 * so that each byte string has exactly one accepted encoding. out must hold
 * n * 3 / 4 bytes. */
static bool b64url_decode(const char *s, size_t n, unsigned char *out, size_t *outlen)
{
    if (n % 4 == 1)
        return false;
    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)s[i]);
        if (v < 0)
            return false;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* leftover bits (2 or 4) must be zero */
        return false;
    *outlen = o;
    return true;
}

/* Bounded walk: jansson's own limit (2048) keeps its parser safe, ours keeps
 * whatever later walks the claims (rules, projections) shallow. */
static bool depth_ok(const json_t *v, int depth)
{
    if (depth > CG_JWT_MAX_DEPTH)
        return false;
    if (json_is_object(v)) {
        for (void *it = json_object_iter((json_t *)v); it;
             it = json_object_iter_next((json_t *)v, it))
            if (!depth_ok(json_object_iter_value(it), depth + 1))
                return false;
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (!depth_ok(json_array_get(v, i), depth + 1))
                return false;
    }
    return true;
}

/* A JSON object from bytes, or NULL: duplicate names are refused, since two
 * parsers may keep different ones ("alg", "sub"). */
static json_t *parse_object(const unsigned char *buf, size_t n)
{
    json_error_t jerr;
    json_t *v = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, &jerr);
    if (v && (!json_is_object(v) || !depth_ok(v, 1))) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

/* "typ" (RFC 7519 5.1): "JWT", or "at+jwt" (RFC 9068 access tokens, minted by
 * some authorization servers), either with the optional "application/"
 * prefix (RFC 7515 4.1.9), in any case. */
static bool typ_ok(const json_t *typ)
{
    if (!typ)
        return true;
    const char *s = json_string_value(typ);
    if (!s)
        return false;
    if (strncasecmp(s, "application/", 12) == 0)
        s += 12;
    return strcasecmp(s, "JWT") == 0 || strcasecmp(s, "at+jwt") == 0;
}

static const EVP_MD *hmac_md(const cg_jwt_keys_t *k, unsigned alg)
{
    return alg == CG_JWT_HS256 ? k->sha256 : alg == CG_JWT_HS384 ? k->sha384 : k->sha512;
}

static cg_jwt_rc_t verify_hmac(const cg_jwt_keys_t *k, unsigned alg, const char *input,
                               size_t input_len, const unsigned char *sig, size_t sig_len)
{
    const EVP_MD *md = hmac_md(k, alg);
    size_t md_len = (size_t)EVP_MD_get_size(md);
    /* Only the secret, never a public key's bytes: see jwt.h. A secret
     * shorter than the hash is not used for that hash (RFC 7518 3.2). */
    if (!k->secret || k->secret_len < md_len)
        return CG_JWT_UNKNOWN_KEY;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    if (!HMAC(md, k->secret, (int)k->secret_len, (const unsigned char *)input, input_len, mac,
              &mac_len)) {
        ERR_clear_error();
        return CG_JWT_BAD_SIGNATURE;
    }
    /* The length is public (it is the algorithm's); the bytes are compared in
     * constant time so that timing does not reveal how much of a forged MAC
     * is right. */
    cg_jwt_rc_t rc = sig_len == mac_len && CRYPTO_memcmp(sig, mac, mac_len) == 0
                         ? CG_JWT_OK
                         : CG_JWT_BAD_SIGNATURE;
    OPENSSL_cleanse(mac, sizeof mac);
    return rc;
}

static bool verify_pkey(EVP_PKEY *pkey, const EVP_MD *md, bool rsa, const char *input,
                        size_t input_len, const unsigned char *sig, size_t sig_len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    bool ok = ctx && EVP_DigestVerifyInit(ctx, &pctx, md, NULL, pkey) == 1 &&
              (!rsa || EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1) &&
              EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)input, input_len) == 1;
    EVP_MD_CTX_free(ctx);
    /* A failed verification leaves errors on this thread's queue; left
     * there, they would be read by the next TLS call on the thread
     * (SSL_get_error looks at the queue). */
    ERR_clear_error();
    return ok;
}

/* JOSE's ES256 signature is r || s, 32 bytes each (RFC 7518 3.4); OpenSSL
 * verifies DER. Returns the DER (OPENSSL_free it) or NULL. */
static unsigned char *es256_to_der(const unsigned char *sig, int *der_len)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL);
    BIGNUM *s = BN_bin2bn(sig + 32, 32, NULL);
    unsigned char *der = NULL;
    if (es && r && s && ECDSA_SIG_set0(es, r, s) == 1) {
        r = s = NULL; /* owned by es now */
        *der_len = i2d_ECDSA_SIG(es, &der);
        if (*der_len <= 0)
            der = NULL;
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    ERR_clear_error();
    return der;
}

static cg_jwt_rc_t verify_public(const cg_jwt_keys_t *k, unsigned alg, const json_t *kid,
                                 const char *input, size_t input_len, const unsigned char *sig,
                                 size_t sig_len)
{
    const char *id = kid ? json_string_value(kid) : NULL;
    const pubkey_t *only = NULL;
    bool any = false;
    for (size_t i = 0; i < k->n_keys; i++) {
        any |= k->keys[i].alg == alg;
        if (id && strcmp(k->keys[i].kid, id) == 0)
            only = &k->keys[i];
    }
    /* A kid that names no key is refused rather than tried against the
     * others: the issuer said which key, and rotation relies on retired ids
     * failing. A kid naming a key of the other type (ES256 under an RSA key's
     * id) is an algorithm that key does not allow. */
    if (id && !only)
        return CG_JWT_UNKNOWN_KEY;
    if (only && only->alg != alg)
        return CG_JWT_ALG_NOT_ALLOWED;
    if (!any)
        return CG_JWT_UNKNOWN_KEY;

    unsigned char *der = NULL;
    if (alg == CG_JWT_ES256) {
        if (sig_len != 64)
            return CG_JWT_BAD_SIGNATURE;
        int der_len = 0;
        der = es256_to_der(sig, &der_len);
        if (!der)
            return CG_JWT_BAD_SIGNATURE;
        sig = der;
        sig_len = (size_t)der_len;
    }
    bool ok = false;
    for (size_t i = 0; i < k->n_keys && !ok; i++) {
        const pubkey_t *key = &k->keys[i];
        if (key->alg == alg && (!only || key == only))
            ok = verify_pkey(key->pkey, k->sha256, alg == CG_JWT_RS256, input, input_len, sig,
                             sig_len);
    }
    OPENSSL_free(der);
    return ok ? CG_JWT_OK : CG_JWT_BAD_SIGNATURE;
}

/* A NumericDate (RFC 7519 2) as whole seconds, rounded up: for an integer t
 * and a real d, t < d exactly when t < ceil(d), so comparisons with whole
 * seconds stay exact. Out-of-range values are clamped. -1 when not a number. */
static int numeric_date(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (!json_is_real(v))
        return -1;
    double d = ceil(json_real_value(v));
    if (d >= 9.2e18)
        *out = INT64_MAX;
    else if (d <= -9.2e18)
        *out = INT64_MIN;
    else
        *out = (int64_t)d;
    return 0;
}

static bool audience_ok(const json_t *aud, const char *want)
{
    if (!aud)
        return false;
    /* RFC 7519 4.1.3: present but naming another audience fails, and a token
     * with an audience fails where none is configured. */
    if (!want)
        return false;
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    for (size_t i = 0; i < json_array_size(aud); i++)
        if (strcmp(json_string_value(json_array_get(aud, i)), want) == 0)
            return true;
    return false;
}

/* Types first: a claim of the wrong type is malformed whatever its value. */
static bool claim_types_ok(const json_t *claims)
{
    int64_t t;
    const char *names[] = {"exp", "nbf", "iat"};
    for (size_t i = 0; i < 3; i++) {
        const json_t *v = json_object_get(claims, names[i]);
        if (v && numeric_date(v, &t) != 0)
            return false;
    }
    const json_t *iss = json_object_get(claims, "iss");
    if (iss && !json_is_string(iss))
        return false;
    const json_t *aud = json_object_get(claims, "aud");
    if (aud && json_is_array(aud)) {
        for (size_t i = 0; i < json_array_size(aud); i++)
            if (!json_is_string(json_array_get(aud, i)))
                return false;
    } else if (aud && !json_is_string(aud)) {
        return false;
    }
    return true;
}

static cg_jwt_rc_t check_claims(const json_t *claims, const cg_jwt_policy_t *p, int64_t now_s,
                                int64_t *exp_out)
{
    if (!claim_types_ok(claims))
        return CG_JWT_MALFORMED;
    int64_t leeway = p->leeway_s;
    int64_t exp = 0, nbf = 0, iat = 0;
    const json_t *v;
    /* Valid while now < exp + leeway (RFC 7519 4.1.4: "before"). Written as
     * subtractions from now so that no sum can overflow. An absent exp never
     * expires (the claim is optional); the front end decides about that. */
    if ((v = json_object_get(claims, "exp"))) {
        numeric_date(v, &exp);
        if (now_s >= INT64_MIN + leeway && exp <= now_s - leeway)
            return CG_JWT_EXPIRED;
        *exp_out = exp;
    }
    /* Valid from nbf - leeway on (4.1.5: "after or equal"); an iat in the
     * future means the same thing about the issuer's clock. */
    if ((v = json_object_get(claims, "nbf"))) {
        numeric_date(v, &nbf);
        if (now_s <= INT64_MAX - leeway && nbf > now_s + leeway)
            return CG_JWT_NOT_YET_VALID;
    }
    if ((v = json_object_get(claims, "iat"))) {
        numeric_date(v, &iat);
        if (now_s <= INT64_MAX - leeway && iat > now_s + leeway)
            return CG_JWT_NOT_YET_VALID;
    }
    const json_t *aud = json_object_get(claims, "aud");
    if ((p->audience || aud) && !audience_ok(aud, p->audience))
        return CG_JWT_WRONG_AUDIENCE;
    if (p->issuer) {
        const json_t *iss = json_object_get(claims, "iss");
        if (!iss || strcmp(json_string_value(iss), p->issuer) != 0)
            return CG_JWT_WRONG_ISSUER;
    }
    return CG_JWT_OK;
}

static unsigned alg_from_name(const char *name)
{
    for (size_t i = 0; i < N_ALGS; i++)
        if (strcmp(alg_names[i].name, name) == 0)
            return alg_names[i].alg;
    return 0; /* "none" and everything unsupported */
}

/* The header's checks, up to the key: malformed, or alg not allowed. */
static cg_jwt_rc_t check_header(const json_t *h, unsigned allowed, unsigned *alg)
{
    const json_t *a = json_object_get(h, "alg");
    if (!json_is_string(a))
        return CG_JWT_MALFORMED;
    /* No extension is understood, so a token that requires one cannot be
     * accepted (RFC 7515 4.1.11). */
    if (json_object_get(h, "crit"))
        return CG_JWT_MALFORMED;
    if (!typ_ok(json_object_get(h, "typ")))
        return CG_JWT_MALFORMED;
    const json_t *kid = json_object_get(h, "kid");
    if (kid && !json_is_string(kid))
        return CG_JWT_MALFORMED;
    *alg = alg_from_name(json_string_value(a));
    return *alg & allowed ? CG_JWT_OK : CG_JWT_ALG_NOT_ALLOWED;
}

cg_jwt_rc_t cg_jwt_verify(const cg_jwt_keys_t *k, const cg_jwt_policy_t *p, const char *token,
                          size_t len, int64_t now_s, json_t **claims, int64_t *exp)
{
    cg_jwt_policy_t defaults;
    if (!p) {
        cg_jwt_policy_init(&defaults);
        p = &defaults;
    }
    if (claims)
        *claims = NULL;
    if (exp)
        *exp = 0;
    size_t max = p->max_bytes ? p->max_bytes : CG_JWT_DEFAULT_MAX_BYTES;
    if (len > max)
        return CG_JWT_TOO_LARGE;
    if (!token || len == 0)
        return CG_JWT_MALFORMED;

    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
        return CG_JWT_MALFORMED;
    size_t h_len = (size_t)(dot1 - token);
    size_t c_len = (size_t)(dot2 - dot1 - 1);
    size_t s_len = len - (size_t)(dot2 + 1 - token);

    /* One buffer for the three decoded parts: each is at most 3/4 of its
     * text, so together they fit in len bytes. */
    unsigned char *buf = malloc(len);
    if (!buf)
        return CG_JWT_MALFORMED;
    unsigned char *hdr = buf, *pay, *sig;
    size_t hdr_n, pay_n, sig_n;
    json_t *h = NULL, *c = NULL;
    cg_jwt_rc_t rc = CG_JWT_MALFORMED;
    if (!b64url_decode(token, h_len, hdr, &hdr_n))
        goto out;
    pay = hdr + hdr_n;
    if (!b64url_decode(dot1 + 1, c_len, pay, &pay_n))
        goto out;
    sig = pay + pay_n;
    if (!b64url_decode(dot2 + 1, s_len, sig, &sig_n))
        goto out;

    if (!(h = parse_object(hdr, hdr_n)))
        goto out;
    unsigned alg = 0;
    unsigned allowed = p->algorithms ? p->algorithms : cg_jwt_keys_algorithms(k);
    if ((rc = check_header(h, allowed, &alg)) != CG_JWT_OK)
        goto out;

    /* The signature covers the encoded header and payload as sent. */
    size_t input_len = (size_t)(dot2 - token);
    if (alg & (CG_JWT_HS256 | CG_JWT_HS384 | CG_JWT_HS512))
        rc = verify_hmac(k, alg, token, input_len, sig, sig_n);
    else
        rc = verify_public(k, alg, json_object_get(h, "kid"), token, input_len, sig, sig_n);
    if (rc != CG_JWT_OK)
        goto out;

    if (!(c = parse_object(pay, pay_n))) {
        rc = CG_JWT_MALFORMED;
        goto out;
    }
    int64_t e = 0;
    if ((rc = check_claims(c, p, now_s, &e)) != CG_JWT_OK)
        goto out;
    if (exp)
        *exp = e;
    if (claims) {
        *claims = c;
        c = NULL;
    }
out:
    json_decref(h);
    json_decref(c);
    free(buf);
    return rc;
}

const char *cg_jwt_rc_code(cg_jwt_rc_t rc)
{
    switch (rc) {
    case CG_JWT_OK:
        return "ok";
    case CG_JWT_MALFORMED:
        return "malformed_token";
    case CG_JWT_TOO_LARGE:
        return "token_too_large";
    case CG_JWT_ALG_NOT_ALLOWED:
        return "algorithm_not_allowed";
    case CG_JWT_UNKNOWN_KEY:
        return "unknown_key";
    case CG_JWT_BAD_SIGNATURE:
        return "bad_signature";
    case CG_JWT_EXPIRED:
        return "token_expired";
    case CG_JWT_NOT_YET_VALID:
        return "token_not_yet_valid";
    case CG_JWT_WRONG_AUDIENCE:
        return "wrong_audience";
    case CG_JWT_WRONG_ISSUER:
        return "wrong_issuer";
    }
    return "malformed_token";
}
