/* service.h: what changegate tells the service manager that started it.
 *
 * Under systemd (Type=notify, NOTIFY_SOCKET set) these send sd_notify(3)
 * messages: ready once the listeners are open, reloading around SIGHUP,
 * stopping at shutdown, a one-line status for `systemctl status`, and the
 * watchdog keep-alive when the unit sets WatchdogSec=. Without systemd, or
 * built without libsystemd, every call does nothing. Main thread only. */
#ifndef CG_SERVICE_H
#define CG_SERVICE_H

#include <stdint.h>

/* Reads the watchdog interval from the environment. Call once at start. */
void cg_service_init(void);
void cg_service_ready(void);
void cg_service_reloading(void);
void cg_service_stopping(void);
/* Sets the status line shown by `systemctl status`; sent only when it changed. */
void cg_service_status(const char *status);
/* Sends the watchdog keep-alive when half its interval has passed since the
 * last one. now_us: a monotonic clock, in microseconds. */
void cg_service_watchdog(int64_t now_us);

#endif
