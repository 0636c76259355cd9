/* A library opened with dlopen(RTLD_LOCAL) looking up its own symbol with
 * dlsym(RTLD_DEFAULT, ...), as Python extension modules and plugins do: glibc
 * searches the caller's scope, so an interposed dlsym must keep the caller.
 * Built twice by the test: as liblocal_lookup.so (-DLIB) and as the program. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

#ifdef LIB
int local_lookup_marker(void) { return 42; }
void *local_lookup_find(void) { return dlsym(RTLD_DEFAULT, "local_lookup_marker"); }
#else
int main(int argc, char **argv) {
  void *h = dlopen(argc > 1 ? argv[1] : "./liblocal_lookup.so", RTLD_NOW | RTLD_LOCAL);
  if (!h) { fprintf(stderr, "%s\n", dlerror()); return 2; }
  void *(*find)(void) = (void *(*)(void))dlsym(h, "local_lookup_find");
  void *own = dlsym(h, "local_lookup_marker");
  void *seen = find ? find() : NULL;
  printf("found-own %d\n", seen != NULL && seen == own);
  return seen == own ? 0 : 1;
}
#endif
