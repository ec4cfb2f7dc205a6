/* match.c: MongoDB query filters, compiled once into a tree of nodes and
 * evaluated on BSON directly (bson_iter over the event; no conversion).
 *
 * Semantics follow the MongoDB manual and server (8.0):
 *   - path traversal is the server's BSONElementIterator: a path stops at the
 *     first array on the way; each element of that array that is a document is
 *     searched for the rest of the path (yielding "missing" when it lacks it),
 *     an element whose index equals a numeric path component continues the path
 *     (`a.0.b`), scalars are skipped; at the end of the path an array yields
 *     each of its elements and then itself (except for $size and $elemMatch,
 *     which look at the array itself); a scalar met before the end of the path
 *     yields "missing".
 *   - comparisons only match within one canonical type bracket (numbers with
 *     numbers, strings with strings, ...) except null vs missing and the
 *     MinKey/MaxKey rules; null matches missing and null but not undefined
 *     (MongoDB 8.0).
 *   - numbers compare exactly across int32/int64/double/decimal128 (decimal vs
 *     double uses exact big-integer arithmetic, as the server does).
 *
 * Evaluation allocates nothing: the only per-thread state is one PCRE2 match
 * data block, created on a thread's first regex match and freed when the
 * thread exits (pthread key destructor). */
#include "match.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* PCRE2's JIT code reads ahead in the subject, which valgrind reports as use of
 * uninitialised memory; under valgrind we use the interpreter instead. */
#ifdef HAVE_VALGRIND_VALGRIND_H /* from configure */
#include <valgrind/valgrind.h>
#define CG_UNDER_VALGRIND() RUNNING_ON_VALGRIND
#endif
#ifndef CG_UNDER_VALGRIND
#define CG_UNDER_VALGRIND() 0
#endif

typedef unsigned __int128 u128;

/* ------------------------------------------------------------------------ */
/* Canonical type brackets (MongoDB's canonicalizeBSONType).                 */

enum {
    R_MINKEY = -1,
    R_UNDEF = 0, /* missing (EOO) and undefined */
    R_NULL = 5,
    R_NUM = 10,
    R_STR = 15,
    R_OBJ = 20,
    R_ARR = 25,
    R_BIN = 30,
    R_OID = 35,
    R_BOOL = 40,
    R_DATE = 45,
    R_TS = 47,
    R_REGEX = 50,
    R_DBPTR = 55,
    R_CODE = 60,
    R_CODEWS = 65,
    R_MAXKEY = 127,
};

static inline int rank_of(bson_type_t t)
{
    switch (t) {
    case BSON_TYPE_MINKEY:
        return R_MINKEY;
    case BSON_TYPE_EOD:
    case BSON_TYPE_UNDEFINED:
        return R_UNDEF;
    case BSON_TYPE_NULL:
        return R_NULL;
    case BSON_TYPE_DOUBLE:
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
    case BSON_TYPE_DECIMAL128:
        return R_NUM;
    case BSON_TYPE_UTF8:
    case BSON_TYPE_SYMBOL:
        return R_STR;
    case BSON_TYPE_DOCUMENT:
        return R_OBJ;
    case BSON_TYPE_ARRAY:
        return R_ARR;
    case BSON_TYPE_BINARY:
        return R_BIN;
    case BSON_TYPE_OID:
        return R_OID;
    case BSON_TYPE_BOOL:
        return R_BOOL;
    case BSON_TYPE_DATE_TIME:
        return R_DATE;
    case BSON_TYPE_TIMESTAMP:
        return R_TS;
    case BSON_TYPE_REGEX:
        return R_REGEX;
    case BSON_TYPE_DBPOINTER:
        return R_DBPTR;
    case BSON_TYPE_CODE:
        return R_CODE;
    case BSON_TYPE_CODEWSCOPE:
        return R_CODEWS;
    case BSON_TYPE_MAXKEY:
        return R_MAXKEY;
    default:
        return R_MAXKEY + 1;
    }
}

/* ------------------------------------------------------------------------ */
/* Decimal128 (BID encoding, as libbson stores it).                          */

enum { DEC_FINITE, DEC_INF, DEC_NAN };

typedef struct {
    uint8_t neg;
    uint8_t cls;
    int32_t exp;
    u128 coef; /* < 10^34 */
} dec_t;

static const uint64_t P10_64[20] = {1ULL,
                                    10ULL,
                                    100ULL,
                                    1000ULL,
                                    10000ULL,
                                    100000ULL,
                                    1000000ULL,
                                    10000000ULL,
                                    100000000ULL,
                                    1000000000ULL,
                                    10000000000ULL,
                                    100000000000ULL,
                                    1000000000000ULL,
                                    10000000000000ULL,
                                    100000000000000ULL,
                                    1000000000000000ULL,
                                    10000000000000000ULL,
                                    100000000000000000ULL,
                                    1000000000000000000ULL,
                                    10000000000000000000ULL};

/* 10^k for 0 <= k <= 38 */
static inline u128 p10(int k)
{
    return k <= 19 ? (u128)P10_64[k] : (u128)P10_64[19] * P10_64[k - 19];
}

static int ndigits(u128 c)
{
    int n = 1;
    while (n < 39 && c >= p10(n))
        n++;
    return n;
}

static void dec_decode(const bson_decimal128_t *v, dec_t *o)
{
    uint64_t hi = v->high, lo = v->low;
    o->neg = (uint8_t)(hi >> 63);
    uint64_t comb = (hi >> 58) & 0x1f;
    o->coef = 0;
    o->exp = 0;
    if (comb == 0x1e) {
        o->cls = DEC_INF;
        return;
    }
    if (comb == 0x1f) {
        o->cls = DEC_NAN;
        return;
    }
    o->cls = DEC_FINITE;
    if (((hi >> 61) & 3) == 3) {
        /* the coefficient would be >= 2^113 > 10^34 - 1: non-canonical, zero */
        o->exp = (int32_t)((hi >> 47) & 0x3fff) - 6176;
        return;
    }
    o->exp = (int32_t)((hi >> 49) & 0x3fff) - 6176;
    o->coef = ((u128)(hi & 0x1ffffffffffffULL) << 64) | lo;
    if (o->coef >= p10(34))
        o->coef = 0;
}

static void dec_from_i64(int64_t v, dec_t *o)
{
    o->cls = DEC_FINITE;
    o->exp = 0;
    o->neg = v < 0;
    o->coef = v < 0 ? (u128)(-(v + 1)) + 1 : (u128)v;
}

/* |a| vs |b| for finite decimals */
static int dec_cmp_mag(u128 c1, int e1, u128 c2, int e2)
{
    if (c1 == 0)
        return c2 == 0 ? 0 : -1;
    if (c2 == 0)
        return 1;
    int a1 = ndigits(c1) + e1, a2 = ndigits(c2) + e2;
    if (a1 != a2)
        return a1 < a2 ? -1 : 1;
    /* same magnitude: the difference of exponents is below 34 */
    if (e1 > e2)
        c1 *= p10(e1 - e2);
    else if (e2 > e1)
        c2 *= p10(e2 - e1);
    return c1 < c2 ? -1 : c1 > c2;
}

static int sign_of_dec(const dec_t *d)
{
    if (d->cls == DEC_FINITE && d->coef == 0)
        return 0;
    return d->neg ? -1 : 1;
}

/* NaN equals NaN and sorts below every other number (as the server does). */
static int dec_cmp(const dec_t *a, const dec_t *b)
{
    if (a->cls == DEC_NAN || b->cls == DEC_NAN)
        return (b->cls == DEC_NAN) - (a->cls == DEC_NAN);
    int sa = sign_of_dec(a), sb = sign_of_dec(b);
    if (sa != sb)
        return sa < sb ? -1 : 1;
    if (sa == 0)
        return 0;
    int mag;
    if (a->cls == DEC_INF || b->cls == DEC_INF)
        mag = (a->cls == DEC_INF) - (b->cls == DEC_INF);
    else
        mag = dec_cmp_mag(a->coef, a->exp, b->coef, b->exp);
    return sa > 0 ? mag : -mag;
}

/* Small fixed-size big integers for exact decimal-vs-double comparison. */
#define BIG_LIMBS 128
typedef struct {
    uint32_t n;
    uint32_t w[BIG_LIMBS];
} big_t;

static void big_set(big_t *b, u128 v)
{
    b->n = 0;
    while (v) {
        b->w[b->n++] = (uint32_t)v;
        v >>= 32;
    }
}

static void big_mul(big_t *b, uint32_t m)
{
    uint64_t carry = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        uint64_t t = (uint64_t)b->w[i] * m + carry;
        b->w[i] = (uint32_t)t;
        carry = t >> 32;
    }
    if (carry && b->n < BIG_LIMBS)
        b->w[b->n++] = (uint32_t)carry;
}

static void big_mul_p10(big_t *b, int e)
{
    while (e >= 9) {
        big_mul(b, 1000000000u);
        e -= 9;
    }
    if (e > 0)
        big_mul(b, (uint32_t)P10_64[e]);
}

static void big_shl(big_t *b, int bits)
{
    if (b->n == 0 || bits <= 0)
        return;
    uint32_t limbs = (uint32_t)bits / 32, r = (uint32_t)bits % 32;
    if (b->n + limbs + 1 > BIG_LIMBS)
        limbs = BIG_LIMBS - b->n - 1; /* cannot happen for the magnitudes we compare */
    uint32_t n = b->n + limbs + 1;
    b->w[n - 1] = 0;
    for (uint32_t i = b->n; i-- > 0;) {
        uint64_t v = (uint64_t)b->w[i] << r;
        b->w[i + limbs + 1] |= (uint32_t)(v >> 32);
        b->w[i + limbs] = (uint32_t)v;
    }
    for (uint32_t i = 0; i < limbs; i++)
        b->w[i] = 0;
    b->n = n;
    while (b->n && b->w[b->n - 1] == 0)
        b->n--;
}

static int big_cmp(const big_t *a, const big_t *b)
{
    if (a->n != b->n)
        return a->n < b->n ? -1 : 1;
    for (uint32_t i = a->n; i-- > 0;)
        if (a->w[i] != b->w[i])
            return a->w[i] < b->w[i] ? -1 : 1;
    return 0;
}

