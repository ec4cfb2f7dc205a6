/* Unit tests for src/event.c: serialization and SSE/NDJSON framing. */
#include <check.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "testutil.h"

static bson_t *change(const char *json)
{
    bson_error_t e;
    bson_t *b = bson_new_from_json((const uint8_t *)json, -1, &e);
    ck_assert_msg(b != NULL, "%s", e.message);
    return b;
}

static const char *INSERT =
    "{\"_id\": {\"_data\": \"82AB01\"}, \"operationType\": \"insert\","
    " \"clusterTime\": {\"$timestamp\": {\"t\": 1700000000, \"i\": 3}},"
    " \"ns\": {\"db\": \"shop\", \"coll\": \"orders\"}, \"documentKey\": {\"_id\": 7},"
    " \"fullDocument\": {\"_id\": 7, \"note\": \"line\\nbreak\", \"n\": {\"$numberLong\": \"5\"}}}";

START_TEST(sse_frame_is_id_then_one_data_line)
{
    bson_t *b = change(INSERT);
    char err[128];
    cg_event_t *ev = cg_event_new_change(b, err, sizeof err);
    ck_assert_ptr_nonnull(ev);
    ck_assert_str_eq(ev->position, "82AB01");
    ck_assert_str_eq(ev->op, "insert");
    ck_assert_int_eq(ev->cluster_time, 1700000000);
    ck_assert_uint_eq(ev->frames.sse_len, strlen(ev->frames.sse));
    ck_assert(strncmp(ev->frames.sse, "id: 82AB01\ndata: ", 17) == 0);
    /* exactly two newlines inside: after id, and the blank line at the end */
    ck_assert(strcmp(ev->frames.sse + ev->frames.sse_len - 2, "\n\n") == 0);
    ck_assert_ptr_eq(strchr(ev->frames.sse + 17, '\n'), ev->frames.sse + ev->frames.sse_len - 2);
    /* the data line is the relaxed Extended JSON of the event */
    json_error_t je;
    json_t *data = json_loadb(ev->frames.sse + 17, ev->frames.sse_len - 19, 0, &je);
    ck_assert_msg(data != NULL, "%s", je.text);
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(data, "fullDocument"), "note")),
        "line\nbreak");
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(data, "fullDocument"), "n")), 5);
    json_decref(data);
    cg_event_unref(ev);
    bson_destroy(b);
}
END_TEST

/* The JSON is compact (no spaces between tokens), and strings, spaces,
 * quotes and backslashes in them included, come through unchanged. */
START_TEST(json_is_compact_and_strings_are_kept)
{
    bson_t *b = BCON_NEW("_id", "{", "_data", BCON_UTF8("82AB02"), "}", "operationType",
                         BCON_UTF8("insert"), "fullDocument", "{", "s",
                         BCON_UTF8("a \" : b \\\" { c }"), "n", BCON_INT32(7), "}");
    char err[128];
    cg_event_t *ev = cg_event_new_change(b, err, sizeof err);
    ck_assert_msg(ev != NULL, "%s", err);
    const char *want = "{\"_id\":{\"_data\":\"82AB02\"},\"operationType\":\"insert\","
                       "\"fullDocument\":{\"s\":\"a \\\" : b \\\\\\\" { c }\",\"n\":7}}";
    ck_assert_str_eq(ev->frames.json, want);
    ck_assert_uint_eq(ev->frames.json_len, strlen(want));
    json_error_t je;
    json_t *data = json_loads(ev->frames.json, 0, &je);
    ck_assert_msg(data != NULL, "%s", je.text);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(data, "fullDocument"), "s")),
                     "a \" : b \\\" { c }");
    json_decref(data);
    cg_event_unref(ev);
    bson_destroy(b);
}
END_TEST

START_TEST(ndjson_line_wraps_id_and_event)
{
    bson_t *b = change(INSERT);
    char err[128];
    cg_event_t *ev = cg_event_new_change(b, err, sizeof err);
    ck_assert_uint_eq(ev->frames.ndjson_len, strlen(ev->frames.ndjson));
    ck_assert_int_eq(ev->frames.ndjson[ev->frames.ndjson_len - 1], '\n');
    ck_assert_ptr_eq(strchr(ev->frames.ndjson, '\n'),
                     ev->frames.ndjson + ev->frames.ndjson_len - 1);
    json_error_t je;
    json_t *line = json_loads(ev->frames.ndjson, 0, &je);
    ck_assert_ptr_nonnull(line);
    ck_assert_str_eq(json_string_value(json_object_get(line, "id")), "82AB01");
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(line, "event"), "operationType")),
        "insert");
    json_decref(line);
    cg_event_unref(ev);
    bson_destroy(b);
}
END_TEST

