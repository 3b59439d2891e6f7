/*
 * pause: PID 1 of a pod sandbox (nodeconfig.local/pause image).
 *
 * The sandbox's first process holds the pod's namespaces open while its
 * containers come and go. As PID 1 of the pod's PID namespace (when the pod
 * shares one) it must reap orphaned children, or they stay zombies; and since
 * the kernel ignores signals PID 1 has no handler for, it must exit on its own
 * when the runtime asks with SIGINT or SIGTERM. Same job as Kubernetes'
 * build/pause/linux/pause.c, written here so the image builds without a
 * registry. Built with `gcc -static -Os`.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
  (void)sig;
  _exit(0);
}

static void on_child(int sig) {
  (void)sig;
  int saved = errno;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = saved;
}

int main(int argc, char **argv) {
  if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
    puts("pause (nodeconfig)");
    return 0;
  }
  if (getpid() != 1) {
    /* Still works, but nothing else is re-parented to us. */
    fprintf(stderr, "pause: warning: not running as PID 1\n");
  }

  struct sigaction stop = {0};
  stop.sa_handler = on_stop;
  sigemptyset(&stop.sa_mask);
  if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0) {
    perror("pause: sigaction(SIGINT/SIGTERM)");
    return 1;
  }

  struct sigaction child = {0};
  child.sa_handler = on_child;
  sigemptyset(&child.sa_mask);
  child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  if (sigaction(SIGCHLD, &child, NULL) < 0) {
    perror("pause: sigaction(SIGCHLD)");
    return 1;
  }

  for (;;) {
    pause();
  }
  return 42; /* not reached */
}
