/* tcpstat.c - a connection's TCP byte counts, from TCP_INFO, SIOCINQ, SIOCOUTQ
 * and SIOCOUTQNSD. */
#include "tcpstat.h"

#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

/* glibc's struct tcp_info stops before these; Linux's (4.1+) has them after
 * two more u64s. */
struct tcp_info_ext {
    struct tcp_info i;
    uint64_t pacing_rate, max_pacing_rate, bytes_acked, bytes_received;
};

static bool tcp_info_ext(struct lws *wsi, struct tcp_info_ext *ti)
{
    socklen_t len = sizeof *ti;
    int fd = wsi ? lws_get_socket_fd(wsi) : -1;
    return fd >= 0 && getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &len) == 0 && len >= sizeof *ti;
}

uint32_t tcpstat_acked(struct lws *wsi)
{
    struct tcp_info_ext ti;
    return tcp_info_ext(wsi, &ti) ? (uint32_t)ti.bytes_acked : 0;
}

uint32_t tcpstat_read(struct lws *wsi)
{
    struct tcp_info_ext ti;
    int unread = 0;
    if (!tcp_info_ext(wsi, &ti) || ioctl(lws_get_socket_fd(wsi), SIOCINQ, &unread) < 0)
        return 0;
    return (uint32_t)ti.bytes_received - (uint32_t)unread;
}

uint32_t tcpstat_written(struct lws *wsi)
{
    int queued = 0; /* not yet acknowledged, sent or not */
    int fd = wsi ? lws_get_socket_fd(wsi) : -1;
    if (fd < 0 || ioctl(fd, SIOCOUTQ, &queued) < 0)
        return 0;
    return tcpstat_acked(wsi) + (uint32_t)queued;
}

int tcpstat_unsent(struct lws *wsi)
{
    int unsent = 0;
    int fd = wsi ? lws_get_socket_fd(wsi) : -1;
    if (fd < 0 || ioctl(fd, SIOCOUTQNSD, &unsent) < 0)
        return -1;
    return unsent;
}

bool tcpstat_peer_window_full(struct lws *wsi)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    int fd = wsi ? lws_get_socket_fd(wsi) : -1;
    return fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
           ti.tcpi_unacked < ti.tcpi_snd_cwnd;
}
