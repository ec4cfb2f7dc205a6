/* Unit tests for src/hub.c: cursors, parking and waking, resets, stop. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hub.h"
#include "testutil.h"

/* A fake front end: counts parks and wakes, and checks they alternate. */
typedef struct {
    int parks, wakes;
    bool suspended;
} fake_conn_t;

static void fake_park(void *ctx)
{
    fake_conn_t *c = ctx;
    ck_assert_msg(!c->suspended, "parked twice without a wake");
    c->suspended = true;
    c->parks++;
}

static void fake_wake(void *ctx)
{
    fake_conn_t *c = ctx;
    ck_assert_msg(c->suspended, "woken while not parked (a double resume)");
    c->suspended = false;
    c->wakes++;
}

static const cg_sub_ops_t fake_ops = {fake_park, fake_wake};

static cg_hub_t *hub;
static const cg_frames_t *fr; /* frames out-parameter, unused by most tests */

static cg_filter_t *match_all(void)
{
    cg_filter_t *f = cg_filter_new();
    char err[256];
    ck_assert_int_eq(cg_filter_compile(f, err, sizeof err), 0);
    return f;
}

static void setup(void)
{
    hub = cg_hub_new(cg_journal_new(8), 3, 15);
}

static void teardown(void)
{
    cg_hub_free(hub);
}

static cg_sub_t *subscribe(fake_conn_t *conn, const char *position, const char *ns, const char *op)
{
    cg_filter_t *f = cg_filter_new();
    char err[256];
    if (ns)
        ck_assert_int_eq(cg_filter_add_ns(f, ns, err, sizeof err), 0);
    if (op)
        ck_assert_int_eq(cg_filter_add_ops(f, op, err, sizeof err), 0);
    ck_assert_int_eq(cg_filter_compile(f, err, sizeof err), 0);
    cg_sub_spec_t spec = {.filter = f, .position = position, .ops = &fake_ops, .ctx = conn};
    cg_sub_t *sub;
    ck_assert_int_eq(cg_hub_subscribe(hub, &spec, &sub), CG_HUB_OK);
    return sub;
}

static cg_sub_t *subscribe_q(fake_conn_t *conn, const char *query, const char *fields)
{
    cg_filter_t *f = cg_filter_new();
    char err[256];
    if (query)
        ck_assert_int_eq(cg_filter_set_query(f, query, err, sizeof err), 0);
    ck_assert_int_eq(cg_filter_compile(f, err, sizeof err), 0);
    cg_project_t *p = NULL;
    if (fields)
        ck_assert_ptr_nonnull(p = cg_project_new(fields, err, sizeof err));
    cg_sub_spec_t spec = {.filter = f, .project = p, .ops = &fake_ops, .ctx = conn};
    cg_sub_t *sub;
    ck_assert_int_eq(cg_hub_subscribe(hub, &spec, &sub), CG_HUB_OK);
    return sub;
}

static void publish_owner(unsigned n, const char *owner)
{
    char pos[16];
    test_pos(pos, sizeof pos, n);
    bson_t *b = BCON_NEW("_id", "{", "_data", BCON_UTF8(pos), "}", "operationType", "insert", "ns",
                         "{", "db", "db", "coll", "c", "}", "fullDocument", "{", "owner",
                         BCON_UTF8(owner), "qty", BCON_INT32(1), "}");
    char err[128];
    cg_event_t *ev = cg_event_new_change(b, err, sizeof err);
    bson_destroy(b);
    cg_hub_publish(hub, ev);
}

static void publish_n(unsigned n, const char *op, const char *coll)
{
    char pos[16];
    test_pos(pos, sizeof pos, n);
    cg_hub_publish(hub, test_change(pos, op, "db", coll));
}

/* Expects the next event to be change number n. */
static void expect_event(cg_sub_t *sub, unsigned n)
{
    cg_event_t *ev;
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_EVENT);
    char pos[16];
    test_pos(pos, sizeof pos, n);
    ck_assert_str_eq(ev->position, pos);
    cg_event_unref(ev);
}

static void go_live(void)
{
    cg_hub_publish(hub, cg_event_new_mark("8200000000"));
    cg_hub_set_live(hub);
}

START_TEST(a_new_subscriber_waits_for_the_next_event_and_is_woken_once)
{
    go_live();
    publish_n(1, "insert", "c"); /* before it subscribed: not for it */
    fake_conn_t conn = {0};
    cg_sub_t *sub = subscribe(&conn, NULL, NULL, NULL);
    cg_event_t *ev;
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_PARKED);
    ck_assert(conn.suspended);
    publish_n(2, "insert", "c");
    publish_n(3, "insert", "c");
    ck_assert_int_eq(conn.wakes, 1);
    expect_event(sub, 2);
    expect_event(sub, 3);
    ck_assert_int_eq(cg_hub_next(hub, sub, false, &ev, &fr), CG_NEXT_EMPTY);
    cg_hub_unsubscribe(hub, sub);
}
END_TEST

