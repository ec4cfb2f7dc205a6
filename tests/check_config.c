/* check_config.c: unit tests for config.c (options from argv and file). */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char err[4096];
static char conf_path[64];

static int parse_argv(cg_config_t *cfg, const char **args)
{
    int argc = 0;
    while (args[argc])
        argc++;
    return cg_config_parse(cfg, argc, (char **)args, err, sizeof err);
}

#define PARSE(cfg, ...) parse_argv((cfg), (const char *[]){"changegate", __VA_ARGS__, NULL})
#define PARSE0(cfg) parse_argv((cfg), (const char *[]){"changegate", NULL})

/* Writes text to a fresh temp file whose path is in conf_path; the fixture
 * teardown removes it. */
static const char *write_conf(const char *text)
{
    strcpy(conf_path, "/tmp/check_config_XXXXXX");
    int fd = mkstemp(conf_path);
    ck_assert_int_ge(fd, 0);
    size_t n = strlen(text);
    ck_assert_int_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
    return conf_path;
}

static void setup(void)
{
    err[0] = '\0';
    conf_path[0] = '\0';
}

static void teardown(void)
{
    if (conf_path[0])
        unlink(conf_path);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Parsing must fail with exactly one problem line containing every needle. */
static void expect_one_problem(int rc, const char *needle1, const char *needle2)
{
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(count_lines(err) == 1, "expected one problem, got: %s", err);
    ck_assert_msg(strstr(err, needle1), "'%s' not in: %s", needle1, err);
    if (needle2)
        ck_assert_msg(strstr(err, needle2), "'%s' not in: %s", needle2, err);
}

static const char *stage_json(const cg_config_t *cfg, unsigned i)
{
    static char out[512];
    bson_iter_t it, arr;
    char key[16];
    snprintf(key, sizeof key, "%u", i);
    ck_assert(bson_iter_init_find(&it, cfg->pipeline, "pipeline"));
    ck_assert(bson_iter_recurse(&it, &arr));
    ck_assert(bson_iter_find(&arr, key));
    uint32_t len;
    const uint8_t *data;
    bson_iter_document(&arr, &len, &data);
    bson_t doc;
    ck_assert(bson_init_static(&doc, data, len));
    char *j = bson_as_canonical_extended_json(&doc, NULL);
    snprintf(out, sizeof out, "%s", j);
    bson_free(j);
    return out;
}

static uint32_t stage_count(const cg_config_t *cfg)
{
    bson_iter_t it, arr;
    ck_assert(bson_iter_init_find(&it, cfg->pipeline, "pipeline"));
    ck_assert(BSON_ITER_HOLDS_ARRAY(&it));
    ck_assert(bson_iter_recurse(&it, &arr));
    uint32_t n = 0;
    while (bson_iter_next(&arr))
        n++;
    return n;
}

/* ---- defaults and basic options ---- */

START_TEST(test_defaults)
{
    cg_config_t cfg;
    ck_assert_int_eq(PARSE0(&cfg), 0);
    ck_assert_str_eq(err, "");
    ck_assert_ptr_null(cfg.config_file);
    ck_assert_str_eq(cfg.mongo_uri, "mongodb://127.0.0.1:27017/?replicaSet=rs0");
    ck_assert_str_eq(cfg.watch, "*");
    ck_assert_ptr_null(cfg.watch_db);
    ck_assert_ptr_null(cfg.watch_coll);
    ck_assert_ptr_null(cfg.pipeline_json);
    ck_assert_ptr_nonnull(cfg.pipeline);
    ck_assert_uint_eq(stage_count(&cfg), 0);
    ck_assert_str_eq(cfg.full_document, "updateLookup");
    ck_assert_str_eq(cfg.full_document_before_change, "off");
    ck_assert_uint_eq(cfg.n_listen, 1);
    ck_assert_int_eq(cfg.listen[0].kind, CG_LISTEN_HTTP);
    ck_assert_str_eq(cfg.listen[0].spec, "http://127.0.0.1:8080");
    ck_assert_str_eq(cfg.listen[0].host, "127.0.0.1");
    ck_assert_uint_eq(cfg.listen[0].port, 8080);
    ck_assert_str_eq(cfg.state_dir, ".");
    ck_assert_uint_eq(cfg.journal_size, 10000);
    ck_assert_uint_eq(cfg.heartbeat, 15);
    ck_assert_uint_eq(cfg.max_subscribers, 10000);
    ck_assert_uint_eq(cfg.n_cors_origins, 0);
    ck_assert_int_eq(cfg.log_level, CG_LOG_INFO);
    ck_assert(!cfg.check_config && !cfg.show_version && !cfg.show_help);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_cli_every_option)
{
    cg_config_t cfg;
    int rc = PARSE(&cfg, "--mongo-uri", "mongodb://db1:27018,db2:27018/?replicaSet=x", "--watch",
                   "shop.orders", "--pipeline", "[{\"$match\": {\"operationType\": \"insert\"}}]",
                   "--full-document", "whenAvailable", "--full-document-before-change", "required",
                   "--listen", "http://0.0.0.0:9000", "--allow-public-unauthenticated",
                   "--state-dir", "/var/lib/cg", "--journal-size", "500", "--heartbeat", "30",
                   "--max-subscribers", "42", "--cors-origin", "https://app.example.com",
                   "--log-level", "debug", "--check-config");
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_str_eq(cfg.mongo_uri, "mongodb://db1:27018,db2:27018/?replicaSet=x");
    ck_assert_str_eq(cfg.watch, "shop.orders");
    ck_assert_str_eq(cfg.watch_db, "shop");
    ck_assert_str_eq(cfg.watch_coll, "orders");
    ck_assert_str_eq(cfg.pipeline_json, "[{\"$match\": {\"operationType\": \"insert\"}}]");
    ck_assert_uint_eq(stage_count(&cfg), 1);
    ck_assert_str_eq(cfg.full_document, "whenAvailable");
    ck_assert_str_eq(cfg.full_document_before_change, "required");
    ck_assert_uint_eq(cfg.n_listen, 1);
    ck_assert_str_eq(cfg.listen[0].host, "0.0.0.0");
    ck_assert_uint_eq(cfg.listen[0].port, 9000);
    ck_assert_str_eq(cfg.state_dir, "/var/lib/cg");
    ck_assert_uint_eq(cfg.journal_size, 500);
    ck_assert_uint_eq(cfg.heartbeat, 30);
    ck_assert_uint_eq(cfg.max_subscribers, 42);
    ck_assert_uint_eq(cfg.n_cors_origins, 1);
    ck_assert_str_eq(cfg.cors_origins[0], "https://app.example.com");
    ck_assert_int_eq(cfg.log_level, CG_LOG_DEBUG);
    ck_assert(cfg.check_config);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_cli_equals_form)
{
    cg_config_t cfg;
    int rc = PARSE(&cfg, "--watch=shop", "--heartbeat=5", "--listen=http://localhost:81",
                   "--pipeline=[{\"$set\": {\"x\": \"a=b\"}}]");
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_str_eq(cfg.watch_db, "shop");
    ck_assert_ptr_null(cfg.watch_coll);
    ck_assert_uint_eq(cfg.heartbeat, 5);
    ck_assert_str_eq(cfg.listen[0].host, "localhost");
    ck_assert_uint_eq(cfg.listen[0].port, 81);
    ck_assert_str_eq(stage_json(&cfg, 0), "{ \"$set\" : { \"x\" : \"a=b\" } }");
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_flags)
{
    cg_config_t cfg;
    ck_assert_int_eq(PARSE(&cfg, "--version", "--help"), 0);
    ck_assert(cfg.show_version && cfg.show_help && !cfg.check_config);
    cg_config_free(&cfg);
    ck_assert_int_eq(PARSE(&cfg, "-h"), 0);
    ck_assert(cfg.show_help);
    cg_config_free(&cfg);
}
END_TEST

/* ---- the config file ---- */

START_TEST(test_file_every_option)
{
    cg_config_t cfg;
    const char *path =
        write_conf("mongo-uri mongodb://file:27017/?replicaSet=f\n"
                   "watch db.coll.with.dots\n"
                   "pipeline [{\"$match\": {\"a\": 1}}, {\"$project\": {\"a\": 1}}]\n"
                   "full-document default\n"
                   "full-document-before-change whenAvailable\n"
                   "listen http://127.0.0.1:1\n"
                   "listen http://[::1]:2\n"
                   "state-dir /srv/my state\n"
                   "journal-size 10000000\n"
                   "heartbeat 3600\n"
                   "max-subscribers 1000000\n"
                   "cors-origin *\n"
                   "cors-origin http://localhost:3000\n"
                   "log-level warn\n");
    int rc = PARSE(&cfg, "--config", path);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_str_eq(cfg.config_file, path);
    ck_assert_str_eq(cfg.mongo_uri, "mongodb://file:27017/?replicaSet=f");
    ck_assert_str_eq(cfg.watch_db, "db");
    ck_assert_str_eq(cfg.watch_coll, "coll.with.dots");
    ck_assert_uint_eq(stage_count(&cfg), 2);
    ck_assert_str_eq(cfg.full_document, "default");
    ck_assert_str_eq(cfg.full_document_before_change, "whenAvailable");
    ck_assert_uint_eq(cfg.n_listen, 2);
    ck_assert_str_eq(cfg.listen[1].host, "::1");
    ck_assert_uint_eq(cfg.listen[1].port, 2);
    ck_assert_str_eq(cfg.listen[1].spec, "http://[::1]:2");
    ck_assert_str_eq(cfg.state_dir, "/srv/my state");
    ck_assert_uint_eq(cfg.journal_size, 10000000);
    ck_assert_uint_eq(cfg.heartbeat, 3600);
    ck_assert_uint_eq(cfg.max_subscribers, 1000000);
    ck_assert_uint_eq(cfg.n_cors_origins, 2);
    ck_assert_str_eq(cfg.cors_origins[0], "*");
    ck_assert_str_eq(cfg.cors_origins[1], "http://localhost:3000");
    ck_assert_int_eq(cfg.log_level, CG_LOG_WARN);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_file_comments_and_blanks)
{
    cg_config_t cfg;
    const char *path = write_conf("\xEF\xBB\xBF# changegate.conf\n"
                                  "\n"
                                  "   # indented comment\n"
                                  "heartbeat 20   # seconds\r\n"
                                  "\tjournal-size\t77\t\n"
                                  "pipeline [{\"$match\": {\"tag\": \"a #b\"}}] # only inserts\n"
                                  "mongo-uri mongodb://u:p#w@h/?replicaSet=rs0\n");
    int rc = PARSE(&cfg, "--config", path);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(cfg.heartbeat, 20);
    ck_assert_uint_eq(cfg.journal_size, 77);
    ck_assert_str_eq(stage_json(&cfg, 0), "{ \"$match\" : { \"tag\" : \"a #b\" } }");
    ck_assert_str_eq(cfg.pipeline_json, "[{\"$match\": {\"tag\": \"a #b\"}}]");
    /* '#' not after a blank belongs to the value */
    ck_assert_str_eq(cfg.mongo_uri, "mongodb://u:p#w@h/?replicaSet=rs0");
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_cli_overrides_file)
{
    cg_config_t cfg;
    const char *path = write_conf("heartbeat 20\nwatch a\nlog-level debug\n");
    int rc = PARSE(&cfg, "--heartbeat", "40", "--config", path, "--watch", "b.c");
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(cfg.heartbeat, 40);
    ck_assert_str_eq(cfg.watch_db, "b");
    ck_assert_str_eq(cfg.watch_coll, "c");
    ck_assert_int_eq(cfg.log_level, CG_LOG_DEBUG);
    cg_config_free(&cfg);
}
END_TEST

/* What SIGHUP's reload compares: the options whose values differ, as given. */
START_TEST(test_diff_names_what_changed)
{
    cg_config_t a, b;
    const char *path = write_conf("heartbeat 20\nlisten http://127.0.0.1:1\nlog-level info\n");
    ck_assert_msg(PARSE(&a, "--config", path, "--watch", "shop") == 0, "%s", err);
    ck_assert_msg(PARSE(&b, "--config", path, "--watch", "shop") == 0, "%s", err);
    const char *names[8];
    ck_assert_uint_eq(cg_config_diff(&a, &b, names, 8), 0);
    cg_config_free(&b);
    unlink(conf_path);
    path = write_conf("heartbeat 20\nlisten http://127.0.0.1:1\nlisten http://127.0.0.1:2\n"
                      "log-level debug\n");
    ck_assert_msg(PARSE(&b, "--config", path, "--watch", "shop") == 0, "%s", err);
    ck_assert_uint_eq(cg_config_diff(&a, &b, names, 8), 2);
    ck_assert_str_eq(names[0], "listen");
    ck_assert_str_eq(names[1], "log-level");
    ck_assert_uint_eq(cg_config_diff(&a, &b, names, 1), 2); /* counts beyond max */
    cg_config_free(&a);
    cg_config_free(&b);
}
END_TEST

START_TEST(test_cli_last_wins)
{
    cg_config_t cfg;
    ck_assert_int_eq(PARSE(&cfg, "--heartbeat", "1", "--heartbeat", "2"), 0);
    ck_assert_uint_eq(cfg.heartbeat, 2);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_repeatable_cli)
{
    cg_config_t cfg;
    int rc = PARSE(&cfg, "--listen", "http://127.0.0.1:1", "--listen", "http://[::]:2",
                   "--allow-public-unauthenticated", "--cors-origin", "https://a.example",
                   "--cors-origin=http://b.example:8080");
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(cfg.n_listen, 2);
    ck_assert_str_eq(cfg.listen[0].host, "127.0.0.1");
    ck_assert_str_eq(cfg.listen[1].host, "::");
    ck_assert_uint_eq(cfg.listen[1].port, 2);
    ck_assert_uint_eq(cfg.n_cors_origins, 2);
    ck_assert_str_eq(cfg.cors_origins[0], "https://a.example");
    ck_assert_str_eq(cfg.cors_origins[1], "http://b.example:8080");
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_repeatable_cli_replaces_file)
{
    cg_config_t cfg;
    const char *path = write_conf("listen http://127.0.0.1:1\nlisten http://127.0.0.1:2\n"
                                  "cors-origin https://file.example\n");
    int rc = PARSE(&cfg, "--config", path, "--listen", "http://127.0.0.1:3");
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(cfg.n_listen, 1);
    ck_assert_uint_eq(cfg.listen[0].port, 3);
    /* not given on the command line: the file's list stays */
    ck_assert_uint_eq(cfg.n_cors_origins, 1);
    ck_assert_str_eq(cfg.cors_origins[0], "https://file.example");
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_file_unknown_key)
{
    cg_config_t cfg;
    const char *path = write_conf("heartbeat 5\nbogus 1\n");
    expect_one_problem(PARSE(&cfg, "--config", path), ":2: unknown option 'bogus'", path);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_file_key_hints)
{
    cg_config_t cfg;
    const char *path = write_conf("--heartbeat 5\nheartbeat=5\n");
    ck_assert_int_eq(PARSE(&cfg, "--config", path), -1);
    ck_assert_int_eq(count_lines(err), 2);
    ck_assert_ptr_nonnull(strstr(err, "without the leading dashes"));
    ck_assert_ptr_nonnull(strstr(err, "not '='"));
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_file_missing_value)
{
    cg_config_t cfg;
    const char *path = write_conf("watch\nheartbeat   # nothing\n");
    ck_assert_int_eq(PARSE(&cfg, "--config", path), -1);
    ck_assert_int_eq(count_lines(err), 2);
    ck_assert_ptr_nonnull(strstr(err, ":1: watch: missing value"));
    ck_assert_ptr_nonnull(strstr(err, ":2: heartbeat: missing value"));
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_file_cli_only_and_duplicate)
{
    cg_config_t cfg;
    const char *path = write_conf("config /etc/other.conf\ncheck-config\n"
                                  "heartbeat 5\nheartbeat 6\n");
    ck_assert_int_eq(PARSE(&cfg, "--config", path), -1);
    ck_assert_int_eq(count_lines(err), 3);
    ck_assert_ptr_nonnull(strstr(err, ":1: config: can only be given on the command line"));
    ck_assert_ptr_nonnull(strstr(err, ":2: check-config: can only be given on the command line"));
    ck_assert_ptr_nonnull(strstr(err, ":4: heartbeat: already set on line 3"));
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_file_missing)
{
    cg_config_t cfg;
    expect_one_problem(PARSE(&cfg, "--config", "/nonexistent/changegate.conf"),
                       "--config: cannot read '/nonexistent/changegate.conf'",
                       "No such file or directory");
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_config_twice)
{
    cg_config_t cfg;
    expect_one_problem(PARSE(&cfg, "--config", "/a", "--config", "/b"), "--config: given 2 times",
                       NULL);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_file_problem_names_line)
{
    cg_config_t cfg;
    const char *path = write_conf("# c\nheartbeat 0\n");
    ck_assert_int_eq(PARSE(&cfg, "--config", path), -1);
    char want[128];
    snprintf(want, sizeof want, "%s:2: heartbeat: '0' is out of range", path);
    ck_assert_msg(strstr(err, want), "'%s' not in: %s", want, err);
    cg_config_free(&cfg);
}
END_TEST

/* ---- the command line ---- */

START_TEST(test_cli_unknown_option)
{
    cg_config_t cfg;
    expect_one_problem(PARSE(&cfg, "--bogus=1"), "unknown option '--bogus'", NULL);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_cli_positional)
{
    cg_config_t cfg;
    expect_one_problem(PARSE(&cfg, "stray"), "unexpected argument 'stray'", NULL);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_cli_missing_value)
{
    cg_config_t cfg;
    expect_one_problem(PARSE(&cfg, "--heartbeat"), "--heartbeat: missing value", "SECONDS");
    cg_config_free(&cfg);
    /* the next option is not swallowed as the value */
    expect_one_problem(PARSE(&cfg, "--watch", "--heartbeat", "5"), "--watch: missing value", NULL);
    ck_assert_uint_eq(cfg.heartbeat, 5);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_cli_flag_with_value)
{
    cg_config_t cfg;
    expect_one_problem(PARSE(&cfg, "--check-config=yes"), "--check-config: takes no value", NULL);
    cg_config_free(&cfg);
}
END_TEST

/* ---- values ---- */

START_TEST(test_mongo_uri_invalid)
{
    cg_config_t cfg;
    expect_one_problem(PARSE(&cfg, "--mongo-uri", "http://secret@host"),
                       "--mongo-uri: not a valid MongoDB connection string: Invalid URI Schema",
                       "mongodb://");
    ck_assert_ptr_null(strstr(err, "secret")); /* never echo what may hold a password */
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_watch_db)
{
    cg_config_t cfg;
    ck_assert_int_eq(PARSE(&cfg, "--watch", "shop"), 0);
    ck_assert_str_eq(cfg.watch, "shop");
    ck_assert_str_eq(cfg.watch_db, "shop");
    ck_assert_ptr_null(cfg.watch_coll);
    cg_config_free(&cfg);
}
END_TEST

static const char *bad_watch[][2] = {
    {".orders", "empty database name"},
    {"shop.", "empty collection name"},
    {"a/b", "cannot contain"},
    {"a b.c", "cannot contain"},
    {"a$b", "cannot contain"},
    {"*.orders", "can only stand alone"},
    {"shop.*", "cannot contain $ or be *"},
    {"shop.a$b", "cannot contain $ or be *"},
    {"admin", "internal admin database"},
    {"local.oplog.rs", "internal local database"},
    {"config.x", "internal config database"},
    {"shop.system.views", "system.* collections"},
    {"", "empty database name"},
    {"a1234567890123456789012345678901234567890123456789012345678901234", "shorter than 64"},
};

START_TEST(test_watch_invalid)
{
    cg_config_t cfg;
    char arg[128];
    snprintf(arg, sizeof arg, "--watch=%s", bad_watch[_i][0]);
    expect_one_problem(PARSE(&cfg, arg), "--watch: ", bad_watch[_i][1]);
    ck_assert_ptr_null(cfg.watch_db);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_pipeline_good)
{
    cg_config_t cfg;
    int rc = PARSE(&cfg, "--pipeline",
                   " [ {\"$match\": {\"operationType\": {\"$in\": [\"insert\", \"update\"]}}},"
                   "   {\"$match\": {\"clusterTime\": {\"$gt\": {\"$timestamp\": {\"t\": 1, \"i\": "
                   "2}}}}},"
                   "   {\"$project\": {\"_id\": 1, \"fullDocument\": 1}},"
                   "   {\"$set\": {\"_id\": \"$_id\", \"x\": {\"$numberLong\": \"5\"}}},"
                   "   {\"$unset\": [\"fullDocument.secret\"]},"
                   "   {\"$addFields\": {\"y\": true}}, {\"$replaceWith\": \"$$ROOT\"},"
                   "   {\"$redact\": \"$$KEEP\"}, {\"$changeStreamSplitLargeEvent\": {}} ] ");
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(stage_count(&cfg), 9);
    ck_assert_str_eq(stage_json(&cfg, 3),
                     "{ \"$set\" : { \"_id\" : \"$_id\", \"x\" : { \"$numberLong\" : \"5\" } } }");
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_pipeline_empty_array)
{
    cg_config_t cfg;
    ck_assert_int_eq(PARSE(&cfg, "--pipeline", "[]"), 0);
    ck_assert_str_eq(cfg.pipeline_json, "[]");
    ck_assert_uint_eq(stage_count(&cfg), 0);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_pipeline_bad_json)
{
    cg_config_t cfg;
    expect_one_problem(PARSE(&cfg, "--pipeline", "[{\"$match\": {\"a\": ]"),
                       "--pipeline: is not valid JSON: ", "position 18");
    ck_assert_ptr_nonnull(cfg.pipeline);
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--pipeline", "[{$match: {}}]"), "is not valid JSON", NULL);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_pipeline_not_array)
{
    cg_config_t cfg;
    expect_one_problem(PARSE(&cfg, "--pipeline", "{\"$match\": {}}"),
                       "--pipeline: ", "put the stage inside [ ]");
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--pipeline", "42"), "--pipeline: is not a JSON array", NULL);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_pipeline_trailing_text)
{
    cg_config_t cfg;
    /* would otherwise be smuggled into the wrapping document */
    expect_one_problem(PARSE(&cfg, "--pipeline", "[], \"x\": 1"),
                       "--pipeline: ", "unexpected text after the closing ]");
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--pipeline", "[] {}"), "unexpected text", NULL);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_pipeline_unknown_stage)
{
    cg_config_t cfg;
    expect_one_problem(PARSE(&cfg, "--pipeline", "[{\"$match\": {}}, {\"$group\": {\"_id\": 1}}]"),
                       "--pipeline: stage 2: '$group' is not allowed in a change stream",
                       "$replaceWith");
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_pipeline_change_stream_stage)
{
    cg_config_t cfg;
    expect_one_problem(PARSE(&cfg, "--pipeline", "[{\"$changeStream\": {}}]"),
                       "stage 1 is $changeStream", "changegate adds itself");
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_pipeline_stage_shape)
{
    cg_config_t cfg;
    ck_assert_int_eq(PARSE(&cfg, "--pipeline", "[1, {}, {\"$match\": {}, \"$set\": {}}]"), -1);
    ck_assert_int_eq(count_lines(err), 3);
    ck_assert_ptr_nonnull(strstr(err, "stage 1 is not a document"));
    ck_assert_ptr_nonnull(strstr(err, "stage 2 is empty"));
    ck_assert_ptr_nonnull(strstr(err, "stage 3 has 2 keys"));
    cg_config_free(&cfg);
}
END_TEST

static const char *id_removing[][2] = {
    {"[{\"$project\": {\"_id\": 0}}]", "removes _id"},
    {"[{\"$project\": {\"_id\": false, \"a\": 1}}]", "removes _id"},
    {"[{\"$project\": {\"_id\": 0.0}}]", "removes _id"},
    {"[{\"$project\": {\"_id\": \"$other\"}}]", "replaces _id"},
    {"[{\"$project\": {\"_id._data\": 0}}]", "changes part of _id"},
    {"[{\"$unset\": \"_id\"}]", "removes _id"},
    {"[{\"$unset\": [\"a\", \"_id\"]}]", "removes _id"},
    {"[{\"$unset\": \"_id._data\"}]", "changes part of _id"},
    {"[{\"$set\": {\"_id\": 1}}]", "replaces _id"},
    {"[{\"$addFields\": {\"_id._data\": \"x\"}}]", "changes part of _id"},
};

START_TEST(test_pipeline_removes_id)
{
    cg_config_t cfg;
    expect_one_problem(PARSE(&cfg, "--pipeline", id_removing[_i][0]), id_removing[_i][1],
                       "error 280");
    ck_assert_ptr_nonnull(strstr(err, "--pipeline: stage 1 ("));
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_pipeline_split_not_last)
{
    cg_config_t cfg;
    expect_one_problem(
        PARSE(&cfg, "--pipeline", "[{\"$changeStreamSplitLargeEvent\": {}}, {\"$match\": {}}]"),
        "stage 1: $changeStreamSplitLargeEvent must be the last stage", NULL);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_full_document_modes)
{
    cg_config_t cfg;
    const char *modes[] = {"default", "updateLookup", "whenAvailable", "required"};
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(PARSE(&cfg, "--full-document", modes[i]), 0);
        ck_assert_str_eq(cfg.full_document, modes[i]);
        cg_config_free(&cfg);
    }
    expect_one_problem(PARSE(&cfg, "--full-document", "always"),
                       "--full-document: 'always' is not a mode",
                       "expected default, updateLookup, whenAvailable or required");
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--full-document", "updatelookup"), "did you mean updateLookup?",
                       NULL);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_before_change_modes)
{
    cg_config_t cfg;
    ck_assert_int_eq(PARSE(&cfg, "--full-document-before-change", "whenAvailable"), 0);
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--full-document-before-change", "updateLookup"),
                       "--full-document-before-change: 'updateLookup' is not a mode",
                       "expected off, whenAvailable or required");
    cg_config_free(&cfg);
}
END_TEST

static const struct {
    const char *spec, *host;
    unsigned port;
} good_listen[] = {
    {"http://127.0.0.1:8080", "127.0.0.1", 8080},
    {"http://localhost:1", "localhost", 1},
    {"http://[::1]:65535", "::1", 65535},
    {"http://[::]:80", "::", 80},
    {"http://my-host.example.org:8080", "my-host.example.org", 8080},
    {"http://[fe80::1:2]:9", "fe80::1:2", 9},
};

START_TEST(test_listen_good)
{
    cg_config_t cfg;
    int rc = PARSE(&cfg, "--listen", good_listen[_i].spec, "--allow-public-unauthenticated");
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(cfg.n_listen, 1);
    ck_assert_int_eq(cfg.listen[0].kind, CG_LISTEN_HTTP);
    ck_assert_str_eq(cfg.listen[0].spec, good_listen[_i].spec);
    ck_assert_str_eq(cfg.listen[0].host, good_listen[_i].host);
    ck_assert_uint_eq(cfg.listen[0].port, good_listen[_i].port);
    cg_config_free(&cfg);
}
END_TEST

static const char *bad_listen[][2] = {
    {"fcgi:unix:run/changegate.sock", "needs an absolute socket path"},
    {"fcgi:unix:/run/"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "x"
     "xxxxxxxxxx.sock",
     "longer than the 107 bytes"},
    {"fcgi://127.0.0.1", "has no port"},
    {"fcgi://127.0.0.1:9000/x", "path"},
    {"fcgi:tcp:127.0.0.1:9000", "is not a listen address"},
    {"https://0.0.0.0:443", "which changegate does not serve itself"},
    {"127.0.0.1:8080", "is not a listen address"},
    {"http://127.0.0.1", "has no port"},
    {"http://127.0.0.1:", "no port number"},
    {"http://127.0.0.1:0", "invalid port"},
    {"http://127.0.0.1:65536", "invalid port"},
    {"http://127.0.0.1:80x", "invalid port"},
    {"http://127.0.0.1:-1", "invalid port"},
    {"http://127.0.0.1:8080/", "path"},
    {"http://127.0.0.1:8080/events", "path"},
    {"http://::1:8080", "without brackets"},
    {"http://[::1:8080", "no closing ]"},
    {"http://[zz::1]:8080", "invalid IPv6"},
    {"http://[::1]x:8080", "unexpected text after the ]"},
    {"http://256.1.1.1:8080", "invalid IPv4"},
    {"http://:8080", "has no host"},
    {"http://under_score:8080", "invalid host name"},
    {"http://-bad.example:8080", "invalid host name"},
    {"http://user@host:8080", "user information"},
};

START_TEST(test_listen_bad)
{
    cg_config_t cfg;
    expect_one_problem(PARSE(&cfg, "--listen", bad_listen[_i][0]), "--listen: ", bad_listen[_i][1]);
    ck_assert_ptr_nonnull(strstr(err, "expected http://HOST:PORT"));
    cg_config_free(&cfg);
}
END_TEST

/* FastCGI listeners, alone or together with HTTP ones. */
START_TEST(test_listen_fcgi)
{
    cg_config_t cfg;
    int rc = PARSE(&cfg, "--listen", "http://127.0.0.1:8080", "--listen", "fcgi://[::1]:9000",
                   "--listen", "fcgi:unix:/run/changegate/changegate.sock", "--listen",
                   "fcgi:systemd", "--listen", "fcgi:stdin", "--allow-public-unauthenticated");
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(cfg.n_listen, 5);
    ck_assert_int_eq(cfg.listen[0].kind, CG_LISTEN_HTTP);
    ck_assert_int_eq(cfg.listen[1].kind, CG_LISTEN_FCGI_TCP);
    ck_assert_str_eq(cfg.listen[1].host, "::1");
    ck_assert_uint_eq(cfg.listen[1].port, 9000);
    ck_assert_int_eq(cfg.listen[2].kind, CG_LISTEN_FCGI_UNIX);
    ck_assert_str_eq(cfg.listen[2].path, "/run/changegate/changegate.sock");
    ck_assert_int_eq(cfg.listen[3].kind, CG_LISTEN_FCGI_SYSTEMD);
    ck_assert_int_eq(cfg.listen[4].kind, CG_LISTEN_FCGI_STDIN);
    ck_assert_str_eq(cfg.listen[4].spec, "fcgi:stdin");
    ck_assert_uint_eq(cfg.fcgi_socket_mode, 0660);
    ck_assert_int_eq(cfg.fcgi_socket_uid, -1);
    ck_assert_int_eq(cfg.fcgi_socket_gid, -1);
    cg_config_free(&cfg);
    /* The same port for HTTP and FastCGI is one address twice. */
    expect_one_problem(
        PARSE(&cfg, "--listen", "http://127.0.0.1:1", "--listen", "fcgi://127.0.0.1:1"),
        "--listen: 'fcgi://127.0.0.1:1' is given more than once", NULL);
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--listen", "fcgi:unix:/a", "--listen", "fcgi:unix:/a",
                             "--allow-public-unauthenticated"),
                       "--listen: 'fcgi:unix:/a' is given more than once", NULL);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_fcgi_socket_options)
{
    cg_config_t cfg;
    int rc = PARSE(&cfg, "--fcgi-socket-mode", "0600", "--fcgi-socket-owner", "root:root");
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(cfg.fcgi_socket_mode, 0600);
    ck_assert_int_eq(cfg.fcgi_socket_uid, 0);
    ck_assert_int_eq(cfg.fcgi_socket_gid, 0);
    cg_config_free(&cfg);
    rc = PARSE(&cfg, "--fcgi-socket-mode", "666", "--fcgi-socket-owner", ":4242");
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(cfg.fcgi_socket_mode, 0666);
    ck_assert_int_eq(cfg.fcgi_socket_uid, -1);
    ck_assert_int_eq(cfg.fcgi_socket_gid, 4242);
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--fcgi-socket-mode", "0800"),
                       "--fcgi-socket-mode: '0800' is not a mode", "like 0660");
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--fcgi-socket-mode", "rw-rw----"),
                       "--fcgi-socket-mode: 'rw-rw----' is not a mode", NULL);
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--fcgi-socket-owner", "no-such-user-cg"),
                       "no such user 'no-such-user-cg'", NULL);
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--fcgi-socket-owner", "root:no-such-group-cg"),
                       "no such group 'no-such-group-cg'", NULL);
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--fcgi-socket-owner", ":"), "names no user and no group", NULL);
    cg_config_free(&cfg);
}
END_TEST

