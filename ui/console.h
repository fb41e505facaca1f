/*
 * console.h: the operator's ncurses screen over the engine in line mode
 * (docs/console.md); `keyline console` (station/cli/cmd_console.c) starts
 * the station and hands it here.
 */
#ifndef KL_CONSOLE_H
#define KL_CONSOLE_H

struct station;
struct engine;

/*
 * Run the screen until the operator quits: start the line (running at once
 * with start, else paused), draw, take keys, stop the line.  st and e stay
 * the caller's and outlive the call; config_path names where the console's
 * log goes.  Returns the process exit status: 0 after a clean stop, 1 or
 * 2 when it could not run (no terminal: 2, with the reason on stderr).
 */
int console_run(struct station *st, struct engine *e, const char *config_path,
    int start);

#endif