START_TEST(resume_after_a_position_gives_exactly_the_rest)
{
    go_live();
    for (unsigned i = 1; i <= 5; i++)
        publish_n(i, "insert", "c");
    fake_conn_t conn = {0};
    cg_sub_t *sub = subscribe(&conn, "8200000002", NULL, NULL);
    expect_event(sub, 3);
    expect_event(sub, 4);
    expect_event(sub, 5);
    cg_event_t *ev;
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_PARKED);
    char *pos = cg_hub_sub_position(hub, sub);
    ck_assert_str_eq(pos, "8200000005");
    bson_free(pos);
    cg_hub_unsubscribe(hub, sub);
}
END_TEST

/* A batch stops at max, and at whatever ends the run of events (here: the
 * filter skipping the rest); with nothing at all it parks like
 * cg_hub_next(). */
START_TEST(next_n_takes_events_in_order_under_one_call)
{
    go_live();
    fake_conn_t conn = {0};
    cg_sub_t *sub = subscribe(&conn, NULL, "db.c", NULL);
    for (unsigned i = 1; i <= 5; i++)
        publish_n(i, "insert", "c");
    publish_n(6, "insert", "other");
    cg_event_t *evs[8];
    const cg_frames_t *frs[8];
    size_t n;
    ck_assert_int_eq(cg_hub_next_n(hub, sub, true, 3, evs, frs, &n), CG_NEXT_EVENT);
    ck_assert_uint_eq(n, 3);
    for (size_t i = 0; i < n; i++) {
        char pos[16];
        test_pos(pos, sizeof pos, (unsigned)i + 1);
        ck_assert_str_eq(evs[i]->position, pos);
        ck_assert_ptr_nonnull(frs[i]->sse);
        cg_event_unref(evs[i]);
    }
    ck_assert_int_eq(cg_hub_next_n(hub, sub, true, 8, evs, frs, &n), CG_NEXT_EVENT);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(evs[1]->position, "8200000005");
    cg_event_unref(evs[0]);
    cg_event_unref(evs[1]);
    ck_assert(!conn.suspended);
    ck_assert_int_eq(cg_hub_next_n(hub, sub, true, 8, evs, frs, &n), CG_NEXT_PARKED);
    ck_assert_uint_eq(n, 0);
    ck_assert(conn.suspended);
    publish_n(7, "insert", "c");
    ck_assert_int_eq(conn.wakes, 1);
    expect_event(sub, 7);
    cg_hub_unsubscribe(hub, sub);
}
END_TEST

START_TEST(an_unknown_position_gets_a_reset_then_continues_from_now)
{
    go_live();
    publish_n(1, "insert", "c");
    fake_conn_t conn = {0};
    cg_sub_t *sub = subscribe(&conn, "8299999999", NULL, NULL);
    cg_event_t *ev;
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_EVENT);
    ck_assert_int_eq(ev->kind, CG_EVENT_RESET);
    ck_assert_str_eq(ev->reason, "position_not_in_journal");
    ck_assert_str_eq(ev->position, "8200000001");
    cg_event_unref(ev);
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_PARKED);
    publish_n(2, "insert", "c");
    expect_event(sub, 2);
    cg_hub_unsubscribe(hub, sub);
}
END_TEST

START_TEST(positions_wait_until_the_watcher_is_live)
{
    /* After a restart the journal refills: a position not there yet is not lost. */
    fake_conn_t conn = {0};
    cg_sub_t *sub = subscribe(&conn, "8200000002", NULL, NULL);
    cg_event_t *ev;
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_PARKED);
    cg_hub_publish(hub, cg_event_new_mark("8200000000"));
    publish_n(1, "insert", "c");
    publish_n(2, "insert", "c");
    publish_n(3, "insert", "c");
    ck_assert_int_eq(conn.wakes, 0); /* replayed events do not wake a pending subscriber */
    cg_hub_set_live(hub);
    ck_assert_int_eq(conn.wakes, 1);
    expect_event(sub, 3);
    cg_hub_unsubscribe(hub, sub);
}
END_TEST

START_TEST(now_before_live_is_when_the_watcher_went_live)
{
    /* A subscriber without a position that came during a restart's replay: the
     * replayed events are older than it, what follows the live moment is not,
     * even when it only runs again after more events were published. */
    fake_conn_t conn = {0};
    cg_sub_t *sub = subscribe(&conn, NULL, NULL, NULL);
    cg_hub_publish(hub, cg_event_new_mark("8200000000"));
    publish_n(1, "insert", "c");
    publish_n(2, "insert", "c");
    cg_hub_set_live(hub);
    publish_n(3, "insert", "c");
    publish_n(4, "insert", "c");
    expect_event(sub, 3);
    expect_event(sub, 4);
    cg_hub_unsubscribe(hub, sub);
}
END_TEST

