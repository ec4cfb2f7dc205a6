/* position.h: resume tokens <-> the URL-safe position strings clients see.
 *
 * A token {_data: "<uppercase hex>"} (every MongoDB since 4.2) becomes the hex
 * string itself. Any other token shape becomes "~" followed by the unpadded
 * base64url encoding of the token's BSON, so the mapping is exact both ways.
 * Only the canonical form of a token is accepted when decoding, so one token
 * has exactly one position string (the journal finds positions by string). */
#ifndef CG_POSITION_H
#define CG_POSITION_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>

/* Longest position accepted from a client, in bytes. Real tokens are < 600. */
#define CG_POSITION_MAX 4096

/* Returns a new string (free with bson_free) or NULL when token is empty. */
char *cg_position_from_token(const bson_t *token);

/* Decodes pos into *token (initialised by this call; bson_destroy it on
 * success only). Returns 0, or -1 with a message in err. */
int cg_position_to_token(const char *pos, bson_t *token, char *err, size_t errlen);

/* The clusterTime a position carries, when it is a MongoDB 4.2+ token (hex
 * starting with a KeyString Timestamp: "82", then 8 bytes, seconds first).
 * Returns false for other shapes, which carry no readable time. */
bool cg_position_cluster_time(const char *pos, uint32_t *t, uint32_t *i);

#endif
