/* metrics.c: see metrics.h. */
#include "metrics.h"

#include <bson/bson.h>
#include <stdatomic.h>
#include <string.h>

static atomic_ullong events_in, catchup_events;
static atomic_bool watcher_history_lost;

/* Reset reasons are a closed set of codes (see README); anything else is "other". */
static const char *const RESET_REASONS[] = {"history_lost", "too_slow", "event_not_representable",
                                            "position_not_in_journal", "other"};
#define N_REASONS (sizeof RESET_REASONS / sizeof RESET_REASONS[0])
static atomic_ullong resets[N_REASONS];

void cg_metrics_event_in(void)
{
    atomic_fetch_add_explicit(&events_in, 1, memory_order_relaxed);
}

void cg_metrics_catchup_event(void)
{
    atomic_fetch_add_explicit(&catchup_events, 1, memory_order_relaxed);
}

void cg_metrics_reset(const char *reason)
{
    size_t i = 0;
    while (i < N_REASONS - 1 && (!reason || strcmp(reason, RESET_REASONS[i]) != 0))
        i++;
    atomic_fetch_add_explicit(&resets[i], 1, memory_order_relaxed);
}

void cg_metrics_set_watcher_history_lost(bool lost)
{
    atomic_store(&watcher_history_lost, lost);
}

static void metric(bson_string_t *s, const char *name, const char *type, const char *help,
                   unsigned long long value)
{
    bson_string_append_printf(s, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type,
                              name, value);
}

char *cg_metrics_render(cg_hub_t *hub, bool watcher_streaming)
{
    cg_hub_stats_t st;
    cg_hub_stats(hub, &st);
    bson_string_t *s = bson_string_new(NULL);
    metric(s, "changegate_subscribers", "gauge", "Subscribers (streams and waiting polls).",
           st.subscribers);
    metric(s, "changegate_events_received_total", "counter",
           "Change events received by the shared watcher.", atomic_load(&events_in));
    metric(s, "changegate_journal_events", "gauge", "Events held in the journal.",
           st.journal_count);
    metric(s, "changegate_journal_capacity", "gauge", "The journal's size (--journal-size).",
           st.journal_capacity);
    metric(s, "changegate_catchup_streams", "gauge",
           "Catch-up change streams open now (bounded by --max-catchup).", st.catchup_active);
    metric(s, "changegate_catchup_streams_peak", "gauge",
           "The most catch-up change streams open at once since start.", st.catchup_peak);
    metric(s, "changegate_catchup_waiting", "gauge",
           "Subscribers waiting for a catch-up stream slot.", st.catchup_waiting);
    metric(s, "changegate_catchup_events_total", "counter",
           "Change events read by catch-up streams.", atomic_load(&catchup_events));
    bson_string_append(s, "# HELP changegate_resets_total Resets given to subscribers, by "
                          "reason.\n# TYPE changegate_resets_total counter\n");
    for (size_t i = 0; i < N_REASONS; i++)
        bson_string_append_printf(s, "changegate_resets_total{reason=\"%s\"} %llu\n",
                                  RESET_REASONS[i], atomic_load(&resets[i]));
    metric(s, "changegate_watcher_streaming", "gauge", "1 while the shared change stream is open.",
           watcher_streaming);
    metric(s, "changegate_watcher_history_lost", "gauge",
           "1 when the watcher's saved position was lost to MongoDB and it started from now.",
           atomic_load(&watcher_history_lost));
    return bson_string_free(s, false);
}
