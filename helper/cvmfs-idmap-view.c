/*
 * cvmfs-idmap-view: an ID-mapped, read-only view of a CVMFS repository inside
 * a rootless podman user's mount namespace (issue 15, docs/rootless.md).
 *
 *   cvmfs-idmap-view PID REPOSITORY TARGET
 *   cvmfs-idmap-view --list
 *   cvmfs-idmap-view --serve     (root only: one request on standard input)
 *
 * --serve makes the view automatic: run by root for each connection to the
 * Unix socket /run/cvmfs-idmap-view.sock (systemd socket activation with
 * Accept=yes, helper/systemd/), it reads "REPOSITORY\0TARGET\0" from the
 * connection and does exactly what the setuid form does for the connecting
 * process (SO_PEERCRED: its PID, uid and gid stand for PID and the caller),
 * answering "ok: ..." or "error: ..." on the connection. The cvmfs driver
 * asks there for each listed repository without a view: it runs inside
 * podman's user namespace, where the setuid bit of a root-owned program is
 * ignored, but a connection to a socket crosses no namespace.
 *
 * Rootless podman shows repository files owned by host IDs its user
 * namespace does not map (host root, as DUCC and a root publisher leave
 * them) as 65534, and an unprivileged user may not ID-map the repository's
 * filesystem. This program, installed setuid root like newuidmap, clones the
 * repository's mount, ID-maps it through the user namespace of process PID
 * (on-disk ID N shows as N inside that namespace) and attaches it read-only,
 * nosuid, nodev at TARGET in PID's mount namespace. The cvmfs driver, running
 * in that namespace, uses TARGET as the repository.
 *
 * What it refuses (each with a message naming what and why):
 *   - a REPOSITORY not listed, exactly, in CONFIG_PATH (root-owned, written
 *     by the administrator: only repositories every permitted user may read);
 *   - a PID whose user namespace is the initial one or was not created by the
 *     caller, or whose mount namespace is not owned by that user namespace:
 *     the caller is already all-powerful there, so a mount there grants
 *     nothing but the view;
 *   - a TARGET that is not an absolute path to a directory owned by the
 *     caller, reached without symlinks with the caller's own permissions in
 *     that mount namespace, or that is already a mount point.
 *
 * CONFIG_PATH has one repository a line, optionally followed by the mount to
 * clone for it: "/cvmfs/repo /run/cvmfs-idmap/repo". The CVMFS client's FUSE
 * mount refuses ID mapping (its server does not announce FUSE_ALLOW_IDMAP);
 * the administrator then runs cvmfs-idmap-fuse, a read-only pass-through that
 * does, over the repository and names its mount point there. The view is
 * still named after, and used by the driver as, the repository.
 *
 * The view's flags are locked (the kernel's rule for mounts copied into a
 * less privileged namespace, see attach_locked): the user cannot make it
 * writable, suid or dev in its namespace, where it holds CAP_SYS_ADMIN.
 *
 * Why C and not Rust: rustix (the project's safe syscall layer) has no
 * mount_setattr, and a raw syscall in Rust needs `unsafe` outside the
 * driver's ffi module, which the project forbids. A setuid program must also
 * be small enough to audit at once; this one has no dependency beyond libc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/nsfs.h>
#include <linux/openat2.h>
#include <pwd.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CONFIG_PATH
#define CONFIG_PATH "/etc/containers/cvmfs-idmap-view.conf"
#endif
#define PROG "cvmfs-idmap-view"
#define MAX_CONFIG_BYTES (64 * 1024)
#define MAX_REPOSITORIES 64
#define MAX_PID 4194304L

static char config_text[MAX_CONFIG_BYTES + 1];
static const char *repositories[MAX_REPOSITORIES];
/* The mount cloned for repositories[i]: the repository itself, or the
 * ID-mappable mount the administrator named after it. */
static const char *sources[MAX_REPOSITORIES];
static int repository_count;

/* --serve: the connection the answer goes to (-1: none). */
static int reply_fd = -1;

static void die(const char *fmt, ...)
{
	va_list ap;
	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (reply_fd >= 0) {
		char why[2 * PATH_MAX + 512];
		va_start(ap, fmt);
		vsnprintf(why, sizeof why, fmt, ap);
		va_end(ap);
		dprintf(reply_fd, "error: %s\n", why); /* one write: one answer */
	}
	exit(1);
}

static const char *user_name(uid_t uid)
{
	static char buf[64];
	struct passwd *pw = getpwuid(uid);
	if (pw && strlen(pw->pw_name) < sizeof buf)
		return strcpy(buf, pw->pw_name);
	snprintf(buf, sizeof buf, "%u", (unsigned)uid);
	return buf;
}

