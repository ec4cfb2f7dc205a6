/* config.h: every option, from the command line and the config file.
 *
 * The config owns all the strings and the parsed pipeline it holds; free it
 * with cg_config_free(). Nothing here talks to MongoDB or opens sockets. */
#ifndef CG_CONFIG_H
#define CG_CONFIG_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "log.h"

typedef enum {
    CG_LISTEN_HTTP = 1,     /* http://HOST:PORT */
    CG_LISTEN_FCGI_TCP,     /* fcgi://HOST:PORT */
    CG_LISTEN_FCGI_UNIX,    /* fcgi:unix:/PATH */
    CG_LISTEN_FCGI_SYSTEMD, /* fcgi:systemd: the sockets systemd passes (LISTEN_FDS) */
    CG_LISTEN_FCGI_STDIN    /* fcgi:stdin: a listening socket on fd 0 (a web server spawned us) */
} cg_listen_kind_t;

typedef struct cg_listen {
    cg_listen_kind_t kind;
    char *spec; /* as written, e.g. "http://127.0.0.1:8080" (for logs) */
    char *host; /* HTTP_FCGI_TCP: "127.0.0.1", "::1", "0.0.0.0", "localhost": no brackets */
    uint16_t port;
    char *path; /* FCGI_UNIX: the socket's path; else NULL */
} cg_listen_t;

typedef struct cg_config {
    char *config_file;   /* NULL when none */
    char *mongo_uri;     /* default mongodb://127.0.0.1:27017/?replicaSet=rs0 */
    char *watch;         /* "*", "DB" or "DB.COLL" as written */
    char *watch_db;      /* NULL for "*" */
    char *watch_coll;    /* NULL for "*" and "DB" */
    char *pipeline_json; /* as written, NULL when none */
    bson_t *pipeline; /* {"pipeline": [stages...]}; empty array when none; never NULL after parse */
    char *full_document;               /* "default", "updateLookup", "whenAvailable", "required" */
    char *full_document_before_change; /* "off", "whenAvailable", "required" */
    cg_listen_t *listen;               /* at least one after parse */
    size_t n_listen;
    char *state_dir;           /* default "." */
    size_t journal_size;       /* default 10000 */
    unsigned heartbeat;        /* seconds, default 15 */
    size_t max_subscribers;    /* default 10000 */
    size_t max_catchup;        /* default 16 */
    unsigned write_timeout;    /* seconds, default 60 */
    unsigned fcgi_socket_mode; /* fcgi:unix: sockets' permissions, default 0660 */
    long fcgi_socket_uid;      /* their owner, -1: ours (--fcgi-socket-owner USER[:GROUP]) */
    long fcgi_socket_gid;      /* their group, -1: ours */
    bool auth_jwt;             /* --auth jwt (else none) */
    bool allow_public_unauthenticated; /* --auth none on listeners beyond loopback */
    char *jwt_secret_file;             /* NULL when none */
    char **jwt_public_keys;            /* "[KID=]FILE" as written */
    size_t n_jwt_public_keys;
    char *jwt_algorithms;            /* as written; NULL: what the keys can verify */
    char *jwt_audience, *jwt_issuer; /* NULL when not required */
    unsigned jwt_leeway;             /* seconds, default 30 */
    char *jwt_cookie;                /* cookie name, NULL when none */
    bool access_token_param;         /* ?access_token= accepted, default on */
    char *auth_rule;                 /* JSON as written, NULL when none */
    bool ops_loopback_only;          /* /healthz, /metrics for loopback peers only */
    char **cors_origins;             /* "*" or "scheme://host[:port]" */
    size_t n_cors_origins;
    cg_log_level_t log_level;
    bool check_config, show_version, show_help;
    /* Per option: its values as given, lists joined by newlines (for cg_config_diff). */
    char **settings;
} cg_config_t;

/* Fills *cfg from argv (argv[0] is the program) and, when --config is given,
 * from that file; command-line values override the file's. Returns 0 on
 * success. On failure returns -1 and writes every problem found, one per line,
 * into err (NUL-terminated, truncated to errlen). *cfg must be freed with
 * cg_config_free() whatever the result. */
int cg_config_parse(cg_config_t *cfg, int argc, char **argv, char *err, size_t errlen);
void cg_config_free(cg_config_t *cfg);

/* Which file-settable options differ between two parsed configurations, as
 * given (a file named by an option is compared by name, not content): stores
 * up to max option names (static strings, like "heartbeat") in names and
 * returns how many differ. */
size_t cg_config_diff(const cg_config_t *a, const cg_config_t *b, const char **names, size_t max);

/* Connections one listener may hold: --max-subscribers and a few more, or
 * what the open-files limit allows, leaving descriptors for the watcher,
 * logs and the state file. */
unsigned cg_config_max_connections(const cg_config_t *cfg);

/* The address an http:// or fcgi:// listener binds (its host resolved).
 * Returns 0, or -1 with a message in err. */
int cg_config_listen_addr(const cg_listen_t *l, struct sockaddr_storage *addr, socklen_t *len,
                          char *err, size_t errlen);

/* Whether a listener is reachable from this machine only: a TCP listener on
 * a loopback address. FastCGI sockets are not (the web server in front
 * publishes them). */
bool cg_config_listen_is_loopback(const cg_listen_t *l);

/* Writes the --help text. */
void cg_config_usage(FILE *out);

#endif