START_TEST(filters_decide_who_is_woken_and_what_is_delivered)
{
    go_live();
    fake_conn_t a = {0}, b = {0};
    cg_sub_t *orders = subscribe(&a, NULL, "db.orders", NULL);
    cg_sub_t *deletes = subscribe(&b, NULL, NULL, "delete");
    cg_event_t *ev;
    ck_assert_int_eq(cg_hub_next(hub, orders, true, &ev, &fr), CG_NEXT_PARKED);
    ck_assert_int_eq(cg_hub_next(hub, deletes, true, &ev, &fr), CG_NEXT_PARKED);
    publish_n(1, "insert", "users");
    ck_assert_int_eq(a.wakes + b.wakes, 0);
    publish_n(2, "insert", "orders");
    ck_assert_int_eq(a.wakes, 1);
    ck_assert_int_eq(b.wakes, 0);
    publish_n(3, "delete", "users");
    ck_assert_int_eq(b.wakes, 1);
    expect_event(orders, 2);
    expect_event(deletes, 3);
    ck_assert_int_eq(cg_hub_next(hub, orders, false, &ev, &fr), CG_NEXT_EMPTY);
    cg_hub_unsubscribe(hub, orders);
    cg_hub_unsubscribe(hub, deletes);
}
END_TEST

START_TEST(a_quiet_filtered_subscriber_does_not_fall_out_of_the_journal)
{
    go_live();
    fake_conn_t conn = {0};
    cg_sub_t *sub = subscribe(&conn, NULL, "db.rare", NULL);
    cg_event_t *ev;
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_PARKED);
    for (unsigned i = 1; i <= 30; i++) /* journal holds 8 */
        publish_n(i, "insert", "busy");
    publish_n(31, "insert", "rare");
    expect_event(sub, 31);
    cg_hub_unsubscribe(hub, sub);
}
END_TEST

START_TEST(a_reader_that_falls_behind_gets_a_reset)
{
    go_live();
    fake_conn_t conn = {0};
    cg_sub_t *sub = subscribe(&conn, NULL, NULL, NULL);
    cg_event_t *ev;
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_PARKED);
    for (unsigned i = 1; i <= 20; i++)
        publish_n(i, "insert", "c");
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_EVENT);
    ck_assert_int_eq(ev->kind, CG_EVENT_RESET);
    ck_assert_str_eq(ev->reason, "too_slow");
    ck_assert_str_eq(ev->position, "8200000014");
    cg_event_unref(ev);
    cg_hub_unsubscribe(hub, sub);
}
END_TEST

START_TEST(resets_in_the_journal_reach_everyone)
{
    go_live();
    fake_conn_t conn = {0};
    cg_sub_t *sub = subscribe(&conn, NULL, "db.only", NULL);
    cg_event_t *ev;
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_PARKED);
    cg_hub_publish(hub, cg_event_new_reset("82000000AA", "history_lost"));
    ck_assert_int_eq(conn.wakes, 1);
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_EVENT);
    ck_assert_int_eq(ev->kind, CG_EVENT_RESET);
    cg_event_unref(ev);
    cg_hub_unsubscribe(hub, sub);
}
END_TEST

START_TEST(subscribers_are_bounded_and_stop_wakes_everyone)
{
    go_live();
    fake_conn_t c[4] = {{0}};
    cg_sub_t *subs[3];
    for (int i = 0; i < 3; i++)
        subs[i] = subscribe(&c[i], NULL, NULL, NULL);
    cg_sub_spec_t spec = {.filter = match_all(), .ops = &fake_ops, .ctx = &c[3]};
    cg_sub_t *extra;
    ck_assert_int_eq(cg_hub_subscribe(hub, &spec, &extra), CG_HUB_FULL);
    ck_assert_uint_eq(cg_hub_subscriber_count(hub), 3);
    cg_event_t *ev;
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(cg_hub_next(hub, subs[i], true, &ev, &fr), CG_NEXT_PARKED);
    cg_hub_stop(hub);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(c[i].wakes, 1);
        ck_assert_int_eq(cg_hub_next(hub, subs[i], true, &ev, &fr), CG_NEXT_END);
        cg_hub_unsubscribe(hub, subs[i]);
    }
    spec.filter = match_all();
    ck_assert_int_eq(cg_hub_subscribe(hub, &spec, &extra), CG_HUB_STOPPING);
}
END_TEST

