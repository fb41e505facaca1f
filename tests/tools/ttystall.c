/*
 * ttystall: run a program on a terminal that stops being read, the way an
 * SSH session over a dead link or a hung terminal emulator does, and say
 * when the program is really blocked writing to it.  Test helper for
 * tests/integration/96-console-stall.sh.
 *
 *   ttystall BLOCKED RELEASE KEYS -- PROGRAM [ARG]...
 *
 * PROGRAM runs on the slave side of a new pty as its controlling
 * terminal.  Nothing is read from the master.  Until a thread of PROGRAM
 * has sat in write(2) for a while, the window is resized every 100 ms
 * (200x60 and 80x24 in turn): each resize makes a curses program repaint
 * the whole screen, so the pty's buffers fill quickly.  Once the same
 * thread has been seen blocked in write(2) five times in a row
 * (/proc/PID/task/TID/syscall), the file BLOCKED is created, holding
 * "blocked".  The terminal stays stalled until the file RELEASE exists;
 * then the file BLOCKED gets a second line, "still-blocked yes" or
 * "still-blocked no" (whether that thread was still stuck in write(2) at
 * that moment), everything pending is read, and
 * KEYS are typed one byte a second while the output keeps being read.
 * Exits with PROGRAM's exit status, or 125 on a helper error / timeout
 * (60 s to block, 600 s to be released, 30 s to exit after it).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/*
 * Is a thread of pid inside write(2) right now: thread want if it is not
 * 0, else any (its id in *tid)?  -1: no thread's syscall file could be
 * read (no ptrace access to it).
 */
static int
in_write(pid_t pid, long want, long *tid)
{
	char path[512], line[256];
	struct dirent *de;
	DIR *d;
	FILE *f;
	int found = 0, readable = 0;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	if ((d = opendir(path)) == NULL)
		return 0;
	while (!found && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' ||
		    (want != 0 && strtol(de->d_name, NULL, 10) != want))
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/syscall",
		    (int)pid, de->d_name);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		if (fgets(line, sizeof(line), f) != NULL) {
			readable = 1;
			if (strtol(line, NULL, 10) == SYS_write &&
			    line[0] != '-') {
				found = 1;
				if (tid != NULL)
					*tid = strtol(de->d_name, NULL, 10);
			}
		}
		fclose(f);
	}
	closedir(d);
	return found ? 1 : readable ? 0 : -1;
}

static int
write_file(const char *path, const char *mode, const char *text)
{
	FILE *f = fopen(path, mode);

	if (f == NULL)
		return -1;
	fputs(text, f);
	return fclose(f);
}

/* Read and drop whatever the master has, for up to ms. */
static void
drain(int master, int ms)
{
	struct pollfd p = { .fd = master, .events = POLLIN };
	char buf[8192];
	long end = now_ms() + ms;

	while (now_ms() < end) {
		if (poll(&p, 1, 50) <= 0)
			continue;
		if (read(master, buf, sizeof(buf)) <= 0)
			return;		/* slave closed: the program is gone */
	}
}

static int
child_status(pid_t pid, int wait_ms, int master)
{
	long end = now_ms() + wait_ms;
	int st;

	while (now_ms() < end) {
		pid_t w = waitpid(pid, &st, WNOHANG);

		if (w == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) :
			    128 + WTERMSIG(st);
		drain(master, 100);
		/* drain returns at once once the terminal is closed */
		usleep(20 * 1000);
	}
	return -1;
}

int
main(int argc, char **argv)
{
	struct winsize big = { .ws_row = 60, .ws_col = 200 };
	struct winsize small = { .ws_row = 24, .ws_col = 80 };
	const char *blocked, *release, *keys;
	int master, seen = 0, flip = 0, rc, w;
	long tid = 0, t;
	long t0;
	pid_t pid;

	if (argc < 6 || strcmp(argv[4], "--") != 0) {
		fprintf(stderr, "usage: ttystall BLOCKED RELEASE KEYS -- "
		    "PROGRAM [ARG]...\n");
		return 125;
	}
	blocked = argv[1];
	release = argv[2];
	keys = argv[3];
	pid = forkpty(&master, NULL, NULL, &small);
	if (pid < 0) {
		perror("ttystall: forkpty");
		return 125;
	}
	if (pid == 0) {
		execvp(argv[5], argv + 5);
		perror("ttystall: exec");
		_exit(127);
	}
	signal(SIGPIPE, SIG_IGN);

	/* Stall: never read; resize until the program blocks in write. */
	t0 = now_ms();
	while (seen < 5) {
		if (now_ms() - t0 > 60000 || waitpid(pid, &rc, WNOHANG) == pid) {
			fprintf(stderr, "ttystall: the program never blocked "
			    "writing to its terminal\n");
			kill(pid, SIGKILL);
			return 125;
		}
		t = 0;
		if ((w = in_write(pid, 0, &t)) < 0 && now_ms() - t0 > 1000) {
			fprintf(stderr, "ttystall: cannot read "
			    "/proc/%d/task/*/syscall (ptrace access?)\n",
			    (int)pid);
			kill(pid, SIGKILL);
			return 125;
		}
		/* The same thread each time: the one drawing the screen. */
		seen = w > 0 && (seen == 0 || t == tid) ? seen + 1 :
		    w > 0 ? 1 : 0;
		tid = t;
		if (seen == 0) {
			(void)ioctl(master, TIOCSWINSZ, flip ? &small : &big);
			flip = !flip;
		}
		usleep(100 * 1000);
	}
	if (write_file(blocked, "w", "blocked\n") != 0) {
		perror("ttystall: BLOCKED");
		kill(pid, SIGKILL);
		return 125;
	}
	fprintf(stderr, "ttystall: thread %ld blocked in write after %ld ms\n",
	    tid, now_ms() - t0);

	while (access(release, F_OK) != 0) {
		if (now_ms() - t0 > 600000) {
			kill(pid, SIGKILL);
			return 125;
		}
		usleep(100 * 1000);
	}
	/* That same thread, not just any thread writing something. */
	(void)write_file(blocked, "a", in_write(pid, tid, NULL) > 0 ?
	    "still-blocked yes\n" : "still-blocked no\n");

	/* Release: read everything, back to a sane size, type the keys. */
	(void)ioctl(master, TIOCSWINSZ, &small);
	drain(master, 1000);
	for (; *keys != '\0'; keys++) {
		if (write(master, keys, 1) != 1)
			break;
		drain(master, 1000);
	}
	rc = child_status(pid, 30000, master);
	if (rc < 0) {
		fprintf(stderr, "ttystall: the program did not exit\n");
		kill(pid, SIGKILL);
		return 125;
	}
	return rc;
}
