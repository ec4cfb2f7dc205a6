/* testutil.h: small helpers shared by the unit tests. */
#ifndef CG_TESTUTIL_H
#define CG_TESTUTIL_H

#include <check.h>
#include <stdio.h>

#include "event.h"

/* A change event with position `pos` (uppercase hex), op and ns. */
static inline cg_event_t *test_change(const char *pos, const char *op, const char *db,
                                      const char *coll)
{
    bson_t *b = BCON_NEW("_id", "{", "_data", BCON_UTF8(pos), "}", "operationType", BCON_UTF8(op),
                         "ns", "{", "db", BCON_UTF8(db), "coll", BCON_UTF8(coll), "}");
    char err[128];
    cg_event_t *ev = cg_event_new_change(b, err, sizeof err);
    ck_assert_msg(ev != NULL, "%s", err);
    bson_destroy(b);
    return ev;
}

static inline void test_pos(char *buf, size_t len, unsigned n)
{
    snprintf(buf, len, "82%08X", n);
}

static inline int test_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

#endif