/* A configured repository: absolute, no "." or ".." component, no "//". */
static int valid_repository_path(const char *p)
{
	size_t n = strlen(p);
	if (p[0] != '/' || n >= PATH_MAX || strstr(p, "//"))
		return 0;
	if (strstr(p, "/./") || strstr(p, "/../"))
		return 0;
	if ((n >= 2 && !strcmp(p + n - 2, "/.")) || (n >= 3 && !strcmp(p + n - 3, "/..")))
		return 0;
	return 1;
}

/* One configuration line: REPOSITORY [MOUNT], both checked paths. */
static void add_repository(char *line)
{
	char *source = line + strcspn(line, " \t");
	if (*source) {
		*source++ = 0;
		source += strspn(source, " \t");
		if (source[strcspn(source, " \t")])
			die("%s: entry '%s %s': more than a repository and its mount", CONFIG_PATH,
			    line, source);
	}
	if (!valid_repository_path(line))
		die("%s: entry '%s': not an absolute path without '.', '..' or '//'", CONFIG_PATH,
		    line);
	if (*source && !valid_repository_path(source))
		die("%s: entry '%s': its mount '%s' is not an absolute path without '.', '..' or "
		    "'//'",
		    CONFIG_PATH, line, source);
	if (repository_count == MAX_REPOSITORIES)
		die("%s: more than %d repositories", CONFIG_PATH, MAX_REPOSITORIES);
	sources[repository_count] = *source ? source : line;
	repositories[repository_count++] = line;
}

/* CONFIG_PATH: root-owned, writable by root only, one repository a line
 * (optionally followed by the mount to clone for it). */
static void read_config(void)
{
	int fd = open(CONFIG_PATH, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0)
		die("%s: %s (the administrator lists the repositories users may ID-map there)",
		    CONFIG_PATH, strerror(errno));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode))
		die("%s: not a regular file", CONFIG_PATH);
	if (st.st_uid != 0 || (st.st_mode & 022))
		die("%s: must be owned by root and writable by root only", CONFIG_PATH);
	if (st.st_size > MAX_CONFIG_BYTES)
		die("%s: larger than %d bytes", CONFIG_PATH, MAX_CONFIG_BYTES);
	ssize_t got = read(fd, config_text, MAX_CONFIG_BYTES + 1);
	if (got < 0 || got > MAX_CONFIG_BYTES)
		die("%s: cannot read it whole", CONFIG_PATH);
	close(fd);
	config_text[got] = 0;
	for (char *save, *line = strtok_r(config_text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		line += strspn(line, " \t");
		char *end = line + strlen(line);
		while (end > line && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
			*--end = 0;
		if (!*line || *line == '#')
			continue;
		add_repository(line);
	}
}

/* The mount to clone for a listed repository, NULL if it is not listed. */
static const char *configured(const char *repo)
{
	for (int i = 0; i < repository_count; i++)
		if (!strcmp(repositories[i], repo))
			return sources[i];
	return NULL;
}

static pid_t parse_pid(const char *s)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || s[0] == '+' || s[0] == '-' || v < 1 || v > MAX_PID)
		die("PID '%s': not a process ID", s);
	return (pid_t)v;
}

static int open_ns(pid_t pid, const char *kind)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)pid, kind);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("%s: %s", path, strerror(errno));
	return fd;
}

