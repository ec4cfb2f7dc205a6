/* main.c: options -> config, start order, signals, stop order.
 *
 * Start: config, journal + hub, watcher (its own thread), HTTP listeners.
 * Stop (SIGTERM/SIGINT): stop accepting, end every stream, let the watcher
 * save its position, close the listeners; all within 2 seconds. */
#include <errno.h>
#include <mongoc/mongoc.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <microhttpd.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "access.h"
#include "config.h"
#include "fcgi.h"
#include "http.h"
#include "catchup.h"
#include "hub.h"
#include "journal.h"
#include "log.h"
#include "service.h"
#include "watcher.h"

/* Raises the soft open-files limit to the hard one: every subscriber is a socket. */
static void raise_nofile(size_t wanted)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < wanted)
        cg_log_warn("open-files limit is %llu, below --max-subscribers + 100 (%zu): raise it "
                    "(ulimit -n, or LimitNOFILE= in the systemd unit)",
                    (unsigned long long)rl.rlim_cur, wanted);
}

/* Gives memory back to the system after many subscribers have left. Each
 * HTTP shard thread allocates its connections in its own glibc arena, and
 * glibc only returns the top of an arena by itself: a few small blocks still
 * in use near the top (its per-thread cache, a live connection) keep every
 * freed megabyte below them resident for good (bench/README.md, sse-hold).
 * malloc_trim() releases the whole free pages inside every arena too. It runs
 * on this thread when the subscriber count has fallen by at least
 * TRIM_AFTER_LEAVING since its peak, so never on a steady state. */
#define TRIM_AFTER_LEAVING 256
#define TRIM_EVERY_MS 2000 /* at most: a mass departure takes a while */
static void trim_after_departures(size_t subscribers, size_t *peak, int64_t *trimmed_at)
{
    int64_t now = cg_hub_now_ms();
    if (subscribers > *peak) {
        *peak = subscribers;
    } else if (*peak - subscribers >= TRIM_AFTER_LEAVING && now - *trimmed_at >= TRIM_EVERY_MS) {
        malloc_trim(0);
        *peak = subscribers;
        *trimmed_at = now;
    }
}

/* The part of a MongoDB URI that is safe to log: never the credentials. */
static const char *uri_hosts(const char *uri)
{
    const char *scheme_end = strstr(uri, "://");
    const char *hosts = scheme_end ? scheme_end + 3 : uri;
    const char *at = strchr(hosts, '@');
    const char *slash = strchr(hosts, '/');
    return at && (!slash || at < slash) ? at + 1 : hosts;
}

/* A FastCGI Unix socket's directory must exist: changegate creates the
 * socket, not the directory (the package's unit has RuntimeDirectory=). */
static bool check_socket_dirs(const cg_config_t *cfg)
{
    bool ok = true;
    for (size_t i = 0; i < cfg->n_listen; i++) {
        if (cfg->listen[i].kind != CG_LISTEN_FCGI_UNIX)
            continue;
        char *dir = bson_strdup(cfg->listen[i].path);
        char *slash = strrchr(dir, '/');
        slash[slash == dir ? 1 : 0] = '\0';
        struct stat st;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            cg_log_stderr("changegate: --listen %s: directory %s does not exist",
                          cfg->listen[i].spec, dir);
            ok = false;
        }
        bson_free(dir);
    }
    return ok;
}

/* Web servers end a FastCGI response that stays silent for their read
 * timeout (60 s by default for nginx and Apache): heartbeats must come sooner. */
static void warn_slow_heartbeat(const cg_config_t *cfg)
{
    for (size_t i = 0; i < cfg->n_listen; i++) {
        if (cfg->listen[i].kind != CG_LISTEN_HTTP && cfg->heartbeat >= 60) {
            cg_log_warn("--heartbeat %u: web servers in front of %s end streams that are idle "
                        "for their read timeout (60 s by default for nginx and Apache); keep "
                        "the heartbeat below it",
                        cfg->heartbeat, cfg->listen[i].spec);
            return;
        }
    }
}

/* --allow-public-unauthenticated is a decision worth a line in every log. */
static void warn_public_unauthenticated(const cg_config_t *cfg)
{
    for (size_t i = 0; i < cfg->n_listen && !cfg->auth_jwt; i++) {
        if (!cg_config_listen_is_loopback(&cfg->listen[i])) {
            cg_log_warn("--auth none with --allow-public-unauthenticated: every change is "
                        "served to whoever reaches %s",
                        cfg->listen[i].spec);
            return;
        }
    }
}

/* The checks beyond parsing that need the machine: the state directory, the
 * sockets' directories, the key files. --check-config runs them, and so does
 * every start, so that a start fails on exactly what --check-config reports.
 * Returns the access checker the key files made (the caller owns it), or NULL
 * after printing the problem. */