/* Exact comparison of a finite decimal and a finite double. */
static int dec_cmp_double(const dec_t *a, double d)
{
    bool dnan = isnan(d);
    if (a->cls == DEC_NAN || dnan)
        return a->cls == DEC_NAN ? (dnan ? 0 : -1) : 1;
    if (isinf(d)) {
        if (a->cls == DEC_INF && (a->neg != 0) == (d < 0))
            return 0;
        return d > 0 ? -1 : 1;
    }
    int sa = sign_of_dec(a), sd = d == 0 ? 0 : (d < 0 ? -1 : 1);
    if (sa != sd)
        return sa < sd ? -1 : 1;
    if (sa == 0)
        return 0;
    if (a->cls == DEC_INF)
        return sa;
    double ad = fabs(d);
    double la = log10((double)a->coef) + a->exp, ld = log10(ad);
    int mag;
    if (la > ld + 2)
        mag = 1;
    else if (la < ld - 2)
        mag = -1;
    else {
        int ex;
        double f = frexp(ad, &ex);
        uint64_t m = (uint64_t)ldexp(f, 53);
        int k = ex - 53;
        big_t l, r;
        big_set(&l, a->coef);
        big_set(&r, m);
        if (a->exp > 0)
            big_mul_p10(&l, a->exp);
        else
            big_mul_p10(&r, -a->exp);
        if (k > 0)
            big_shl(&r, k);
        else
            big_shl(&l, -k);
        mag = big_cmp(&l, &r);
    }
    return sa > 0 ? mag : -mag;
}

/* Truncates toward zero; false when not finite or out of int64 range. */
static bool dec_trunc_i64(const dec_t *d, int64_t *out)
{
    if (d->cls != DEC_FINITE)
        return false;
    u128 v;
    if (d->coef == 0)
        v = 0;
    else if (d->exp >= 0) {
        if (ndigits(d->coef) + d->exp > 19)
            return false;
        v = d->coef * p10(d->exp);
    } else if (d->exp < -38)
        v = 0;
    else
        v = d->coef / p10(-d->exp);
    if (d->neg) {
        if (v > (u128)INT64_MAX + 1)
            return false;
        *out = v == (u128)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (u128)INT64_MAX)
            return false;
        *out = (int64_t)v;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Numbers across int32/int64/double/decimal128.                             */

static int cmp_i64(int64_t a, int64_t b)
{
    return a < b ? -1 : a > b;
}

static int cmp_double(double a, double b)
{
    if (a < b)
        return -1;
    if (a > b)
        return 1;
    if (a == b)
        return 0;
    /* at least one NaN: NaN equals NaN and is below everything */
    return isnan(a) ? (isnan(b) ? 0 : -1) : 1;
}

static int cmp_i64_double(int64_t l, double d)
{
    if (isnan(d))
        return 1;
    if (d >= 9223372036854775808.0)
        return -1;
    if (d < -9223372036854775808.0)
        return 1;
    double t = trunc(d);
    int64_t ti = (int64_t)t;
    if (l != ti)
        return l < ti ? -1 : 1;
    return d > t ? -1 : d < t ? 1 : 0;
}

static int64_t num_i64(const bson_value_t *v)
{
    return v->value_type == BSON_TYPE_INT32 ? v->value.v_int32 : v->value.v_int64;
}

static int cmp_num(const bson_value_t *a, const bson_value_t *b)
{
    bson_type_t ta = a->value_type, tb = b->value_type;
    bool ia = ta == BSON_TYPE_INT32 || ta == BSON_TYPE_INT64;
    bool ib = tb == BSON_TYPE_INT32 || tb == BSON_TYPE_INT64;
    if (ia && ib)
        return cmp_i64(num_i64(a), num_i64(b));
    if (ta == BSON_TYPE_DOUBLE && tb == BSON_TYPE_DOUBLE)
        return cmp_double(a->value.v_double, b->value.v_double);
    if (ia && tb == BSON_TYPE_DOUBLE)
        return cmp_i64_double(num_i64(a), b->value.v_double);
    if (ta == BSON_TYPE_DOUBLE && ib)
        return -cmp_i64_double(num_i64(b), a->value.v_double);
    /* at least one decimal */
    dec_t x, y;
    if (ta == BSON_TYPE_DECIMAL128 && tb == BSON_TYPE_DECIMAL128) {
        dec_decode(&a->value.v_decimal128, &x);
        dec_decode(&b->value.v_decimal128, &y);
        return dec_cmp(&x, &y);
    }
    if (ta == BSON_TYPE_DECIMAL128) {
        dec_decode(&a->value.v_decimal128, &x);
        if (tb == BSON_TYPE_DOUBLE)
            return dec_cmp_double(&x, b->value.v_double);
        dec_from_i64(num_i64(b), &y);
        return dec_cmp(&x, &y);
    }
    dec_decode(&b->value.v_decimal128, &y);
    if (ta == BSON_TYPE_DOUBLE)
        return -dec_cmp_double(&y, a->value.v_double);
    dec_from_i64(num_i64(a), &x);
    return dec_cmp(&x, &y);
}

static bool is_nan_value(const bson_value_t *v)
{
    if (v->value_type == BSON_TYPE_DOUBLE)
        return isnan(v->value.v_double);
    if (v->value_type == BSON_TYPE_DECIMAL128) {
        dec_t d;
        dec_decode(&v->value.v_decimal128, &d);
        return d.cls == DEC_NAN;
    }
    return false;
}

/* ------------------------------------------------------------------------ */
/* BSON order (MongoDB's compareElementValues / woCompare).                  */

static int cmp_values(const bson_value_t *a, const bson_value_t *b);

static inline void iter_value(const bson_iter_t *it, bson_value_t *out)
{
    bson_iter_t copy = *it;
    *out = *bson_iter_value(&copy);
}

static inline uint32_t iter_key_len(const bson_iter_t *it)
{
    return it->d1 - it->key - 1;
}

static int cmp_bytes(const void *a, size_t la, const void *b, size_t lb)
{
    size_t n = la < lb ? la : lb;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c < 0 ? -1 : 1;
    return la < lb ? -1 : la > lb;
}

static int cmp_docs(const uint8_t *da, uint32_t la, const uint8_t *db, uint32_t lb)
{
    bson_iter_t ia, ib;
    if (!bson_iter_init_from_data(&ia, da, la) || !bson_iter_init_from_data(&ib, db, lb))
        return cmp_bytes(da, la, db, lb);
    for (;;) {
        bool ma = bson_iter_next(&ia), mb = bson_iter_next(&ib);
        if (!ma)
            return mb ? -1 : 0;
        if (!mb)
            return 1;
        int ra = rank_of(bson_iter_type(&ia)), rb = rank_of(bson_iter_type(&ib));
        if (ra != rb)
            return ra < rb ? -1 : 1;
        int c =
            cmp_bytes(bson_iter_key(&ia), iter_key_len(&ia), bson_iter_key(&ib), iter_key_len(&ib));
        if (c)
            return c;
        bson_value_t va, vb;
        iter_value(&ia, &va);
        iter_value(&ib, &vb);
        c = cmp_values(&va, &vb);
        if (c)
            return c;
    }
}

static void str_of(const bson_value_t *v, const char **s, uint32_t *len)
{
    if (v->value_type == BSON_TYPE_SYMBOL) {
        *s = v->value.v_symbol.symbol;
        *len = v->value.v_symbol.len;
    } else {
        *s = v->value.v_utf8.str;
        *len = v->value.v_utf8.len;
    }
}

/* Both values in the same canonical bracket. */
static int cmp_same_rank(const bson_value_t *a, const bson_value_t *b, int rank)
{
    switch (rank) {
    case R_NUM:
        return cmp_num(a, b);
    case R_STR: {
        const char *sa, *sb;
        uint32_t la, lb;
        str_of(a, &sa, &la);
        str_of(b, &sb, &lb);
        return cmp_bytes(sa, la, sb, lb);
    }
    case R_OBJ:
    case R_ARR:
        return cmp_docs(a->value.v_doc.data, a->value.v_doc.data_len, b->value.v_doc.data,
                        b->value.v_doc.data_len);
    case R_BIN: {
        uint32_t la = a->value.v_binary.data_len, lb = b->value.v_binary.data_len;
        if (la != lb)
            return la < lb ? -1 : 1;
        if (a->value.v_binary.subtype != b->value.v_binary.subtype)
            return a->value.v_binary.subtype < b->value.v_binary.subtype ? -1 : 1;
        return cmp_bytes(a->value.v_binary.data, la, b->value.v_binary.data, lb);
    }
    case R_OID:
        return cmp_bytes(a->value.v_oid.bytes, 12, b->value.v_oid.bytes, 12);
    case R_BOOL:
        return (int)a->value.v_bool - (int)b->value.v_bool;
    case R_DATE:
        return cmp_i64(a->value.v_datetime, b->value.v_datetime);
    case R_TS: {
        uint64_t ta =
            ((uint64_t)a->value.v_timestamp.timestamp << 32) | a->value.v_timestamp.increment;
        uint64_t tb =
            ((uint64_t)b->value.v_timestamp.timestamp << 32) | b->value.v_timestamp.increment;
        return ta < tb ? -1 : ta > tb;
    }
    case R_REGEX: {
        int c = strcmp(a->value.v_regex.regex, b->value.v_regex.regex);
        if (!c)
            c = strcmp(a->value.v_regex.options, b->value.v_regex.options);
        return c < 0 ? -1 : c > 0;
    }
    case R_DBPTR: {
        uint32_t la = a->value.v_dbpointer.collection_len, lb = b->value.v_dbpointer.collection_len;
        if (la != lb)
            return la < lb ? -1 : 1;
        int c = cmp_bytes(a->value.v_dbpointer.collection, la, b->value.v_dbpointer.collection, lb);
        return c ? c
                 : cmp_bytes(a->value.v_dbpointer.oid.bytes, 12, b->value.v_dbpointer.oid.bytes,
                             12);
    }
    case R_CODE:
        return cmp_bytes(a->value.v_code.code, a->value.v_code.code_len, b->value.v_code.code,
                         b->value.v_code.code_len);
    case R_CODEWS: {
        int c = cmp_bytes(a->value.v_codewscope.code, a->value.v_codewscope.code_len,
                          b->value.v_codewscope.code, b->value.v_codewscope.code_len);
        return c ? c
                 : cmp_docs(a->value.v_codewscope.scope_data, a->value.v_codewscope.scope_len,
                            b->value.v_codewscope.scope_data, b->value.v_codewscope.scope_len);
    }
    default: /* MinKey, MaxKey, null, undefined, missing: one value each */
        return 0;
    }
}

static int cmp_values(const bson_value_t *a, const bson_value_t *b)
{
    int ra = rank_of(a->value_type), rb = rank_of(b->value_type);
    if (ra != rb)
        return ra < rb ? -1 : 1;
    return cmp_same_rank(a, b, ra);
}

bool cg_match_value_equal(const bson_value_t *a, const bson_value_t *b)
{
    return cmp_values(a, b) == 0;
}

static int cmp_values_qsort(const void *a, const void *b)
{
    return cmp_values(a, b);
}

/* ------------------------------------------------------------------------ */
/* Hashing consistent with cmp_values() == 0 for hashable values.            */

static inline uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_bytes(uint64_t seed, const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ULL;
    }
    return mix64(h ^ n);
}

