/* event.c: building events and their wire bytes (SSE, NDJSON, JSON) once. */
#include "event.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "position.h"
#include "project.h"

static cg_event_t *event_alloc(cg_event_kind_t kind, const char *position)
{
    cg_event_t *ev = bson_malloc0(sizeof *ev);
    atomic_init(&ev->refs, 1);
    ev->kind = kind;
    ev->position = position ? bson_strdup(position) : NULL;
    return ev;
}

static char *utf8_field(const bson_t *doc, const char *dotted)
{
    bson_iter_t it, child;
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, dotted, &child) &&
        BSON_ITER_HOLDS_UTF8(&child))
        return bson_strdup(bson_iter_utf8(&child, NULL));
    return NULL;
}

/* Drops the spaces libbson puts between tokens ("{ \"a\" : 1 }"), in place;
 * returns the new length. Every subscriber receives these bytes, so the
 * event's JSON is sent compact: with 100-byte documents, one byte in seven was
 * such a space. Spaces inside strings are kept (escapes are followed). */
static size_t compact_json(char *json, size_t len)
{
    size_t out = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = json[i];
        if (in_string) {
            json[out++] = c;
            if (c == '\\' && i + 1 < len)
                json[out++] = json[++i];
            else if (c == '"')
                in_string = false;
        } else if (c != ' ' && c != '\n' && c != '\t' && c != '\r') {
            json[out++] = c;
            in_string = c == '"';
        }
    }
    json[out] = '\0';
    return out;
}

/* Frames a change event's JSON (taken, and made compact) with its position. */
static void frame_change(cg_frames_t *f, const char *position, char *json, size_t jlen)
{
    jlen = compact_json(json, jlen);
    size_t plen = strlen(position);
    f->json = json;
    f->json_len = jlen;
    f->sse_len = 4 + plen + 7 + jlen + 2; /* "id: " P "\ndata: " J "\n\n" */
    f->sse = bson_malloc(f->sse_len + 1);
    snprintf(f->sse, f->sse_len + 1, "id: %s\ndata: %s\n\n", position, json);
    f->ndjson_len = 7 + plen + 10 + jlen + 2; /* {"id":" P ","event": J }\n */
    f->ndjson = bson_malloc(f->ndjson_len + 1);
    snprintf(f->ndjson, f->ndjson_len + 1, "{\"id\":\"%s\",\"event\":%s}\n", position, json);
}

static void free_frames(cg_frames_t *f)
{
    bson_free(f->json);
    bson_free(f->sse);
    bson_free(f->ndjson);
}

/* Sets ev->has_subject and, when the subject view differs from the event,
 * ev->subject_copy: the event with fullDocument (missing or null) replaced by
 * fullDocumentBeforeChange, in fullDocument's place or at the end. Every
 * other field is kept as it is, which the hub's index look-up relies on. */
static void make_subject(cg_event_t *ev)
{
    bson_iter_t it, before;
    if (bson_iter_init_find(&it, ev->doc, "fullDocument") && !BSON_ITER_HOLDS_NULL(&it)) {
        ev->has_subject = true;
        return;
    }
    if (!bson_iter_init_find(&before, ev->doc, "fullDocumentBeforeChange") ||
        !BSON_ITER_HOLDS_DOCUMENT(&before))
        return;
    bson_t *copy = bson_new();
    bool placed = false;
    bson_iter_init(&it, ev->doc);
    while (bson_iter_next(&it)) {
        if (strcmp(bson_iter_key(&it), "fullDocument") == 0) {
            if (!placed)
                bson_append_iter(copy, "fullDocument", -1, &before);
            placed = true;
        } else {
            bson_append_iter(copy, NULL, -1, &it);
        }
    }
    if (!placed)
        bson_append_iter(copy, "fullDocument", -1, &before);
    ev->subject_copy = copy;
    ev->has_subject = true;
}

const bson_t *cg_event_subject(const cg_event_t *ev)
{
    if (ev->kind != CG_EVENT_CHANGE || !ev->has_subject)
        return NULL;
    return ev->subject_copy ? ev->subject_copy : ev->doc;
}

