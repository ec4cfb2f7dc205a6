/* Unit tests for src/journal.c: the ring and its position index. */
#include <check.h>
#include <stdlib.h>

#include "journal.h"
#include "testutil.h"

static cg_event_t *ev_n(unsigned n)
{
    char pos[16];
    test_pos(pos, sizeof pos, n);
    return test_change(pos, "insert", "db", "c");
}

static bool find_n(cg_journal_t *j, unsigned n, uint64_t *cursor)
{
    char pos[16];
    test_pos(pos, sizeof pos, n);
    return cg_journal_find(j, pos, cursor);
}

START_TEST(append_assigns_consecutive_sequence_numbers)
{
    cg_journal_t *j = cg_journal_new(4);
    ck_assert_uint_eq(cg_journal_next_seq(j), 1);
    for (unsigned i = 1; i <= 3; i++)
        ck_assert_uint_eq(cg_journal_append(j, ev_n(i)), i);
    ck_assert_uint_eq(cg_journal_first_seq(j), 1);
    ck_assert_uint_eq(cg_journal_count(j), 3);
    ck_assert_str_eq(cg_journal_get(j, 2)->position, "8200000002");
    ck_assert_ptr_null(cg_journal_get(j, 4));
    ck_assert_ptr_null(cg_journal_get(j, 0));
    cg_journal_free(j);
}
END_TEST

START_TEST(the_ring_is_bounded_and_evicts_the_oldest)
{
    cg_journal_t *j = cg_journal_new(5);
    for (unsigned i = 1; i <= 12; i++)
        cg_journal_append(j, ev_n(i));
    ck_assert_uint_eq(cg_journal_count(j), 5);
    ck_assert_uint_eq(cg_journal_first_seq(j), 8);
    ck_assert_ptr_null(cg_journal_get(j, 7));
    ck_assert_str_eq(cg_journal_get(j, 8)->position, "8200000008");
    cg_journal_free(j);
}
END_TEST

START_TEST(find_gives_the_cursor_after_the_position)
{
    cg_journal_t *j = cg_journal_new(100);
    for (unsigned i = 1; i <= 50; i++)
        cg_journal_append(j, ev_n(i));
    uint64_t cursor;
    for (unsigned i = 1; i <= 50; i++) {
        ck_assert(find_n(j, i, &cursor));
        ck_assert_uint_eq(cursor, i + 1);
    }
    ck_assert(!find_n(j, 51, &cursor));
    ck_assert(!cg_journal_find(j, "nonsense", &cursor));
    cg_journal_free(j);
}
END_TEST

START_TEST(evicted_positions_are_forgotten_except_the_base)
{
    /* Many evictions exercise the index's backward-shift deletion. */
    cg_journal_t *j = cg_journal_new(7);
    for (unsigned i = 1; i <= 1000; i++)
        cg_journal_append(j, ev_n(i));
    uint64_t cursor;
    for (unsigned i = 1; i < 993; i++)
        ck_assert_msg(!find_n(j, i, &cursor), "evicted %u still found", i);
    /* 993 was the last evicted: resuming after it needs exactly the kept entries */
    ck_assert(find_n(j, 993, &cursor));
    ck_assert_uint_eq(cursor, cg_journal_first_seq(j));
    for (unsigned i = 994; i <= 1000; i++) {
        ck_assert(find_n(j, i, &cursor));
        ck_assert_uint_eq(cursor, i + 1);
    }
    ck_assert_str_eq(cg_journal_replay_from(j), "82000003E1"); /* 993 */
    cg_journal_free(j);
}
END_TEST

START_TEST(marks_and_resets_are_resumable_positions)
{
    cg_journal_t *j = cg_journal_new(10);
    cg_journal_append(j, cg_event_new_mark("8200000000"));
    ck_assert_str_eq(cg_journal_replay_from(j), "8200000000");
    cg_journal_append(j, ev_n(1));
    cg_journal_append(j, cg_event_new_reset("8200000009", "history_lost"));
    uint64_t cursor;
    ck_assert(cg_journal_find(j, "8200000000", &cursor));
    ck_assert_uint_eq(cursor, 2);
    ck_assert(cg_journal_find(j, "8200000009", &cursor));
    ck_assert_uint_eq(cursor, 4);
    cg_journal_free(j);
}
END_TEST

START_TEST(position_before_a_cursor)
{
    cg_journal_t *j = cg_journal_new(3);
    ck_assert_ptr_null(cg_journal_position_before(j, 1));
    ck_assert_ptr_null(cg_journal_replay_from(j));
    cg_journal_append(j, cg_event_new_mark(NULL)); /* no position known */
    cg_journal_append(j, ev_n(1));
    ck_assert_str_eq(cg_journal_position_before(j, 3), "8200000001");
    ck_assert_ptr_null(cg_journal_position_before(j, 2));
    for (unsigned i = 2; i <= 5; i++)
        cg_journal_append(j, ev_n(i));
    ck_assert_str_eq(cg_journal_position_before(j, cg_journal_first_seq(j)), "8200000002");
    ck_assert_str_eq(cg_journal_position_before(j, 1000), "8200000005");
    cg_journal_free(j);
}
END_TEST

START_TEST(a_repeated_position_points_at_the_newest_entry)
{
    cg_journal_t *j = cg_journal_new(4);
    cg_journal_append(j, ev_n(1));
    cg_journal_append(j, ev_n(2));
    cg_journal_append(j, ev_n(1));
    uint64_t cursor;
    ck_assert(find_n(j, 1, &cursor));
    ck_assert_uint_eq(cursor, 4);
    /* evicting the old copy must not remove the index entry of the new one */
    cg_journal_append(j, ev_n(3));
    cg_journal_append(j, ev_n(4));
    ck_assert(find_n(j, 1, &cursor));
    ck_assert_uint_eq(cursor, 4);
    cg_journal_free(j);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("journal");
    TCase *tc = tcase_create("ring");
    tcase_add_test(tc, append_assigns_consecutive_sequence_numbers);
    tcase_add_test(tc, the_ring_is_bounded_and_evicts_the_oldest);
    tcase_add_test(tc, find_gives_the_cursor_after_the_position);
    tcase_add_test(tc, evicted_positions_are_forgotten_except_the_base);
    tcase_add_test(tc, marks_and_resets_are_resumable_positions);
    tcase_add_test(tc, position_before_a_cursor);
    tcase_add_test(tc, a_repeated_position_points_at_the_newest_entry);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