START_TEST(reset_is_a_named_event_that_moves_the_id)
{
    cg_event_t *ev = cg_event_new_reset("82FF", "history_lost");
    ck_assert_str_eq(ev->frames.sse, "event: reset\nid: 82FF\ndata: "
                                     "{\"reason\":\"history_lost\",\"lastEventId\":\"82FF\"}\n\n");
    ck_assert_str_eq(ev->frames.ndjson,
                     "{\"reset\":{\"reason\":\"history_lost\",\"lastEventId\":\"82FF\"}}\n");
    cg_event_unref(ev);
    ev = cg_event_new_reset(NULL, "history_lost");
    ck_assert_str_eq(ev->frames.sse,
                     "event: reset\ndata: {\"reason\":\"history_lost\",\"lastEventId\":null}\n\n");
    cg_event_unref(ev);
}
END_TEST

START_TEST(events_without_a_token_are_refused)
{
    bson_t *b = change("{\"operationType\": \"insert\"}");
    char err[128] = "";
    ck_assert_ptr_null(cg_event_new_change(b, err, sizeof err));
    ck_assert(strstr(err, "resume token") != NULL);
    bson_destroy(b);
    b = change("{\"_id\": {}, \"operationType\": \"insert\"}");
    ck_assert_ptr_null(cg_event_new_change(b, err, sizeof err));
    bson_destroy(b);
}
END_TEST

START_TEST(references_share_one_copy)
{
    bson_t *b = change(INSERT);
    char err[128];
    cg_event_t *ev = cg_event_new_change(b, err, sizeof err);
    bson_destroy(b); /* the event keeps its own copy */
    cg_event_t *again = cg_event_ref(ev);
    ck_assert_ptr_eq(again, ev);
    cg_event_unref(ev);
    ck_assert_str_eq(again->op, "insert"); /* still alive: one reference left */
    cg_event_unref(again);
}
END_TEST

/* The subject view's fullDocument.owner, or NULL when there is no view. */
static const char *subject_owner(const cg_event_t *ev)
{
    const bson_t *s = cg_event_subject(ev);
    if (!s)
        return NULL;
    bson_iter_t it, owner;
    ck_assert(bson_iter_init(&it, s));
    if (!bson_iter_find_descendant(&it, "fullDocument.owner", &owner))
        return "(none)";
    return bson_iter_utf8(&owner, NULL);
}

static cg_event_t *event_of(const char *json)
{
    bson_t *b = change(json);
    char err[128];
    cg_event_t *ev = cg_event_new_change(b, err, sizeof err);
    ck_assert_msg(ev != NULL, "%s", err);
    bson_destroy(b);
    return ev;
}

#define HEAD                                                                                       \
    "{\"_id\": {\"_data\": \"82AB02\"}, \"ns\": {\"db\": \"shop\", \"coll\": \"orders\"},"         \
    " \"documentKey\": {\"_id\": 7}, "

START_TEST(the_subject_is_the_event_when_it_has_a_full_document)
{
    cg_event_t *ev = event_of(HEAD "\"operationType\": \"insert\","
                                   " \"fullDocument\": {\"_id\": 7, \"owner\": \"ann\"}}");
    ck_assert_ptr_eq(cg_event_subject(ev), ev->doc); /* no copy */
    cg_event_unref(ev);
    /* an update with fullDocument: that is what it is about, even with a pre-image */
    ev = event_of(HEAD "\"operationType\": \"update\","
                       " \"fullDocument\": {\"_id\": 7, \"owner\": \"bob\"},"
                       " \"fullDocumentBeforeChange\": {\"_id\": 7, \"owner\": \"ann\"}}");
    ck_assert_ptr_eq(cg_event_subject(ev), ev->doc);
    ck_assert_str_eq(subject_owner(ev), "bob");
    cg_event_unref(ev);
}
END_TEST

