/* A librocm_fix_engine.so planted in a folder a program changes into:
 * rocm-fix must never load it (tests/hostile.rs). Loading it says so. */
#include <unistd.h>

__attribute__((constructor)) static void planted(void) {
  static const char msg[] = "PLANTED ENGINE LOADED\n";
  ssize_t r = write(2, msg, sizeof msg - 1);
  (void)r;
}
