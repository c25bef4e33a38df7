/*
 * Side-by-side benchmark of libusbmuxd implementations through the C API.
 *
 * Loads the library named on the command line with dlopen (ours or Debian's), so the
 * same program measures both against the same daemon in one run. Prints one line per
 * figure: "<name> <value> <unit> cpu_s=<client CPU seconds> thread_cpu_s=<...>
 * [server_cpu_s=<...>]":
 *   cpu_s         the whole benchmark process (every thread: with the library's in-process
 *                 USB backend that includes its I/O thread, i.e. the backend's work);
 *   thread_cpu_s  the thread calling the C API alone (cpu_s minus it: the library's own
 *                 threads);
 *   server_cpu_s  the process BENCH_SERVER_PID (the daemon or the USB simulator), from
 *                 /proc/PID/stat (utime + stime, all its threads; clock-tick resolution).
 *
 * usage: bench LIBRARY HANDLE SINK_PORT SOURCE_PORT ECHO_PORT MIB ITERATIONS
 *   HANDLE        a device handle, or "first": the first device of usbmuxd_get_device_list
 *   USBMUXD_SOCKET_ADDRESS selects the daemon (USBMUXD_BACKEND / USBMUXD_SIMBUS the
 *   in-process USB backend and its bus, with our library).
 *   BENCH_FIGURES   comma-separated figures to run (default all:
 *                   device_list,connect_disconnect,send,recv)
 *   BENCH_SERVER_PID  see server_cpu_s
 *   BENCH_THREADS=1 after each figure also "thread <figure> client|server <thread name>
 *                   cpu_s=<...>" lines: CPU of each thread of both processes (/proc/.../task)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

typedef struct { char opaque[256]; } device_info;

static int (*get_device_list)(device_info **);
static int (*device_list_free)(device_info **);
static int (*mux_connect)(uint32_t, unsigned short);
static int (*mux_disconnect)(int);
static int (*mux_send)(int, const char *, uint32_t, uint32_t *);
static int (*mux_recv_timeout)(int, char *, uint32_t, uint32_t *, unsigned int);

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double rusage_s(int who) {
	struct rusage ru;
	getrusage(who, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static pid_t server_pid;

/* utime + stime in seconds from a /proc/.../stat file (a process: all its threads, also
 * exited ones; a task: that thread), or -1; the command name goes to comm if given. */
static double stat_cpu(const char *path, char *comm, size_t comm_size) {
	char buf[1024];
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	/* "pid (comm) state ...": comm may contain spaces; utime, stime are fields 14, 15. */
	char *open = strchr(buf, '('), *p = strrchr(buf, ')');
	unsigned long long utime, stime;
	if (!open || !p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
		return -1;
	if (comm)
		snprintf(comm, comm_size, "%.*s", (int)(p - open - 1), open + 1);
	return (double)(utime + stime) / sysconf(_SC_CLK_TCK);
}

static double server_cpu(void) {
	char path[64];
	if (server_pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)server_pid);
	return stat_cpu(path, NULL, 0);
}

/* Per-thread CPU of a process (BENCH_THREADS=1): its live threads by tid. */
#define MAX_THREADS 64
struct thread_snap {
	int n;
	struct { int tid; char comm[32]; double cpu; } t[MAX_THREADS];
};

static void snap_threads(pid_t pid, struct thread_snap *s) {
	char dir[64], path[384];
	s->n = 0;
	snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)) && s->n < MAX_THREADS) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s/stat", dir, e->d_name);
		double c = stat_cpu(path, s->t[s->n].comm, sizeof(s->t[s->n].comm));
		if (c < 0)
			continue;
		s->t[s->n].tid = atoi(e->d_name);
		s->t[s->n].cpu = c;
		s->n++;
	}
	closedir(d);
}

/* Prints "thread FIGURE WHO COMM cpu_s=X" for every thread of `after` that used CPU
 * (threads started in between count from 0; those that ended in between are missing). */
static void report_threads(const char *figure, const char *who, const struct thread_snap *before,
			   const struct thread_snap *after) {
	for (int i = 0; i < after->n; i++) {
		double c0 = 0;
		for (int j = 0; j < before->n; j++)
			if (before->t[j].tid == after->t[i].tid)
				c0 = before->t[j].cpu;
		if (after->t[i].cpu - c0 > 0)
			printf("thread %s %s %s cpu_s=%.3f\n", figure, who, after->t[i].comm, after->t[i].cpu - c0);
	}
}

static int per_thread;

/* CPU seconds so far: [0] the process, [1] this thread, [2] the server (or -1); with
 * per_thread, each thread of both. */
struct cpu_mark {
	double t[3];
	struct thread_snap client, server;
};

static struct cpu_mark cpu(void) {
	struct cpu_mark m = { { rusage_s(RUSAGE_SELF), rusage_s(RUSAGE_THREAD), server_cpu() }, { 0 }, { 0 } };
	if (per_thread) {
		snap_threads(getpid(), &m.client);
		if (server_pid > 0)
			snap_threads(server_pid, &m.server);
	}
	return m;
}

static void *sym(void *lib, const char *name) {
	void *p = dlsym(lib, name);
	if (!p) {
		fprintf(stderr, "missing symbol %s: %s\n", name, dlerror());
		exit(2);
	}
	return p;
}

