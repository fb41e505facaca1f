/*
 * vjig.h: power switching for slots of the virtual jig (keyline-jig), so
 * the console's power key and the engine's power-cycle retry can be used
 * and tested without a USB hub.  The jig listens on a Unix datagram
 * socket ([jig] control); "power-cycle N MS" kills slot N's board agent
 * (power gone, no goodbye) and starts it again MS later.
 */
#ifndef KL_VJIG_H
#define KL_VJIG_H

struct config;
struct engine_jig_ops;
struct vjig;

/* 0 and *out (free with vjig_close), KL_ERR_NOMEM. */
int vjig_open(struct vjig **out, const struct config *cfg);
void vjig_close(struct vjig *v);
/* Ops for engine_opts.jig: no device resolution (slots are their
 * configured paths), power_cycle through the control socket.  Borrowed
 * from v. */
const struct engine_jig_ops *vjig_ops(struct vjig *v);

#endif
