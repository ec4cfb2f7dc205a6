/* match_cli: evaluates (filter, document) pairs with changegate's C matcher (match.h).
 *
 * Reads lines {"filter": F, "doc": D} from stdin, F and D in Extended JSON v2, and prints
 * one line per input line: "1" (D matches F), "0" (it does not), or "E <message>" when F
 * does not compile (or a line is not valid input). The filter goes through
 * cg_match_compile_json, the entry point the HTTP `filter` parameter uses; the document is
 * parsed with libbson's Extended JSON parser, as changegate gets events as BSON. */
#include <bson/bson.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "match.h"

static void one_line(const char *line, size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb(line, len, 0, &jerr);
    if (!root || !json_is_object(root)) {
        printf("E input: not a JSON object (%s)\n", root ? "wrong type" : jerr.text);
        json_decref(root);
        return;
    }
    json_t *jf = json_object_get(root, "filter");
    json_t *jd = json_object_get(root, "doc");
    if (!jf || !jd) {
        printf("E input: needs \"filter\" and \"doc\"\n");
        json_decref(root);
        return;
    }
    /* jansson keeps key order (insertion order) and writes integers as it read them */
    char *ftext = json_dumps(jf, JSON_COMPACT | JSON_ENCODE_ANY);
    char *dtext = json_dumps(jd, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(root);
    if (!ftext || !dtext) {
        printf("E input: cannot re-encode\n");
        free(ftext);
        free(dtext);
        return;
    }
    bson_error_t berr;
    bson_t *doc = bson_new_from_json((const uint8_t *)dtext, -1, &berr);
    if (!doc) {
        printf("E doc: %s\n", berr.message);
        free(ftext);
        free(dtext);
        return;
    }
    char err[512];
    err[0] = '\0';
    cg_match_t *m = cg_match_compile_json(ftext, strlen(ftext), "filter", err, sizeof err);
    if (!m) {
        for (char *p = err; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        printf("E %s\n", err[0] ? err : "(no message)");
    } else {
        printf("%d\n", cg_match_eval(m, doc) ? 1 : 0);
        cg_match_free(m);
    }
    bson_destroy(doc);
    free(ftext);
    free(dtext);
}

int main(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) != -1) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0)
            continue;
        one_line(line, (size_t)n);
    }
    free(line);
    if (fflush(stdout) != 0 || ferror(stdout))
        return 1;
    return 0;
}