static void report(const char *name, double value, const char *unit, struct cpu_mark c0) {
	struct cpu_mark c1 = cpu();
	printf("%s %.1f %s cpu_s=%.3f thread_cpu_s=%.3f", name, value, unit, c1.t[0] - c0.t[0], c1.t[1] - c0.t[1]);
	if (c0.t[2] >= 0 && c1.t[2] >= 0)
		printf(" server_cpu_s=%.3f", c1.t[2] - c0.t[2]);
	printf("\n");
	if (per_thread) {
		report_threads(name, "client", &c0.client, &c1.client);
		report_threads(name, "server", &c0.server, &c1.server);
	}
	fflush(stdout);
}

static void bench_list(int iterations) {
	double t0 = now();
	struct cpu_mark c0 = cpu();
	for (int i = 0; i < iterations; i++) {
		device_info *list = NULL;
		int n = get_device_list(&list);
		if (n < 1) {
			fprintf(stderr, "get_device_list returned %d\n", n);
			exit(1);
		}
		device_list_free(&list);
	}
	report("device_list", iterations / (now() - t0), "ops/s", c0);
}

static void bench_connect(uint32_t handle, unsigned short port, int iterations) {
	double t0 = now();
	struct cpu_mark c0 = cpu();
	for (int i = 0; i < iterations; i++) {
		int fd = mux_connect(handle, port);
		if (fd < 0) {
			fprintf(stderr, "connect returned %d\n", fd);
			exit(1);
		}
		mux_disconnect(fd);
	}
	report("connect_disconnect", iterations / (now() - t0), "ops/s", c0);
}

static void bench_send(uint32_t handle, unsigned short port, size_t total) {
	static char buf[65536];
	memset(buf, 'x', sizeof(buf));
	int fd = mux_connect(handle, port);
	if (fd < 0) {
		fprintf(stderr, "connect to sink returned %d\n", fd);
		exit(1);
	}
	double t0 = now();
	struct cpu_mark c0 = cpu();
	size_t done = 0;
	while (done < total) {
		uint32_t want = (uint32_t)(total - done < sizeof(buf) ? total - done : sizeof(buf));
		uint32_t sent = 0;
		int r = mux_send(fd, buf, want, &sent);
		if (r == -EAGAIN)
			continue;
		if (r < 0) {
			fprintf(stderr, "send returned %d after %zu bytes\n", r, done);
			exit(1);
		}
		done += sent;
	}
	report("send", total / (now() - t0) / 1e6, "MB/s", c0);
	mux_disconnect(fd);
}

static void bench_recv(uint32_t handle, unsigned short port, size_t total) {
	static char buf[65536];
	int fd = mux_connect(handle, port);
	if (fd < 0) {
		fprintf(stderr, "connect to source returned %d\n", fd);
		exit(1);
	}
	double t0 = now();
	struct cpu_mark c0 = cpu();
	size_t done = 0;
	while (done < total) {
		uint32_t got = 0;
		int r = mux_recv_timeout(fd, buf, sizeof(buf), &got, 5000);
		if (r == -EAGAIN)
			continue;
		if (r < 0) {
			fprintf(stderr, "recv returned %d after %zu of %zu bytes\n", r, done, total);
			exit(1);
		}
		done += got;
	}
	report("recv", total / (now() - t0) / 1e6, "MB/s", c0);
	mux_disconnect(fd);
}

/* Whether NAME is one of the comma-separated FIGURES. */
static int wanted(const char *figures, const char *name) {
	size_t len = strlen(name);
	for (const char *p = figures; *p;) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if (n == len && strncmp(p, name, len) == 0)
			return 1;
		if (!end)
			break;
		p = end + 1;
	}
	return 0;
}

int main(int argc, char **argv) {
	if (argc != 8) {
		fprintf(stderr, "usage: %s LIBRARY HANDLE SINK_PORT SOURCE_PORT ECHO_PORT MIB ITERATIONS\n", argv[0]);
		return 2;
	}
	void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 2;
	}
	get_device_list = sym(lib, "usbmuxd_get_device_list");
	device_list_free = sym(lib, "usbmuxd_device_list_free");
	mux_connect = sym(lib, "usbmuxd_connect");
	mux_disconnect = sym(lib, "usbmuxd_disconnect");
	mux_send = sym(lib, "usbmuxd_send");
	mux_recv_timeout = sym(lib, "usbmuxd_recv_timeout");

	const char *figures = getenv("BENCH_FIGURES");
	if (!figures || !*figures)
		figures = "device_list,connect_disconnect,send,recv";
	const char *spid = getenv("BENCH_SERVER_PID");
	server_pid = spid ? (pid_t)atoi(spid) : 0;
	const char *threads = getenv("BENCH_THREADS");
	per_thread = threads && strcmp(threads, "1") == 0;

	uint32_t handle;
	if (strcmp(argv[2], "first") == 0) {
		device_info *list = NULL;
		int n = get_device_list(&list);
		if (n < 1) {
			fprintf(stderr, "get_device_list returned %d: no device\n", n);
			return 1;
		}
		memcpy(&handle, list[0].opaque, sizeof(handle)); /* usbmuxd_device_info_t.handle */
		device_list_free(&list);
	} else {
		handle = (uint32_t)strtoul(argv[2], NULL, 10);
	}
	unsigned short sink = (unsigned short)atoi(argv[3]);
	unsigned short source = (unsigned short)atoi(argv[4]);
	unsigned short echo = (unsigned short)atoi(argv[5]);
	size_t total = (size_t)strtoull(argv[6], NULL, 10) << 20;
	int iterations = atoi(argv[7]);

	if (wanted(figures, "device_list"))
		bench_list(iterations);
	if (wanted(figures, "connect_disconnect"))
		bench_connect(handle, echo, iterations);
	if (wanted(figures, "send"))
		bench_send(handle, sink, total);
	if (wanted(figures, "recv"))
		bench_recv(handle, source, total);
	return 0;
}
