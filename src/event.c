/* event.c: building events and their wire bytes (SSE, NDJSON, JSON) once. */
#include "event.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "position.h"

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
    ev->db = utf8_field(change, "ns.db");
    ev->coll = utf8_field(change, "ns.coll");
    if (bson_iter_init_find(&it, change, "clusterTime") && BSON_ITER_HOLDS_TIMESTAMP(&it)) {
        uint32_t t, i;
        bson_iter_timestamp(&it, &t, &i);
        ev->cluster_time = t;
    }
    ev->json = json;
    ev->json_len = jlen;
    size_t plen = strlen(position);

    ev->sse_len = 4 + plen + 7 + jlen + 2; /* "id: " P "\ndata: " J "\n\n" */
    ev->sse = bson_malloc(ev->sse_len + 1);
    snprintf(ev->sse, ev->sse_len + 1, "id: %s\ndata: %s\n\n", position, json);

    ev->ndjson_len = 7 + plen + 10 + jlen + 2; /* {"id":" P ","event": J }\n */
    ev->ndjson = bson_malloc(ev->ndjson_len + 1);
    snprintf(ev->ndjson, ev->ndjson_len + 1, "{\"id\":\"%s\",\"event\":%s}\n", position, json);
    return ev;
}

cg_event_t *cg_event_new_reset(const char *position, const char *reason)
{
    cg_event_t *ev = event_alloc(CG_EVENT_RESET, position);
    ev->reason = bson_strdup(reason);
    json_t *data = json_pack("{s:s, s:s?}", "reason", reason, "lastEventId", position);
    char *dumped = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    ev->json = bson_strdup(dumped);
    free(dumped); /* jansson's allocator */
    ev->json_len = strlen(ev->json);
    /* The id line moves the browser's lastEventId to where the stream now continues. */
    ev->sse = bson_strdup_printf("event: reset\n%s%s%sdata: %s\n\n", position ? "id: " : "",
                                 position ? position : "", position ? "\n" : "", ev->json);
    ev->sse_len = strlen(ev->sse);
    ev->ndjson = bson_strdup_printf("{\"reset\":%s}\n", ev->json);
    ev->ndjson_len = strlen(ev->ndjson);
    return ev;
}

cg_event_t *cg_event_new_mark(const char *position)
{
    return event_alloc(CG_EVENT_MARK, position);
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
    bson_free(ev->op);
    bson_free(ev->db);
    bson_free(ev->coll);
    bson_free(ev->reason);
    bson_free(ev->json);
    bson_free(ev->sse);
    bson_free(ev->ndjson);
    bson_free(ev);
}
