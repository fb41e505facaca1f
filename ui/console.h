/*
 * console.h: `keyline console --config station.conf`: the operator's
 * ncurses screen over the engine in line mode (docs/console.md).
 */
#ifndef KL_CONSOLE_H
#define KL_CONSOLE_H

int cmd_console(int argc, char **argv);

#endif