static cg_access_t *usable_config_access(const cg_config_t *cfg)
{
    char err[512];
    if (cg_watcher_check_state_dir(cfg->state_dir, err, sizeof err) != 0) {
        cg_log_stderr("changegate: --state-dir: %s", err);
        return NULL;
    }
    if (!check_socket_dirs(cfg))
        return NULL;
    cg_access_t *access = cg_access_new(cfg, err, sizeof err);
    if (!access)
        cg_log_stderr("changegate: %s", err);
    return access;
}

/* libmongoc's own messages (from URI parsing on) go through our logger. */
static void on_mongoc_log(mongoc_log_level_t level, const char *domain, const char *message,
                          void *data)
{
    switch (level) {
    case MONGOC_LOG_LEVEL_ERROR:
    case MONGOC_LOG_LEVEL_CRITICAL:
        cg_log_error("libmongoc %s: %s", domain, message);
        break;
    case MONGOC_LOG_LEVEL_WARNING:
        cg_log_warn("libmongoc %s: %s", domain, message);
        break;
    case MONGOC_LOG_LEVEL_MESSAGE:
    case MONGOC_LOG_LEVEL_INFO:
        cg_log_debug("libmongoc %s: %s", domain, message);
        break;
    case MONGOC_LOG_LEVEL_DEBUG:
    case MONGOC_LOG_LEVEL_TRACE:
        break;
    }
}

/* A socket unit passed sockets (LISTEN_FDS) that no fcgi:systemd listener
 * took (it unsets the variables when it does): a web server would connect
 * to them and wait forever, so say so. */
static void warn_untaken_sockets(void)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    if (pid && fds && strtol(pid, NULL, 10) == (long)getpid() && strtol(fds, NULL, 10) > 0)
        cg_log_warn("systemd passed %s socket(s) (a socket unit, like changegate.socket, is "
                    "active), but no listener takes them: add \"listen fcgi:systemd\" to the "
                    "configuration, or stop the socket unit",
                    fds);
}

/* SIGHUP: re-read the configuration (the same command line, the file as it
 * is now). The log level changes at once; every other option is held by
 * threads serving streams, so a change to it is named in the log with the
 * advice to restart, which clients ride through with their positions. A file
 * with problems changes nothing. */
static void reload(cg_config_t *running, int argc, char **argv)
{
    char err[4096];
    cg_config_t fresh;
    cg_service_reloading();
    if (cg_config_parse(&fresh, argc, argv, err, sizeof err) != 0) {
        for (char *nl = strchr(err, '\n'); nl; nl = strchr(nl, '\n'))
            *nl = nl[1] ? ';' : '\0';
        cg_log_error("SIGHUP: the configuration has problems, nothing changed: %s", err);
    } else {
        const char *changed[64];
        size_t n = cg_config_diff(running, &fresh, changed, 64);
        for (size_t i = 0; i < n && i < 64; i++) {
            if (strcmp(changed[i], "log-level") != 0)
                cg_log_warn("SIGHUP: %s changed; restart changegate to apply it", changed[i]);
        }
        if (fresh.log_level != running->log_level) {
            cg_log_set_level(fresh.log_level);
            running->log_level = fresh.log_level;
        }
        cg_log_info("SIGHUP: configuration re-read%s%s; log level %s",
                    running->config_file ? " from " : "",
                    running->config_file ? running->config_file : "",
                    cg_log_level_name(running->log_level));
    }
    cg_config_free(&fresh);
    cg_service_ready();
}

/* The one line `systemctl status` shows: the change stream's state and the
 * number of subscribers. */
static void report_status(cg_watcher_t *watcher, cg_hub_t *hub)
{
    char msg[160], line[256];
    bool live = cg_watcher_status(watcher, msg, sizeof msg);
    snprintf(line, sizeof line, "%s: %s; %zu subscribers", live ? "live" : "not live", msg,
             cg_hub_subscriber_count(hub));
    cg_service_status(line);
}

/* A start that fails on its configuration exits with sysexits' EX_CONFIG, so
 * that a service manager can tell it from a failure worth a restart (the
 * package's unit: RestartPreventExitStatus=78). --check-config exits 1. */
#define EXIT_CONFIG 78

