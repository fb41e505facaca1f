/*
 * batch.h: `keyline batch`: the jig run headless.
 *
 * One JSON object per line on stdout for every engine event, then a
 * summary line; diagnostics on stderr.  Exit 0 only when every board
 * passed, 1 when any failed, 2 for a usage or configuration error.
 */
#ifndef KL_BATCH_H
#define KL_BATCH_H

int cmd_batch(int argc, char **argv);

#endif