enum { H_NUM_INT = 1, H_NUM_DBL, H_NUM_DEC, H_NAN, H_STR, H_OID, H_BOOL, H_DATE };

static uint64_t hash_i64(int64_t v)
{
    return mix64((uint64_t)v ^ ((uint64_t)H_NUM_INT << 56));
}

static uint64_t hash_double(double d)
{
    if (isnan(d))
        return mix64(H_NAN);
    if (d == trunc(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
        return hash_i64((int64_t)d); /* also folds -0.0 into 0 */
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    return mix64(bits ^ ((uint64_t)H_NUM_DBL << 56));
}

static uint64_t hash_dec(const bson_decimal128_t *raw)
{
    dec_t d;
    dec_decode(raw, &d);
    if (d.cls == DEC_NAN)
        return mix64(H_NAN);
    if (d.cls == DEC_INF)
        return hash_double(d.neg ? -INFINITY : INFINITY);
    if (d.coef == 0)
        return hash_i64(0);
    while (d.coef % 10 == 0) {
        d.coef /= 10;
        d.exp++;
    }
    int64_t i;
    if (d.exp >= 0 && dec_trunc_i64(&d, &i))
        return hash_i64(i);
    /* equal to some double? then hash like that double */
    char buf[BSON_DECIMAL128_STRING];
    bson_decimal128_to_string(raw, buf);
    double nearest = strtod(buf, NULL);
    if (isfinite(nearest) && dec_cmp_double(&d, nearest) == 0)
        return hash_double(nearest);
    uint8_t key[18];
    memcpy(key, &d.coef, 16);
    key[16] = (uint8_t)d.neg;
    key[17] = 0;
    return hash_bytes((uint64_t)H_NUM_DEC ^ ((uint64_t)(uint32_t)d.exp << 8), key, sizeof key);
}

bool cg_match_value_hash(const bson_value_t *v, uint64_t *hash)
{
    switch (v->value_type) {
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
        *hash = hash_i64(num_i64(v));
        return true;
    case BSON_TYPE_DOUBLE:
        *hash = hash_double(v->value.v_double);
        return true;
    case BSON_TYPE_DECIMAL128:
        *hash = hash_dec(&v->value.v_decimal128);
        return true;
    case BSON_TYPE_UTF8:
    case BSON_TYPE_SYMBOL: {
        const char *s;
        uint32_t len;
        str_of(v, &s, &len);
        *hash = hash_bytes(H_STR, s, len);
        return true;
    }
    case BSON_TYPE_OID:
        *hash = hash_bytes(H_OID, v->value.v_oid.bytes, 12);
        return true;
    case BSON_TYPE_BOOL:
        *hash = mix64(((uint64_t)H_BOOL << 56) | (v->value.v_bool ? 1 : 0));
        return true;
    case BSON_TYPE_DATE_TIME:
        *hash = mix64((uint64_t)v->value.v_datetime ^ ((uint64_t)H_DATE << 56) ^ 0x5bd1e995ULL);
        return true;
    default:
        return false;
    }
}

static bool hashable(const bson_value_t *v)
{
    uint64_t h;
    return cg_match_value_hash(v, &h);
}

/* ------------------------------------------------------------------------ */
/* Regexes: compiled (and JIT-compiled when available) once; each thread     */
/* keeps one match data block, so matching allocates nothing after warm-up.  */

static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static bool md_key_ok;
static _Thread_local pcre2_match_data *tls_md;

static void md_destroy(void *p)
{
    pcre2_match_data_free(p);
}

static void md_init(void)
{
    md_key_ok = pthread_key_create(&md_key, md_destroy) == 0;
}

static pcre2_match_data *thread_md(void)
{
    if (!tls_md) {
        pthread_once(&md_once, md_init);
        /* one ovector pair: we only need to know whether it matched */
        tls_md = pcre2_match_data_create(1, NULL);
        if (tls_md && md_key_ok)
            pthread_setspecific(md_key, tls_md);
    }
    return tls_md;
}

typedef struct {
    pcre2_code *code;
    const char *pattern; /* NUL-terminated, borrowed from the query */
    const char *flags;   /* as given: $options or the regex literal's */
} regex_t_;

static bool regex_match(const regex_t_ *re, const bson_value_t *v)
{
    if (v->value_type == BSON_TYPE_UTF8 || v->value_type == BSON_TYPE_SYMBOL) {
        const char *s;
        uint32_t len;
        str_of(v, &s, &len);
        pcre2_match_data *md = thread_md();
        if (!md)
            return false;
        return pcre2_match(re->code, (PCRE2_SPTR)s, len, 0, 0, md, NULL) >= 0;
    }
    if (v->value_type == BSON_TYPE_REGEX)
        return strcmp(v->value.v_regex.regex, re->pattern) == 0 &&
               strcmp(v->value.v_regex.options, re->flags) == 0;
    return false;
}

/* ------------------------------------------------------------------------ */
/* The compiled tree.                                                        */

enum { K_TRUE, K_FALSE, K_AND, K_OR, K_NOR, K_NOT, K_LEAF };

enum {
    OP_EQ,
    OP_LT,
    OP_LTE,
    OP_GT,
    OP_GTE,
    OP_IN,
    OP_EXISTS,
    OP_TYPE,
    OP_SIZE,
    OP_MOD,
    OP_REGEX,
    OP_ELEM_OBJ, /* $elemMatch with a query: kid runs on each document element */
    OP_ELEM_VAL, /* $elemMatch with operators: kid runs on each element value */
};

typedef struct {
    const char *s; /* into node.path, not NUL-terminated */
    uint32_t len;
    bool numeric; /* all digits: may index an array */
} comp_t;

typedef struct node node_t;
struct node {
    uint8_t kind;
    uint8_t op;
    bool traverse_leaf; /* a leaf array yields its elements (all but $size, $elemMatch) */
    uint32_t ncomp;     /* 0: applies to the value at hand ($elemMatch operator form) */
    comp_t *comps;
    char *path; /* dotted, NUL-terminated */
    node_t **kids;
    uint32_t nkids;
    bson_value_t val; /* $eq $lt ... operand, borrowed from the query */
    /* $in */
    bson_value_t *in_vals; /* sorted by cmp_values */
    uint32_t n_in;
    bool in_null;
    regex_t_ *in_re;
    uint32_t n_in_re;
    /* $regex */
    regex_t_ re;
    /* $type */
    uint32_t type_mask;
    /* $size, $mod */
    int64_t size, mod_div, mod_rem;
};

struct cg_match {
    node_t *root;
    bson_t **docs; /* owned query copies the tree borrows values from */
    size_t ndocs;
    cg_match_eq_t *eqs;
    size_t neqs;
};

static void node_free(node_t *n)
{
    if (!n)
        return;
    for (uint32_t i = 0; i < n->nkids; i++)
        node_free(n->kids[i]);
    free(n->kids);
    free(n->comps);
    free(n->path);
    free(n->in_vals);
    for (uint32_t i = 0; i < n->n_in_re; i++)
        pcre2_code_free(n->in_re[i].code);
    free(n->in_re);
    if (n->re.code)
        pcre2_code_free(n->re.code);
    free(n);
}

/* ------------------------------------------------------------------------ */
/* Path traversal (the server's BSONElementIterator, recursively).           */

typedef bool (*visit_fn)(const void *ctx, const bson_value_t *v);

static const bson_value_t MISSING = {.value_type = BSON_TYPE_EOD};

typedef struct {
    const comp_t *comps;
    uint32_t n;
    bool traverse_leaf;
    visit_fn fn;
    const void *ctx;
} walk_t;

static inline bool find_field(const uint8_t *data, uint32_t len, const comp_t *c, bson_iter_t *it)
{
    if (!bson_iter_init_from_data(it, data, len))
        return false;
    while (bson_iter_next(it)) {
        if (iter_key_len(it) == c->len && memcmp(it->raw + it->key, c->s, c->len) == 0)
            return true;
    }
    return false;
}

static bool walk_array(const walk_t *w, uint32_t i, const uint8_t *data, uint32_t len);

static bool yield_iter(const walk_t *w, const bson_iter_t *it)
{
    bson_value_t v;
    iter_value(it, &v);
    return w->fn(w->ctx, &v);
}

static bool walk_doc(const walk_t *w, uint32_t i, const uint8_t *data, uint32_t len)
{
    bson_iter_t it;
    for (;;) {
        if (!find_field(data, len, &w->comps[i], &it))
            return w->fn(w->ctx, &MISSING);
        bson_type_t t = bson_iter_type(&it);
        bool last = i + 1 == w->n;
        if (t == BSON_TYPE_DOCUMENT && !last) {
            bson_iter_document(&it, &len, &data);
            i++;
            continue;
        }
        if (t == BSON_TYPE_ARRAY) {
            const uint8_t *d;
            uint32_t l;
            bson_iter_array(&it, &l, &d);
            if (!last)
                return walk_array(w, i + 1, d, l);
            if (w->traverse_leaf) {
                bson_iter_t e;
                if (bson_iter_init_from_data(&e, d, l))
                    while (bson_iter_next(&e))
                        if (yield_iter(w, &e))
                            return true;
            }
            return yield_iter(w, &it);
        }
        if (!last)
            return w->fn(w->ctx, &MISSING);
        return yield_iter(w, &it);
    }
}

/* The path continues at component i inside an array. */
static bool walk_array(const walk_t *w, uint32_t i, const uint8_t *data, uint32_t len)
{
    const comp_t *c = &w->comps[i];
    bool last = i + 1 == w->n;
    bson_iter_t it;
    if (!bson_iter_init_from_data(&it, data, len))
        return false;
    while (bson_iter_next(&it)) {
        bson_type_t t = bson_iter_type(&it);
        bool offset =
            c->numeric && iter_key_len(&it) == c->len && memcmp(it.raw + it.key, c->s, c->len) == 0;
        if (t == BSON_TYPE_DOCUMENT) {
            const uint8_t *d;
            uint32_t l;
            bson_iter_document(&it, &l, &d);
            if (walk_doc(w, i, d, l))
                return true;
            if (offset) {
                if (last ? yield_iter(w, &it) : walk_doc(w, i + 1, d, l))
                    return true;
            }
        } else if (offset) {
            if (last) {
                if (yield_iter(w, &it))
                    return true;
            } else if (t == BSON_TYPE_ARRAY) {
                const uint8_t *d;
                uint32_t l;
                bson_iter_array(&it, &l, &d);
                if (walk_array(w, i + 1, d, l))
                    return true;
            }
        }
    }
    return false;
}

/* ------------------------------------------------------------------------ */
/* Evaluation.                                                               */

static bool eval_doc(const node_t *n, const uint8_t *data, uint32_t len);
static bool eval_single(const node_t *n, const bson_value_t *v);

static bool cmp_match(uint8_t op, const bson_value_t *rhs, const bson_value_t *v)
{
    int rv = rank_of(v->value_type), rr = rank_of(rhs->value_type);
    if (rv != rr) {
        if (rr == R_NULL && v->value_type == BSON_TYPE_EOD)
            return op == OP_EQ || op == OP_LTE || op == OP_GTE;
        if (rr == R_MINKEY)
            return op == OP_GT || op == OP_GTE;
        if (rr == R_MAXKEY)
            return op == OP_LT || op == OP_LTE;
        return false;
    }
    if (op == OP_EQ) {
        if (v->value_type == BSON_TYPE_UTF8 && rhs->value_type == BSON_TYPE_UTF8)
            return v->value.v_utf8.len == rhs->value.v_utf8.len &&
                   memcmp(v->value.v_utf8.str, rhs->value.v_utf8.str, v->value.v_utf8.len) == 0;
        return cmp_same_rank(v, rhs, rv) == 0;
    }
    if (rv == R_NUM) {
        bool ln = is_nan_value(v), rn = is_nan_value(rhs);
        if (ln || rn)
            return (op == OP_LTE || op == OP_GTE) && ln && rn;
    }
    int c = cmp_same_rank(v, rhs, rv);
    switch (op) {
    case OP_LT:
        return c < 0;
    case OP_LTE:
        return c <= 0;
    case OP_GT:
        return c > 0;
    default:
        return c >= 0;
    }
}

static bool in_match(const node_t *n, const bson_value_t *v)
{
    if (v->value_type == BSON_TYPE_EOD)
        return n->in_null;
    if (v->value_type == BSON_TYPE_UNDEFINED)
        return false;
    uint32_t lo = 0, hi = n->n_in;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = cmp_values(&n->in_vals[mid], v);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (uint32_t i = 0; i < n->n_in_re; i++)
        if (regex_match(&n->in_re[i], v))
            return true;
    return false;
}

static uint32_t type_bit(bson_type_t t)
{
    if (t == BSON_TYPE_MINKEY)
        return 1u << 20;
    if (t == BSON_TYPE_MAXKEY)
        return 1u << 21;
    if ((int)t >= 1 && (int)t <= 19)
        return 1u << t;
    return 0;
}

static bool mod_match(const node_t *n, const bson_value_t *v)
{
    int64_t x;
    switch (v->value_type) {
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
        x = num_i64(v);
        break;
    case BSON_TYPE_DOUBLE: {
        double d = v->value.v_double;
        if (!isfinite(d))
            return false;
        d = trunc(d);
        if (d < -9223372036854775808.0 || d >= 9223372036854775808.0)
            return false;
        x = (int64_t)d;
        break;
    }
    case BSON_TYPE_DECIMAL128: {
        dec_t d;
        dec_decode(&v->value.v_decimal128, &d);
        if (!dec_trunc_i64(&d, &x))
            return false;
        break;
    }
    default:
        return false;
    }
    int64_t r = n->mod_div == -1 ? 0 : x % n->mod_div;
    return r == n->mod_rem;
}

static bool match_single(const node_t *n, const bson_value_t *v)
{
    switch (n->op) {
    case OP_EQ:
    case OP_LT:
    case OP_LTE:
    case OP_GT:
    case OP_GTE:
        return cmp_match(n->op, &n->val, v);
    case OP_IN:
        return in_match(n, v);
    case OP_EXISTS:
        return v->value_type != BSON_TYPE_EOD;
    case OP_TYPE:
        return (n->type_mask & type_bit(v->value_type)) != 0;
    case OP_SIZE: {
        if (v->value_type != BSON_TYPE_ARRAY)
            return false;
        bson_iter_t it;
        int64_t count = 0;
        if (bson_iter_init_from_data(&it, v->value.v_doc.data, v->value.v_doc.data_len))
            while (bson_iter_next(&it))
                count++;
        return count == n->size;
    }
    case OP_MOD:
        return mod_match(n, v);
    case OP_REGEX:
        return regex_match(&n->re, v);
    case OP_ELEM_OBJ:
    case OP_ELEM_VAL: {
        if (v->value_type != BSON_TYPE_ARRAY)
            return false;
        bson_iter_t it;
        if (!bson_iter_init_from_data(&it, v->value.v_doc.data, v->value.v_doc.data_len))
            return false;
        while (bson_iter_next(&it)) {
            if (n->op == OP_ELEM_OBJ) {
                bson_type_t t = bson_iter_type(&it);
                if (t != BSON_TYPE_DOCUMENT && t != BSON_TYPE_ARRAY)
                    continue;
                const uint8_t *d;
                uint32_t l;
                if (t == BSON_TYPE_DOCUMENT)
                    bson_iter_document(&it, &l, &d);
                else
                    bson_iter_array(&it, &l, &d);
                if (eval_doc(n->kids[0], d, l))
                    return true;
            } else {
                bson_value_t e;
                iter_value(&it, &e);
                if (eval_single(n->kids[0], &e))
                    return true;
            }
        }
        return false;
    }
    default:
        return false;
    }
}

static bool leaf_visit(const void *ctx, const bson_value_t *v)
{
    return match_single(ctx, v);
}

static bool eval_doc(const node_t *n, const uint8_t *data, uint32_t len)
{
    switch (n->kind) {
    case K_TRUE:
        return true;
    case K_FALSE:
        return false;
    case K_AND:
        for (uint32_t i = 0; i < n->nkids; i++)
            if (!eval_doc(n->kids[i], data, len))
                return false;
        return true;
    case K_OR:
        for (uint32_t i = 0; i < n->nkids; i++)
            if (eval_doc(n->kids[i], data, len))
                return true;
        return false;
    case K_NOR:
        for (uint32_t i = 0; i < n->nkids; i++)
            if (eval_doc(n->kids[i], data, len))
                return false;
        return true;
    case K_NOT:
        return !eval_doc(n->kids[0], data, len);
    default: {
        walk_t w = {n->comps, n->ncomp, n->traverse_leaf, leaf_visit, n};
        return walk_doc(&w, 0, data, len);
    }
    }
}

static bool eval_single(const node_t *n, const bson_value_t *v)
{
    switch (n->kind) {
    case K_TRUE:
        return true;
    case K_FALSE:
        return false;
    case K_AND:
        for (uint32_t i = 0; i < n->nkids; i++)
            if (!eval_single(n->kids[i], v))
                return false;
        return true;
    case K_OR:
        for (uint32_t i = 0; i < n->nkids; i++)
            if (eval_single(n->kids[i], v))
                return true;
        return false;
    case K_NOR:
        for (uint32_t i = 0; i < n->nkids; i++)
            if (eval_single(n->kids[i], v))
                return false;
        return true;
    case K_NOT:
        return !eval_single(n->kids[0], v);
    default:
        return match_single(n, v);
    }
}

bool cg_match_eval(const cg_match_t *m, const bson_t *doc)
{
    if (!m || !m->root)
        return false;
    return eval_doc(m->root, bson_get_data(doc), doc->len);
}

/* ------------------------------------------------------------------------ */
/* cg_match_path_values                                                      */

typedef struct {
    bool (*fn)(const bson_value_t *v, void *ctx);
    void *ctx;
} pv_ctx_t;

static bool pv_visit(const void *ctx, const bson_value_t *v)
{
    const pv_ctx_t *c = ctx;
    if (v->value_type == BSON_TYPE_EOD)
        return false;
    return !c->fn(v, c->ctx);
}

static void split_path(const char *path, size_t len, comp_t *comps, uint32_t *n)
{
    uint32_t k = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || path[i] == '.') {
            comp_t *c = &comps[k++];
            c->s = path + start;
            c->len = (uint32_t)(i - start);
            c->numeric = true;
            for (size_t j = start; j < i; j++)
                if (path[j] < '0' || path[j] > '9')
                    c->numeric = false;
            start = i + 1;
        }
    }
    *n = k;
}