int main(int argc, char **argv)
{
    cg_config_t cfg;
    char err[4096];
    cg_log_init();
    cg_service_init();
    mongoc_log_set_handler(on_mongoc_log, NULL);
    if (cg_config_parse(&cfg, argc, argv, err, sizeof err) != 0) {
        cg_log_stderr("changegate: configuration problems:\n%s", err);
        bool checking = cfg.check_config;
        cg_config_free(&cfg);
        return checking ? 1 : EXIT_CONFIG;
    }
    if (cfg.show_help) {
        cg_config_usage(stdout);
        cg_config_free(&cfg);
        return 0;
    }
    if (cfg.show_version) {
        printf("changegate %s (libmongoc %s, libmicrohttpd %s)\n", PACKAGE_VERSION,
               mongoc_get_version(), MHD_get_version());
        cg_config_free(&cfg);
        return 0;
    }
    cg_access_t *access = usable_config_access(&cfg);
    if (cfg.check_config) {
        bool ok = access != NULL;
        if (ok) {
            warn_slow_heartbeat(&cfg);
            printf("configuration OK\n");
        }
        cg_access_free(access);
        cg_config_free(&cfg);
        return ok ? 0 : 1;
    }
    if (!access) {
        cg_config_free(&cfg);
        return EXIT_CONFIG;
    }
    cg_log_set_level(cfg.log_level);
    warn_slow_heartbeat(&cfg);
    warn_public_unauthenticated(&cfg);
    raise_nofile(cfg.max_subscribers + 100);

    /* Signals are taken synchronously by this thread only. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    mongoc_init();
    int rc = 1;
    cg_hub_t *hub =
        cg_hub_new(cg_journal_new(cfg.journal_size), cfg.max_subscribers, cfg.heartbeat);
    /* Listener i is served by servers[i] (HTTP) or fcgis[i] (FastCGI). */
    cg_http_t **servers = bson_malloc0(cfg.n_listen * sizeof *servers);
    cg_fcgi_t **fcgis = bson_malloc0(cfg.n_listen * sizeof *fcgis);
    cg_catchup_t *catchup = NULL;
    cg_watcher_t *watcher = cg_watcher_new(&cfg, hub, err, sizeof err);
    if (!watcher) {
        cg_log_error("%s", err);
        goto out;
    }
    catchup = cg_catchup_new(&cfg, hub, err, sizeof err);
    if (!catchup) {
        cg_log_error("%s", err);
        goto out;
    }
    for (size_t i = 0; i < cfg.n_listen; i++) {
        bool ok;
        if (cfg.listen[i].kind == CG_LISTEN_HTTP)
            ok = (servers[i] =
                      cg_http_start(&cfg.listen[i], &cfg, hub, watcher, access, err, sizeof err));
        else
            ok = (fcgis[i] =
                      cg_fcgi_start(&cfg.listen[i], &cfg, hub, watcher, access, err, sizeof err));
        if (!ok) {
            cg_log_error("%s", err);
            cg_hub_stop(hub);
            goto out;
        }
    }
    if (cg_watcher_start(watcher, err, sizeof err) != 0) {
        cg_log_error("%s", err);
        cg_hub_stop(hub);
        goto out;
    }
    cg_log_info("changegate %s started: watching %s on %s", PACKAGE_VERSION, cfg.watch,
                uri_hosts(cfg.mongo_uri));
    warn_untaken_sockets();
    cg_service_ready();

    size_t peak = 0;
    int64_t trimmed_at = 0;
    for (;;) {
        struct timespec tick = {0, 250 * 1000000L};
        int sig = sigtimedwait(&sigs, NULL, &tick);
        if (sig == SIGTERM || sig == SIGINT) {
            cg_log_info("received %s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        }
        if (sig == SIGHUP) /* logs go to stderr: there is no file to reopen */
            reload(&cfg, argc, argv);
        cg_hub_tick(hub);
        trim_after_departures(cg_hub_subscriber_count(hub), &peak, &trimmed_at);
        /* The watchdog hears from this loop only while the hub's lock is free. */
        cg_service_watchdog(cg_hub_now_ms() * 1000);
        report_status(watcher, hub);
    }
    cg_service_stopping();

    for (size_t i = 0; i < cfg.n_listen; i++) {
        if (servers[i])
            cg_http_quiesce(servers[i]);
        cg_fcgi_quiesce(fcgis[i]);
    }
    cg_hub_stop(hub);
    /* Give streams a moment to send their last bytes and end. */
    for (int i = 0; i < 40 && cg_hub_subscriber_count(hub) > 0; i++)
        nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL);
    cg_catchup_stop(catchup, 0); /* ask now; wait after the watcher */
    cg_watcher_stop(watcher, 900);
    rc = 0;
out:
    for (size_t i = 0; i < cfg.n_listen; i++) {
        cg_http_stop(servers[i]);
        cg_fcgi_stop(fcgis[i]);
    }
    bson_free(servers);
    bson_free(fcgis);
    /* A thread stuck inside a MongoDB call still uses the hub: leave it to the exit. */
    bool catchup_ended = !catchup || cg_catchup_stop(catchup, 400);
    cg_catchup_free(catchup);
    cg_access_free(access);
    if ((!watcher || cg_watcher_free(watcher)) && catchup_ended)
        cg_hub_free(hub);
    mongoc_cleanup();
    cg_log_info("stopped");
    cg_config_free(&cfg);
    return rc;
}