START_TEST(deadlines_and_heartbeats_wake_parked_subscribers)
{
    cg_hub_free(hub);
    hub = cg_hub_new(cg_journal_new(8), 10, 1);
    go_live();
    fake_conn_t poller = {0}, stream = {0};
    cg_sub_spec_t spec = {.filter = match_all(),
                          .deadline_ms = cg_hub_now_ms() - 1,
                          .ops = &fake_ops,
                          .ctx = &poller};
    cg_sub_t *p, *s;
    ck_assert_int_eq(cg_hub_subscribe(hub, &spec, &p), CG_HUB_OK);
    cg_event_t *ev;
    ck_assert_int_eq(cg_hub_next(hub, p, true, &ev, &fr), CG_NEXT_TIMEOUT);
    spec = (cg_sub_spec_t){
        .filter = match_all(), .heartbeats = true, .ops = &fake_ops, .ctx = &stream};
    ck_assert_int_eq(cg_hub_subscribe(hub, &spec, &s), CG_HUB_OK);
    ck_assert_int_eq(cg_hub_next(hub, s, true, &ev, &fr), CG_NEXT_PARKED);
    cg_hub_tick(hub); /* not due yet */
    ck_assert_int_eq(stream.wakes, 0);
    for (int i = 0; i < 100 && stream.wakes == 0; i++) { /* up to 5 s */
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
        cg_hub_tick(hub);
    }
    ck_assert_int_eq(stream.wakes, 1);
    ck_assert_int_eq(cg_hub_next(hub, s, true, &ev, &fr), CG_NEXT_HEARTBEAT);
    ck_assert_int_eq(cg_hub_next(hub, s, true, &ev, &fr), CG_NEXT_PARKED);
    cg_hub_unsubscribe(hub, p);
    cg_hub_unsubscribe(hub, s);
}
END_TEST

START_TEST(the_index_wakes_only_the_subscribers_an_event_matches)
{
    cg_hub_free(hub);
    hub = cg_hub_new(cg_journal_new(64), 100, 15);
    go_live();
    enum { N = 20 };
    fake_conn_t conn[N] = {{0}};
    cg_sub_t *subs[N];
    char q[64];
    cg_event_t *ev;
    for (int i = 0; i < N; i++) {
        snprintf(q, sizeof q, "{\"fullDocument.owner\": \"u%d\"}", i);
        subs[i] = subscribe_q(&conn[i], q, NULL);
        ck_assert_int_eq(cg_hub_next(hub, subs[i], true, &ev, &fr), CG_NEXT_PARKED);
    }
    size_t indexed, scanned;
    cg_hub_index_counts(hub, &indexed, &scanned);
    ck_assert_uint_eq(indexed, N);
    ck_assert_uint_eq(scanned, 0);
    publish_owner(1, "u7");
    publish_owner(2, "nobody");
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(conn[i].wakes, i == 7 ? 1 : 0);
    expect_event(subs[7], 1);
    for (int i = 0; i < N; i++)
        cg_hub_unsubscribe(hub, subs[i]);
    cg_hub_index_counts(hub, &indexed, &scanned);
    ck_assert_uint_eq(indexed + scanned, 0);
}
END_TEST

/* A subscriber whose token's rule is {"fullDocument.owner": owner}. */
static cg_sub_t *subscribe_ruled(fake_conn_t *conn, const char *query, const char *owner)
{
    cg_filter_t *f = cg_filter_new();
    char err[256];
    if (query)
        ck_assert_int_eq(cg_filter_set_query(f, query, err, sizeof err), 0);
    bson_t *rule = BCON_NEW("fullDocument.owner", BCON_UTF8(owner));
    ck_assert_int_eq(cg_filter_set_rule(f, rule, err, sizeof err), 0);
    bson_destroy(rule);
    ck_assert_int_eq(cg_filter_compile(f, err, sizeof err), 0);
    cg_sub_spec_t spec = {.filter = f, .ops = &fake_ops, .ctx = conn};
    cg_sub_t *sub;
    ck_assert_int_eq(cg_hub_subscribe(hub, &spec, &sub), CG_HUB_OK);
    return sub;
}

/* A delete of owner's document, with its pre-image (owner NULL: without). */
static void publish_delete(unsigned n, const char *owner)
{
    char pos[16];
    test_pos(pos, sizeof pos, n);
    bson_t *b =
        BCON_NEW("_id", "{", "_data", BCON_UTF8(pos), "}", "operationType", "delete", "ns", "{",
                 "db", "db", "coll", "c", "}", "documentKey", "{", "_id", BCON_INT32(1), "}");
    if (owner) {
        bson_t d;
        bson_append_document_begin(b, "fullDocumentBeforeChange", -1, &d);
        BSON_APPEND_UTF8(&d, "owner", owner);
        bson_append_document_end(b, &d);
    }
    char err[128];
    cg_event_t *ev = cg_event_new_change(b, err, sizeof err);
    bson_destroy(b);
    cg_hub_publish(hub, ev);
}

