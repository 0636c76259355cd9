/* fork and exec under the preload: the parent allocates, the child
 * allocates and launches on its own, then execs argv[1] (e.g. /bin/true);
 * the parent carries on after the child. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
#include "simgpu.h"

int main(int argc, char **argv) {
  void *a = NULL, *h = NULL;
  if (hipMalloc(&a, 4096) || hipHostMalloc(&h, 4096, 0)) return 10;
  pid_t pid = fork();
  if (pid == 0) {
    void *b = NULL;
    if (hipMalloc(&b, 4096) || simgpuLaunchRead(b, 0, 4096) || hipFree(b)) _exit(11);
    if (argc > 1) execv(argv[1], argv + 1);
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  hipError_t e = simgpuLaunchRead(h, 0, 4096);
  printf("child %d parent-read %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1, e);
  return e || !WIFEXITED(status) || WEXITSTATUS(status);
}
