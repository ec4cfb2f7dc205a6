/* http.h: the libmicrohttpd front end: routes, SSE/NDJSON streams, long-poll.
 *
 * One cg_http_t per `--listen http://...`; each runs libmicrohttpd's own
 * polling thread. The front end owns its connections and the per-request
 * state; subscribers themselves belong to the hub. */
#ifndef CG_HTTP_H
#define CG_HTTP_H

#include <stddef.h>

#include "access.h"
#include "config.h"
#include "hub.h"
#include "watcher.h"

typedef struct cg_http cg_http_t;

/* Binds and starts serving. cfg, hub and watcher must outlive the server.
 * Returns NULL with err on failure (e.g. address in use). */
cg_http_t *cg_http_start(const cg_listen_t *listen, const cg_config_t *cfg, cg_hub_t *hub,
                         cg_watcher_t *watcher, const cg_access_t *access, char *err,
                         size_t errlen);
/* Stops accepting new connections; open ones continue. */
void cg_http_quiesce(cg_http_t *http);
/* Closes everything. Call after cg_hub_stop() has woken every stream. */
void cg_http_stop(cg_http_t *http);

#endif
