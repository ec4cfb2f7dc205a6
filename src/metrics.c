/* metrics.c: see metrics.h. */
#include "metrics.h"

#include <bson/bson.h>
#include <jansson.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "position.h"

static atomic_ullong events_in, catchup_events;
static atomic_bool watcher_history_lost;

static const char *const TRANSPORTS[CG_TRANSPORTS] = {"sse", "ndjson", "poll"};
static atomic_llong subscribers[CG_TRANSPORTS];
static atomic_ullong messages_sent[CG_TRANSPORTS], bytes_sent[CG_TRANSPORTS];
static const char *const DROPS[CG_DROPS] = {"client_gone", "write_timeout", "too_many_subscribers",
                                            "shutting_down"};
static atomic_ullong drops[CG_DROPS];

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

void cg_metrics_subscribers(cg_transport_t t, int delta)
{
    atomic_fetch_add_explicit(&subscribers[t], delta, memory_order_relaxed);
}

void cg_metrics_sent(cg_transport_t t, unsigned long long messages, unsigned long long bytes)
{
    if (messages)
        atomic_fetch_add_explicit(&messages_sent[t], messages, memory_order_relaxed);
    atomic_fetch_add_explicit(&bytes_sent[t], bytes, memory_order_relaxed);
}

void cg_metrics_drop(cg_drop_t why)
{
    atomic_fetch_add_explicit(&drops[why], 1, memory_order_relaxed);
}

static void header(bson_string_t *s, const char *name, const char *type, const char *help)
{
    bson_string_append_printf(s, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample per transport, from an array of counters. */
static void by_transport(bson_string_t *s, const char *name, const char *type, const char *help,
                         atomic_ullong *values)
{
    header(s, name, type, help);
    for (int t = 0; t < CG_TRANSPORTS; t++)
        bson_string_append_printf(s, "%s{transport=\"%s\"} %llu\n", name, TRANSPORTS[t],
                                  atomic_load(&values[t]));
}

/* Seconds from the position's clusterTime to now; NaN when it has none. */
static double lag_seconds(const char *position)
{
    uint32_t t, i;
    if (!position || !cg_position_cluster_time(position, &t, &i))
        return NAN;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (double)now.tv_sec + now.tv_nsec / 1e9 - (double)t;
}

static void metric(bson_string_t *s, const char *name, const char *type, const char *help,
                   unsigned long long value)
{
    header(s, name, type, help);
    bson_string_append_printf(s, "%s %llu\n", name, value);
}

char *cg_metrics_render(cg_hub_t *hub, cg_watcher_t *watcher)
{
    char state[512];
    bool watcher_streaming = cg_watcher_status(watcher, state, sizeof state);
    char *watcher_position = cg_watcher_position(watcher);
    cg_hub_stats_t st;
    cg_hub_stats(hub, &st);
    bson_string_t *s = bson_string_new(NULL);
    header(s, "changegate_subscribers", "gauge",
           "Subscribers (open streams and waiting polls), by transport.");
    for (int t = 0; t < CG_TRANSPORTS; t++)
        bson_string_append_printf(s, "changegate_subscribers{transport=\"%s\"} %lld\n",
                                  TRANSPORTS[t], atomic_load(&subscribers[t]));
    metric(s, "changegate_events_received_total", "counter",
           "Change events received by the shared watcher.", atomic_load(&events_in));
    by_transport(s, "changegate_deliveries_total", "counter",
                 "Messages (change events and resets) sent to subscribers, by transport.",
                 messages_sent);
    by_transport(s, "changegate_sent_bytes_total", "counter",
                 "Bytes of response bodies sent to subscribers (heartbeats included), by "
                 "transport.",
                 bytes_sent);
    header(s, "changegate_drops_total", "counter",
           "Subscribers dropped or refused by the server, by reason.");
    for (int d = 0; d < CG_DROPS; d++)
        bson_string_append_printf(s, "changegate_drops_total{reason=\"%s\"} %llu\n", DROPS[d],
                                  atomic_load(&drops[d]));
    size_t indexed, scanned;
    cg_hub_index_counts(hub, &indexed, &scanned);
    metric(s, "changegate_subscribers_indexed", "gauge",
           "Subscribers an event finds by look-up on an equality their filter or rule requires.",
           indexed);
    metric(s, "changegate_subscribers_scanned", "gauge",
           "Subscribers every event is matched against (no indexable equality).", scanned);
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
    header(s, "changegate_watcher_lag_seconds", "gauge",
           "Now minus the clusterTime of the watcher's newest position (event or "
           "postBatchResumeToken); NaN before it has one.");
    double lag = lag_seconds(watcher_position);
    if (isnan(lag))
        bson_string_append(s, "changegate_watcher_lag_seconds NaN\n");
    else
        bson_string_append_printf(s, "changegate_watcher_lag_seconds %.3f\n", lag);
    bson_free(watcher_position);
    return bson_string_free(s, false);
}

char *cg_metrics_health(cg_hub_t *hub, cg_watcher_t *watcher, unsigned *status)
{
    char state[512];
    bool streaming = cg_watcher_status(watcher, state, sizeof state);
    bool live = cg_hub_is_live(hub);
    char *position = cg_hub_last_position(hub);
    json_t *body;
    if (streaming && live) {
        *status = 200;
        body = json_pack("{s:s, s:s, s:I, s:s?}", "status", "ok", "watcher", state, "subscribers",
                         (json_int_t)cg_hub_subscriber_count(hub), "lastEventId", position);
        char lost[512];
        if (cg_watcher_history_lost(watcher, lost, sizeof lost))
            json_object_set_new(body, "warning", json_string(lost));
    } else {
        *status = 503;
        const char *why = streaming ? "catching up with MongoDB after a restart" : state;
        body = json_pack("{s:s, s:s, s:s}", "status", "unavailable", "error", "not_ready",
                         "message", why);
    }
    bson_free(position);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}