/* --auth none (the default) serves everything to whoever connects: only on
 * loopback, unless the operator says otherwise. */
START_TEST(test_auth_none_needs_loopback)
{
    cg_config_t cfg;
    ck_assert_int_eq(PARSE(&cfg, "--listen", "http://127.0.0.2:1", "--listen", "http://[::1]:2",
                           "--listen", "fcgi://localhost:3"),
                     0);
    ck_assert(!cfg.auth_jwt && !cfg.ops_loopback_only && cfg.access_token_param);
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--listen", "http://0.0.0.0:1"),
                       "--listen http://0.0.0.0:1: with --auth none",
                       "reachable from other machines");
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--listen", "fcgi:unix:/run/cg.sock"),
                       "--listen fcgi:unix:/run/cg.sock: with --auth none",
                       "as public as the web server");
    cg_config_free(&cfg);
    /* The flag, on the command line or as a line of its own in a file. */
    const char *path = write_conf("listen http://0.0.0.0:1\nallow-public-unauthenticated\n");
    ck_assert_int_eq(PARSE(&cfg, "--config", path), 0);
    ck_assert(cfg.allow_public_unauthenticated);
    cg_config_free(&cfg);
    path = write_conf("allow-public-unauthenticated yes\n");
    expect_one_problem(PARSE(&cfg, "--config", path),
                       "allow-public-unauthenticated: takes no value", NULL);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_auth_jwt_options)
{
    cg_config_t cfg;
    int rc = PARSE(&cfg, "--auth", "jwt", "--listen", "http://0.0.0.0:1", "--jwt-public-key",
                   "k1=/etc/a.pem", "--jwt-public-key", "/etc/b.pem", "--jwt-secret-file", "/s",
                   "--jwt-algorithms", "RS256", "--jwt-audience", "shop", "--jwt-issuer",
                   "https://id.example", "--jwt-leeway", "5", "--jwt-cookie", "session",
                   "--access-token-param", "off", "--auth-rule",
                   "{\"fullDocument.owner\": \"$$jwt.sub\"}");
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert(cfg.auth_jwt && cfg.ops_loopback_only && !cfg.access_token_param);
    ck_assert_uint_eq(cfg.n_jwt_public_keys, 2);
    ck_assert_str_eq(cfg.jwt_public_keys[0], "k1=/etc/a.pem");
    ck_assert_str_eq(cfg.jwt_secret_file, "/s");
    ck_assert_str_eq(cfg.jwt_algorithms, "RS256");
    ck_assert_str_eq(cfg.jwt_audience, "shop");
    ck_assert_str_eq(cfg.jwt_issuer, "https://id.example");
    ck_assert_uint_eq(cfg.jwt_leeway, 5);
    ck_assert_str_eq(cfg.jwt_cookie, "session");
    ck_assert_str_eq(cfg.auth_rule, "{\"fullDocument.owner\": \"$$jwt.sub\"}");
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--auth", "jwt"), "--auth: jwt needs a key", NULL);
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--auth", "oauth"), "--auth: 'oauth' is not a mode", NULL);
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--jwt-cookie", "s"),
                       "--jwt-cookie: takes effect only with --auth jwt", NULL);
    cg_config_free(&cfg);
    expect_one_problem(
        PARSE(&cfg, "--auth", "jwt", "--jwt-secret-file", "/s", "--ops-access", "sometimes"),
        "--ops-access: 'sometimes': expected any or loopback", NULL);
    cg_config_free(&cfg);
    ck_assert_int_eq(PARSE(&cfg, "--auth", "jwt", "--jwt-secret-file", "/s", "--ops-access", "any"),
                     0);
    ck_assert(!cfg.ops_loopback_only);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_listen_duplicate)
{
    cg_config_t cfg;
    expect_one_problem(
        PARSE(&cfg, "--listen", "http://127.0.0.1:1", "--listen", "http://127.0.0.1:1"),
        "--listen: 'http://127.0.0.1:1' is given more than once", NULL);
    ck_assert_uint_eq(cfg.n_listen, 1);
    cg_config_free(&cfg);
}
END_TEST

