/* tcpstat.c - a connection's TCP byte counts, from TCP_INFO, SIOCINQ, SIOCOUTQ
 * and SIOCOUTQNSD. */
#include "tcpstat.h"

#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

uint32_t tcpstat_acked(struct lws *wsi)
{
    /* glibc's struct tcp_info stops before the field; Linux's (4.2+) has it
     * after two more u64s. */
    struct {
        struct tcp_info i;
        uint64_t pacing_rate, max_pacing_rate, bytes_acked;
    } ti;
    socklen_t len = sizeof ti;
    int fd = wsi ? lws_get_socket_fd(wsi) : -1;
    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 || len < sizeof ti)
        return 0;
    return (uint32_t)ti.bytes_acked;
}

uint32_t tcpstat_read(struct lws *wsi)
{
    /* tcpi_bytes_received (Linux 4.1+) follows bytes_acked. */
    struct {
        struct tcp_info i;
        uint64_t pacing_rate, max_pacing_rate, bytes_acked, bytes_received;
    } ti;
    socklen_t len = sizeof ti;
    int unread = 0;
    int fd = wsi ? lws_get_socket_fd(wsi) : -1;
    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 || len < sizeof ti ||
        ioctl(fd, SIOCINQ, &unread) < 0)
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
