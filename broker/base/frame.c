/* frame.c - allocation and the WebSocket header of shared frames. */
#include "frame.h"

#include <stdlib.h>
#include <string.h>

long frame_live;

struct frame *frame_new(size_t len)
{
    struct frame *f = malloc(sizeof *f + FRAME_PRE + len);
    if (!f)
        return NULL;
    f->refs = 1;
    f->len = (uint32_t)len;
    f->binary = false;
    f->opcode = 0;
    f->seq = 0;
    f->alt = NULL;
    f->arrived_us = f->queued_us = 0;
    f->obs_turn = f->obs_n = 0;
    f->plain = false;
    f->z_tried = false;
    f->z = NULL;
    frame_live++;
    return f;
}

struct frame *frame_from(const void *payload, size_t len)
{
    struct frame *f = frame_new(len);
    if (f)
        memcpy(frame_payload(f), payload, len);
    return f;
}

void frame_unref(struct frame *f)
{
    if (f && --f->refs == 0) {
        frame_unref(f->alt);
        frame_unref(f->z);
        frame_live--;
        free(f);
    }
}

size_t frame_ws_header(unsigned char *out, size_t len)
{
    return frame_ws_header_op(out, len, 0x1);
}

size_t frame_ws_header_op(unsigned char *out, size_t len, uint8_t opcode)
{
    out[0] = (unsigned char)(0x80 | opcode); /* FIN: messages are never fragmented */
    if (len < 126) {
        out[1] = (unsigned char)len;
        return 2;
    }
    if (len < 65536) {
        out[1] = 126;
        out[2] = (unsigned char)(len >> 8);
        out[3] = (unsigned char)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    return 10;
}
