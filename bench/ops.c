/*
 * N device lists, then N connect/disconnects, through the library named on the command
 * line: a fixed workload whose instruction count (valgrind --tool=callgrind) compares
 * the client-side cost of two libusbmuxd implementations without timing noise.
 *
 * usage: ops LIBRARY HANDLE PORT N      (USBMUXD_SOCKET_ADDRESS selects the daemon)
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc != 5) {
		fprintf(stderr, "usage: %s LIBRARY HANDLE PORT N\n", argv[0]);
		return 2;
	}
	void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 2;
	}
	int (*get_device_list)(void **) = (int (*)(void **))dlsym(lib, "usbmuxd_get_device_list");
	int (*mux_connect)(unsigned, unsigned short) = (int (*)(unsigned, unsigned short))dlsym(lib, "usbmuxd_connect");
	if (!get_device_list || !mux_connect)
		return 2;
	unsigned handle = (unsigned)atoi(argv[2]);
	unsigned short port = (unsigned short)atoi(argv[3]);
	int n = atoi(argv[4]);
	for (int i = 0; i < n; i++) {
		void *list = NULL;
		if (get_device_list(&list) < 1)
			return 1;
		free(list);
	}
	for (int i = 0; i < n; i++) {
		int fd = mux_connect(handle, port);
		if (fd < 0)
			return 1;
		close(fd);
	}
	return 0;
}
