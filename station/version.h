/*
 * version.h: the Keyline version, for `keyline version` and the status
 * API's keyline_build_info metric.
 */
#ifndef KL_VERSION_H
#define KL_VERSION_H

#define KEYLINE_VERSION "0.1.0"

#endif