static uint32_t count_comps(const char *path, size_t len)
{
    uint32_t n = 1;
    for (size_t i = 0; i < len; i++)
        n += path[i] == '.';
    return n;
}

void cg_match_path_values(const bson_t *doc, const char *path,
                          bool (*fn)(const bson_value_t *v, void *ctx), void *ctx)
{
    size_t len = strlen(path);
    uint32_t n = count_comps(path, len);
    comp_t stack[32];
    comp_t *comps = n <= 32 ? stack : malloc(n * sizeof *comps);
    if (!comps)
        return;
    split_path(path, len, comps, &n);
    pv_ctx_t c = {fn, ctx};
    walk_t w = {comps, n, true, pv_visit, &c};
    walk_doc(&w, 0, bson_get_data(doc), doc->len);
    if (comps != stack)
        free(comps);
}

/* ------------------------------------------------------------------------ */
/* Compiler.                                                                 */

typedef struct {
    const char *what;
    char *err;
    size_t errlen;
    char loc[512]; /* where in the filter we are, for messages */
    size_t loclen;
    bool failed;
} cc_t;

static void cc_error(cc_t *cc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void cc_error(cc_t *cc, const char *fmt, ...)
{
    if (cc->failed)
        return;
    cc->failed = true;
    if (!cc->err || !cc->errlen)
        return;
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(cc->err, cc->errlen, "%s%s%s: %s", cc->what, cc->loclen ? "." : "", cc->loc, msg);
}

static size_t loc_push(cc_t *cc, const char *seg, size_t seglen, bool dot)
{
    size_t old = cc->loclen;
    char *p = cc->loc + cc->loclen;
    size_t room = sizeof cc->loc - cc->loclen;
    int w = snprintf(p, room, "%s%.*s", dot && cc->loclen ? "." : "", (int)seglen, seg);
    if (w > 0)
        cc->loclen += (size_t)w < room ? (size_t)w : room - 1;
    return old;
}

static size_t loc_push_index(cc_t *cc, uint32_t idx)
{
    char buf[16];
    int w = snprintf(buf, sizeof buf, "[%u]", idx);
    return loc_push(cc, buf, (size_t)w, false);
}

static void loc_pop(cc_t *cc, size_t old)
{
    cc->loclen = old;
    cc->loc[old] = '\0';
}

static node_t *new_node(cc_t *cc, uint8_t kind)
{
    node_t *n = calloc(1, sizeof *n);
    if (!n)
        cc_error(cc, "out of memory");
    else
        n->kind = kind;
    return n;
}

static bool add_kid(cc_t *cc, node_t *parent, node_t *kid)
{
    node_t **k = realloc(parent->kids, (parent->nkids + 1) * sizeof *k);
    if (!k) {
        node_free(kid);
        cc_error(cc, "out of memory");
        return false;
    }
    parent->kids = k;
    parent->kids[parent->nkids++] = kid;
    return true;
}

/* A leaf on `path` (NULL for the value at hand inside $elemMatch). */
static node_t *new_leaf(cc_t *cc, uint8_t op, const char *path, size_t plen)
{
    node_t *n = new_node(cc, K_LEAF);
    if (!n)
        return NULL;
    n->op = op;
    n->traverse_leaf = op != OP_SIZE && op != OP_ELEM_OBJ && op != OP_ELEM_VAL;
    if (path) {
        uint32_t nc = count_comps(path, plen);
        n->path = malloc(plen + 1);
        n->comps = malloc(nc * sizeof *n->comps);
        if (!n->path || !n->comps) {
            node_free(n);
            cc_error(cc, "out of memory");
            return NULL;
        }
        memcpy(n->path, path, plen);
        n->path[plen] = '\0';
        split_path(n->path, plen, n->comps, &n->ncomp);
    }
    return n;
}

/* Makes kid (not NULL) the only child of n (NULL when its allocation failed).
 * On failure frees both and returns NULL. */
static node_t *adopt(cc_t *cc, node_t *n, node_t *kid)
{
    if (!n || !add_kid(cc, n, kid)) {
        if (n)
            node_free(n);
        else
            node_free(kid);
        return NULL;
    }
    return n;
}

static node_t *wrap_not(cc_t *cc, node_t *kid)
{
    return kid ? adopt(cc, new_node(cc, K_NOT), kid) : NULL;
}

/* Collapses a one-kid AND into its kid. */
static node_t *simplify_and(node_t *n)
{
    if (n && n->kind == K_AND && n->nkids == 1) {
        node_t *k = n->kids[0];
        n->nkids = 0;
        node_free(n);
        return k;
    }
    if (n && n->kind == K_AND && n->nkids == 0)
        n->kind = K_TRUE;
    return n;
}

static bool is_forbidden(const char *op)
{
    static const char *const forbidden[] = {"$where", "$expr", "$function", "$accumulator",
                                            "$jsonSchema"};
    for (size_t i = 0; i < sizeof forbidden / sizeof *forbidden; i++)
        if (strcmp(op, forbidden[i]) == 0)
            return true;
    return false;
}

static bool is_field_operator(const char *op)
{
    static const char *const ops[] = {"$eq",        "$ne",   "$gt",    "$gte",     "$lt",   "$lte",
                                      "$in",        "$nin",  "$not",   "$exists",  "$type", "$all",
                                      "$elemMatch", "$size", "$regex", "$options", "$mod"};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
        if (strcmp(op, ops[i]) == 0)
            return true;
    return false;
}

/* A document whose first key is an operator (and not a DBRef). */
static bool is_operator_doc(const bson_value_t *v)
{
    if (v->value_type != BSON_TYPE_DOCUMENT)
        return false;
    bson_iter_t it;
    if (!bson_iter_init_from_data(&it, v->value.v_doc.data, v->value.v_doc.data_len) ||
        !bson_iter_next(&it))
        return false;
    const char *k = bson_iter_key(&it);
    if (k[0] != '$')
        return false;
    return strcmp(k, "$ref") != 0 && strcmp(k, "$id") != 0 && strcmp(k, "$db") != 0;
}

static node_t *compile_query(cc_t *cc, const uint8_t *data, uint32_t len);
static node_t *compile_ops(cc_t *cc, const char *path, size_t plen, const bson_value_t *doc);

static bool compile_regex(cc_t *cc, regex_t_ *re, const char *pattern, uint32_t plen,
                          const char *flags)
{
    uint32_t opts = PCRE2_UTF;
    for (const char *f = flags; *f; f++) {
        switch (*f) {
        case 'i':
            opts |= PCRE2_CASELESS;
            break;
        case 'm':
            opts |= PCRE2_MULTILINE;
            break;
        case 's':
            opts |= PCRE2_DOTALL;
            break;
        case 'x':
            opts |= PCRE2_EXTENDED;
            break;
        case 'u':
            break;
        default:
            cc_error(cc, "invalid regex option '%c' (allowed: i, m, s, x)", *f);
            return false;
        }
    }
    if (memchr(pattern, '\0', plen)) {
        cc_error(cc, "invalid regex: it contains a NUL byte");
        return false;
    }
    int errcode;
    PCRE2_SIZE erroff;
    re->code = pcre2_compile((PCRE2_SPTR)pattern, plen, opts, &errcode, &erroff, NULL);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof msg);
        cc_error(cc, "invalid regex: %s at offset %zu", (const char *)msg, (size_t)erroff);
        return false;
    }
    if (!CG_UNDER_VALGRIND())
        pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE); /* optional: else the interpreter runs */
    re->pattern = pattern;
    re->flags = flags;
    return true;
}