static const struct {
    const char *opt, *value, *needle;
} bad_numbers[] = {
    {"--journal-size", "0", "'0' is out of range; expected a whole number from 1 to 10000000"},
    {"--journal-size", "10000001", "out of range"},
    {"--journal-size", "-5", "'-5' is not a whole number"},
    {"--journal-size", "12abc", "not a whole number"},
    {"--journal-size", " 5", "not a whole number"},
    {"--journal-size", "+5", "not a whole number"},
    {"--journal-size", "", "not a whole number"},
    {"--journal-size", "99999999999999999999999999", "out of range"},
    {"--heartbeat", "0", "expected a whole number of seconds from 1 to 3600"},
    {"--heartbeat", "3601", "out of range"},
    {"--heartbeat", "15s", "not a whole number"},
    {"--heartbeat", "1.5", "not a whole number"},
    {"--max-subscribers", "0", "from 1 to 1000000"},
    {"--max-subscribers", "1000001", "out of range"},
    {"--max-subscribers", "18446744073709551616", "out of range"},
};

START_TEST(test_numbers_bad)
{
    cg_config_t cfg;
    char arg[128];
    snprintf(arg, sizeof arg, "%s=%s", bad_numbers[_i].opt, bad_numbers[_i].value);
    expect_one_problem(PARSE(&cfg, arg), bad_numbers[_i].opt, bad_numbers[_i].needle);
    /* the default stays, so a caller that ignores the error still sees sane values */
    ck_assert_uint_eq(cfg.journal_size, 10000);
    ck_assert_uint_eq(cfg.heartbeat, 15);
    ck_assert_uint_eq(cfg.max_subscribers, 10000);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_numbers_bounds)
{
    cg_config_t cfg;
    ck_assert_int_eq(
        PARSE(&cfg, "--journal-size", "1", "--heartbeat", "1", "--max-subscribers", "1"), 0);
    ck_assert_uint_eq(cfg.journal_size, 1);
    ck_assert_uint_eq(cfg.heartbeat, 1);
    ck_assert_uint_eq(cfg.max_subscribers, 1);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_cors_normalised)
{
    cg_config_t cfg;
    int rc = PARSE(&cfg, "--cors-origin", "HTTPS://App.Example.COM:443", "--cors-origin",
                   "http://example.org:80", "--cors-origin", "http://[::1]:3000", "--cors-origin",
                   "https://127.0.0.1:8443");
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(cfg.n_cors_origins, 4);
    ck_assert_str_eq(cfg.cors_origins[0], "https://app.example.com");
    ck_assert_str_eq(cfg.cors_origins[1], "http://example.org");
    ck_assert_str_eq(cfg.cors_origins[2], "http://[::1]:3000");
    ck_assert_str_eq(cfg.cors_origins[3], "https://127.0.0.1:8443");
    cg_config_free(&cfg);
}
END_TEST

