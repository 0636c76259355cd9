/* A framework library (a torch/lib-like libtorch_hip stand-in): linked
 * against libamdhip64 by soname, found through its RPATH $ORIGIN; it
 * allocates through its own PLT. */
#include <stddef.h>
typedef int (*unused_t)(void);
extern int hipMalloc(void **ptr, size_t size);
int fw_alloc(void **p, size_t size) { return hipMalloc(p, size); }