static node_t *regex_leaf(cc_t *cc, const char *path, size_t plen, const char *pattern,
                          uint32_t patlen, const char *flags)
{
    node_t *n = new_leaf(cc, OP_REGEX, path, plen);
    if (n && !compile_regex(cc, &n->re, pattern, patlen, flags)) {
        node_free(n);
        return NULL;
    }
    return n;
}

static node_t *eq_leaf(cc_t *cc, uint8_t op, const char *opname, const char *path, size_t plen,
                       const bson_value_t *v)
{
    if (v->value_type == BSON_TYPE_UNDEFINED) {
        cc_error(cc, "%s needs one value, not undefined", opname);
        return NULL;
    }
    if (v->value_type == BSON_TYPE_REGEX && op != OP_EQ) {
        cc_error(cc, "%s needs one value, not a regex", opname);
        return NULL;
    }
    node_t *n = new_leaf(cc, op, path, plen);
    if (n)
        n->val = *v;
    return n;
}

static node_t *in_leaf(cc_t *cc, const char *opname, const char *path, size_t plen,
                       const bson_value_t *v)
{
    if (v->value_type != BSON_TYPE_ARRAY) {
        cc_error(cc, "%s needs an array", opname);
        return NULL;
    }
    node_t *n = new_leaf(cc, OP_IN, path, plen);
    if (!n)
        return NULL;
    bson_iter_t it;
    uint32_t count = 0;
    if (bson_iter_init_from_data(&it, v->value.v_doc.data, v->value.v_doc.data_len))
        while (bson_iter_next(&it))
            count++;
    n->in_vals = calloc(count ? count : 1, sizeof *n->in_vals);
    n->in_re = calloc(count ? count : 1, sizeof *n->in_re);
    if (!n->in_vals || !n->in_re) {
        node_free(n);
        cc_error(cc, "out of memory");
        return NULL;
    }
    bson_iter_init_from_data(&it, v->value.v_doc.data, v->value.v_doc.data_len);
    while (bson_iter_next(&it)) {
        bson_value_t e;
        iter_value(&it, &e);
        if (e.value_type == BSON_TYPE_REGEX) {
            if (!compile_regex(cc, &n->in_re[n->n_in_re], e.value.v_regex.regex,
                               (uint32_t)strlen(e.value.v_regex.regex), e.value.v_regex.options)) {
                node_free(n);
                return NULL;
            }
            n->n_in_re++;
            continue;
        }
        if (e.value_type == BSON_TYPE_UNDEFINED) {
            cc_error(cc, "%s cannot contain undefined", opname);
            node_free(n);
            return NULL;
        }
        if (is_operator_doc(&e)) {
            cc_error(cc, "%s cannot contain operator expressions", opname);
            node_free(n);
            return NULL;
        }
        if (e.value_type == BSON_TYPE_NULL)
            n->in_null = true;
        n->in_vals[n->n_in++] = e;
    }
    qsort(n->in_vals, n->n_in, sizeof *n->in_vals, cmp_values_qsort);
    return n;
}