START_TEST(subscribers_with_a_rule_are_found_by_look_up_deletes_included)
{
    cg_hub_free(hub);
    hub = cg_hub_new(cg_journal_new(64), 100, 15);
    go_live();
    enum { N = 20 };
    fake_conn_t conn[N + 1] = {{0}};
    cg_sub_t *subs[N + 1];
    char owner[16];
    cg_event_t *ev;
    for (int i = 0; i < N; i++) {
        snprintf(owner, sizeof owner, "u%d", i);
        /* the user's own filters have no equality, or only operationType's */
        subs[i] =
            subscribe_ruled(&conn[i],
                            i % 2 ? "{\"fullDocument.qty\": {\"$gte\": 0}}"
                                  : "{\"operationType\": {\"$in\": [\"insert\", \"delete\"]}}",
                            owner);
        ck_assert_int_eq(cg_hub_next(hub, subs[i], true, &ev, &fr), CG_NEXT_PARKED);
    }
    /* one without a rule, whose own equality is on fullDocument.owner */
    subs[N] = subscribe_q(&conn[N], "{\"fullDocument.owner\": \"u4\"}", NULL);
    ck_assert_int_eq(cg_hub_next(hub, subs[N], true, &ev, &fr), CG_NEXT_PARKED);
    size_t indexed, scanned;
    cg_hub_index_counts(hub, &indexed, &scanned);
    ck_assert_uint_eq(indexed, N + 1);
    ck_assert_uint_eq(scanned, 0);

    publish_owner(1, "u7");
    for (int i = 0; i <= N; i++)
        ck_assert_int_eq(conn[i].wakes, i == 7 ? 1 : 0);
    expect_event(subs[7], 1);
    ck_assert_int_eq(cg_hub_next(hub, subs[7], true, &ev, &fr), CG_NEXT_PARKED);

    /* the delete of u4's document reaches u4 (found through the pre-image), and
     * not the rule-less subscriber: its filter is on the real event */
    publish_delete(2, "u4");
    for (int i = 0; i <= N; i++)
        ck_assert_int_eq(conn[i].wakes, i == 7 || i == 4 ? 1 : 0);
    expect_event(subs[4], 2);
    ck_assert_int_eq(cg_hub_next(hub, subs[4], true, &ev, &fr), CG_NEXT_PARKED);

    /* a delete without a pre-image reaches no one with a rule */
    publish_delete(3, NULL);
    for (int i = 0; i <= N; i++)
        ck_assert_int_eq(conn[i].wakes, i == 7 || i == 4 ? 1 : 0);
    publish_owner(4, "u4"); /* u4 and the rule-less one */
    ck_assert_int_eq(conn[4].wakes, 2);
    ck_assert_int_eq(conn[N].wakes, 1);
    expect_event(subs[4], 4);
    expect_event(subs[N], 4);

    for (int i = 0; i <= N; i++)
        cg_hub_unsubscribe(hub, subs[i]);
    cg_hub_index_counts(hub, &indexed, &scanned);
    ck_assert_uint_eq(indexed + scanned, 0);
}
END_TEST

START_TEST(equal_projections_share_frames_made_once)
{
    go_live();
    fake_conn_t a = {0}, b = {0}, c = {0};
    cg_sub_t *sa = subscribe_q(&a, NULL, "fullDocument.qty,fullDocument.owner");
    cg_sub_t *sb = subscribe_q(&b, NULL, "fullDocument.owner,fullDocument.qty");
    cg_sub_t *sc = subscribe_q(&c, NULL, NULL);
    cg_event_t *ev;
    const cg_frames_t *fa, *fb, *fc;
    ck_assert_int_eq(cg_hub_next(hub, sa, true, &ev, &fa), CG_NEXT_PARKED);
    publish_owner(1, "ann");
    ck_assert_int_eq(cg_hub_next(hub, sa, true, &ev, &fa), CG_NEXT_EVENT);
    cg_event_unref(ev);
    ck_assert_int_eq(cg_hub_next(hub, sb, true, &ev, &fb), CG_NEXT_EVENT);
    ck_assert_ptr_eq(fa, fb); /* the same bytes, serialized once */
    ck_assert_ptr_ne(fa, &ev->frames);
    ck_assert_ptr_null(strstr(fa->json, "\"qty\":1,\"owner\"")); /* document order */
    ck_assert_ptr_nonnull(strstr(fa->json, "\"fullDocument\":{\"owner\":\"ann\",\"qty\":1}"));
    cg_event_unref(ev);
    ck_assert_int_eq(cg_hub_next(hub, sc, true, &ev, &fc), CG_NEXT_EVENT);
    ck_assert_ptr_eq(fc, &ev->frames);
    cg_event_unref(ev);
    cg_hub_unsubscribe(hub, sa);
    cg_hub_unsubscribe(hub, sb);
    cg_hub_unsubscribe(hub, sc);
}
END_TEST