static const char *bad_cors[][2] = {
    {"https://app.example.com/", "trailing slash"},
    {"https://app.example.com/path", "has a path"},
    {"app.example.com", "is not an origin"},
    {"ftp://app.example.com", "is not an origin"},
    {"null", "is not an origin"},
    {"https://", "has no host"},
    {"https://app.example.com:0", "invalid port"},
    {"https://*.example.com", "invalid host name"},
};

START_TEST(test_cors_bad)
{
    cg_config_t cfg;
    expect_one_problem(PARSE(&cfg, "--cors-origin", bad_cors[_i][0]),
                       "--cors-origin: ", bad_cors[_i][1]);
    ck_assert_ptr_nonnull(strstr(err, "expected * or http(s)://HOST[:PORT]"));
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_log_level)
{
    cg_config_t cfg;
    ck_assert_int_eq(PARSE(&cfg, "--log-level", "error"), 0);
    ck_assert_int_eq(cfg.log_level, CG_LOG_ERROR);
    cg_config_free(&cfg);
    expect_one_problem(PARSE(&cfg, "--log-level", "verbose"),
                       "--log-level: 'verbose' is not a level",
                       "expected error, warn, info or debug");
    ck_assert_int_eq(cfg.log_level, CG_LOG_INFO);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_state_dir_empty)
{
    cg_config_t cfg;
    expect_one_problem(PARSE(&cfg, "--state-dir="), "--state-dir: is empty", NULL);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_problems_collected)
{
    cg_config_t cfg;
    const char *path = write_conf("heartbeat 0\nlog-level loud\n");
    int rc =
        PARSE(&cfg, "--config", path, "--watch", "admin", "--listen", "fcgi:x:1", "--journal-size",
              "x", "--pipeline", "[{\"$group\": {}}]", "--bogus", "--cors-origin", "https://a/");
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(count_lines(err) == 8, "%s", err);
    const char *needles[] = {
        "heartbeat: '0'",   "log-level: 'loud'", "--watch: ", "--listen: ",
        "--journal-size: ", "--pipeline: ",      "'--bogus'", "--cors-origin: "};
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
        ck_assert_msg(strstr(err, needles[i]), "'%s' not in: %s", needles[i], err);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_err_truncated)
{
    cg_config_t cfg;
    char small[40];
    const char *args[] = {"changegate", "--heartbeat=0", "--journal-size=0", NULL};
    ck_assert_int_eq(cg_config_parse(&cfg, 3, (char **)args, small, sizeof small), -1);
    ck_assert_uint_eq(strlen(small), sizeof small - 1);
    ck_assert_int_eq(small[sizeof small - 2], '\n');
    cg_config_free(&cfg);
    /* no buffer at all: still fails */
    ck_assert_int_eq(cg_config_parse(&cfg, 3, (char **)args, NULL, 0), -1);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_control_chars_stay_on_one_line)
{
    cg_config_t cfg;
    expect_one_problem(PARSE(&cfg, "--log-level", "a\nb"), "'a?b'", NULL);
    cg_config_free(&cfg);
}
END_TEST

