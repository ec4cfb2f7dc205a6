/* position.c: the position codec (see position.h for the format). */
#include "position.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static bool is_upper_hex(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return true;
}

static int b64url_value(char c)
{
    const char *p = c ? strchr(b64url, c) : NULL;
    return p ? (int)(p - b64url) : -1;
}

/* Returns the hex string when token is exactly {_data: <upper hex string>}. */
static const char *plain_data(const bson_t *token, uint32_t *len)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, token) || !bson_iter_next(&it))
        return NULL;
    if (strcmp(bson_iter_key(&it), "_data") != 0 || !BSON_ITER_HOLDS_UTF8(&it))
        return NULL;
    const char *s = bson_iter_utf8(&it, len);
    if (bson_iter_next(&it) || !is_upper_hex(s, *len) || strlen(s) != *len)
        return NULL;
    return s;
}

char *cg_position_from_token(const bson_t *token)
{
    if (!token || token->len <= 5)
        return NULL;
    uint32_t len;
    const char *hex = plain_data(token, &len);
    if (hex)
        return bson_strndup(hex, len);

    const uint8_t *data = bson_get_data(token);
    size_t n = token->len;
    char *out = bson_malloc(2 + (n * 4 + 2) / 3);
    size_t o = 0;
    out[o++] = '~';
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < n)
            v |= data[i + 2];
        out[o++] = b64url[(v >> 18) & 63];
        out[o++] = b64url[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = b64url[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = b64url[v & 63];
    }
    out[o] = '\0';
    return out;
}

/* Decodes the "~..." form; the result must re-encode to the same string. */
static int decode_b64(const char *pos, size_t len, bson_t *token, char *err, size_t errlen)
{
    size_t n = len - 1;
    if (n % 4 == 1) {
        snprintf(err, errlen, "truncated encoded token");
        return -1;
    }
    uint8_t *buf = bson_malloc(n * 3 / 4 + 3);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        size_t k;
        for (k = 0; k < 4 && i + k < n; k++) {
            int d = b64url_value(pos[1 + i + k]);
            if (d < 0) {
                bson_free(buf);
                snprintf(err, errlen, "character %zu is not URL-safe base64", i + k + 2);
                return -1;
            }
            v |= (uint32_t)d << (18 - 6 * k);
        }
        buf[o++] = (uint8_t)(v >> 16);
        if (k > 2)
            buf[o++] = (uint8_t)(v >> 8);
        if (k > 3)
            buf[o++] = (uint8_t)v;
    }
    bson_t tmp;
    if (!bson_init_static(&tmp, buf, o) || !bson_validate(&tmp, BSON_VALIDATE_NONE, NULL)) {
        bson_free(buf);
        snprintf(err, errlen, "encoded token is not a BSON document");
        return -1;
    }
    char *again = cg_position_from_token(&tmp);
    bool canonical = again && strcmp(again, pos) == 0;
    bson_free(again);
    if (!canonical) {
        bson_free(buf);
        snprintf(err, errlen, "encoded token is not in canonical form");
        return -1;
    }
    bson_init(token);
    bson_concat(token, &tmp);
    bson_free(buf);
    return 0;
}

int cg_position_to_token(const char *pos, bson_t *token, char *err, size_t errlen)
{
    size_t len = pos ? strlen(pos) : 0;
    if (len == 0) {
        snprintf(err, errlen, "empty position");
        return -1;
    }
    if (len > CG_POSITION_MAX) {
        snprintf(err, errlen, "position longer than %d characters", CG_POSITION_MAX);
        return -1;
    }
    if (pos[0] == '~')
        return decode_b64(pos, len, token, err, errlen);
    if (!is_upper_hex(pos, len)) {
        snprintf(err, errlen, "a position is uppercase hexadecimal or starts with '~'");
        return -1;
    }
    bson_init(token);
    BSON_APPEND_UTF8(token, "_data", pos);
    return 0;
}

static uint32_t hex_u32(const char *s)
{
    uint32_t v = 0;
    for (int k = 0; k < 8; k++)
        v = v << 4 | (uint32_t)(s[k] <= '9' ? s[k] - '0' : s[k] - 'A' + 10);
    return v;
}

bool cg_position_cluster_time(const char *pos, uint32_t *t, uint32_t *i)
{
    size_t len = strlen(pos);
    if (len < 18 || strncmp(pos, "82", 2) != 0 || !is_upper_hex(pos, len))
        return false;
    *t = hex_u32(pos + 2);
    *i = hex_u32(pos + 10);
    return true;
}
