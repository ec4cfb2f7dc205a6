/* config.c: every option, from the command line and the config file.
 *
 * Parsing runs in three steps so that every problem is reported at once rather
 * than one per attempt: collect raw values from argv and from the file (each
 * remembers where it came from, to name it in problems), merge them (the
 * command line wins), then validate each value into cg_config_t. */
#include "config.h"

#include <arpa/inet.h>
#include <grp.h>
#include <pwd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <errno.h>
#include <mongoc/mongoc.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CG_CONFIG_DEFAULT_MONGO_URI "mongodb://127.0.0.1:27017/?replicaSet=rs0"
#define CG_CONFIG_DEFAULT_LISTEN "http://127.0.0.1:8080"

enum {
    CG_OPT_CONFIG,
    CG_OPT_MONGO_URI,
    CG_OPT_WATCH,
    CG_OPT_PIPELINE,
    CG_OPT_FULL_DOCUMENT,
    CG_OPT_FULL_DOCUMENT_BEFORE_CHANGE,
    CG_OPT_LISTEN,
    CG_OPT_STATE_DIR,
    CG_OPT_JOURNAL_SIZE,
    CG_OPT_HEARTBEAT,
    CG_OPT_MAX_SUBSCRIBERS,
    CG_OPT_MAX_CATCHUP,
    CG_OPT_WRITE_TIMEOUT,
    CG_OPT_CORS_ORIGIN,
    CG_OPT_FCGI_SOCKET_MODE,
    CG_OPT_FCGI_SOCKET_OWNER,
    CG_OPT_AUTH,
    CG_OPT_ALLOW_PUBLIC_UNAUTHENTICATED,
    CG_OPT_JWT_SECRET_FILE,
    CG_OPT_JWT_PUBLIC_KEY,
    CG_OPT_JWT_ALGORITHMS,
    CG_OPT_JWT_AUDIENCE,
    CG_OPT_JWT_ISSUER,
    CG_OPT_JWT_LEEWAY,
    CG_OPT_JWT_COOKIE,
    CG_OPT_ACCESS_TOKEN_PARAM,
    CG_OPT_AUTH_RULE,
    CG_OPT_OPS_ACCESS,
    CG_OPT_LOG_LEVEL,
    CG_OPT_CHECK_CONFIG,
    CG_OPT_VERSION,
    CG_OPT_HELP,
    CG_OPT_COUNT
};

#define CG_OPTF_VALUE 1u    /* takes a value */
#define CG_OPTF_REPEAT 2u   /* each occurrence adds to a list */
#define CG_OPTF_CLI_ONLY 4u /* meaningless inside a config file */

static const struct {
    const char *name;
    const char *arg; /* what the value looks like, for "missing value" */
    unsigned flags;
} cg_config_opts[CG_OPT_COUNT] = {
    [CG_OPT_CONFIG] = {"config", "FILE", CG_OPTF_VALUE | CG_OPTF_CLI_ONLY},
    [CG_OPT_MONGO_URI] = {"mongo-uri", "URI", CG_OPTF_VALUE},
    [CG_OPT_WATCH] = {"watch", "SCOPE (*, DB or DB.COLL)", CG_OPTF_VALUE},
    [CG_OPT_PIPELINE] = {"pipeline", "JSON (an array of stages)", CG_OPTF_VALUE},
    [CG_OPT_FULL_DOCUMENT] = {"full-document", "MODE", CG_OPTF_VALUE},
    [CG_OPT_FULL_DOCUMENT_BEFORE_CHANGE] = {"full-document-before-change", "MODE", CG_OPTF_VALUE},
    [CG_OPT_LISTEN] = {"listen", "ADDR (http://HOST:PORT, fcgi://HOST:PORT, fcgi:unix:/PATH)",
                       CG_OPTF_VALUE | CG_OPTF_REPEAT},
    [CG_OPT_STATE_DIR] = {"state-dir", "DIR", CG_OPTF_VALUE},
    [CG_OPT_JOURNAL_SIZE] = {"journal-size", "N", CG_OPTF_VALUE},
    [CG_OPT_HEARTBEAT] = {"heartbeat", "SECONDS", CG_OPTF_VALUE},
    [CG_OPT_MAX_SUBSCRIBERS] = {"max-subscribers", "N", CG_OPTF_VALUE},
    [CG_OPT_MAX_CATCHUP] = {"max-catchup", "N", CG_OPTF_VALUE},
    [CG_OPT_WRITE_TIMEOUT] = {"write-timeout", "SECONDS", CG_OPTF_VALUE},
    [CG_OPT_CORS_ORIGIN] = {"cors-origin", "ORIGIN", CG_OPTF_VALUE | CG_OPTF_REPEAT},
    [CG_OPT_FCGI_SOCKET_MODE] = {"fcgi-socket-mode", "MODE (octal, like 0660)", CG_OPTF_VALUE},
    [CG_OPT_FCGI_SOCKET_OWNER] = {"fcgi-socket-owner", "USER[:GROUP]", CG_OPTF_VALUE},
    [CG_OPT_AUTH] = {"auth", "MODE (none or jwt)", CG_OPTF_VALUE},
    [CG_OPT_ALLOW_PUBLIC_UNAUTHENTICATED] = {"allow-public-unauthenticated", NULL, 0},
    [CG_OPT_JWT_SECRET_FILE] = {"jwt-secret-file", "FILE", CG_OPTF_VALUE},
    [CG_OPT_JWT_PUBLIC_KEY] = {"jwt-public-key", "[KID=]FILE", CG_OPTF_VALUE | CG_OPTF_REPEAT},
    [CG_OPT_JWT_ALGORITHMS] = {"jwt-algorithms", "LIST (like HS256,RS256)", CG_OPTF_VALUE},
    [CG_OPT_JWT_AUDIENCE] = {"jwt-audience", "AUDIENCE", CG_OPTF_VALUE},
    [CG_OPT_JWT_ISSUER] = {"jwt-issuer", "ISSUER", CG_OPTF_VALUE},
    [CG_OPT_JWT_LEEWAY] = {"jwt-leeway", "SECONDS", CG_OPTF_VALUE},
    [CG_OPT_JWT_COOKIE] = {"jwt-cookie", "NAME", CG_OPTF_VALUE},
    [CG_OPT_ACCESS_TOKEN_PARAM] = {"access-token-param", "on or off", CG_OPTF_VALUE},
    [CG_OPT_AUTH_RULE] = {"auth-rule", "JSON (a query with $$jwt.<claim> placeholders)",
                          CG_OPTF_VALUE},
    [CG_OPT_OPS_ACCESS] = {"ops-access", "any or loopback", CG_OPTF_VALUE},
    [CG_OPT_LOG_LEVEL] = {"log-level", "LEVEL", CG_OPTF_VALUE},
    [CG_OPT_CHECK_CONFIG] = {"check-config", NULL, CG_OPTF_CLI_ONLY},
    [CG_OPT_VERSION] = {"version", NULL, CG_OPTF_CLI_ONLY},
    [CG_OPT_HELP] = {"help", NULL, CG_OPTF_CLI_ONLY},
};

/* Stages MongoDB accepts after $changeStream. */
static const char *const cg_config_stages[] = {
    "$addFields",   "$match",       "$project",
    "$replaceRoot", "$replaceWith", "$redact",
    "$set",         "$unset",       "$changeStreamSplitLargeEvent",
};
#define CG_CONFIG_STAGES_TEXT                                                                      \
    "$addFields, $match, $project, $replaceRoot, $replaceWith, $redact, $set, $unset, "            \
    "$changeStreamSplitLargeEvent"

static const char *const cg_config_full_document_modes[] = {"default", "updateLookup",
                                                            "whenAvailable", "required", NULL};
static const char *const cg_config_before_change_modes[] = {"off", "whenAvailable", "required",
                                                            NULL};

/* One value as given, and where: "--watch" or "FILE:LINE: watch". */
typedef struct {
    char *value;
    char *origin;
    unsigned line; /* 0 on the command line */
} cg_config_raw_t;

typedef struct {
    cg_config_raw_t *items;
    size_t n;
} cg_config_rawlist_t;

typedef struct {
    cg_config_rawlist_t opt[CG_OPT_COUNT];
} cg_config_source_t;

typedef struct {
    char *buf;
    size_t cap, len;
    bool full;
    unsigned count;
} cg_config_errs_t;