static const struct {
    const char *name;
    uint32_t mask;
} TYPE_NAMES[] = {
    {"double", 1u << 1},
    {"string", 1u << 2},
    {"object", 1u << 3},
    {"array", 1u << 4},
    {"binData", 1u << 5},
    {"undefined", 1u << 6},
    {"objectId", 1u << 7},
    {"bool", 1u << 8},
    {"date", 1u << 9},
    {"null", 1u << 10},
    {"regex", 1u << 11},
    {"dbPointer", 1u << 12},
    {"javascript", 1u << 13},
    {"symbol", 1u << 14},
    {"javascriptWithScope", 1u << 15},
    {"int", 1u << 16},
    {"timestamp", 1u << 17},
    {"long", 1u << 18},
    {"decimal", 1u << 19},
    {"minKey", 1u << 20},
    {"maxKey", 1u << 21},
    {"number", (1u << 1) | (1u << 16) | (1u << 18) | (1u << 19)},
};

/* Truncates a number toward zero (MongoDB's $mod arguments). */
static bool trunc_number(const bson_value_t *v, int64_t *out)
{
    switch (v->value_type) {
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
        *out = num_i64(v);
        return true;
    case BSON_TYPE_DOUBLE: {
        double d = v->value.v_double;
        if (!isfinite(d))
            return false;
        d = trunc(d);
        if (d < -9223372036854775808.0 || d >= 9223372036854775808.0)
            return false;
        *out = (int64_t)d;
        return true;
    }
    case BSON_TYPE_DECIMAL128: {
        dec_t d;
        dec_decode(&v->value.v_decimal128, &d);
        return dec_trunc_i64(&d, out);
    }
    default:
        return false;
    }
}

/* Whole-number value of a numeric BSON value, if it is one (no truncation). */
static bool whole_number(const bson_value_t *v, int64_t *out)
{
    if (!trunc_number(v, out))
        return false;
    if (v->value_type == BSON_TYPE_DOUBLE)
        return v->value.v_double == (double)*out;
    if (v->value_type == BSON_TYPE_DECIMAL128) {
        dec_t d, back;
        dec_decode(&v->value.v_decimal128, &d);
        dec_from_i64(*out, &back);
        return dec_cmp(&d, &back) == 0;
    }
    return true;
}

static bool type_one(cc_t *cc, const bson_value_t *v, uint32_t *mask)
{
    if (v->value_type == BSON_TYPE_UTF8) {
        for (size_t i = 0; i < sizeof TYPE_NAMES / sizeof *TYPE_NAMES; i++)
            if (strcmp(v->value.v_utf8.str, TYPE_NAMES[i].name) == 0) {
                *mask |= TYPE_NAMES[i].mask;
                return true;
            }
        cc_error(cc, "$type: unknown type name \"%s\"", v->value.v_utf8.str);
        return false;
    }
    int64_t code;
    if (rank_of(v->value_type) == R_NUM) {
        if (whole_number(v, &code)) {
            if (code >= 1 && code <= 19) {
                *mask |= 1u << code;
                return true;
            }
            if (code == -1 || code == 127) {
                *mask |= code == -1 ? 1u << 20 : 1u << 21;
                return true;
            }
        }
        char buf[64];
        if (v->value_type == BSON_TYPE_DOUBLE)
            snprintf(buf, sizeof buf, "%g", v->value.v_double);
        else if (v->value_type == BSON_TYPE_DECIMAL128)
            bson_decimal128_to_string(&v->value.v_decimal128, buf);
        else
            snprintf(buf, sizeof buf, "%lld", (long long)num_i64(v));
        cc_error(cc, "$type: unknown type code %s", buf);
        return false;
    }
    cc_error(cc, "$type needs a type name or number, or an array of them");
    return false;
}

static node_t *type_leaf(cc_t *cc, const char *path, size_t plen, const bson_value_t *v)
{
    uint32_t mask = 0;
    if (v->value_type == BSON_TYPE_ARRAY) {
        bson_iter_t it;
        bson_iter_init_from_data(&it, v->value.v_doc.data, v->value.v_doc.data_len);
        while (bson_iter_next(&it)) {
            bson_value_t e;
            iter_value(&it, &e);
            if (e.value_type == BSON_TYPE_ARRAY) {
                cc_error(cc, "$type needs a type name or number, or an array of them");
                return NULL;
            }
            if (!type_one(cc, &e, &mask))
                return NULL;
        }
    } else if (!type_one(cc, v, &mask))
        return NULL;
    node_t *n = new_leaf(cc, OP_TYPE, path, plen);
    if (n)
        n->type_mask = mask;
    return n;
}

static bool truthy(const bson_value_t *v)
{
    switch (v->value_type) {
    case BSON_TYPE_EOD:
    case BSON_TYPE_NULL:
    case BSON_TYPE_UNDEFINED:
        return false;
    case BSON_TYPE_BOOL:
        return v->value.v_bool;
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
        return num_i64(v) != 0;
    case BSON_TYPE_DOUBLE:
        return v->value.v_double != 0;
    case BSON_TYPE_DECIMAL128: {
        dec_t d;
        dec_decode(&v->value.v_decimal128, &d);
        return !(d.cls == DEC_FINITE && d.coef == 0);
    }
    default:
        return true;
    }
}

static node_t *mod_leaf(cc_t *cc, const char *path, size_t plen, const bson_value_t *v)
{
    bson_value_t args[2];
    uint32_t n = 0;
    if (v->value_type == BSON_TYPE_ARRAY) {
        bson_iter_t it;
        bson_iter_init_from_data(&it, v->value.v_doc.data, v->value.v_doc.data_len);
        while (bson_iter_next(&it)) {
            if (n == 2) {
                n = 3;
                break;
            }
            iter_value(&it, &args[n++]);
        }
    }
    int64_t div, rem;
    if (n != 2 || !trunc_number(&args[0], &div) || !trunc_number(&args[1], &rem)) {
        cc_error(cc, "$mod needs [divisor, remainder]");
        return NULL;
    }
    if (div == 0) {
        cc_error(cc, "$mod divisor cannot be 0");
        return NULL;
    }
    node_t *l = new_leaf(cc, OP_MOD, path, plen);
    if (l) {
        l->mod_div = div;
        l->mod_rem = rem;
    }
    return l;
}

static node_t *size_leaf(cc_t *cc, const char *path, size_t plen, const bson_value_t *v)
{
    int64_t size;
    if (!whole_number(v, &size) || size < 0) {
        cc_error(cc, "$size needs a non-negative whole number");
        return NULL;
    }
    node_t *n = new_leaf(cc, OP_SIZE, path, plen);
    if (n)
        n->size = size;
    return n;
}

/* Pathless operators make $elemMatch's argument a query, not an operator list. */
static bool is_pathless(const char *k)
{
    static const char *const p[] = {"$and",        "$or",          "$nor",       "$where",
                                    "$expr",       "$comment",     "$text",      "$jsonSchema",
                                    "$alwaysTrue", "$alwaysFalse", "$sampleRate"};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++)
        if (strcmp(k, p[i]) == 0)
            return true;
    return false;
}

static node_t *elem_match_leaf(cc_t *cc, const char *path, size_t plen, const bson_value_t *v)
{
    if (v->value_type != BSON_TYPE_DOCUMENT) {
        cc_error(cc, "$elemMatch needs a document");
        return NULL;
    }
    bson_iter_t it;
    bool value_form = false;
    if (bson_iter_init_from_data(&it, v->value.v_doc.data, v->value.v_doc.data_len) &&
        bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        value_form = k[0] == '$' && !is_pathless(k) && is_operator_doc(v);
    }
    size_t old = loc_push(cc, "$elemMatch", 10, true);
    node_t *kid = value_form ? compile_ops(cc, NULL, 0, v)
                             : compile_query(cc, v->value.v_doc.data, v->value.v_doc.data_len);
    loc_pop(cc, old);
    if (!kid)
        return NULL;
    return adopt(cc, new_leaf(cc, value_form ? OP_ELEM_VAL : OP_ELEM_OBJ, path, plen), kid);
}

static bool first_key_is(const bson_value_t *v, const char *key)
{
    if (v->value_type != BSON_TYPE_DOCUMENT)
        return false;
    bson_iter_t it;
    return bson_iter_init_from_data(&it, v->value.v_doc.data, v->value.v_doc.data_len) &&
           bson_iter_next(&it) && strcmp(bson_iter_key(&it), key) == 0;
}

static node_t *all_node(cc_t *cc, const char *path, size_t plen, const bson_value_t *v)
{
    if (v->value_type != BSON_TYPE_ARRAY) {
        cc_error(cc, "$all needs an array");
        return NULL;
    }
    node_t *and = new_node(cc, K_AND);
    if (!and)
        return NULL;
    bson_iter_t it;
    bson_iter_init_from_data(&it, v->value.v_doc.data, v->value.v_doc.data_len);
    bool elem_mode = false;
    uint32_t i = 0;
    while (bson_iter_next(&it)) {
        bson_value_t e;
        iter_value(&it, &e);
        bool is_em = first_key_is(&e, "$elemMatch");
        if (i == 0)
            elem_mode = is_em;
        node_t *kid = NULL;
        if (elem_mode != is_em) {
            cc_error(cc, "$all cannot mix $elemMatch and other values");
        } else if (is_em) {
            bson_iter_t em;
            bson_iter_init_from_data(&em, e.value.v_doc.data, e.value.v_doc.data_len);
            bson_iter_next(&em);
            bson_value_t arg;
            iter_value(&em, &arg);
            bool more = bson_iter_next(&em);
            if (more)
                cc_error(cc, "$all: {$elemMatch: ...} elements take nothing else");
            else
                kid = elem_match_leaf(cc, path, plen, &arg);
        } else if (e.value_type == BSON_TYPE_REGEX) {
            kid = regex_leaf(cc, path, plen, e.value.v_regex.regex,
                             (uint32_t)strlen(e.value.v_regex.regex), e.value.v_regex.options);
        } else if (is_operator_doc(&e)) {
            cc_error(cc, "$all cannot contain operator expressions other than $elemMatch");
        } else {
            kid = eq_leaf(cc, OP_EQ, "$all", path, plen, &e);
        }
        if (!kid || !add_kid(cc, and, kid)) {
            node_free(and);
            return NULL;
        }
        i++;
    }
    if (and->nkids == 0) {
        and->kind = K_FALSE; /* $all: [] matches nothing */
        return and;
    }
    return simplify_and(and);
}

