/*
 * Stand-in for catatonit's pause mode (`catatonit -P`), which podman copies
 * into the pause image of every pod's infra container. catatonit is not
 * installed on the test machine; hack/test-podman-system.sh builds this
 * statically as "catatonit" so the system tests' pods can start. Only -P is
 * provided: sleep until SIGTERM or SIGINT, then exit 0. Anything else is
 * refused with a message naming the stand-in, so no test silently runs
 * with an init it did not ask for.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;

static void request_stop(int sig) {
    (void)sig;
    stop_requested = 1;
}

int main(int argc, char **argv) {
    if (argc != 2 || strcmp(argv[1], "-P") != 0) {
        fprintf(stderr, "catatonit stand-in (tests/podman-system): only -P (pause) is supported\n");
        return 2;
    }
    signal(SIGTERM, request_stop);
    signal(SIGINT, request_stop);
    while (!stop_requested)
        pause();
    return 0;
}