START_TEST(test_free_safety)
{
    cg_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cg_config_free(&cfg);
    cg_config_free(&cfg);
    cg_config_free(NULL);
    ck_assert_int_eq(PARSE(&cfg, "--listen", "http://[::1]:1", "--cors-origin", "*"), 0);
    cg_config_free(&cfg);
    cg_config_free(&cfg);
    ck_assert_int_eq(PARSE(&cfg, "--pipeline", "[{\"$project\": {\"_id\": 0}}]", "--listen",
                           "http://[::1]:1", "--listen", "nope"),
                     -1);
    cg_config_free(&cfg);
    cg_config_free(&cfg);
    ck_assert_ptr_null(cfg.listen);
    ck_assert_ptr_null(cfg.pipeline);
}
END_TEST

START_TEST(test_usage)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    cg_config_usage(f);
    fclose(f);
    const char *needles[] = {"--config FILE",
                             "--mongo-uri URI",
                             "mongodb://127.0.0.1:27017/?replicaSet=rs0",
                             "--watch SCOPE",
                             "--pipeline JSON",
                             "--full-document MODE",
                             "--full-document-before-change MODE",
                             "--listen ADDR",
                             "http://127.0.0.1:8080",
                             "--state-dir DIR",
                             "--journal-size N",
                             "--heartbeat SECONDS",
                             "--max-subscribers N",
                             "--cors-origin ORIGIN",
                             "--log-level LEVEL",
                             "--check-config",
                             "--version",
                             "--help",
                             "GET /events",
                             "GET /poll",
                             "GET /healthz",
                             "format=ndjson",
                             "timeout",
                             "default 25",
                             "at most 120",
                             "limit",
                             "default 100",
                             "at most 1000",
                             "ns=",
                             "op=",
                             "filter=",
                             "fields=",
                             "lastEventId=",
                             "FastCGI"};
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
        ck_assert_msg(strstr(text, needles[i]), "'%s' not in --help", needles[i]);
    /* fits an 80-column terminal */
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        ck_assert_ptr_nonnull(nl);
        ck_assert_msg(nl - line <= 80, "long line: %.*s", (int)(nl - line), line);
        line = nl + 1;
    }
    free(text);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("options");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_cli_every_option);
    tcase_add_test(tc, test_cli_equals_form);
    tcase_add_test(tc, test_flags);
    tcase_add_test(tc, test_cli_last_wins);
    tcase_add_test(tc, test_cli_unknown_option);
    tcase_add_test(tc, test_cli_positional);
    tcase_add_test(tc, test_cli_missing_value);
    tcase_add_test(tc, test_cli_flag_with_value);
    suite_add_tcase(s, tc);

    tc = tcase_create("file");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_file_every_option);
    tcase_add_test(tc, test_file_comments_and_blanks);
    tcase_add_test(tc, test_cli_overrides_file);
    tcase_add_test(tc, test_diff_names_what_changed);
    tcase_add_test(tc, test_repeatable_cli);
    tcase_add_test(tc, test_repeatable_cli_replaces_file);
    tcase_add_test(tc, test_file_unknown_key);
    tcase_add_test(tc, test_file_key_hints);
    tcase_add_test(tc, test_file_missing_value);
    tcase_add_test(tc, test_file_cli_only_and_duplicate);
    tcase_add_test(tc, test_file_missing);
    tcase_add_test(tc, test_config_twice);
    tcase_add_test(tc, test_file_problem_names_line);
    suite_add_tcase(s, tc);

    tc = tcase_create("values");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_mongo_uri_invalid);
    tcase_add_test(tc, test_watch_db);
    tcase_add_loop_test(tc, test_watch_invalid, 0, sizeof bad_watch / sizeof bad_watch[0]);
    tcase_add_test(tc, test_full_document_modes);
    tcase_add_test(tc, test_before_change_modes);
    tcase_add_loop_test(tc, test_listen_good, 0, sizeof good_listen / sizeof good_listen[0]);
    tcase_add_loop_test(tc, test_listen_bad, 0, sizeof bad_listen / sizeof bad_listen[0]);
    tcase_add_test(tc, test_listen_duplicate);
    tcase_add_test(tc, test_listen_fcgi);
    tcase_add_test(tc, test_auth_none_needs_loopback);
    tcase_add_test(tc, test_auth_jwt_options);
    tcase_add_test(tc, test_fcgi_socket_options);
    tcase_add_loop_test(tc, test_numbers_bad, 0, sizeof bad_numbers / sizeof bad_numbers[0]);
    tcase_add_test(tc, test_numbers_bounds);
    tcase_add_test(tc, test_cors_normalised);
    tcase_add_loop_test(tc, test_cors_bad, 0, sizeof bad_cors / sizeof bad_cors[0]);
    tcase_add_test(tc, test_log_level);
    tcase_add_test(tc, test_state_dir_empty);
    tcase_add_test(tc, test_problems_collected);
    tcase_add_test(tc, test_err_truncated);
    tcase_add_test(tc, test_control_chars_stay_on_one_line);
    tcase_add_test(tc, test_free_safety);
    tcase_add_test(tc, test_usage);
    suite_add_tcase(s, tc);

    tc = tcase_create("pipeline");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_pipeline_good);
    tcase_add_test(tc, test_pipeline_empty_array);
    tcase_add_test(tc, test_pipeline_bad_json);
    tcase_add_test(tc, test_pipeline_not_array);
    tcase_add_test(tc, test_pipeline_trailing_text);
    tcase_add_test(tc, test_pipeline_unknown_stage);
    tcase_add_test(tc, test_pipeline_change_stream_stage);
    tcase_add_test(tc, test_pipeline_stage_shape);
    tcase_add_loop_test(tc, test_pipeline_removes_id, 0,
                        sizeof id_removing / sizeof id_removing[0]);
    tcase_add_test(tc, test_pipeline_split_not_last);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0;
}