/* ---- catch-up, with a fake provider: the test plays MongoDB ---- */

typedef struct {
    int starts;
    cg_source_t *src[4];
    char position[4][16];
    bool refuse;
} fake_catchup_t;

static fake_catchup_t fc;

static bool fake_start(void *ctx, cg_source_t *src, const char *position)
{
    fake_catchup_t *f = ctx;
    if (f->refuse)
        return false;
    ck_assert_int_lt(f->starts, 4);
    f->src[f->starts] = src;
    snprintf(f->position[f->starts], sizeof f->position[0], "%s", position);
    f->starts++;
    return true;
}

static const cg_catchup_ops_t fake_catchup_ops = {fake_start};

static void catchup_setup(void)
{
    hub = cg_hub_new(cg_journal_new(8), 8, 15);
    memset(&fc, 0, sizeof fc);
    cg_hub_set_catchup(hub, &fake_catchup_ops, &fc, 2);
}

static cg_feed_t feed(cg_source_t *src, unsigned n)
{
    char pos[16];
    test_pos(pos, sizeof pos, n);
    return cg_hub_catchup_push(hub, src, test_change(pos, "insert", "db", "c"));
}

/* Events 1..20 were written; the journal (8) holds 13..20. A subscriber at 3
 * reads 4..12 from its catch-up stream, then 13.. from the journal: the
 * stream is told to stop at the first event the journal already has. */
START_TEST(an_old_position_catches_up_then_joins_the_journal)
{
    go_live();
    for (unsigned i = 1; i <= 20; i++)
        publish_n(i, "insert", "c");
    fake_conn_t conn = {0};
    cg_sub_t *sub = subscribe(&conn, "8200000003", NULL, NULL);
    ck_assert_int_eq(fc.starts, 1);
    ck_assert_str_eq(fc.position[0], "8200000003");
    cg_event_t *ev;
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_PARKED);
    ck_assert_int_eq(feed(fc.src[0], 4), CG_FEED_MORE);
    ck_assert_int_eq(conn.wakes, 1);
    expect_event(sub, 4);
    for (unsigned i = 5; i <= 12; i++)
        ck_assert_int_eq(feed(fc.src[0], i), CG_FEED_MORE);
    /* 12 is the journal's base (the last evicted): the ring has reached it. */
    ck_assert_int_eq(feed(fc.src[0], 13), CG_FEED_STOP);
    for (unsigned i = 5; i <= 20; i++)
        expect_event(sub, i);
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_PARKED);
    cg_hub_catchup_end(hub, fc.src[0]);
    publish_n(21, "insert", "c");
    expect_event(sub, 21);
    cg_hub_stats_t st;
    cg_hub_stats(hub, &st);
    ck_assert_uint_eq(st.catchup_active, 0);
    ck_assert_uint_eq(st.catchup_peak, 1);
    cg_hub_unsubscribe(hub, sub);
}
END_TEST

/* A position ahead of this hub's watcher (from another instance): the
 * catch-up stream delivers what the watcher has not seen yet, and hands over
 * when the watcher publishes the stream's newest event. */
START_TEST(a_position_ahead_of_the_watcher_hands_over_when_it_arrives)
{
    go_live();
    publish_n(1, "insert", "c");
    fake_conn_t conn = {0};
    cg_sub_t *sub = subscribe(&conn, "8200000005", NULL, NULL);
    ck_assert_int_eq(fc.starts, 1);
    ck_assert_int_eq(feed(fc.src[0], 6), CG_FEED_MORE);
    expect_event(sub, 6);
    for (unsigned i = 2; i <= 6; i++) /* the watcher gets there */
        publish_n(i, "insert", "c");
    cg_event_t *ev;
    ck_assert(!cg_hub_catchup_wanted(hub, fc.src[0]));
    publish_n(7, "insert", "c");
    expect_event(sub, 7); /* from the journal: nothing repeated, nothing missed */
    ck_assert_int_eq(cg_hub_next(hub, sub, false, &ev, &fr), CG_NEXT_EMPTY);
    cg_hub_catchup_end(hub, fc.src[0]);
    cg_hub_unsubscribe(hub, sub);
}
END_TEST

/* Beyond --max-catchup (2 here) subscribers wait; one with a position inside
 * a running stream's ring shares it; when a stream ends the next waits no more. */
