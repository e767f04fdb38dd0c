/* occupancy.h - channel_occupied and channel_vacated webhooks, once per
 * cluster (PROTOCOL.md 11.2). */
#ifndef CHORUS_OCCUPANCY_H
#define CHORUS_OCCUPANCY_H

/* Registers with the channel and cluster layers when a webhook is set
 * (after webhook_start and cluster_start). */
void occupancy_start(void);
void occupancy_stop(void);

#endif
