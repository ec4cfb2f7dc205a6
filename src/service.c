/* service.c: sd_notify(3) messages to systemd (see service.h). */
#include "service.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

static uint64_t watchdog_usec; /* 0: no watchdog */
static int64_t watchdog_last_us;
static char last_status[256];

#ifdef HAVE_LIBSYSTEMD
/* sd_notify() is a no-op (returning 0) when NOTIFY_SOCKET is unset. A failure
 * to reach the manager is worth one line, not one per status change. */
static void notify(const char *msg)
{
    static bool warned;
    int r = sd_notify(0, msg);
    if (r < 0 && !warned) {
        warned = true;
        cg_log_warn("cannot notify the service manager: %s", strerror(-r));
    }
}
#else
static void notify(const char *msg)
{
    (void)msg;
}
#endif

void cg_service_init(void)
{
#ifdef HAVE_LIBSYSTEMD
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0)
        watchdog_usec = usec;
#endif
}

void cg_service_ready(void)
{
    notify("READY=1");
}

void cg_service_reloading(void)
{
    notify("RELOADING=1");
}

void cg_service_stopping(void)
{
    notify("STOPPING=1");
}

void cg_service_status(const char *status)
{
    if (strncmp(status, last_status, sizeof last_status - 1) == 0)
        return;
    strncpy(last_status, status, sizeof last_status - 1);
    char msg[sizeof last_status + 8];
    snprintf(msg, sizeof msg, "STATUS=%s", last_status);
    notify(msg);
}

void cg_service_watchdog(int64_t now_us)
{
    if (watchdog_usec == 0 || now_us - watchdog_last_us < (int64_t)(watchdog_usec / 2))
        return;
    watchdog_last_us = now_us;
    notify("WATCHDOG=1");
}