static void cg_config_problem(cg_config_errs_t *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends one line to the caller's buffer. Once a line does not fit, later
 * lines are dropped too, so what the reader sees is a prefix of the full list
 * ending in a newline. */
static void cg_config_problem(cg_config_errs_t *e, const char *fmt, ...)
{
    e->count++;
    if (!e->buf || e->cap == 0 || e->full)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *line = bson_strdupv_printf(fmt, ap);
    va_end(ap);
    size_t n = strlen(line);
    size_t room = e->cap - 1 - e->len;
    if (n + 1 <= room) {
        memcpy(e->buf + e->len, line, n);
        e->len += n;
        e->buf[e->len++] = '\n';
    } else {
        e->full = true;
        memcpy(e->buf + e->len, line, room);
        e->len += room;
        if (e->len > 0)
            e->buf[e->len - 1] = '\n';
    }
    e->buf[e->len] = '\0';
    bson_free(line);
}

/* Copies a user-supplied value for quoting in a problem line: control
 * characters become '?' so a problem stays on one line, and long values are
 * cut (at a UTF-8 character boundary) with "...". */
static const char *cg_config_quote(const char *v, char *out, size_t outlen)
{
    size_t n = strlen(v);
    bool cut = n > outlen - 1;
    if (cut) {
        n = outlen - 4;
        while (n > 0 && ((unsigned char)v[n] & 0xC0) == 0x80)
            n--;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (cut) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
    return out;
}

static bool cg_config_isspace(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool cg_config_isdigit(char c)
{
    return c >= '0' && c <= '9';
}

static bool cg_config_isalnum(char c)
{
    return cg_config_isdigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char *cg_config_trim(char *s)
{
    while (cg_config_isspace(*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && cg_config_isspace(s[n - 1]))
        s[--n] = '\0';
    return s;
}

static int cg_config_find(const char *name, size_t len)
{
    for (int i = 0; i < CG_OPT_COUNT; i++) {
        if (strlen(cg_config_opts[i].name) == len &&
            strncmp(cg_config_opts[i].name, name, len) == 0)
            return i;
    }
    return -1;
}

static void cg_config_add(cg_config_source_t *src, int opt, const char *value, char *origin,
                          unsigned line)
{
    cg_config_rawlist_t *l = &src->opt[opt];
    l->items = bson_realloc(l->items, (l->n + 1) * sizeof *l->items);
    l->items[l->n].value = bson_strdup(value);
    l->items[l->n].origin = origin;
    l->items[l->n].line = line;
    l->n++;
}

static void cg_config_source_free(cg_config_source_t *src)
{
    for (int i = 0; i < CG_OPT_COUNT; i++) {
        for (size_t j = 0; j < src->opt[i].n; j++) {
            bson_free(src->opt[i].items[j].value);
            bson_free(src->opt[i].items[j].origin);
        }
        bson_free(src->opt[i].items);
    }
}

/* A value is separated from its option either by '=' or as the next argument.
 * A next argument starting with "--" is taken for a forgotten value rather
 * than swallowed (use --opt=--value for the odd value that starts so). */
static void cg_config_read_argv(cg_config_source_t *src, int argc, char **argv,
                                cg_config_errs_t *errs)
{
    char q[96];
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0)
            arg = "--help";
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            cg_config_problem(errs, "unexpected argument '%s'; options start with --, see --help",
                              cg_config_quote(arg, q, sizeof q));
            continue;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        int opt = cg_config_find(name, eq ? (size_t)(eq - name) : strlen(name));
        if (opt < 0) {
            char *shown = bson_strndup(arg, eq ? (size_t)(eq - arg) : strlen(arg));
            cg_config_problem(errs, "unknown option '%s'; see --help",
                              cg_config_quote(shown, q, sizeof q));
            bson_free(shown);
            continue;
        }
        char *origin = bson_strdup_printf("--%s", cg_config_opts[opt].name);
        if (!(cg_config_opts[opt].flags & CG_OPTF_VALUE)) {
            if (eq) {
                cg_config_problem(errs, "%s: takes no value, but was given '%s'", origin,
                                  cg_config_quote(eq + 1, q, sizeof q));
                bson_free(origin);
            } else {
                cg_config_add(src, opt, "", origin, 0);
            }
            continue;
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            value = argv[++i];
        } else {
            cg_config_problem(errs, "%s: missing value; expected %s", origin,
                              cg_config_opts[opt].arg);
            bson_free(origin);
            continue;
        }
        cg_config_add(src, opt, value, origin, 0);
    }
}

/* Steps a scanner over JSON text by one character. Returns true when c
 * belongs to a string literal (quotes included), so callers only act on what
 * lies outside strings. */
static bool cg_config_json_in_string(char c, bool *in_str, bool *esc)
{
    if (*in_str) {
        if (*esc)
            *esc = false;
        else if (c == '\\')
            *esc = true;
        else if (c == '"')
            *in_str = false;
        return true;
    }
    if (c == '"')
        *in_str = true;
    return *in_str;
}

/* Comment rule for config files: a line whose first non-blank character is '#'
 * is a comment, and a '#' that follows a space or tab outside a double-quoted
 * string starts a comment that runs to the end of the line. The quote tracking
 * keeps '#' inside JSON strings of a pipeline; URIs never contain blanks, so a
 * URI fragment or a '#' in a password is not affected either. */
static void cg_config_strip_comment(char *s)
{
    bool in_str = false, esc = false;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        if (cg_config_json_in_string(c, &in_str, &esc))
            continue;
        if (c == '#' && (i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t')) {
            s[i] = '\0';
            return;
        }
    }
}

static void cg_config_read_file(cg_config_source_t *src, const cg_config_raw_t *config,
                                cg_config_errs_t *errs)
{
    char q[96];
    const char *path = config->value;
    FILE *f = fopen(path, "r");
    if (!f) {
        cg_config_problem(errs, "%s: cannot read '%s': %s", config->origin,
                          cg_config_quote(path, q, sizeof q), strerror(errno));
        return;
    }
    char *buf = NULL;
    size_t bufcap = 0;
    ssize_t got;
    unsigned lineno = 0;
    while ((got = getline(&buf, &bufcap, f)) >= 0) {
        lineno++;
        char *s = buf;
        if (lineno == 1 && strncmp(s, "\xEF\xBB\xBF", 3) == 0)
            s += 3; /* a UTF-8 byte order mark left by some editors */
        if ((size_t)got != strlen(buf)) {
            cg_config_problem(errs, "%s:%u: the line contains a NUL byte", path, lineno);
            continue;
        }
        cg_config_strip_comment(s);
        s = cg_config_trim(s);
        if (*s == '\0')
            continue;
        char *name = s;
        while (*s && !cg_config_isspace(*s))
            s++;
        if (*s)
            *s++ = '\0';
        char *value = cg_config_trim(s);
        int opt = cg_config_find(name, strlen(name));
        if (opt < 0) {
            const char *hint = "";
            if (name[0] == '-')
                hint = " (write option names without the leading dashes)";
            else if (strchr(name, '='))
                hint = " (write \"name value\", separated by a space, not '=')";
            cg_config_problem(errs, "%s:%u: unknown option '%s'%s; see --help", path, lineno,
                              cg_config_quote(name, q, sizeof q), hint);
            continue;
        }
        if (cg_config_opts[opt].flags & CG_OPTF_CLI_ONLY) {
            cg_config_problem(errs, "%s:%u: %s: can only be given on the command line", path,
                              lineno, name);
            continue;
        }
        bool takes_value = cg_config_opts[opt].flags & CG_OPTF_VALUE;
        if (takes_value && *value == '\0') {
            cg_config_problem(errs, "%s:%u: %s: missing value; expected %s", path, lineno, name,
                              cg_config_opts[opt].arg);
            continue;
        }
        if (!takes_value && *value != '\0') {
            cg_config_problem(errs, "%s:%u: %s: takes no value, but was given '%s'", path, lineno,
                              name, cg_config_quote(value, q, sizeof q));
            continue;
        }
        cg_config_rawlist_t *l = &src->opt[opt];
        if (!(cg_config_opts[opt].flags & CG_OPTF_REPEAT) && l->n > 0) {
            cg_config_problem(
                errs,
                "%s:%u: %s: already set on line %u; only listen, cors-origin and jwt-public-key "
                "may be given more than once",
                path, lineno, name, l->items[l->n - 1].line);
            continue;
        }
        cg_config_add(src, opt, value, bson_strdup_printf("%s:%u: %s", path, lineno, name), lineno);
    }
    if (ferror(f))
        cg_config_problem(errs, "%s: error while reading '%s': %s", config->origin,
                          cg_config_quote(path, q, sizeof q), strerror(errno));
    free(buf);
    fclose(f);
}

static void cg_config_bad(cg_config_errs_t *errs, const cg_config_raw_t *raw, int opt,
                          const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* A problem with a value, prefixed by where the value came from; raw is NULL
 * when the value is the default. */
static void cg_config_bad(cg_config_errs_t *errs, const cg_config_raw_t *raw, int opt,
                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = bson_strdupv_printf(fmt, ap);
    va_end(ap);
    if (raw)
        cg_config_problem(errs, "%s: %s", raw->origin, msg);
    else
        cg_config_problem(errs, "--%s: %s", cg_config_opts[opt].name, msg);
    bson_free(msg);
}

static void cg_config_check_mongo_uri(cg_config_t *cfg, const cg_config_raw_t *raw,
                                      cg_config_errs_t *errs)
{
    const char *v = raw ? raw->value : CG_CONFIG_DEFAULT_MONGO_URI;
    cfg->mongo_uri = bson_strdup(v);
    bson_error_t error;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(v, &error);
    if (!uri) {
        /* The URI itself is not echoed: it may hold a password. */
        char q[256];
        cg_config_bad(errs, raw, CG_OPT_MONGO_URI,
                      "not a valid MongoDB connection string: %s; expected "
                      "mongodb://HOST[:PORT][,HOST[:PORT]...][/[DB][?OPTIONS]] or "
                      "mongodb+srv://NAME[/[DB][?OPTIONS]]",
                      cg_config_quote(error.message, q, sizeof q));
        return;
    }
    mongoc_uri_destroy(uri);
}

/* MongoDB's rules for names, restricted to what a change stream can watch:
 * database names without / \ . space " $ and shorter than 64 bytes, and not
 * the internal admin, config and local databases; collection names without $
 * and not system.* (MongoDB refuses change streams on those). "*" as a part is
 * refused to catch wildcard attempts such as "db.*". */
static void cg_config_check_watch(cg_config_t *cfg, const cg_config_raw_t *raw,
                                  cg_config_errs_t *errs)
{
    const char *v = raw ? raw->value : "*";
    char q[96];
    const char *expect = "expected * (the whole deployment), DB or DB.COLL";
    cfg->watch = bson_strdup(v);
    cg_config_quote(v, q, sizeof q);
    if (strcmp(v, "*") == 0)
        return;
    const char *dot = strchr(v, '.');
    char *db = dot ? bson_strndup(v, (size_t)(dot - v)) : bson_strdup(v);
    const char *coll = dot ? dot + 1 : NULL;
    bool ok = true;
    if (db[0] == '\0') {
        cg_config_bad(errs, raw, CG_OPT_WATCH, "'%s' has an empty database name; %s", q, expect);
        ok = false;
    } else if (strcmp(db, "*") == 0) {
        cg_config_bad(errs, raw, CG_OPT_WATCH,
                      "'%s': * can only stand alone, for the whole deployment; %s", q, expect);
        ok = false;
    } else if (strpbrk(db, "/\\ \"$*")) {
        cg_config_bad(errs, raw, CG_OPT_WATCH,
                      "'%s': a database name cannot contain any of / \\ space \" $ *; %s", q,
                      expect);
        ok = false;
    } else if (strlen(db) >= 64) {
        cg_config_bad(errs, raw, CG_OPT_WATCH,
                      "'%s': a database name must be shorter than 64 bytes; %s", q, expect);
        ok = false;
    } else if (strcmp(db, "admin") == 0 || strcmp(db, "config") == 0 || strcmp(db, "local") == 0) {
        cg_config_bad(errs, raw, CG_OPT_WATCH,
                      "'%s': MongoDB does not open change streams on its internal %s database; "
                      "watch a user database, or * for the whole deployment",
                      q, db);
        ok = false;
    }
    if (coll) {
        if (coll[0] == '\0') {
            cg_config_bad(errs, raw, CG_OPT_WATCH,
                          "'%s' has an empty collection name after the '.'; %s", q, expect);
            ok = false;
        } else if (strchr(coll, '$') || strcmp(coll, "*") == 0) {
            cg_config_bad(errs, raw, CG_OPT_WATCH,
                          "'%s': a collection name cannot contain $ or be *; to watch every "
                          "collection of a database give just DB",
                          q);
            ok = false;
        } else if (strncmp(coll, "system.", 7) == 0) {
            cg_config_bad(errs, raw, CG_OPT_WATCH,
                          "'%s': MongoDB does not open change streams on system.* collections", q);
            ok = false;
        }
    }
    if (ok) {
        cfg->watch_db = db;
        cfg->watch_coll = coll ? bson_strdup(coll) : NULL;
    } else {
        bson_free(db);
    }
}

typedef enum { CG_JSON_ARRAY, CG_JSON_NOT_ARRAY, CG_JSON_TRAILING } cg_config_json_shape_t;

/* Wrapping the text as {"pipeline": TEXT} lets libbson parse a top-level
 * array, but would also accept `[], "x": 1` or ignore what follows the array.
 * This scan makes sure the text is one bracketed value; its insides are left
 * to libbson, which reports errors better. */
static cg_config_json_shape_t cg_config_json_shape(const char *s)
{
    while (cg_config_isspace(*s))
        s++;
    if (*s != '[')
        return CG_JSON_NOT_ARRAY;
    int depth = 0;
    bool in_str = false, esc = false;
    for (; *s; s++) {
        char c = *s;
        if (cg_config_json_in_string(c, &in_str, &esc))
            continue;
        if (c == '[' || c == '{') {
            depth++;
        } else if (c == ']' || c == '}') {
            if (--depth == 0) {
                s++;
                while (cg_config_isspace(*s))
                    s++;
                return *s ? CG_JSON_TRAILING : CG_JSON_ARRAY;
            }
        }
    }
    return CG_JSON_ARRAY; /* unbalanced: libbson says where */
}

/* libbson counts positions from the start of the wrapped text; shift them so
 * they count from the start of what the user wrote. */
static char *cg_config_json_error(const char *msg, size_t shift)
{
    const char *p = strstr(msg, "position ");
    if (!p)
        return bson_strdup(msg);
    char *end;
    errno = 0;
    unsigned long pos = strtoul(p + 9, &end, 10);
    if (end == p + 9 || errno || pos < shift)
        return bson_strdup(msg);
    return bson_strdup_printf("%.*sposition %lu%s", (int)(p - msg), msg, pos - shift, end);
}

static bool cg_config_is_falsy(const bson_iter_t *it)
{
    switch (bson_iter_type(it)) {
    case BSON_TYPE_BOOL:
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
    case BSON_TYPE_DOUBLE:
        return !bson_iter_as_bool(it);
    default:
        return false;
    }
}

static bool cg_config_is_truthy_flag(const bson_iter_t *it)
{
    switch (bson_iter_type(it)) {
    case BSON_TYPE_BOOL:
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
    case BSON_TYPE_DOUBLE:
        return bson_iter_as_bool(it);
    default:
        return false;
    }
}

static bool cg_config_is_same_id(const bson_iter_t *it)
{
    return BSON_ITER_HOLDS_UTF8(it) && strcmp(bson_iter_utf8(it, NULL), "$_id") == 0;
}

/* The change event's _id is its resume token: MongoDB ends the stream with
 * error 280 (ChangeStreamFatalError) at the first event whose _id a stage
 * removed or changed. This catches what a stage visibly does to _id; what
 * $replaceRoot, $replaceWith and $redact do depends on the data and is left to
 * the server. Returns what the stage does to _id, or NULL. */
static const char *cg_config_stage_touches_id(const char *stage, const bson_iter_t *spec)
{
    bson_iter_t it;
    if (strcmp(stage, "$project") == 0 && BSON_ITER_HOLDS_DOCUMENT(spec) &&
        bson_iter_recurse(spec, &it)) {
        while (bson_iter_next(&it)) {
            const char *k = bson_iter_key(&it);
            if (strcmp(k, "_id") == 0) {
                if (cg_config_is_falsy(&it))
                    return "removes _id";
                if (!cg_config_is_truthy_flag(&it) && !cg_config_is_same_id(&it))
                    return "replaces _id";
            } else if (strncmp(k, "_id.", 4) == 0) {
                return "changes part of _id";
            }
        }
    } else if (strcmp(stage, "$unset") == 0) {
        if (BSON_ITER_HOLDS_UTF8(spec)) {
            const char *k = bson_iter_utf8(spec, NULL);
            if (strcmp(k, "_id") == 0)
                return "removes _id";
            if (strncmp(k, "_id.", 4) == 0)
                return "changes part of _id";
        } else if (BSON_ITER_HOLDS_ARRAY(spec) && bson_iter_recurse(spec, &it)) {
            while (bson_iter_next(&it)) {
                if (!BSON_ITER_HOLDS_UTF8(&it))
                    continue;
                const char *k = bson_iter_utf8(&it, NULL);
                if (strcmp(k, "_id") == 0)
                    return "removes _id";
                if (strncmp(k, "_id.", 4) == 0)
                    return "changes part of _id";
            }
        }
    } else if ((strcmp(stage, "$set") == 0 || strcmp(stage, "$addFields") == 0) &&
               BSON_ITER_HOLDS_DOCUMENT(spec) && bson_iter_recurse(spec, &it)) {
        while (bson_iter_next(&it)) {
            const char *k = bson_iter_key(&it);
            if (strcmp(k, "_id") == 0 && !cg_config_is_same_id(&it))
                return "replaces _id";
            if (strncmp(k, "_id.", 4) == 0)
                return "changes part of _id";
        }
    }
    return NULL;
}

static bool cg_config_is_allowed_stage(const char *name)
{
    for (size_t i = 0; i < sizeof cg_config_stages / sizeof cg_config_stages[0]; i++) {
        if (strcmp(name, cg_config_stages[i]) == 0)
            return true;
    }
    return false;
}

static void cg_config_check_stage(const bson_iter_t *stage_it, unsigned num, bool last,
                                  const cg_config_raw_t *raw, cg_config_errs_t *errs)
{
    char q[96];
    if (!BSON_ITER_HOLDS_DOCUMENT(stage_it)) {
        cg_config_bad(errs, raw, CG_OPT_PIPELINE,
                      "stage %u is not a document; each stage is an object with one key, like "
                      "{\"$match\": {...}}",
                      num);
        return;
    }
    bson_iter_t it, spec;
    bson_iter_recurse(stage_it, &it);
    unsigned nkeys = 0;
    const char *name = NULL;
    while (bson_iter_next(&it)) {
        if (nkeys++ == 0) {
            name = bson_iter_key(&it);
            spec = it;
        }
    }
    if (nkeys == 0) {
        cg_config_bad(errs, raw, CG_OPT_PIPELINE,
                      "stage %u is empty; each stage is an object with one key, like "
                      "{\"$match\": {...}}",
                      num);
        return;
    }
    cg_config_quote(name, q, sizeof q);
    if (nkeys > 1) {
        cg_config_bad(errs, raw, CG_OPT_PIPELINE,
                      "stage %u has %u keys (the first is '%s'); each stage is an object with "
                      "exactly one key, like {\"$match\": {...}}",
                      num, nkeys, q);
        return;
    }
    if (strcmp(name, "$changeStream") == 0) {
        cg_config_bad(errs, raw, CG_OPT_PIPELINE,
                      "stage %u is $changeStream, which changegate adds itself (see --watch, "
                      "--full-document); give only the stages that follow it",
                      num);
        return;
    }
    if (!cg_config_is_allowed_stage(name)) {
        cg_config_bad(errs, raw, CG_OPT_PIPELINE,
                      "stage %u: '%s' is not allowed in a change stream; allowed stages: %s", num,
                      q, CG_CONFIG_STAGES_TEXT);
        return;
    }
    if (strcmp(name, "$changeStreamSplitLargeEvent") == 0 && !last) {
        cg_config_bad(errs, raw, CG_OPT_PIPELINE,
                      "stage %u: $changeStreamSplitLargeEvent must be the last stage", num);
        return;
    }
    const char *what = cg_config_stage_touches_id(name, &spec);
    if (what) {
        cg_config_bad(errs, raw, CG_OPT_PIPELINE,
                      "stage %u (%s) %s; _id is the event's resume token and MongoDB ends the "
                      "stream (error 280) when a pipeline removes or changes it; keep _id as it is",
                      num, name, what);
    }
}

static void cg_config_check_pipeline(cg_config_t *cfg, const cg_config_raw_t *raw,
                                     cg_config_errs_t *errs)
{
    static const char prefix[] = "{\"pipeline\": ";
    const char *expect = "expected a JSON array of stages, like "
                         "[{\"$match\": {\"operationType\": \"insert\"}}]";
    if (!raw) {
        cfg->pipeline = BCON_NEW("pipeline", "[", "]");
        return;
    }
    const char *text = raw->value;
    cfg->pipeline_json = bson_strdup(text);
    cg_config_json_shape_t shape = cg_config_json_shape(text);
    if (shape != CG_JSON_ARRAY) {
        const char *s = text;
        while (cg_config_isspace(*s))
            s++;
        if (shape == CG_JSON_TRAILING)
            cg_config_bad(errs, raw, CG_OPT_PIPELINE,
                          "unexpected text after the closing ] of the array; %s", expect);
        else if (*s == '{')
            cg_config_bad(errs, raw, CG_OPT_PIPELINE,
                          "is a single object, not an array; put the stage inside [ ]; %s", expect);
        else
            cg_config_bad(errs, raw, CG_OPT_PIPELINE, "is not a JSON array; %s", expect);
        cfg->pipeline = BCON_NEW("pipeline", "[", "]");
        return;
    }
    char *wrapped = bson_strdup_printf("%s%s}", prefix, text);
    bson_error_t error;
    bson_t *doc = bson_new_from_json((const uint8_t *)wrapped, -1, &error);
    bson_free(wrapped);
    if (!doc) {
        char q[256];
        char *msg = cg_config_json_error(error.message, sizeof prefix - 1);
        cg_config_bad(errs, raw, CG_OPT_PIPELINE, "is not valid JSON: %s; %s",
                      cg_config_quote(msg, q, sizeof q), expect);
        bson_free(msg);
        cfg->pipeline = BCON_NEW("pipeline", "[", "]");
        return;
    }
    cfg->pipeline = doc;
    bson_iter_t it, stages;
    if (!bson_iter_init_find(&it, doc, "pipeline") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &stages)) {
        cg_config_bad(errs, raw, CG_OPT_PIPELINE, "is not a JSON array; %s", expect);
        return;
    }
    unsigned n = 0;
    bson_iter_t count = stages;
    while (bson_iter_next(&count))
        n++;
    for (unsigned i = 1; bson_iter_next(&stages); i++)
        cg_config_check_stage(&stages, i, i == n, raw, errs);
}

static void cg_config_check_mode(char **out, const cg_config_raw_t *raw, int opt, const char *dflt,
                                 const char *const *modes, cg_config_errs_t *errs)
{
    const char *v = raw ? raw->value : dflt;
    *out = bson_strdup(v);
    for (size_t i = 0; modes[i]; i++) {
        if (strcmp(v, modes[i]) == 0)
            return;
    }
    char q[96];
    char list[128] = "";
    for (size_t i = 0; modes[i]; i++) {
        strcat(list, i == 0 ? "" : modes[i + 1] ? ", " : " or ");
        strcat(list, modes[i]);
    }
    for (size_t i = 0; modes[i]; i++) {
        if (strcasecmp(v, modes[i]) == 0) {
            cg_config_bad(errs, raw, opt,
                          "'%s' is not a mode (did you mean %s? modes are "
                          "case-sensitive); expected %s",
                          cg_config_quote(v, q, sizeof q), modes[i], list);
            return;
        }
    }
    cg_config_bad(errs, raw, opt, "'%s' is not a mode; expected %s",
                  cg_config_quote(v, q, sizeof q), list);
}

/* Parses a decimal integer with nothing around it: no sign, no blanks, no
 * unit. Returns 0, -1 when it is not a number, -2 when out of [min, max]. */
static int cg_config_parse_uint(const char *s, unsigned long long min, unsigned long long max,
                                unsigned long long *out)
{
    if (*s == '\0')
        return -1;
    for (const char *p = s; *p; p++) {
        if (!cg_config_isdigit(*p))
            return -1;
    }
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno == ERANGE || v < min || v > max)
        return -2;
    *out = v;
    return 0;
}

static unsigned long long cg_config_check_uint(const cg_config_raw_t *raw, int opt,
                                               unsigned long long dflt, unsigned long long min,
                                               unsigned long long max, const char *unit,
                                               cg_config_errs_t *errs)
{
    if (!raw)
        return dflt;
    unsigned long long v = dflt;
    int rc = cg_config_parse_uint(raw->value, min, max, &v);
    if (rc == 0)
        return v;
    char q[96];
    cg_config_bad(errs, raw, opt, "'%s' is %s; expected a whole number%s from %llu to %llu",
                  cg_config_quote(raw->value, q, sizeof q),
                  rc == -1 ? "not a whole number" : "out of range", unit, min, max);
    return dflt;
}

static bool cg_config_is_hostname(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = h[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || h[i - 1] == '-')
                return false;
            label = 0;
        } else if (cg_config_isalnum(c) || c == '-') {
            if (label == 0 && c == '-')
                return false;
            label++;
        } else {
            return false;
        }
    }
    return true;
}