static int same_file(int a, int b)
{
	struct stat sa, sb;
	return !fstat(a, &sa) && !fstat(b, &sb) && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* The user namespace of PID must be one the caller created, and its mount
 * namespace must be owned by it. Checked on the namespace files themselves,
 * so a PID reused meanwhile gains nothing. */
static void check_namespaces(pid_t pid, int userns, int mntns, uid_t caller)
{
	int initial = open("/proc/self/ns/user", O_RDONLY | O_CLOEXEC);
	if (initial < 0 || same_file(initial, userns))
		die("process %d is not in a user namespace (start podman's first: podman unshare true)",
		    (int)pid);
	close(initial);
	uid_t owner;
	if (ioctl(userns, NS_GET_OWNER_UID, &owner))
		die("process %d: cannot read its user namespace's creator: %s", (int)pid,
		    strerror(errno));
	if (owner != caller)
		die("process %d: its user namespace was created by uid %u, not by you (uid %u): refused",
		    (int)pid, (unsigned)owner, (unsigned)caller);
	int mnt_owner = ioctl(mntns, NS_GET_USERNS);
	if (mnt_owner < 0)
		die("process %d: cannot read its mount namespace's owner: %s", (int)pid,
		    strerror(errno));
	if (!same_file(mnt_owner, userns))
		die("process %d: its mount namespace is not owned by its user namespace: refused",
		    (int)pid);
	close(mnt_owner);
}

/* How many uids PID's namespace maps (its /proc file, read after the
 * namespace checks: only used for the subordinate-ID warning). */
static unsigned long long mapped_ids(pid_t pid)
{
	char path[64], buf[4096];
	snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
	FILE *f = fopen(path, "re");
	unsigned long long total = 0, inside, outside, count;
	if (!f)
		return 0;
	while (fgets(buf, sizeof buf, f))
		if (sscanf(buf, "%llu %llu %llu", &inside, &outside, &count) == 3)
			total += count;
	fclose(f);
	return total;
}

/* A detached, ID-mapped, read-only clone of the repository's mount (of
 * `source`, the repository or the mount listed after it). */
static int idmapped_clone(const char *repo, const char *source, int userns)
{
	int tree = open_tree(AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	if (tree < 0)
		die("repository %s: cannot clone the mount at %s: %s", repo, source,
		    strerror(errno));
	struct stat st;
	if (fstat(tree, &st) || !S_ISDIR(st.st_mode))
		die("repository %s: %s is not a directory", repo, source);
	struct mount_attr attr = {
		.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
			    MOUNT_ATTR_NODEV,
		.userns_fd = (unsigned long long)userns,
	};
	if (mount_setattr(tree, "", AT_EMPTY_PATH, &attr, sizeof attr))
		die("repository %s: ID mapping of %s refused: %s%s", repo, source, strerror(errno),
		    errno == EINVAL ? " (its filesystem does not support ID-mapped mounts: a "
				      "CVMFS client mount does not; the administrator runs "
				      "cvmfs-idmap-fuse over it and lists its mount point after "
				      "the repository in " CONFIG_PATH ")"
				    : "");
	return tree;
}

/* TARGET in the current (PID's) mount namespace: an absolute path, resolved
 * with the caller's permissions and no symlink, to a directory the caller
 * owns that is not a mount point yet. */
static int open_target(const char *target, uid_t caller, gid_t caller_gid)
{
	if (target[0] != '/' || strlen(target) >= PATH_MAX)
		die("target '%s': not an absolute path", target);
	struct open_how how = {
		.flags = O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW,
		.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	setfsgid(caller_gid);
	setfsuid(caller);
	int fd = (int)syscall(SYS_openat2, AT_FDCWD, target, &how, sizeof how);
	int err = errno;
	setfsuid(0);
	setfsgid(0);
	if (fd < 0)
		die("target %s: %s (a directory you own, reached without symlinks)", target,
		    strerror(err));
	struct stat st;
	if (fstat(fd, &st) || !S_ISDIR(st.st_mode) || st.st_uid != caller)
		die("target %s: not a directory owned by you (uid %u): refused", target,
		    (unsigned)caller);
	struct statx sx;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &sx))
		die("target %s: %s", target, strerror(errno));
	if ((sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
	    (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT))
		die("target %s: already a mount point (podman unshare umount %s first)", target,
		    target);
	return fd;
}

/* Attach `tree` at `dest` in the user's mount namespace with its flags
 * locked. A mount moved straight into a namespace the user owns could be
 * made writable there (mount_setattr clears MOUNT_ATTR_RDONLY for whoever
 * holds CAP_SYS_ADMIN over that namespace), and through the ID mapping the
 * user would write the repository as its owners. The kernel locks a mount's
 * flags when it copies the mount into a less privileged mount namespace; so
 * the view is staged in a private directory here, a child joins the user's
 * user namespace and makes a new mount namespace (the locked copy), clones
 * the staged view from it and attaches that clone. The staging goes after. */
static void attach_locked(int tree, int userns, int mntns, int dest, const char *target)
{
	char stage[] = "/run/cvmfs-idmap-view.XXXXXX";
	if (!mkdtemp(stage) || chmod(stage, 0711))
		die("staging directory %s: %s", stage, strerror(errno));
	if (move_mount(tree, "", AT_FDCWD, stage, MOVE_MOUNT_F_EMPTY_PATH)) {
		int err = errno;
		rmdir(stage);
		die("cannot stage the view at %s: %s", stage, strerror(err));
	}
	pid_t child = fork();
	if (child == 0) {
		const char *step = "join the user namespace";
		int locked = -1;
		if (!setns(userns, CLONE_NEWUSER) && (step = "copy the mount namespace") &&
		    !unshare(CLONE_NEWNS) && (step = "clone the locked view") &&
		    (locked = open_tree(AT_FDCWD, stage, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)) >= 0 &&
		    (step = "enter the user's mount namespace") && !setns(mntns, CLONE_NEWNS) &&
		    (step = "attach the view") &&
		    !move_mount(locked, "", dest, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH))
			_exit(0);
		fprintf(stderr, PROG ": target %s: cannot %s: %s\n", target, step, strerror(errno));
		_exit(1);
	}
	int status = 0;
	if (child < 0 || waitpid(child, &status, 0) != child)
		status = 1;
	umount2(stage, MNT_DETACH);
	rmdir(stage);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("target %s: the view was not attached", target);
}

/* The view of `repo` for process `pid` of user `caller`, at `target` in its
 * mount namespace; the line saying so, after `prefix`, is written to `out`. */
static void attach_view(pid_t pid, const char *repo, const char *target, uid_t caller,
			gid_t caller_gid, FILE *out, const char *prefix)
{
	const char *source = configured(repo);
	if (!source)
		die("repository %s is not listed in %s: refused", repo, CONFIG_PATH);
	if (geteuid() != 0)
		die("not running as root: install it setuid root (make install-idmap-helper)");
	int userns = open_ns(pid, "user"), mntns = open_ns(pid, "mnt");
	check_namespaces(pid, userns, mntns, caller);
	if (mapped_ids(pid) <= 1)
		fprintf(stderr,
			PROG ": warning: /etc/subuid has no entry for user %s (its namespace maps "
			"one ID): only files owned by root show their owner; every other owner "
			"shows as 65534. Ask the administrator for '%s:<start>:65536' in "
			"/etc/subuid and /etc/subgid.\n",
			user_name(caller), user_name(caller));
	int tree = idmapped_clone(repo, source, userns);
	int host_mntns = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
	if (host_mntns < 0)
		die("/proc/self/ns/mnt: %s", strerror(errno));
	if (setns(mntns, CLONE_NEWNS))
		die("cannot enter the mount namespace of process %d: %s", (int)pid, strerror(errno));
	int dest = open_target(target, caller, caller_gid);
	if (setns(host_mntns, CLONE_NEWNS))
		die("cannot return to the initial mount namespace: %s", strerror(errno));
	attach_locked(tree, userns, mntns, dest, target);
	fprintf(out, "%s%s: ID-mapped read-only view at %s (user namespace of process %d)\n",
		prefix, repo, target, (int)pid);
}

/* --serve: one request "REPOSITORY\0TARGET\0" (at most 2 * PATH_MAX bytes,
 * 10 s) on standard input, a connected Unix socket; the connecting process
 * is the caller. */
static void serve(void)
{
	static char request[2 * PATH_MAX + 2];
	if (getuid() != 0)
		die("--serve: only root runs it (the socket service, helper/systemd/)");
	struct ucred peer;
	socklen_t len = sizeof peer;
	if (getsockopt(0, SOL_SOCKET, SO_PEERCRED, &peer, &len) || len != sizeof peer)
		die("--serve: standard input is not a connected Unix socket: %s", strerror(errno));
	reply_fd = 0;
	struct timeval limit = {.tv_sec = 10};
	setsockopt(0, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
	setsockopt(0, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
	size_t got = 0;
	int nuls = 0;
	while (nuls < 2) {
		if (got == sizeof request)
			die("request larger than %zu bytes", sizeof request);
		ssize_t n = read(0, request + got, sizeof request - got);
		if (n <= 0)
			die("request incomplete (REPOSITORY\\0TARGET\\0): %s",
			    n < 0 ? strerror(errno) : "connection closed");
		for (ssize_t i = 0; i < n; i++)
			nuls += request[got + i] == 0;
		got += (size_t)n;
	}
	const char *repo = request, *target = request + strlen(request) + 1;
	if (got != strlen(repo) + strlen(target) + 2)
		die("request has bytes after REPOSITORY\\0TARGET\\0");
	if (peer.pid <= 0)
		die("the connecting process has no PID here");
	FILE *out = fdopen(dup(0), "w");
	if (!out)
		die("cannot answer: %s", strerror(errno));
	attach_view(peer.pid, repo, target, peer.uid, peer.gid, out, "ok: ");
	fclose(out);
}

int main(int argc, char **argv)
{
	uid_t caller = getuid();
	gid_t caller_gid = getgid();
	clearenv();
	umask(077);
	prctl(PR_SET_DUMPABLE, 0);
	read_config();
	if (argc == 2 && !strcmp(argv[1], "--list")) {
		for (int i = 0; i < repository_count; i++)
			puts(repositories[i]);
		return 0;
	}
	if (argc == 2 && !strcmp(argv[1], "--serve")) {
		serve();
		return 0;
	}
	if (argc != 4)
		die("usage: " PROG " PID REPOSITORY TARGET | " PROG " --list | " PROG " --serve");
	attach_view(parse_pid(argv[1]), argv[2], argv[3], caller, caller_gid, stdout, "");
	return 0;
}