START_TEST(without_a_full_document_the_subject_is_the_pre_image)
{
    /* a delete with its pre-image */
    cg_event_t *ev =
        event_of(HEAD "\"operationType\": \"delete\","
                      " \"fullDocumentBeforeChange\": {\"_id\": 7, \"owner\": \"ann\"}}");
    const bson_t *s = cg_event_subject(ev);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_ne(s, ev->doc);
    ck_assert_ptr_eq(cg_event_subject(ev), s); /* made once */
    ck_assert_str_eq(subject_owner(ev), "ann");
    /* everything else is the event's own */
    bson_iter_t it, v;
    ck_assert(bson_iter_init(&it, s) && bson_iter_find_descendant(&it, "documentKey._id", &v));
    ck_assert_int_eq(bson_iter_int32(&v), 7);
    ck_assert(bson_iter_init(&it, s) && bson_iter_find_descendant(&it, "operationType", &v));
    ck_assert_str_eq(bson_iter_utf8(&v, NULL), "delete");
    ck_assert(bson_iter_init(&it, s) &&
              bson_iter_find_descendant(&it, "fullDocumentBeforeChange.owner", &v));
    /* the event itself is unchanged: it is what subscribers receive */
    ck_assert(bson_iter_init(&it, ev->doc) && !bson_iter_find(&it, "fullDocument"));
    ck_assert_ptr_null(strstr(ev->frames.json, "\"fullDocument\""));
    cg_event_unref(ev);

    /* an update of a document deleted since: updateLookup gives fullDocument null */
    ev = event_of(HEAD "\"operationType\": \"update\", \"fullDocument\": null,"
                       " \"updateDescription\": {\"updatedFields\": {\"qty\": 2}},"
                       " \"fullDocumentBeforeChange\": {\"_id\": 7, \"owner\": \"cy\"}}");
    ck_assert_str_eq(subject_owner(ev), "cy");
    /* fullDocument keeps its place among the fields */
    ck_assert(bson_iter_init(&it, cg_event_subject(ev)));
    const char *order[] = {"_id", "ns", "documentKey", "operationType", "fullDocument"};
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        ck_assert(bson_iter_next(&it));
        ck_assert_str_eq(bson_iter_key(&it), order[i]);
    }
    cg_event_unref(ev);
}
END_TEST

START_TEST(an_event_about_no_document_it_carries_has_no_subject)
{
    const char *none[] = {
        /* a delete without pre-images */
        HEAD "\"operationType\": \"delete\"}",
        /* pre-images on, but not available */
        HEAD "\"operationType\": \"delete\", \"fullDocumentBeforeChange\": null}",
        /* an update without updateLookup */
        HEAD "\"operationType\": \"update\", \"updateDescription\": {\"updatedFields\": {}}}",
        /* an update of a document deleted since, without pre-images */
        HEAD "\"operationType\": \"update\", \"fullDocument\": null}",
        "{\"_id\": {\"_data\": \"82AB03\"}, \"operationType\": \"drop\","
        " \"ns\": {\"db\": \"shop\", \"coll\": \"orders\"}}",
    };
    for (size_t i = 0; i < sizeof none / sizeof *none; i++) {
        cg_event_t *ev = event_of(none[i]);
        ck_assert_msg(cg_event_subject(ev) == NULL, "case %zu", i);
        cg_event_unref(ev);
    }
    cg_event_t *r = cg_event_new_reset("82FF", "history_lost"), *m = cg_event_new_mark("82FF");
    ck_assert_ptr_null(cg_event_subject(r));
    ck_assert_ptr_null(cg_event_subject(m));
    cg_event_unref(r);
    cg_event_unref(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("event");
    TCase *tc = tcase_create("framing");
    tcase_add_test(tc, sse_frame_is_id_then_one_data_line);
    tcase_add_test(tc, json_is_compact_and_strings_are_kept);
    tcase_add_test(tc, ndjson_line_wraps_id_and_event);
    tcase_add_test(tc, reset_is_a_named_event_that_moves_the_id);
    tcase_add_test(tc, events_without_a_token_are_refused);
    tcase_add_test(tc, references_share_one_copy);
    suite_add_tcase(s, tc);
    tc = tcase_create("subject");
    tcase_add_test(tc, the_subject_is_the_event_when_it_has_a_full_document);
    tcase_add_test(tc, without_a_full_document_the_subject_is_the_pre_image);
    tcase_add_test(tc, an_event_about_no_document_it_carries_has_no_subject);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