static node_t *not_node(cc_t *cc, const char *path, size_t plen, const bson_value_t *v)
{
    if (v->value_type == BSON_TYPE_REGEX)
        return wrap_not(cc, regex_leaf(cc, path, plen, v->value.v_regex.regex,
                                       (uint32_t)strlen(v->value.v_regex.regex),
                                       v->value.v_regex.options));
    if (!is_operator_doc(v)) {
        cc_error(cc, "$not needs an operator expression or a regex");
        return NULL;
    }
    size_t old = loc_push(cc, "$not", 4, true);
    node_t *kid = compile_ops(cc, path, plen, v);
    loc_pop(cc, old);
    return wrap_not(cc, kid);
}

/* {$op: arg, ...} on `path` (NULL: the value at hand) -> AND of the operators. */
static node_t *compile_ops(cc_t *cc, const char *path, size_t plen, const bson_value_t *doc)
{
    node_t *and = new_node(cc, K_AND);
    if (!and)
        return NULL;
    bson_iter_t it;
    bson_iter_init_from_data(&it, doc->value.v_doc.data, doc->value.v_doc.data_len);
    bson_value_t regex = {.value_type = BSON_TYPE_EOD}, options = {.value_type = BSON_TYPE_EOD};
    while (bson_iter_next(&it)) {
        const char *op = bson_iter_key(&it);
        bson_value_t v;
        iter_value(&it, &v);
        node_t *kid = NULL;
        if (op[0] != '$') {
            cc_error(cc, "cannot mix operators and fields (\"%s\")", op);
        } else if (strcmp(op, "$eq") == 0) {
            kid = eq_leaf(cc, OP_EQ, op, path, plen, &v);
        } else if (strcmp(op, "$ne") == 0) {
            if (v.value_type == BSON_TYPE_REGEX)
                cc_error(cc, "$ne needs one value, not a regex");
            else
                kid = wrap_not(cc, eq_leaf(cc, OP_EQ, op, path, plen, &v));
        } else if (strcmp(op, "$gt") == 0) {
            kid = eq_leaf(cc, OP_GT, op, path, plen, &v);
        } else if (strcmp(op, "$gte") == 0) {
            kid = eq_leaf(cc, OP_GTE, op, path, plen, &v);
        } else if (strcmp(op, "$lt") == 0) {
            kid = eq_leaf(cc, OP_LT, op, path, plen, &v);
        } else if (strcmp(op, "$lte") == 0) {
            kid = eq_leaf(cc, OP_LTE, op, path, plen, &v);
        } else if (strcmp(op, "$in") == 0) {
            kid = in_leaf(cc, op, path, plen, &v);
        } else if (strcmp(op, "$nin") == 0) {
            kid = wrap_not(cc, in_leaf(cc, op, path, plen, &v));
        } else if (strcmp(op, "$exists") == 0) {
            kid = new_leaf(cc, OP_EXISTS, path, plen);
            if (kid && !truthy(&v))
                kid = wrap_not(cc, kid);
        } else if (strcmp(op, "$type") == 0) {
            kid = type_leaf(cc, path, plen, &v);
        } else if (strcmp(op, "$size") == 0) {
            kid = size_leaf(cc, path, plen, &v);
        } else if (strcmp(op, "$mod") == 0) {
            kid = mod_leaf(cc, path, plen, &v);
        } else if (strcmp(op, "$all") == 0) {
            kid = all_node(cc, path, plen, &v);
        } else if (strcmp(op, "$elemMatch") == 0) {
            kid = elem_match_leaf(cc, path, plen, &v);
        } else if (strcmp(op, "$not") == 0) {
            kid = not_node(cc, path, plen, &v);
        } else if (strcmp(op, "$regex") == 0 || strcmp(op, "$options") == 0) {
            bool is_regex = op[1] == 'r';
            if (is_regex && v.value_type != BSON_TYPE_UTF8 && v.value_type != BSON_TYPE_REGEX)
                cc_error(cc, "$regex needs a string or a regex");
            else if (!is_regex && v.value_type != BSON_TYPE_UTF8)
                cc_error(cc, "$options needs a string");
            else if ((is_regex ? regex : options).value_type != BSON_TYPE_EOD)
                cc_error(cc, "%s given twice", op);
            else {
                *(is_regex ? &regex : &options) = v;
                continue;
            }
        } else if (is_forbidden(op)) {
            cc_error(cc, "%s is not allowed: no code runs on the gateway", op);
        } else {
            cc_error(cc, "unknown operator %s", op);
        }
        if (!kid || !add_kid(cc, and, kid)) {
            node_free(and);
            return NULL;
        }
    }
    if (options.value_type != BSON_TYPE_EOD && regex.value_type == BSON_TYPE_EOD) {
        cc_error(cc, "$options needs a $regex");
        node_free(and);
        return NULL;
    }
    if (regex.value_type != BSON_TYPE_EOD) {
        const char *pattern, *flags = "";
        uint32_t patlen;
        if (regex.value_type == BSON_TYPE_REGEX) {
            pattern = regex.value.v_regex.regex;
            patlen = (uint32_t)strlen(pattern);
            flags = regex.value.v_regex.options;
        } else {
            pattern = regex.value.v_utf8.str;
            patlen = regex.value.v_utf8.len;
        }
        if (options.value_type != BSON_TYPE_EOD) {
            if (flags[0] && options.value.v_utf8.len) {
                cc_error(cc, "regex options given both in the regex and in $options");
                node_free(and);
                return NULL;
            }
            if (options.value.v_utf8.len)
                flags = options.value.v_utf8.str;
        }
        node_t *kid = regex_leaf(cc, path, plen, pattern, patlen, flags);
        if (!kid || !add_kid(cc, and, kid)) {
            node_free(and);
            return NULL;
        }
    }
    if (and->nkids == 0) {
        /* only reachable for {} which is not an operator document */
        and->kind = K_TRUE;
        return and;
    }
    return simplify_and(and);
}

static node_t *compile_field(cc_t *cc, const char *path, size_t plen, const bson_value_t *v)
{
    size_t old = loc_push(cc, path, plen, true);
    node_t *n;
    if (v->value_type == BSON_TYPE_REGEX)
        n = regex_leaf(cc, path, plen, v->value.v_regex.regex,
                       (uint32_t)strlen(v->value.v_regex.regex), v->value.v_regex.options);
    else if (is_operator_doc(v))
        n = compile_ops(cc, path, plen, v);
    else if (v->value_type == BSON_TYPE_UNDEFINED) {
        cc_error(cc, "cannot compare to undefined");
        n = NULL;
    } else
        n = eq_leaf(cc, OP_EQ, "$eq", path, plen, v);
    loc_pop(cc, old);
    return n;
}

static node_t *compile_logical(cc_t *cc, const char *op, const bson_value_t *v)
{
    uint8_t kind = op[1] == 'a' ? K_AND : op[1] == 'o' ? K_OR : K_NOR;
    size_t old = cc->loclen;
    node_t *n = NULL;
    bson_iter_t it;
    uint32_t count = 0;
    bool ok = v->value_type == BSON_TYPE_ARRAY &&
              bson_iter_init_from_data(&it, v->value.v_doc.data, v->value.v_doc.data_len);
    if (ok) {
        while (bson_iter_next(&it)) {
            count++;
            if (bson_iter_type(&it) != BSON_TYPE_DOCUMENT)
                ok = false;
        }
    }
    if (!ok || count == 0) {
        cc_error(cc, "%s needs a non-empty array of documents", op);
        goto out;
    }
    n = new_node(cc, kind);
    if (!n)
        goto out;
    loc_push(cc, op, strlen(op), true);
    bson_iter_init_from_data(&it, v->value.v_doc.data, v->value.v_doc.data_len);
    for (uint32_t i = 0; bson_iter_next(&it); i++) {
        const uint8_t *d;
        uint32_t l;
        bson_iter_document(&it, &l, &d);
        size_t o2 = loc_push_index(cc, i);
        node_t *kid = compile_query(cc, d, l);
        loc_pop(cc, o2);
        if (!kid || !add_kid(cc, n, kid)) {
            node_free(n);
            n = NULL;
            goto out;
        }
    }
    if (kind == K_AND)
        n = simplify_and(n);
out:
    loc_pop(cc, old);
    return n;
}

static node_t *compile_query(cc_t *cc, const uint8_t *data, uint32_t len)
{
    node_t *and = new_node(cc, K_AND);
    if (!and)
        return NULL;
    bson_iter_t it;
    if (!bson_iter_init_from_data(&it, data, len)) {
        cc_error(cc, "invalid BSON");
        node_free(and);
        return NULL;
    }
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        uint32_t klen = iter_key_len(&it);
        bson_value_t v;
        iter_value(&it, &v);
        node_t *kid = NULL;
        if (k[0] == '$') {
            if (strcmp(k, "$comment") == 0)
                continue;
            if (strcmp(k, "$and") == 0 || strcmp(k, "$or") == 0 || strcmp(k, "$nor") == 0)
                kid = compile_logical(cc, k, &v);
            else if (is_forbidden(k))
                cc_error(cc, "%s is not allowed: no code runs on the gateway", k);
            else if (is_field_operator(k))
                cc_error(cc, "%s must be inside a field: {field: {%s: ...}}", k, k);
            else
                cc_error(cc, "unknown operator %s", k);
        } else {
            kid = compile_field(cc, k, klen, &v);
        }
        if (!kid || !add_kid(cc, and, kid)) {
            node_free(and);
            return NULL;
        }
    }
    return simplify_and(and);
}

/* ------------------------------------------------------------------------ */
/* Required equalities.                                                      */

static bool collect_eqs(const node_t *n, cg_match_eq_t *out, size_t *count)
{
    if (n->kind == K_AND) {
        for (uint32_t i = 0; i < n->nkids; i++)
            collect_eqs(n->kids[i], out, count);
        return true;
    }
    if (n->kind != K_LEAF || n->ncomp == 0)
        return true;
    if (n->op == OP_EQ && hashable(&n->val)) {
        if (out)
            out[*count] = (cg_match_eq_t){n->path, &n->val, 1};
        ++*count;
    } else if (n->op == OP_IN && n->n_in > 0 && n->n_in_re == 0 && !n->in_null) {
        for (uint32_t i = 0; i < n->n_in; i++)
            if (!hashable(&n->in_vals[i]))
                return true;
        if (out)
            out[*count] = (cg_match_eq_t){n->path, n->in_vals, n->n_in};
        ++*count;
    }
    return true;
}

