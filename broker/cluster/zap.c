/* zap.c - one ZAP request in, one reply out (RFC 27/ZAP 1.0). */
#include "zap.h"

#include <string.h>
#include <zmq.h>

int zap_serve_one(void *sock, int flags, const uint8_t key[32], bool *admitted)
{
    /* version, request id, domain, address, identity, mechanism, client key */
    zmq_msg_t f[7];
    int n = 0;
    for (; n < 7; n++) {
        zmq_msg_init(&f[n]);
        if (zmq_msg_recv(&f[n], sock, n ? 0 : flags) < 0) {
            zmq_msg_close(&f[n]);
            break;
        }
        if (!zmq_msg_more(&f[n])) {
            n++;
            break;
        }
    }
    if (n == 0)
        return 0;
    bool ok = n == 7 && zmq_msg_size(&f[5]) == 5 && !memcmp(zmq_msg_data(&f[5]), "CURVE", 5) &&
              zmq_msg_size(&f[6]) == 32 && !memcmp(zmq_msg_data(&f[6]), key, 32);
    if (n >= 2) {
        zmq_send(sock, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(sock, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
        zmq_send(sock, ok ? "200" : "400", 3, ZMQ_SNDMORE);
        zmq_send(sock, ok ? "OK" : "unknown node key", ok ? 2 : 16, ZMQ_SNDMORE);
        zmq_send(sock, "", 0, ZMQ_SNDMORE);
        zmq_send(sock, "", 0, 0);
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&f[i]);
    *admitted = ok;
    return 1;
}
