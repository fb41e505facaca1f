/*
 * cmd_jig.h: "keyline jig scan|power" (docs/usb-jig.md).
 */
#ifndef KL_CMD_JIG_H
#define KL_CMD_JIG_H

/*
 * argv[0] is "jig", argv[1] the verb.  Returns the process exit code:
 * 0 done, 1 the jig could not do it (power cycle refused or failed),
 * 2 usage error, bad configuration or libusb could not start.
 */
int cmd_jig(int argc, char **argv);

#endif