START_TEST(catchup_streams_are_bounded_and_shared)
{
    go_live();
    for (unsigned i = 1; i <= 40; i++)
        publish_n(i, "insert", "c");
    fake_conn_t c1 = {0}, c2 = {0}, c3 = {0}, c4 = {0};
    cg_sub_t *s1 = subscribe(&c1, "8200000001", NULL, NULL);
    cg_sub_t *s2 = subscribe(&c2, "820000000A", NULL, NULL);
    cg_sub_t *s3 = subscribe(&c3, "8200000014", NULL, NULL);
    ck_assert_int_eq(fc.starts, 2);
    cg_hub_stats_t st;
    cg_hub_stats(hub, &st);
    ck_assert_uint_eq(st.catchup_waiting, 1);
    cg_event_t *ev;
    ck_assert_int_eq(cg_hub_next(hub, s3, true, &ev, &fr), CG_NEXT_PARKED);
    ck_assert_int_eq(feed(fc.src[0], 2), CG_FEED_MORE);
    ck_assert_int_eq(feed(fc.src[0], 3), CG_FEED_MORE);
    cg_sub_t *s4 = subscribe(&c4, "8200000002", NULL, NULL); /* in stream 0's ring */
    ck_assert_int_eq(fc.starts, 2);
    expect_event(s4, 3);
    expect_event(s1, 2);
    /* Stream 1 fails: its reader gets a reset and goes on from now; its slot
     * goes to the waiting subscriber. */
    cg_hub_catchup_fail(hub, fc.src[1], "history_lost");
    ck_assert_int_eq(cg_hub_next(hub, s2, true, &ev, &fr), CG_NEXT_EVENT);
    ck_assert_int_eq(ev->kind, CG_EVENT_RESET);
    ck_assert_str_eq(ev->reason, "history_lost");
    ck_assert_str_eq(ev->position, "8200000028");
    cg_event_unref(ev);
    ck_assert_int_eq(c3.wakes, 0);
    cg_hub_catchup_end(hub, fc.src[1]);
    ck_assert_int_eq(fc.starts, 3);
    ck_assert_str_eq(fc.position[2], "8200000014");
    ck_assert_int_eq(c3.wakes, 1);
    cg_hub_stats(hub, &st);
    ck_assert_uint_eq(st.catchup_waiting, 0);
    ck_assert_uint_eq(st.catchup_peak, 2);
    cg_hub_unsubscribe(hub, s1);
    cg_hub_unsubscribe(hub, s4);
    cg_hub_unsubscribe(hub, s2);
    cg_hub_unsubscribe(hub, s3);
    cg_hub_catchup_end(hub, fc.src[0]);
    cg_hub_catchup_end(hub, fc.src[2]);
}
END_TEST

/* A reader that falls out of the journal is caught up, not reset. */
START_TEST(a_slow_reader_is_caught_up_instead_of_reset)
{
    go_live();
    publish_n(1, "insert", "c");
    fake_conn_t conn = {0};
    cg_sub_t *sub = subscribe(&conn, "8200000000", NULL, NULL);
    expect_event(sub, 1);
    for (unsigned i = 2; i <= 30; i++) /* 8 kept: 23..30 */
        publish_n(i, "insert", "c");
    cg_event_t *ev;
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_PARKED);
    ck_assert_int_eq(fc.starts, 1);
    ck_assert_str_eq(fc.position[0], "8200000001");
    for (unsigned i = 2; i <= 22; i++)
        ck_assert_int_eq(feed(fc.src[0], i), CG_FEED_MORE);
    ck_assert_int_eq(feed(fc.src[0], 23), CG_FEED_STOP);
    for (unsigned i = 2; i <= 30; i++)
        expect_event(sub, i);
    cg_hub_catchup_end(hub, fc.src[0]);
    cg_hub_unsubscribe(hub, sub);
}
END_TEST

/* A stream that cannot start (no thread) is a reset, never a hang. */
START_TEST(a_catchup_that_cannot_start_is_a_reset)
{
    go_live();
    for (unsigned i = 1; i <= 20; i++)
        publish_n(i, "insert", "c");
    fc.refuse = true;
    fake_conn_t conn = {0};
    cg_sub_t *sub = subscribe(&conn, "8200000003", NULL, NULL);
    cg_event_t *ev;
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_EVENT);
    ck_assert_int_eq(ev->kind, CG_EVENT_RESET);
    cg_event_unref(ev);
    cg_hub_stats_t st;
    cg_hub_stats(hub, &st);
    ck_assert_uint_eq(st.catchup_active, 0);
    cg_hub_unsubscribe(hub, sub);
}
END_TEST

/* The journal moves past a joined source's seam before its reader gets
 * there: the reader needs a new stream, not the old source again (which
 * used to hand it back and forth forever, holding the hub's lock). */
