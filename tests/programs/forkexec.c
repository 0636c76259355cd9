/* fork and exec under the preload.
 *   forkexec PROG [ARGS]  the parent allocates; the child allocates and
 *                         launches on its own, then execs PROG; the parent
 *                         carries on after the child.
 *   forkexec --stress     a second thread allocates and frees without pause
 *                         while the main thread forks 300 times; each child
 *                         just exits with exit(), running the atexit handlers
 *                         (rocm-fix's ROCM_FIX_STATS summary among them), as
 *                         a DataLoader worker or a fork+exec helper would. A
 *                         lock held at fork time would hang it: alarm(5)
 *                         turns that into a kill. (The child does not call
 *                         HIP: ROCm itself does not support GPU work in a
 *                         forked child.) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "simgpu.h"

static volatile int stop;

static void *churn(void *arg) {
  (void)arg;
  while (!stop) {
    void *p = NULL;
    hipMalloc(&p, 4096);
    hipFree(p);
  }
  return NULL;
}

static int stress(void) {
  pthread_t t;
  pthread_create(&t, NULL, churn, NULL);
  int bad = 0;
  for (int i = 0; i < 300; i++) {
    pid_t pid = fork();
    if (pid == 0) {
      alarm(5);
      exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status)) bad++;
  }
  stop = 1;
  pthread_join(t, NULL);
  printf("stress children failed %d\n", bad);
  return bad != 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--stress")) return stress();
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