/* Parses "HOST[:PORT]" (all of s): HOST is an IPv4 address, a DNS name, or an
 * IPv6 address in brackets (returned without them). *port is 0 when absent.
 * Returns NULL, or what is wrong. */
static const char *cg_config_parse_authority(const char *s, char **host, unsigned *port)
{
    const char *h, *hend, *rest;
    *host = NULL;
    *port = 0;
    if (strpbrk(s, "/?#"))
        return "has a path, query or trailing slash";
    if (strchr(s, '@'))
        return "has user information (user@)";
    if (*s == '[') {
        h = s + 1;
        hend = strchr(h, ']');
        if (!hend)
            return "has no closing ] after the IPv6 address";
        rest = hend + 1;
    } else {
        h = s;
        hend = strchr(s, ':');
        if (!hend)
            hend = s + strlen(s);
        rest = hend;
        if (strchr(rest + (*rest ? 1 : 0), ':'))
            return "has an IPv6 address without brackets (write it like [::1])";
    }
    if (hend == h)
        return "has no host (use 0.0.0.0 or [::] for every interface)";
    char *name = bson_strndup(h, (size_t)(hend - h));
    unsigned char addr[16];
    if (*s == '[') {
        if (inet_pton(AF_INET6, name, addr) != 1) {
            bson_free(name);
            return "has an invalid IPv6 address inside [ ]";
        }
    } else if (strspn(name, "0123456789.") == strlen(name)) {
        if (inet_pton(AF_INET, name, addr) != 1) {
            bson_free(name);
            return "has an invalid IPv4 address";
        }
    } else if (!cg_config_is_hostname(name)) {
        bson_free(name);
        return "has an invalid host name (letters, digits, '-' and '.' only)";
    }
    if (*rest == ':') {
        unsigned long long p;
        int rc = cg_config_parse_uint(rest + 1, 1, 65535, &p);
        if (rc != 0) {
            bson_free(name);
            return rest[1] == '\0' ? "has ':' but no port number"
                                   : "has an invalid port (expected 1 to 65535)";
        }
        *port = (unsigned)p;
    } else if (*rest != '\0') {
        bson_free(name);
        return "has unexpected text after the ]";
    }
    *host = name;
    return NULL;
}