START_TEST(a_seam_the_journal_has_left_starts_a_new_catchup)
{
    go_live();
    for (unsigned i = 1; i <= 20; i++)
        publish_n(i, "insert", "c");
    fake_conn_t conn = {0};
    cg_sub_t *sub = subscribe(&conn, "8200000003", NULL, NULL);
    for (unsigned i = 4; i <= 12; i++)
        ck_assert_int_eq(feed(fc.src[0], i), CG_FEED_MORE);
    ck_assert_int_eq(feed(fc.src[0], 13), CG_FEED_STOP);
    /* Its thread has not closed the stream yet (no _end): the source lives on. */
    for (unsigned i = 21; i <= 40; i++) /* 13.. evicted */
        publish_n(i, "insert", "c");
    for (unsigned i = 4; i <= 12; i++)
        expect_event(sub, i);
    cg_event_t *ev;
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_PARKED);
    ck_assert_int_eq(fc.starts, 2);
    ck_assert_str_eq(fc.position[1], "820000000C");
    ck_assert_int_eq(feed(fc.src[1], 13), CG_FEED_MORE);
    expect_event(sub, 13);
    cg_hub_unsubscribe(hub, sub);
    cg_hub_catchup_end(hub, fc.src[0]);
    cg_hub_catchup_end(hub, fc.src[1]);
}
END_TEST

/* MongoDB refuses a position only at the first event after it (a token that
 * was never issued): the events the watcher got meanwhile follow the reset,
 * since "now" for the reader is when its catch-up began. */
START_TEST(a_refused_catchup_resets_to_where_it_began)
{
    go_live();
    for (unsigned i = 1; i <= 3; i++)
        publish_n(i, "insert", "c");
    fake_conn_t conn = {0};
    cg_sub_t *sub = subscribe(&conn, "8200000009", NULL, NULL);
    ck_assert_int_eq(fc.starts, 1);
    cg_event_t *ev;
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_PARKED);
    publish_n(4, "insert", "c");
    publish_n(5, "insert", "c");
    cg_hub_catchup_fail(hub, fc.src[0], "history_lost");
    ck_assert_int_eq(conn.wakes, 1);
    ck_assert_int_eq(cg_hub_next(hub, sub, true, &ev, &fr), CG_NEXT_EVENT);
    ck_assert_int_eq(ev->kind, CG_EVENT_RESET);
    ck_assert_str_eq(ev->reason, "history_lost");
    ck_assert_str_eq(ev->position, "8200000003");
    cg_event_unref(ev);
    expect_event(sub, 4);
    expect_event(sub, 5);
    ck_assert_int_eq(cg_hub_next(hub, sub, false, &ev, &fr), CG_NEXT_EMPTY);
    cg_hub_catchup_end(hub, fc.src[0]);
    cg_hub_unsubscribe(hub, sub);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hub");
    TCase *tc = tcase_create("subscribers");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_new_subscriber_waits_for_the_next_event_and_is_woken_once);
    tcase_add_test(tc, resume_after_a_position_gives_exactly_the_rest);
    tcase_add_test(tc, next_n_takes_events_in_order_under_one_call);
    tcase_add_test(tc, an_unknown_position_gets_a_reset_then_continues_from_now);
    tcase_add_test(tc, positions_wait_until_the_watcher_is_live);
    tcase_add_test(tc, now_before_live_is_when_the_watcher_went_live);
    tcase_add_test(tc, filters_decide_who_is_woken_and_what_is_delivered);
    tcase_add_test(tc, a_quiet_filtered_subscriber_does_not_fall_out_of_the_journal);
    tcase_add_test(tc, a_reader_that_falls_behind_gets_a_reset);
    tcase_add_test(tc, resets_in_the_journal_reach_everyone);
    tcase_add_test(tc, subscribers_are_bounded_and_stop_wakes_everyone);
    tcase_add_test(tc, deadlines_and_heartbeats_wake_parked_subscribers);
    tcase_add_test(tc, the_index_wakes_only_the_subscribers_an_event_matches);
    tcase_add_test(tc, subscribers_with_a_rule_are_found_by_look_up_deletes_included);
    tcase_add_test(tc, equal_projections_share_frames_made_once);
    suite_add_tcase(s, tc);
    tc = tcase_create("catch-up");
    tcase_add_checked_fixture(tc, catchup_setup, teardown);
    tcase_add_test(tc, an_old_position_catches_up_then_joins_the_journal);
    tcase_add_test(tc, a_position_ahead_of_the_watcher_hands_over_when_it_arrives);
    tcase_add_test(tc, catchup_streams_are_bounded_and_shared);
    tcase_add_test(tc, a_slow_reader_is_caught_up_instead_of_reset);
    tcase_add_test(tc, a_catchup_that_cannot_start_is_a_reset);
    tcase_add_test(tc, a_seam_the_journal_has_left_starts_a_new_catchup);
    tcase_add_test(tc, a_refused_catchup_resets_to_where_it_began);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
