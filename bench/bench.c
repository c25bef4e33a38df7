/*
 * Side-by-side benchmark of libusbmuxd implementations through the C API.
 *
 * Loads the library named on the command line with dlopen (ours or Debian's), so the
 * same program measures both against the same daemon in one run. Prints one line per
 * figure: "<name> <value> <unit> cpu_s=<client CPU seconds>".
 *
 * usage: bench LIBRARY HANDLE SINK_PORT SOURCE_PORT ECHO_PORT MIB ITERATIONS
 *   USBMUXD_SOCKET_ADDRESS selects the daemon.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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

static double cpu(void) {
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void *sym(void *lib, const char *name) {
	void *p = dlsym(lib, name);
	if (!p) {
		fprintf(stderr, "missing symbol %s: %s\n", name, dlerror());
		exit(2);
	}
	return p;
}

static void report(const char *name, double value, const char *unit, double cpu_s) {
	printf("%s %.1f %s cpu_s=%.3f\n", name, value, unit, cpu_s);
	fflush(stdout);
}

static void bench_list(int iterations) {
	double t0 = now(), c0 = cpu();
	for (int i = 0; i < iterations; i++) {
		device_info *list = NULL;
		int n = get_device_list(&list);
		if (n < 1) {
			fprintf(stderr, "get_device_list returned %d\n", n);
			exit(1);
		}
		device_list_free(&list);
	}
	report("device_list", iterations / (now() - t0), "ops/s", cpu() - c0);
}

static void bench_connect(uint32_t handle, unsigned short port, int iterations) {
	double t0 = now(), c0 = cpu();
	for (int i = 0; i < iterations; i++) {
		int fd = mux_connect(handle, port);
		if (fd < 0) {
			fprintf(stderr, "connect returned %d\n", fd);
			exit(1);
		}
		mux_disconnect(fd);
	}
	report("connect_disconnect", iterations / (now() - t0), "ops/s", cpu() - c0);
}

static void bench_send(uint32_t handle, unsigned short port, size_t total) {
	static char buf[65536];
	memset(buf, 'x', sizeof(buf));
	int fd = mux_connect(handle, port);
	if (fd < 0) {
		fprintf(stderr, "connect to sink returned %d\n", fd);
		exit(1);
	}
	double t0 = now(), c0 = cpu();
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
	report("send", total / (now() - t0) / 1e6, "MB/s", cpu() - c0);
	mux_disconnect(fd);
}

static void bench_recv(uint32_t handle, unsigned short port, size_t total) {
	static char buf[65536];
	int fd = mux_connect(handle, port);
	if (fd < 0) {
		fprintf(stderr, "connect to source returned %d\n", fd);
		exit(1);
	}
	double t0 = now(), c0 = cpu();
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
	report("recv", total / (now() - t0) / 1e6, "MB/s", cpu() - c0);
	mux_disconnect(fd);
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

	uint32_t handle = (uint32_t)strtoul(argv[2], NULL, 10);
	unsigned short sink = (unsigned short)atoi(argv[3]);
	unsigned short source = (unsigned short)atoi(argv[4]);
	unsigned short echo = (unsigned short)atoi(argv[5]);
	size_t total = (size_t)strtoull(argv[6], NULL, 10) << 20;
	int iterations = atoi(argv[7]);

	bench_list(iterations);
	bench_connect(handle, echo, iterations);
	bench_send(handle, sink, total);
	bench_recv(handle, source, total);
	return 0;
}
