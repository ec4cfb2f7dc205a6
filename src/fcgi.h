/* fcgi.h: the FastCGI front end, for a web server in front (nginx, lighttpd,
 * Apache).
 *
 * One cg_fcgi_t per `--listen fcgi:...`: a TCP or Unix listening socket of
 * its own, the sockets systemd passed (fcgi:systemd), or the one on fd 0
 * (fcgi:stdin). The same endpoints, parameters, errors and guarantees as the
 * HTTP front end (http.c), on the same hub; the protocol itself is
 * fcgi_proto.c. The front end owns its connections and their requests;
 * subscribers belong to the hub. */
#ifndef CG_FCGI_H
#define CG_FCGI_H

#include <stddef.h>

#include "access.h"
#include "config.h"
#include "hub.h"
#include "watcher.h"

typedef struct cg_fcgi cg_fcgi_t;

/* Opens (or takes) the listening socket(s) and starts serving. cfg, hub and
 * watcher must outlive the front end. Returns NULL with err on failure (an
 * address in use, no socket passed by systemd...). */
cg_fcgi_t *cg_fcgi_start(const cg_listen_t *listen, const cg_config_t *cfg, cg_hub_t *hub,
                         cg_watcher_t *watcher, const cg_access_t *access, char *err,
                         size_t errlen);
/* Stops accepting new connections (a Unix socket's file is removed); open
 * ones continue. */
void cg_fcgi_quiesce(cg_fcgi_t *fcgi);
/* Closes everything and frees. Call after cg_hub_stop() has woken every
 * stream, so that they have ended their requests. NULL is fine. */
void cg_fcgi_stop(cg_fcgi_t *fcgi);

#endif
