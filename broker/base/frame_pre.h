/* frame_pre.h - the headroom lws_write() needs in front of a payload.
 * Kept apart so code that never talks to libwebsockets (unit tests, fuzzers)
 * need not include its headers. */
#ifndef CHORUS_FRAME_PRE_H
#define CHORUS_FRAME_PRE_H
#ifdef CHORUS_NO_LWS
#define FRAME_PRE 16
#else
#include <libwebsockets.h>
#define FRAME_PRE LWS_PRE
#endif
#endif
