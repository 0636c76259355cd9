/*
 * The call log (SIMGPU_CALL_LOG=FILE): every call into either simulated
 * library appends one JSON line {"lib":…,"fn":…,"args":{…},"result":N}.
 * Pointer values are always written as "0x…" strings so that tests can
 * mask them. One write(2) per line on an O_APPEND descriptor keeps lines
 * whole when threads log at once.
 */
#ifndef SIMGPU_CALLLOG_H
#define SIMGPU_CALLLOG_H

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int calllog_fd(void) {
  /* Opened once per library; -1 when logging is off. */
  static int fd = -2;
  int cur = __atomic_load_n(&fd, __ATOMIC_ACQUIRE);
  if (cur != -2) return cur;
  const char *path = getenv("SIMGPU_CALL_LOG");
  int nfd = -1;
  if (path && *path) nfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int expected = -2;
  if (!__atomic_compare_exchange_n(&fd, &expected, nfd, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    if (nfd >= 0) close(nfd);
    return expected;
  }
  return nfd;
}

/* args_fmt produces the inside of the "args" object, e.g. "\"size\":%zu". */
__attribute__((format(printf, 4, 5))) static void calllog(const char *lib, const char *fn, long result,
                                                          const char *args_fmt, ...) {
  int fd = calllog_fd();
  if (fd < 0) return;
  char args[768];
  va_list ap;
  va_start(ap, args_fmt);
  vsnprintf(args, sizeof args, args_fmt, ap);
  va_end(ap);
  char line[1024];
  int n = snprintf(line, sizeof line, "{\"lib\":\"%s\",\"fn\":\"%s\",\"args\":{%s},\"result\":%ld}\n", lib, fn, args,
                   result);
  if (n > 0) {
    if ((size_t)n >= sizeof line) n = sizeof line - 1;
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
  }
}

/* Formats a pointer as the "0x…" string the log promises ("0x0" for NULL). */
#define PTRSTR(buf, p) (snprintf((buf), sizeof(buf), "\"0x%lx\"", (unsigned long)(uintptr_t)(p)), (buf))

#endif
