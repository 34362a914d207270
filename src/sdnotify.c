/* sdnotify.c - sd_notify(3) over NOTIFY_SOCKET, see sdnotify.h. */
#include "sdnotify.h"

#include "err.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_addrlen;

int sdnotify_open(char *err, size_t errlen)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path) return 0;
    size_t len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof notify_addr.sun_path) {
        err_set(err, errlen,
                "NOTIFY_SOCKET '%.200s' is not an absolute socket path or an @abstract name "
                "of at most %zu bytes",
                path, sizeof notify_addr.sun_path - 1);
        return -1;
    }
    memset(&notify_addr, 0, sizeof notify_addr);
    notify_addr.sun_family = AF_UNIX;
    memcpy(notify_addr.sun_path, path, len);
    if (path[0] == '@') notify_addr.sun_path[0] = '\0'; /* abstract namespace */
    notify_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                                 (path[0] == '@' ? 0 : 1));
    notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (notify_fd < 0) {
        err_set(err, errlen, "cannot create the socket for NOTIFY_SOCKET: %s", strerror(errno));
        return -1;
    }
    return 0;
}

int sdnotify_send(const char *state, char *err, size_t errlen)
{
    if (notify_fd < 0) return 0;
    ssize_t n;
    do
        n = sendto(notify_fd, state, strlen(state), MSG_NOSIGNAL,
                   (const struct sockaddr *)&notify_addr, notify_addrlen);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        err_set(err, errlen, "cannot notify systemd (NOTIFY_SOCKET): %s", strerror(errno));
        return -1;
    }
    return 0;
}

int sdnotify_reloading(char *err, size_t errlen)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[96];
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
    return sdnotify_send(msg, err, errlen);
}

void sdnotify_close(void)
{
    if (notify_fd >= 0) close(notify_fd);
    notify_fd = -1;
}