static bool compute_eqs(cg_match_t *m)
{
    free(m->eqs);
    m->eqs = NULL;
    m->neqs = 0;
    size_t n = 0;
    collect_eqs(m->root, NULL, &n);
    if (n == 0)
        return true;
    m->eqs = calloc(n, sizeof *m->eqs);
    if (!m->eqs)
        return false;
    collect_eqs(m->root, m->eqs, &m->neqs);
    return true;
}

size_t cg_match_required_equalities(const cg_match_t *m, const cg_match_eq_t **out)
{
    *out = m->eqs;
    return m->neqs;
}

/* ------------------------------------------------------------------------ */
/* Public entry points.                                                      */

static bool depth_ok(const uint8_t *data, uint32_t len, int level)
{
    if (level > CG_MATCH_MAX_DEPTH)
        return false;
    bson_iter_t it;
    if (!bson_iter_init_from_data(&it, data, len))
        return true;
    while (bson_iter_next(&it)) {
        bson_type_t t = bson_iter_type(&it);
        if (t == BSON_TYPE_DOCUMENT || t == BSON_TYPE_ARRAY) {
            const uint8_t *d;
            uint32_t l;
            if (t == BSON_TYPE_DOCUMENT)
                bson_iter_document(&it, &l, &d);
            else
                bson_iter_array(&it, &l, &d);
            if (!depth_ok(d, l, level + 1))
                return false;
        }
    }
    return true;
}

/* Takes ownership of q. */
static cg_match_t *compile_owned(bson_t *q, const char *what, char *err, size_t errlen)
{
    cc_t cc = {.what = what ? what : "filter", .err = err, .errlen = errlen};
    if (err && errlen)
        err[0] = '\0';
    if (!depth_ok(bson_get_data(q), q->len, 1)) {
        cc_error(&cc, "nesting deeper than %d", CG_MATCH_MAX_DEPTH);
        bson_destroy(q);
        return NULL;
    }
    if (!bson_validate(q, BSON_VALIDATE_NONE, NULL)) {
        cc_error(&cc, "invalid BSON");
        bson_destroy(q);
        return NULL;
    }
    node_t *root = compile_query(&cc, bson_get_data(q), q->len);
    if (!root) {
        bson_destroy(q);
        return NULL;
    }
    cg_match_t *m = calloc(1, sizeof *m);
    bson_t **docs = malloc(sizeof *docs);
    if (!m || !docs) {
        free(m);
        free(docs);
        node_free(root);
        bson_destroy(q);
        cc_error(&cc, "out of memory");
        return NULL;
    }
    m->root = root;
    m->docs = docs;
    m->docs[0] = q;
    m->ndocs = 1;
    if (!compute_eqs(m)) {
        cg_match_free(m);
        cc_error(&cc, "out of memory");
        return NULL;
    }
    return m;
}

cg_match_t *cg_match_compile(const bson_t *query, const char *what, char *err, size_t errlen)
{
    bson_t *q = bson_copy(query);
    if (!q) {
        if (err && errlen)
            snprintf(err, errlen, "%s: out of memory", what ? what : "filter");
        return NULL;
    }
    return compile_owned(q, what, err, errlen);
}

/* Checks that the text is one JSON object (nothing but white space after it)
 * and that it does not nest deeper than the limit allows, before libbson sees
 * it. Extended JSON wrappers ({"$date": {"$numberLong": ...}}) add up to three
 * JSON levels to one BSON value, so the exact limit is checked on the BSON. */
static const char *json_shape(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    if (i == len || s[i] != '{')
        return "not a JSON object";
    int depth = 0;
    bool in_str = false;
    for (; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"')
            in_str = true;
        else if (c == '{' || c == '[') {
            if (++depth > CG_MATCH_MAX_DEPTH + 3)
                return "nesting deeper than 32";
        } else if (c == '}' || c == ']') {
            if (--depth == 0) {
                for (i++; i < len; i++)
                    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
                        return "not a JSON object (text after the object)";
                return NULL;
            }
        }
    }
    return NULL; /* unterminated: let the parser say so */
}

/* libbson's JSON parser reads the keys $type, $regex and $options as legacy
 * (v1) Extended JSON for binary and regex values, which breaks the query
 * operators of the same names ({"$type": 2}, {"$regex": "x", "$gt": "a"}).
 * Extended JSON v2 does not use them, so before parsing we prefix these keys
 * with a \u0001 byte and strip it again from the parsed document. Returns the
 * number of keys escaped; writes the escaped text into out when not NULL. */
static size_t escape_operator_keys(const char *s, size_t len, char *out)
{
    static const char *const keys[] = {"$type", "$regex", "$options"};
    size_t count = 0, o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '"') {
            if (out)
                out[o++] = s[i];
            continue;
        }
        size_t start = i + 1, end = start;
        while (end < len && s[end] != '"')
            end += s[end] == '\\' ? 2 : 1;
        if (end >= len) { /* unterminated: copy the rest, the parser complains */
            if (out) {
                memcpy(out + o, s + i, len - i);
                o += len - i;
            }
            break;
        }
        size_t after = end + 1;
        while (after < len &&
               (s[after] == ' ' || s[after] == '\t' || s[after] == '\n' || s[after] == '\r'))
            after++;
        bool escape = false;
        if (after < len && s[after] == ':')
            for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
                if (end - start == strlen(keys[k]) && memcmp(s + start, keys[k], end - start) == 0)
                    escape = true;
        if (out) {
            out[o++] = '"';
            if (escape) {
                memcpy(out + o, "\\u0001", 6);
                o += 6;
            }
            memcpy(out + o, s + start, end - start + 1);
            o += end - start + 1;
        }
        count += escape;
        i = end;
    }
    if (out)
        out[o] = '\0';
    return count;
}

/* Copies a document, dropping the \u0001 put before escaped operator keys. */
static void unescape_keys(const uint8_t *data, uint32_t len, bson_t *out)
{
    bson_iter_t it;
    if (!bson_iter_init_from_data(&it, data, len))
        return;
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        int klen = (int)iter_key_len(&it);
        if (key[0] == '\x01' && key[1] == '$') {
            key++;
            klen--;
        }
        bson_type_t t = bson_iter_type(&it);
        if (t == BSON_TYPE_DOCUMENT || t == BSON_TYPE_ARRAY) {
            const uint8_t *d;
            uint32_t l;
            bson_t child;
            if (t == BSON_TYPE_DOCUMENT) {
                bson_iter_document(&it, &l, &d);
                bson_append_document_begin(out, key, klen, &child);
            } else {
                bson_iter_array(&it, &l, &d);
                bson_append_array_begin(out, key, klen, &child);
            }
            unescape_keys(d, l, &child);
            if (t == BSON_TYPE_DOCUMENT)
                bson_append_document_end(out, &child);
            else
                bson_append_array_end(out, &child);
        } else {
            bson_append_iter(out, key, klen, &it);
        }
    }
}

bson_t *cg_match_parse_json(const char *json, size_t len, const char *what, char *err,
                            size_t errlen)
{
    if (!what)
        what = "filter";
    if (len > CG_MATCH_MAX_JSON) {
        snprintf(err, errlen, "%s: longer than %d bytes", what, CG_MATCH_MAX_JSON);
        return NULL;
    }
    const char *shape = json_shape(json, len);
    if (shape) {
        snprintf(err, errlen, "%s: %s", what, shape);
        return NULL;
    }
    char *escaped = NULL;
    size_t n_escaped = escape_operator_keys(json, len, NULL);
    if (n_escaped) {
        escaped = malloc(len + n_escaped * 6 + 1);
        if (!escaped) {
            snprintf(err, errlen, "%s: out of memory", what);
            return NULL;
        }
        escape_operator_keys(json, len, escaped);
    }
    bson_error_t e;
    bson_t *q = bson_new_from_json((const uint8_t *)(escaped ? escaped : json),
                                   (ssize_t)(escaped ? len + n_escaped * 6 : len), &e);
    free(escaped);
    if (!q) {
        snprintf(err, errlen, "%s: invalid JSON: %s", what, e.message);
        return NULL;
    }
    if (n_escaped) {
        bson_t *plain = bson_new();
        unescape_keys(bson_get_data(q), q->len, plain);
        bson_destroy(q);
        q = plain;
    }
    return q;
}

cg_match_t *cg_match_compile_json(const char *json, size_t len, const char *what, char *err,
                                  size_t errlen)
{
    bson_t *q = cg_match_parse_json(json, len, what, err, errlen);
    return q ? compile_owned(q, what, err, errlen) : NULL;
}

void cg_match_free(cg_match_t *m)
{
    if (!m)
        return;
    node_free(m->root);
    for (size_t i = 0; i < m->ndocs; i++)
        bson_destroy(m->docs[i]);
    free(m->docs);
    free(m->eqs);
    free(m);
}

cg_match_t *cg_match_and(cg_match_t *a, cg_match_t *b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    node_t *and = calloc(1, sizeof *and);
    node_t **kids = malloc(2 * sizeof *kids);
    bson_t **docs = realloc(a->docs, (a->ndocs + b->ndocs) * sizeof *docs);
    if (docs)
        a->docs = docs;
    if (!and || !kids || !docs) {
        /* cannot combine without memory: keep the stricter of nothing, fail closed */
        free(and);
        free(kids);
        cg_match_free(b);
        node_free(a->root);
        a->root = calloc(1, sizeof *a->root);
        if (a->root)
            a->root->kind = K_FALSE;
        free(a->eqs);
        a->eqs = NULL;
        a->neqs = 0;
        return a;
    }
    and->kind = K_AND;
    and->kids = kids;
    and->kids[0] = a->root;
    and->kids[1] = b->root;
    and->nkids = 2;
    a->root = and;
    for (size_t i = 0; i < b->ndocs; i++)
        a->docs[a->ndocs++] = b->docs[i];
    b->ndocs = 0;
    b->root = NULL;
    cg_match_free(b);
    compute_eqs(a);
    return a;
}