/* True when fd 0 is a listening socket: a web server (lighttpd's bin-path,
 * Apache's mod_fcgid) spawned us the FastCGI way. */
static bool cg_config_stdin_listens(void)
{
    int on = 0;
    socklen_t len = sizeof on;
    return getsockopt(0, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on;
}

/* Whether two listeners would take the same address. */
static bool cg_config_same_listen(const cg_listen_t *a, const cg_listen_t *b)
{
    bool a_tcp = a->kind == CG_LISTEN_HTTP || a->kind == CG_LISTEN_FCGI_TCP;
    bool b_tcp = b->kind == CG_LISTEN_HTTP || b->kind == CG_LISTEN_FCGI_TCP;
    if (a_tcp && b_tcp)
        return a->port == b->port && strcasecmp(a->host, b->host) == 0;
    if (a->kind == CG_LISTEN_FCGI_UNIX && b->kind == CG_LISTEN_FCGI_UNIX)
        return strcmp(a->path, b->path) == 0;
    return !a_tcp && a->kind == b->kind; /* fcgi:systemd or fcgi:stdin twice */
}

/* Fills l from one --listen value; returns NULL or what is wrong with it. */
static const char *cg_config_parse_listen(const char *v, cg_listen_t *l)
{
    memset(l, 0, sizeof *l);
    if (strcmp(v, "fcgi:systemd") == 0) {
        l->kind = CG_LISTEN_FCGI_SYSTEMD;
        return NULL;
    }
    if (strcmp(v, "fcgi:stdin") == 0) {
        l->kind = CG_LISTEN_FCGI_STDIN;
        return NULL;
    }
    if (strncmp(v, "fcgi:unix:", 10) == 0) {
        const char *path = v + 10;
        struct sockaddr_un sun;
        if (path[0] != '/')
            return "needs an absolute socket path, like fcgi:unix:/run/changegate/changegate.sock";
        if (strlen(path) >= sizeof sun.sun_path)
            return "has a socket path longer than the 107 bytes a Unix socket's name takes";
        l->kind = CG_LISTEN_FCGI_UNIX;
        l->path = bson_strdup(path);
        return NULL;
    }
    if (strncmp(v, "https://", 8) == 0)
        return "is HTTPS, which changegate does not serve itself; put it behind a "
               "TLS-terminating proxy (or a web server, over FastCGI)";
    const char *rest;
    if (strncmp(v, "http://", 7) == 0) {
        l->kind = CG_LISTEN_HTTP;
        rest = v + 7;
    } else if (strncmp(v, "fcgi://", 7) == 0) {
        l->kind = CG_LISTEN_FCGI_TCP;
        rest = v + 7;
    } else {
        return "is not a listen address";
    }
    unsigned port;
    const char *why = cg_config_parse_authority(rest, &l->host, &port);
    if (!why && port == 0) {
        why = "has no port";
        bson_free(l->host);
        l->host = NULL;
    }
    l->port = (uint16_t)port;
    return why;
}

static void cg_config_check_listen(cg_config_t *cfg, const cg_config_rawlist_t *list,
                                   cg_config_errs_t *errs)
{
    const char *expect = "expected http://HOST:PORT (like http://127.0.0.1:8080, "
                         "http://0.0.0.0:8080 or http://[::1]:8080), fcgi://HOST:PORT, "
                         "fcgi:unix:/PATH, fcgi:systemd or fcgi:stdin";
    size_t n = list->n ? list->n : 1;
    cfg->listen = bson_malloc0(n * sizeof *cfg->listen);
    for (size_t i = 0; i < n; i++) {
        const cg_config_raw_t *raw = list->n ? &list->items[i] : NULL;
        const char *v = raw                         ? raw->value
                        : cg_config_stdin_listens() ? "fcgi:stdin"
                                                    : CG_CONFIG_DEFAULT_LISTEN;
        char q[96];
        cg_config_quote(v, q, sizeof q);
        cg_listen_t l;
        const char *why = cg_config_parse_listen(v, &l);
        if (why) {
            cg_config_bad(errs, raw, CG_OPT_LISTEN, "'%s' %s; %s", q, why, expect);
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < cfg->n_listen; j++)
            dup = dup || cg_config_same_listen(&cfg->listen[j], &l);
        if (dup) {
            cg_config_bad(errs, raw, CG_OPT_LISTEN, "'%s' is given more than once", q);
            bson_free(l.host);
            bson_free(l.path);
            continue;
        }
        l.spec = bson_strdup(v);
        cfg->listen[cfg->n_listen++] = l;
    }
}

bool cg_config_listen_is_loopback(const cg_listen_t *l)
{
    if (l->kind != CG_LISTEN_HTTP && l->kind != CG_LISTEN_FCGI_TCP)
        return false;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, l->host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, l->host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return strcasecmp(l->host, "localhost") == 0;
}

/* Takes a string option's value, or NULL. */
static char *cg_config_string(const cg_config_raw_t *raw)
{
    return raw ? bson_strdup(raw->value) : NULL;
}

/* --auth and the token options. The keys, algorithms and rule themselves are
 * loaded and checked at start (access.c), where --check-config checks them too;
 * here, what the options say together. */
static void cg_config_check_auth(cg_config_t *cfg, const cg_config_raw_t *const *one,
                                 const cg_config_rawlist_t *keys, bool allow_public,
                                 cg_config_errs_t *errs)
{
    char q[96];
    const cg_config_raw_t *mode = one[CG_OPT_AUTH];
    if (mode && strcmp(mode->value, "jwt") == 0)
        cfg->auth_jwt = true;
    else if (mode && strcmp(mode->value, "none") != 0)
        cg_config_bad(errs, mode, CG_OPT_AUTH, "'%s' is not a mode; expected none or jwt",
                      cg_config_quote(mode->value, q, sizeof q));
    cfg->allow_public_unauthenticated = allow_public;
    cfg->jwt_secret_file = cg_config_string(one[CG_OPT_JWT_SECRET_FILE]);
    cfg->jwt_algorithms = cg_config_string(one[CG_OPT_JWT_ALGORITHMS]);
    cfg->jwt_audience = cg_config_string(one[CG_OPT_JWT_AUDIENCE]);
    cfg->jwt_issuer = cg_config_string(one[CG_OPT_JWT_ISSUER]);
    cfg->jwt_cookie = cg_config_string(one[CG_OPT_JWT_COOKIE]);
    cfg->auth_rule = cg_config_string(one[CG_OPT_AUTH_RULE]);
    cfg->jwt_leeway = (unsigned)cg_config_check_uint(one[CG_OPT_JWT_LEEWAY], CG_OPT_JWT_LEEWAY, 30,
                                                     0, 300, " of seconds", errs);
    if (keys->n) {
        cfg->jwt_public_keys = bson_malloc0(keys->n * sizeof *cfg->jwt_public_keys);
        for (size_t i = 0; i < keys->n; i++)
            cfg->jwt_public_keys[cfg->n_jwt_public_keys++] = bson_strdup(keys->items[i].value);
    }
    const cg_config_raw_t *atp = one[CG_OPT_ACCESS_TOKEN_PARAM];
    cfg->access_token_param = !atp || strcmp(atp->value, "on") == 0;
    if (atp && strcmp(atp->value, "on") != 0 && strcmp(atp->value, "off") != 0)
        cg_config_bad(errs, atp, CG_OPT_ACCESS_TOKEN_PARAM, "'%s': expected on or off",
                      cg_config_quote(atp->value, q, sizeof q));
    const cg_config_raw_t *ops = one[CG_OPT_OPS_ACCESS];
    cfg->ops_loopback_only = ops ? strcmp(ops->value, "loopback") == 0 : cfg->auth_jwt;
    if (ops && strcmp(ops->value, "loopback") != 0 && strcmp(ops->value, "any") != 0)
        cg_config_bad(errs, ops, CG_OPT_OPS_ACCESS, "'%s': expected any or loopback",
                      cg_config_quote(ops->value, q, sizeof q));

    if (cfg->auth_jwt) {
        if (!cfg->jwt_secret_file && !cfg->n_jwt_public_keys)
            cg_config_bad(errs, mode, CG_OPT_AUTH,
                          "jwt needs a key: --jwt-secret-file FILE (HS256/384/512) or "
                          "--jwt-public-key [KID=]FILE (RS256, ES256)");
        return;
    }
    static const int jwt_only[] = {CG_OPT_JWT_SECRET_FILE, CG_OPT_JWT_ALGORITHMS,
                                   CG_OPT_JWT_AUDIENCE,    CG_OPT_JWT_ISSUER,
                                   CG_OPT_JWT_LEEWAY,      CG_OPT_JWT_COOKIE,
                                   CG_OPT_AUTH_RULE,       CG_OPT_ACCESS_TOKEN_PARAM};
    for (size_t i = 0; i < sizeof jwt_only / sizeof jwt_only[0]; i++)
        if (one[jwt_only[i]])
            cg_config_bad(errs, one[jwt_only[i]], jwt_only[i], "takes effect only with --auth jwt");
    if (keys->n)
        cg_config_bad(errs, &keys->items[0], CG_OPT_JWT_PUBLIC_KEY,
                      "takes effect only with --auth jwt");
    for (size_t i = 0; i < cfg->n_listen && !allow_public; i++) {
        const cg_listen_t *l = &cfg->listen[i];
        if (cg_config_listen_is_loopback(l))
            continue;
        bool tcp = l->kind == CG_LISTEN_HTTP || l->kind == CG_LISTEN_FCGI_TCP;
        cg_config_problem(errs,
                          "--listen %s: with --auth none (the default) every change is served "
                          "to anyone who can connect, and %s; listen on loopback "
                          "(127.0.0.1, [::1]), use --auth jwt, or say so with "
                          "--allow-public-unauthenticated",
                          cg_config_quote(l->spec, q, sizeof q),
                          tcp ? "this address is reachable from other machines"
                              : "a web server in front of a FastCGI socket makes it as public as "
                                "the web server");
    }
}

/* --fcgi-socket-mode: octal permission bits, like chmod's. */
static void cg_config_check_socket_mode(cg_config_t *cfg, const cg_config_raw_t *raw,
                                        cg_config_errs_t *errs)
{
    cfg->fcgi_socket_mode = 0660;
    if (!raw)
        return;
    const char *v = raw->value;
    char *end;
    errno = 0;
    unsigned long m = strtoul(v, &end, 8);
    if (!*v || *end || errno || m > 0777 || strspn(v, "01234567") != strlen(v)) {
        char q[96];
        cg_config_bad(errs, raw, CG_OPT_FCGI_SOCKET_MODE,
                      "'%s' is not a mode; expected octal permission bits from 0 to 0777, "
                      "like 0660",
                      cg_config_quote(v, q, sizeof q));
        return;
    }
    cfg->fcgi_socket_mode = (unsigned)m;
}

/* A user's or group's id from its name, or a number. 0, or -1 when unknown. */
static int cg_config_lookup_id(const char *name, bool group, long *id)
{
    unsigned long long n;
    struct passwd *pw = group ? NULL : getpwnam(name);
    struct group *gr = group ? getgrnam(name) : NULL;
    if (pw)
        *id = (long)pw->pw_uid;
    else if (gr)
        *id = (long)gr->gr_gid;
    else if (cg_config_parse_uint(name, 0, 0x7fffffff, &n) == 0)
        *id = (long)n;
    else
        return -1;
    return 0;
}

/* --fcgi-socket-owner USER[:GROUP] or :GROUP, names or numeric ids, looked up
 * now so that --check-config reports a user that does not exist. */
static void cg_config_check_socket_owner(cg_config_t *cfg, const cg_config_raw_t *raw,
                                         cg_config_errs_t *errs)
{
    cfg->fcgi_socket_uid = cfg->fcgi_socket_gid = -1;
    if (!raw)
        return;
    char q[96];
    cg_config_quote(raw->value, q, sizeof q);
    char *user = bson_strdup(raw->value);
    char *group = strchr(user, ':');
    if (group)
        *group++ = '\0';
    if (!*user && (!group || !*group)) {
        cg_config_bad(errs, raw, CG_OPT_FCGI_SOCKET_OWNER,
                      "'%s' names no user and no group; expected USER, USER:GROUP or :GROUP", q);
    }
    if (*user && cg_config_lookup_id(user, false, &cfg->fcgi_socket_uid) != 0)
        cg_config_bad(errs, raw, CG_OPT_FCGI_SOCKET_OWNER, "'%s': no such user '%s'", q, user);
    if (group && *group && cg_config_lookup_id(group, true, &cfg->fcgi_socket_gid) != 0)
        cg_config_bad(errs, raw, CG_OPT_FCGI_SOCKET_OWNER, "'%s': no such group '%s'", q, group);
    bson_free(user);
}

/* Origins are stored the way browsers send them in the Origin header: scheme
 * and host in lower case, default ports (80 for http, 443 for https) left
 * out, so the HTTP front end can compare strings exactly. */
static void cg_config_check_cors(cg_config_t *cfg, const cg_config_rawlist_t *list,
                                 cg_config_errs_t *errs)
{
    const char *expect = "expected * or http(s)://HOST[:PORT] with no path, like "
                         "https://app.example.com or http://localhost:3000";
    if (list->n == 0)
        return;
    cfg->cors_origins = bson_malloc0(list->n * sizeof *cfg->cors_origins);
    for (size_t i = 0; i < list->n; i++) {
        const cg_config_raw_t *raw = &list->items[i];
        const char *v = raw->value;
        char q[96];
        cg_config_quote(v, q, sizeof q);
        if (strcmp(v, "*") == 0) {
            cfg->cors_origins[cfg->n_cors_origins++] = bson_strdup("*");
            continue;
        }
        bool https = strncasecmp(v, "https://", 8) == 0;
        if (!https && strncasecmp(v, "http://", 7) != 0) {
            cg_config_bad(errs, raw, CG_OPT_CORS_ORIGIN, "'%s' is not an origin; %s", q, expect);
            continue;
        }
        char *host;
        unsigned port;
        const char *why = cg_config_parse_authority(v + (https ? 8 : 7), &host, &port);
        if (why) {
            cg_config_bad(errs, raw, CG_OPT_CORS_ORIGIN, "'%s' %s; %s", q, why, expect);
            continue;
        }
        for (char *p = host; *p; p++) {
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        }
        bool v6 = strchr(host, ':') != NULL;
        if (port == 0 || port == (https ? 443u : 80u))
            cfg->cors_origins[cfg->n_cors_origins++] = bson_strdup_printf(
                "%s://%s%s%s", https ? "https" : "http", v6 ? "[" : "", host, v6 ? "]" : "");
        else
            cfg->cors_origins[cfg->n_cors_origins++] =
                bson_strdup_printf("%s://%s%s%s:%u", https ? "https" : "http", v6 ? "[" : "", host,
                                   v6 ? "]" : "", port);
        bson_free(host);
    }
}

static const cg_config_raw_t *cg_config_last(const cg_config_rawlist_t *l)
{
    return l->n ? &l->items[l->n - 1] : NULL;
}

/* Keeps each option's values as given, so that a reload can tell which
 * options the re-read file changed without comparing every field. */
static void cg_config_keep_settings(cg_config_t *cfg, const cg_config_rawlist_t *const *pick)
{
    cfg->settings = bson_malloc0(CG_OPT_COUNT * sizeof *cfg->settings);
    for (int i = 0; i < CG_OPT_COUNT; i++) {
        if (pick[i]->n == 0)
            continue;
        bson_string_t *joined = bson_string_new(NULL);
        for (size_t k = 0; k < pick[i]->n; k++)
            bson_string_append_printf(joined, "%s%s", k ? "\n" : "", pick[i]->items[k].value);
        cfg->settings[i] = bson_string_free(joined, false);
    }
}

size_t cg_config_diff(const cg_config_t *a, const cg_config_t *b, const char **names, size_t max)
{
    size_t n = 0;
    for (int i = 0; i < CG_OPT_COUNT && a->settings && b->settings; i++) {
        if (cg_config_opts[i].flags & CG_OPTF_CLI_ONLY)
            continue;
        const char *va = a->settings[i], *vb = b->settings[i];
        if ((va == NULL) != (vb == NULL) || (va && strcmp(va, vb) != 0)) {
            if (n < max)
                names[n] = cg_config_opts[i].name;
            n++;
        }
    }
    return n;
}

int cg_config_parse(cg_config_t *cfg, int argc, char **argv, char *err, size_t errlen)
{
    cg_config_errs_t errs = {.buf = err, .cap = errlen};
    if (err && errlen)
        err[0] = '\0';
    memset(cfg, 0, sizeof *cfg);
    cfg->log_level = CG_LOG_INFO;

    cg_config_source_t cli = {0}, file = {0};
    cg_config_read_argv(&cli, argc, argv, &errs);
    const cg_config_raw_t *config = cg_config_last(&cli.opt[CG_OPT_CONFIG]);
    if (cli.opt[CG_OPT_CONFIG].n > 1) {
        cg_config_problem(&errs, "--config: given %zu times; only one config file is read",
                          cli.opt[CG_OPT_CONFIG].n);
    } else if (config && config->value[0] == '\0') {
        cg_config_problem(&errs, "--config: missing value; expected FILE");
    } else if (config) {
        cfg->config_file = bson_strdup(config->value);
        cg_config_read_file(&file, config, &errs);
    }

    /* The command line wins; for lists, its whole list replaces the file's. */
    const cg_config_rawlist_t *pick[CG_OPT_COUNT];
    const cg_config_raw_t *one[CG_OPT_COUNT];
    for (int i = 0; i < CG_OPT_COUNT; i++) {
        pick[i] = cli.opt[i].n ? &cli.opt[i] : &file.opt[i];
        one[i] = cg_config_last(pick[i]);
    }
    cg_config_keep_settings(cfg, pick);

    cg_config_check_mongo_uri(cfg, one[CG_OPT_MONGO_URI], &errs);
    cg_config_check_watch(cfg, one[CG_OPT_WATCH], &errs);
    cg_config_check_pipeline(cfg, one[CG_OPT_PIPELINE], &errs);
    cg_config_check_mode(&cfg->full_document, one[CG_OPT_FULL_DOCUMENT], CG_OPT_FULL_DOCUMENT,
                         "updateLookup", cg_config_full_document_modes, &errs);
    cg_config_check_mode(&cfg->full_document_before_change, one[CG_OPT_FULL_DOCUMENT_BEFORE_CHANGE],
                         CG_OPT_FULL_DOCUMENT_BEFORE_CHANGE, "off", cg_config_before_change_modes,
                         &errs);
    cg_config_check_listen(cfg, pick[CG_OPT_LISTEN], &errs);
    cg_config_check_socket_mode(cfg, one[CG_OPT_FCGI_SOCKET_MODE], &errs);
    cg_config_check_auth(cfg, one, pick[CG_OPT_JWT_PUBLIC_KEY],
                         pick[CG_OPT_ALLOW_PUBLIC_UNAUTHENTICATED]->n > 0, &errs);
    cg_config_check_socket_owner(cfg, one[CG_OPT_FCGI_SOCKET_OWNER], &errs);

    const cg_config_raw_t *sd = one[CG_OPT_STATE_DIR];
    cfg->state_dir = bson_strdup(sd ? sd->value : ".");
    if (cfg->state_dir[0] == '\0')
        cg_config_bad(&errs, sd, CG_OPT_STATE_DIR,
                      "is empty; expected a directory, like "
                      "/var/lib/changegate or .");

    cfg->journal_size = (size_t)cg_config_check_uint(one[CG_OPT_JOURNAL_SIZE], CG_OPT_JOURNAL_SIZE,
                                                     10000, 1, 10000000, "", &errs);
    cfg->heartbeat = (unsigned)cg_config_check_uint(one[CG_OPT_HEARTBEAT], CG_OPT_HEARTBEAT, 15, 1,
                                                    3600, " of seconds", &errs);
    cfg->max_subscribers = (size_t)cg_config_check_uint(
        one[CG_OPT_MAX_SUBSCRIBERS], CG_OPT_MAX_SUBSCRIBERS, 10000, 1, 1000000, "", &errs);
    cfg->max_catchup = (size_t)cg_config_check_uint(one[CG_OPT_MAX_CATCHUP], CG_OPT_MAX_CATCHUP, 16,
                                                    1, 1000, "", &errs);
    cfg->write_timeout = (unsigned)cg_config_check_uint(
        one[CG_OPT_WRITE_TIMEOUT], CG_OPT_WRITE_TIMEOUT, 60, 1, 3600, " of seconds", &errs);
    cg_config_check_cors(cfg, pick[CG_OPT_CORS_ORIGIN], &errs);

    const cg_config_raw_t *ll = one[CG_OPT_LOG_LEVEL];
    if (ll && cg_log_level_parse(ll->value, &cfg->log_level) != 0) {
        char q[96];
        cg_config_bad(&errs, ll, CG_OPT_LOG_LEVEL,
                      "'%s' is not a level; expected error, warn, info or debug",
                      cg_config_quote(ll->value, q, sizeof q));
        cfg->log_level = CG_LOG_INFO;
    }

    cfg->check_config = cli.opt[CG_OPT_CHECK_CONFIG].n > 0;
    cfg->show_version = cli.opt[CG_OPT_VERSION].n > 0;
    cfg->show_help = cli.opt[CG_OPT_HELP].n > 0;

    cg_config_source_free(&cli);
    cg_config_source_free(&file);
    return errs.count ? -1 : 0;
}

void cg_config_free(cg_config_t *cfg)
{
    if (!cfg)
        return;
    for (int i = 0; cfg->settings && i < CG_OPT_COUNT; i++)
        bson_free(cfg->settings[i]);
    bson_free(cfg->settings);
    bson_free(cfg->config_file);
    bson_free(cfg->mongo_uri);
    bson_free(cfg->watch);
    bson_free(cfg->watch_db);
    bson_free(cfg->watch_coll);
    bson_free(cfg->pipeline_json);
    if (cfg->pipeline)
        bson_destroy(cfg->pipeline);
    bson_free(cfg->full_document);
    bson_free(cfg->full_document_before_change);
    for (size_t i = 0; i < cfg->n_listen; i++) {
        bson_free(cfg->listen[i].spec);
        bson_free(cfg->listen[i].host);
        bson_free(cfg->listen[i].path);
    }
    bson_free(cfg->listen);
    bson_free(cfg->jwt_secret_file);
    for (size_t i = 0; i < cfg->n_jwt_public_keys; i++)
        bson_free(cfg->jwt_public_keys[i]);
    bson_free(cfg->jwt_public_keys);
    bson_free(cfg->jwt_algorithms);
    bson_free(cfg->jwt_audience);
    bson_free(cfg->jwt_issuer);
    bson_free(cfg->jwt_cookie);
    bson_free(cfg->auth_rule);
    bson_free(cfg->state_dir);
    for (size_t i = 0; i < cfg->n_cors_origins; i++)
        bson_free(cfg->cors_origins[i]);
    bson_free(cfg->cors_origins);
    memset(cfg, 0, sizeof *cfg);
}

void cg_config_usage(FILE *out)
{
    fputs("Usage: changegate [OPTION]...\n"
          "\n"
          "changegate holds one MongoDB change stream and serves its events to many HTTP\n"
          "clients: browsers through EventSource (Server-Sent Events), scripts through\n"
          "curl -N (SSE or NDJSON), and clients that cannot stream through long-poll.\n"
          "Every event carries its position (its resume token) as its id; a client that\n"
          "reconnects with that id gets exactly the events it missed that match its\n"
          "filter: none lost, none repeated.\n"
          "\n"
          "Options:\n"
          "  --config FILE          read options from FILE (default: none)\n"
          "  --mongo-uri URI        MongoDB connection string; change streams need a\n"
          "                         replica set or a sharded cluster\n"
          "                         (default: " CG_CONFIG_DEFAULT_MONGO_URI ")\n"
          "  --watch SCOPE          what to watch: * (the whole deployment), DB, or\n"
          "                         DB.COLL (default: *)\n"
          "  --pipeline JSON        stages appended after $changeStream, as a JSON array\n"
          "                         (Extended JSON allowed), e.g.\n"
          "                         '[{\"$match\": {\"operationType\": \"insert\"}}]'.\n"
          "                         Allowed stages: $addFields $match $project\n"
          "                         $replaceRoot $replaceWith $redact $set $unset\n"
          "                         $changeStreamSplitLargeEvent (last). They must keep\n"
          "                         _id, the resume token (default: none)\n"
          "  --full-document MODE   default, updateLookup, whenAvailable or required\n"
          "                         (default: updateLookup)\n"
          "  --full-document-before-change MODE\n"
          "                         off, whenAvailable or required (default: off)\n"
          "  --listen ADDR          where to serve; repeatable, HTTP and FastCGI together:\n"
          "                         http://HOST:PORT, with HOST an IPv4 address, a name\n"
          "                         or [IPv6], e.g. http://0.0.0.0:8080, http://[::1]:8080;\n"
          "                         FastCGI for a web server in front: fcgi://HOST:PORT,\n"
          "                         fcgi:unix:/PATH (a Unix socket), fcgi:systemd (the\n"
          "                         sockets of a systemd socket unit, LISTEN_FDS) or\n"
          "                         fcgi:stdin (a listening socket on fd 0, as a web server\n"
          "                         spawning FastCGI applications passes it). Default:\n"
          "                         fcgi:stdin when fd 0 is a listening socket, else\n"
          "                         " CG_CONFIG_DEFAULT_LISTEN "\n"
          "  --fcgi-socket-mode MODE  permissions of fcgi:unix sockets, octal (default:\n"
          "                         0660: the owner and the group may connect)\n"
          "  --fcgi-socket-owner USER[:GROUP]  owner and group of fcgi:unix sockets, e.g.\n"
          "                         :www-data so the web server's group may connect\n"
          "                         (default: the user and group changegate runs as)\n"
          "  --state-dir DIR        where the watcher's position is kept across restarts\n"
          "                         (default: .)\n"
          "  --journal-size N       events kept in memory for resuming, 1 to 10000000\n"
          "                         (default: 10000)\n"
          "  --heartbeat SECONDS    idle keep-alive interval on streams, 1 to 3600\n"
          "                         (default: 15)\n"
          "  --max-subscribers N    concurrent streams plus waiting polls, 1 to 1000000;\n"
          "                         beyond it requests get 503 (default: 10000)\n"
          "  --max-catchup N        change streams open at once to bring subscribers with\n"
          "                         positions older than the journal up to it, 1 to 1000;\n"
          "                         more such subscribers wait their turn (default: 16)\n"
          "  --write-timeout SECONDS  a client that takes nothing for this long while\n"
          "                         data waits is disconnected, 1 to 3600 (default: 60)\n"
          "  --cors-origin ORIGIN   an origin allowed to subscribe from a browser: * or\n"
          "                         http(s)://HOST[:PORT] with no path; repeatable\n"
          "                         (default: none)\n"
          "  --auth MODE            none or jwt (default: none). none serves every change\n"
          "                         to whoever connects, so it is refused on listeners\n"
          "                         beyond loopback (FastCGI sockets included) unless\n"
          "                         --allow-public-unauthenticated is given (logged)\n"
          "  --allow-public-unauthenticated\n"
          "                         allow --auth none on such listeners\n"
          "  --jwt-secret-file FILE HMAC secret for HS256/384/512 tokens (the file's\n"
          "                         bytes without a trailing newline, 32 bytes or more)\n"
          "  --jwt-public-key [KID=]FILE  PEM public key for RS256 (RSA, 2048 bits or\n"
          "                         more) or ES256 (P-256); repeatable for rotation; a\n"
          "                         token's kid picks the key (KID, else the file name\n"
          "                         without directory and extension)\n"
          "  --jwt-algorithms LIST  accepted algorithms, e.g. RS256,ES256 (default: what\n"
          "                         the keys can verify; never none)\n"
          "  --jwt-audience AUD     tokens must carry this aud (default: not checked)\n"
          "  --jwt-issuer ISS       tokens must carry this iss (default: not checked)\n"
          "  --jwt-leeway SECONDS   clock skew allowed for exp and nbf, 0 to 300: a token\n"
          "                         is admitted, and its stream lasts, until exp plus\n"
          "                         this (default: 30)\n"
          "  --jwt-cookie NAME      also take the token from this cookie (EventSource\n"
          "                         cannot set headers but sends cookies)\n"
          "  --access-token-param on|off  also take the token from ?access_token=\n"
          "                         (never logged; default: on)\n"
          "  --auth-rule JSON       a filter every subscriber's events must also match,\n"
          "                         with $$jwt.<claim> placeholders filled from its token,\n"
          "                         e.g. '{\"fullDocument.owner_id\": \"$$jwt.sub\"}'; it is\n"
          "                         evaluated on fullDocument, or on\n"
          "                         fullDocumentBeforeChange for events without one\n"
          "  --ops-access MODE      who may read /healthz and /metrics: any, or loopback\n"
          "                         peers only (default: loopback with --auth jwt, else\n"
          "                         any)\n"
          "  --log-level LEVEL      error, warn, info or debug (default: info)\n"
          "  --check-config         validate the configuration, print every problem, and\n"
          "                         exit 0 if there is none, 1 otherwise\n"
          "  --version              print the version and exit\n"
          "  -h, --help             print this help and exit\n"
          "\n"
          "Options take their value as --opt VALUE or --opt=VALUE.\n"
          "\n"
          "Config file: every option but config, check-config, version and help can be\n"
          "set as a \"name value\" line, the name without the leading dashes; the value\n"
          "is the rest of the line. A line starting with # is a comment, and so is the\n"
          "rest of a line from a # that follows a space or tab outside a double-quoted\n"
          "string. listen, cors-origin and jwt-public-key may be given on several lines;\n"
          "other options only once; allow-public-unauthenticated is a line of its own.\n"
          "A command-line option overrides the file; for listen and\n"
          "cors-origin, the command line's list replaces the file's.\n"
          "\n"
          "Endpoints:\n"
          "  GET /events    Server-Sent Events (text/event-stream): one message per\n"
          "                 change event, \"id: POSITION\" and \"data: EVENT\" (Relaxed\n"
          "                 Extended JSON). With Accept: application/x-ndjson or\n"
          "                 format=ndjson, one JSON object per line instead.\n"
          "  GET /poll      long-poll: waits for at least one matching event after the\n"
          "                 position, then answers\n"
          "                 {\"events\": [...], \"lastEventId\": \"POSITION\"}; also:\n"
          "                 timeout=SECONDS  how long to wait (default 25, at most 120)\n"
          "                 limit=N          events per answer (default 100, at most 1000)\n"
          "                 410 Gone (error history_lost) when continuity was lost.\n"
          "  GET /healthz   200 with a JSON status while the change stream is live, 503\n"
          "                 with the reason when it is not.\n"
          "\n"
          "Query parameters (unknown parameters are a 400):\n"
          "  ns=DB|DB.COLL     namespaces to receive; repeatable or comma-separated\n"
          "  op=OPS            operation types, comma-separated\n"
          "                    (insert,update,replace,delete,...)\n"
          "  id=JSON           documentKey._id values (Extended JSON); repeatable\n"
          "  filter=JSON       a MongoDB query over the change event (Extended JSON v2),\n"
          "                    at most 16 KiB and 32 levels deep\n"
          "  fields=PATHS      comma-separated paths to keep in each event\n"
          "  lastEventId=POS   resume after POS (as the Last-Event-ID header, which wins)\n"
          "\n"
          "Request limits: a request line of at most 64 KiB and 512 parameters (else\n"
          "414 uri_too_long); header fields of at most 16 KiB and 100 fields (else 431\n"
          "headers_too_large). Errors are JSON: {\"error\": CODE, \"message\": TEXT}.\n",
          out);
}

unsigned cg_config_max_connections(const cg_config_t *cfg)
{
    struct rlimit rl;
    unsigned limit = (unsigned)(cfg->max_subscribers + 64);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < (rlim_t)limit + 32)
        limit = rl.rlim_cur > 64 ? (unsigned)rl.rlim_cur - 32 : 32;
    return limit;
}

int cg_config_listen_addr(const cg_listen_t *l, struct sockaddr_storage *addr, socklen_t *len,
                          char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", l->port);
    int gai = getaddrinfo(l->host, port, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "%s: cannot resolve %s: %s", l->spec, l->host, gai_strerror(gai));
        return -1;
    }
    memcpy(addr, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}
