/* stream.h - channels on the fabric: the owner's stream of sequenced
 * messages (MSG) and position beacons (POS) on each channel's topic, this
 * node's subscriptions to the channels it has local subscribers for, and
 * which channels other nodes follow. Internal to the cluster layer; it is
 * the channel layer's hooks (channel_set_hooks). */
#ifndef CHORUS_STREAM_H
#define CHORUS_STREAM_H

void stream_start(void);
void stream_stop(void);

#endif
