/*
 * cmd_audit.h: "keyline audit verify|export" (docs/audit.md).
 */
#ifndef KL_CMD_AUDIT_H
#define KL_CMD_AUDIT_H

/*
 * argv[0] is "audit", argv[1] the verb.  Returns the process exit code:
 * 0 done (verify: chain intact), 1 verify found the chain broken or export
 * failed part way, 2 usage error or the database could not be opened.
 */
int cmd_audit(int argc, char **argv);

#endif
