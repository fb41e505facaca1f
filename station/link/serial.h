/*
 * serial.h: the serial transport of the board link (link.h's ops table
 * over a tty: termios raw mode, the configured baud rate, poll() with the
 * caller's timeout).  A USB CDC-ACM board, a real UART and a pty of the
 * virtual jig are all this transport.
 */
#ifndef KL_SERIAL_H
#define KL_SERIAL_H

#include "station/link/link.h"

extern const struct link_ops serial_link_ops;

/* Whether the serial transport can set this rate (1 for yes). */
int serial_baud_supported(int baud);

#endif