cg_event_t *cg_event_new_change(const bson_t *change, char *err, size_t errlen)
{
    bson_iter_t it;
    bson_t token;
    if (!bson_iter_init_find(&it, change, "_id") || !BSON_ITER_HOLDS_DOCUMENT(&it)) {
        snprintf(err, errlen, "change event has no resume token (_id document)");
        return NULL;
    }
    uint32_t tlen;
    const uint8_t *tdata;
    bson_iter_document(&it, &tlen, &tdata);
    if (!bson_init_static(&token, tdata, tlen)) {
        snprintf(err, errlen, "change event has a malformed _id");
        return NULL;
    }
    char *position = cg_position_from_token(&token);
    if (!position) {
        snprintf(err, errlen, "change event has an empty resume token");
        return NULL;
    }
    size_t jlen;
    char *json = bson_as_relaxed_extended_json(change, &jlen);
    if (!json) {
        bson_free(position);
        snprintf(err, errlen, "change event cannot be written as JSON (invalid UTF-8?)");
        return NULL;
    }

    cg_event_t *ev = event_alloc(CG_EVENT_CHANGE, NULL);
    ev->position = position;
    ev->doc = bson_copy(change);
    ev->op = utf8_field(change, "operationType");
    make_subject(ev);
    if (bson_iter_init_find(&it, change, "clusterTime") && BSON_ITER_HOLDS_TIMESTAMP(&it)) {
        uint32_t t, i;
        bson_iter_timestamp(&it, &t, &i);
        ev->cluster_time = t;
    }
    frame_change(&ev->frames, position, json, jlen);
    return ev;
}

cg_event_t *cg_event_new_reset(const char *position, const char *reason)
{
    cg_event_t *ev = event_alloc(CG_EVENT_RESET, position);
    ev->reason = bson_strdup(reason);
    json_t *data = json_pack("{s:s, s:s?}", "reason", reason, "lastEventId", position);
    char *dumped = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    cg_frames_t *f = &ev->frames;
    f->json = bson_strdup(dumped);
    free(dumped); /* jansson's allocator */
    f->json_len = strlen(f->json);
    /* The id line moves the browser's lastEventId to where the stream now continues. */
    f->sse = bson_strdup_printf("event: reset\n%s%s%sdata: %s\n\n", position ? "id: " : "",
                                position ? position : "", position ? "\n" : "", f->json);
    f->sse_len = strlen(f->sse);
    f->ndjson = bson_strdup_printf("{\"reset\":%s}\n", f->json);
    f->ndjson_len = strlen(f->ndjson);
    return ev;
}

cg_event_t *cg_event_new_mark(const char *position)
{
    return event_alloc(CG_EVENT_MARK, position);
}

const cg_frames_t *cg_event_frames(cg_event_t *ev, const cg_project_t *project, uint64_t project_id)
{
    if (!project || ev->kind != CG_EVENT_CHANGE)
        return &ev->frames;
    for (cg_projected_t *p = ev->projected; p; p = p->next)
        if (p->project_id == project_id)
            return &p->frames;
    bson_t out = BSON_INITIALIZER;
    cg_project_apply(project, ev->doc, &out);
    size_t jlen;
    char *json = bson_as_relaxed_extended_json(&out, &jlen);
    bson_destroy(&out);
    if (!json) /* cannot happen: a subset of a document that was valid JSON */
        return &ev->frames;
    cg_projected_t *p = bson_malloc0(sizeof *p);
    p->project_id = project_id;
    frame_change(&p->frames, ev->position, json, jlen);
    p->next = ev->projected;
    ev->projected = p;
    return &p->frames;
}

cg_event_t *cg_event_ref(cg_event_t *ev)
{
    atomic_fetch_add_explicit(&ev->refs, 1, memory_order_relaxed);
    return ev;
}

void cg_event_unref(cg_event_t *ev)
{
    if (!ev || atomic_fetch_sub_explicit(&ev->refs, 1, memory_order_acq_rel) != 1)
        return;
    bson_free(ev->position);
    if (ev->doc)
        bson_destroy(ev->doc);
    if (ev->subject_copy)
        bson_destroy(ev->subject_copy);
    bson_free(ev->op);
    bson_free(ev->reason);
    free_frames(&ev->frames);
    while (ev->projected) {
        cg_projected_t *next = ev->projected->next;
        free_frames(&ev->projected->frames);
        bson_free(ev->projected);
        ev->projected = next;
    }
    bson_free(ev);
}

char *cg_event_heartbeat(bool ndjson, const char *position)
{
    if (!position)
        return bson_strdup(ndjson ? "{\"heartbeat\":true}\n" : ": heartbeat\n\n");
    return ndjson ? bson_strdup_printf("{\"heartbeat\":true,\"lastEventId\":\"%s\"}\n", position)
                  : bson_strdup_printf(": heartbeat\nid: %s\n\n", position);
}

char *cg_event_expired(bool ndjson, const char *position)
{
    if (ndjson)
        return position ? bson_strdup_printf("{\"expired\":{\"reason\":\"token_expired\","
                                             "\"lastEventId\":\"%s\"}}\n",
                                             position)
                        : bson_strdup("{\"expired\":{\"reason\":\"token_expired\","
                                      "\"lastEventId\":null}}\n");
    return position ? bson_strdup_printf("event: expired\nid: %s\ndata: {\"reason\":"
                                         "\"token_expired\",\"lastEventId\":\"%s\"}\n\n",
                                         position, position)
                    : bson_strdup("event: expired\ndata: {\"reason\":\"token_expired\","
                                  "\"lastEventId\":null}\n\n");
}
