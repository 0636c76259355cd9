/*
 * simwork: a scriptable HIP/HSA client for the tests. Each argument is one
 * step; the program prints one line per step ("<step> -> <result>") and
 * exits 0 when every step returned success, 1 otherwise.
 *   malloc:SIZE  hostmalloc:SIZE:FLAGS  hostalloc:SIZE:FLAGS  managed:SIZE:FLAGS
 *   ext:SIZE:FLAGS  hsa-alloc:AGENT:POOLFLAGS:SIZE   (buffers are numbered from 0)
 *   read:BUF:OFFSET:BYTES  write:BUF:OFFSET:BYTES  advise:BUF:ADVICE  free:BUF
 *   hostfree:BUF  hsa-free:BUF  memset:BUF:BYTES  sync  setdev:N  count  arch
 *   lasterror  (hipGetLastError, which also clears it)
 *   svm:SIZE  (the application's own SVM range: mmap, then
 *              hsa_amd_svm_attributes_set GLOBAL_FLAG fine-grained and
 *              AGENT_ACCESSIBLE for agent 1, the first GPU)
 *   handler:suppress|pass  (registers a system event handler; prints events and
 *                           whether it runs on the main thread)
 *   readasync:BUF:OFFSET:BYTES  (launch without waiting; sync waits)
 *   info  (hipMemGetInfo: "free F total T")
 *   pitch:WIDTH:HEIGHT  async:SIZE  freeasync:BUF  trimpool
 *   vmm:SIZE  (hipMemCreate + hipMemAddressReserve + hipMemMap + hipMemSetAccess)
 *   mapped:BUF:OFFSET  (bytes the GPU has mapped from there on, up to 64 MiB)
 *   offset:BUF:BUF  (the second buffer's address minus the first's)
 *   align:BUF  (the buffer's address modulo 2 MiB)
 *   range:BUF:OFFSET  (hipMemGetAddressRange: "range base+B size S")
 *   array:WIDTH:HEIGHT  (hipMallocArray of 32-bit floats; the buffer is its data)
 *   poolasync:SIZE  (hipMemPoolCreate on device 0, then hipMallocFromPoolAsync)
 *   sink:BUF:OFFSET:SIZE  (hsa_amd_vmem_*: reserve SIZE bytes at BUF+OFFSET, or
 *                          anywhere if taken, map VRAM there for the first GPU;
 *                          prints "sink at-hint|elsewhere")
 *   early-handler  (registers before hsa_init)  init  hsa-init
 * Numbers accept 0x prefixes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include "simgpu.h"

static void *bufs[256];
static size_t nbufs;

static unsigned long long num(const char *s) { return strtoull(s, NULL, 0); }

static pthread_t main_thread;
static hsa_status_t on_event(const hsa_amd_event_t *ev, void *data) {
  printf("event type=%u addr=0x%llx mask=0x%x %s\n", ev->event_type,
         (unsigned long long)ev->memory_fault.virtual_address, ev->memory_fault.fault_reason_mask,
         pthread_equal(pthread_self(), main_thread) ? "main-thread" : "event-thread");
  fflush(stdout);
  return data ? HSA_STATUS_SUCCESS : HSA_STATUS_ERROR;
}

struct pool_query { uint32_t want; hsa_amd_memory_pool_t found; };
static hsa_status_t find_pool(hsa_amd_memory_pool_t p, void *d) {
  struct pool_query *q = d;
  uint32_t f = 0;
  hsa_amd_memory_pool_get_info(p, HSA_AMD_MEMORY_POOL_INFO_GLOBAL_FLAGS, &f);
  if (f == q->want) { q->found = p; return HSA_STATUS_INFO_BREAK; }
  return HSA_STATUS_SUCCESS;
}
struct agent_query { int want; int seen; hsa_agent_t found; };
static hsa_status_t find_agent(hsa_agent_t a, void *d) {
  struct agent_query *q = d;
  if (q->seen++ == q->want) { q->found = a; return HSA_STATUS_INFO_BREAK; }
  return HSA_STATUS_SUCCESS;
}

int main(int argc, char **argv) {
  int failed = 0;
  setvbuf(stdout, NULL, _IOLBF, 0);
  main_thread = pthread_self();
  for (int i = 1; i < argc; i++) {
    char step[256];
    snprintf(step, sizeof step, "%s", argv[i]);
    char *f[5] = {0};
    int nf = 0;
    for (char *save = NULL, *t = strtok_r(step, ":", &save); t && nf < 5; t = strtok_r(NULL, ":", &save)) f[nf++] = t;
    long r = 0;
    void *p = NULL;
    const char *op = f[0] ? f[0] : "";
#define ARG(k) (nf > (k) ? num(f[k]) : 0)
    if (!strcmp(op, "init")) r = hipInit(0);
    else if (!strcmp(op, "hsa-init")) r = hsa_init();
    else if (!strcmp(op, "malloc")) { r = hipMalloc(&p, ARG(1)); if (!r) bufs[nbufs++] = p; }
    else if (!strcmp(op, "hostmalloc")) { r = hipHostMalloc(&p, ARG(1), (unsigned)ARG(2)); if (!r) bufs[nbufs++] = p; }
    else if (!strcmp(op, "hostalloc")) { r = hipHostAlloc(&p, ARG(1), (unsigned)ARG(2)); if (!r) bufs[nbufs++] = p; }
    else if (!strcmp(op, "managed")) { r = hipMallocManaged(&p, ARG(1), nf > 2 ? (unsigned)ARG(2) : 1); if (!r) bufs[nbufs++] = p; }
    else if (!strcmp(op, "ext")) { r = hipExtMallocWithFlags(&p, ARG(1), (unsigned)ARG(2)); if (!r) bufs[nbufs++] = p; }
    else if (!strcmp(op, "hsa-alloc")) {
      struct agent_query aq = {(int)ARG(1), 0, {0}};
      hsa_iterate_agents(find_agent, &aq);
      struct pool_query pq = {(uint32_t)ARG(2), {0}};
      if (aq.found.handle) hsa_amd_agent_iterate_memory_pools(aq.found, find_pool, &pq);
      r = pq.found.handle ? hsa_amd_memory_pool_allocate(pq.found, ARG(3), 0, &p) : HSA_STATUS_ERROR_INVALID_ARGUMENT;
      if (!r && ARG(1) == 0) { /* host memory: let the first GPU reach it, as an HSA application does */
        struct agent_query gq = {1, 0, {0}};
        hsa_iterate_agents(find_agent, &gq);
        hsa_amd_agents_allow_access(1, &gq.found, NULL, p);
      }
      if (!r) bufs[nbufs++] = p;
    }
    else if (!strcmp(op, "svm")) {
      struct agent_query aq = {1, 0, {0}};
      hsa_init();
      hsa_iterate_agents(find_agent, &aq);
      p = mmap(NULL, ARG(1), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      hsa_amd_svm_attribute_pair_t attrs[2] = {{HSA_AMD_SVM_ATTRIB_GLOBAL_FLAG, HSA_AMD_SVM_GLOBAL_FLAG_FINE_GRAINED},
                                               {HSA_AMD_SVM_ATTRIB_AGENT_ACCESSIBLE, aq.found.handle}};
      r = hsa_amd_svm_attributes_set(p, ARG(1), attrs, 2);
      if (!r) bufs[nbufs++] = p;
    }
    else if (!strcmp(op, "read")) r = simgpuLaunchRead(bufs[ARG(1)], ARG(2), ARG(3));
    else if (!strcmp(op, "readasync")) r = simgpuLaunchReadAsync(bufs[ARG(1)], ARG(2), ARG(3));
    else if (!strcmp(op, "info")) {
      size_t fr = 0, to = 0;
      r = hipMemGetInfo(&fr, &to);
      printf("free %zu total %zu\n", fr, to);
    }
    else if (!strcmp(op, "pitch")) {
      size_t pitch = 0;
      r = hipMallocPitch(&p, &pitch, ARG(1), ARG(2));
      if (!r) { bufs[nbufs++] = p; printf("pitch %zu\n", pitch); }
    }
    else if (!strcmp(op, "async")) { r = hipMallocAsync(&p, ARG(1), NULL); if (!r) bufs[nbufs++] = p; }
    else if (!strcmp(op, "freeasync")) r = hipFreeAsync(bufs[ARG(1)], NULL);
    else if (!strcmp(op, "trimpool")) {
      hipMemPool_t mp;
      r = hipDeviceGetDefaultMemPool(&mp, 0);
      if (!r) r = hipMemPoolTrimTo(mp, 0);
    }
    else if (!strcmp(op, "vmm")) {
      hipMemAllocationProp prop = {hipMemAllocationTypePinned, 0, {hipMemLocationTypeDevice, 0}, NULL, {0, 0, 0}};
      hipMemGenericAllocationHandle_t h;
      hipMemAccessDesc acc = {{hipMemLocationTypeDevice, 0}, hipMemAccessFlagsProtReadWrite};
      r = hipMemCreate(&h, ARG(1), &prop, 0);
      if (!r) r = hipMemAddressReserve(&p, ARG(1), 0, NULL, 0);
      if (!r) r = hipMemMap(p, ARG(1), 0, h, 0);
      if (!r) r = hipMemSetAccess(p, ARG(1), &acc, 1);
      if (!r) bufs[nbufs++] = p;
    }
    else if (!strcmp(op, "mapped")) { printf("mapped %zu\n", simgpuMappedBytes((char *)bufs[ARG(1)] + ARG(2), 64u << 20)); }
    else if (!strcmp(op, "offset")) { printf("offset %lld\n", (long long)((char *)bufs[ARG(2)] - (char *)bufs[ARG(1)])); }
    else if (!strcmp(op, "align")) { printf("align 0x%lx\n", (unsigned long)((uintptr_t)bufs[ARG(1)] & 0x1fffff)); }
    else if (!strcmp(op, "sink")) {
      struct agent_query aq = {1, 0, {0}};
      hsa_iterate_agents(find_agent, &aq);
      struct pool_query pq = {HSA_AMD_MEMORY_POOL_GLOBAL_FLAG_COARSE_GRAINED, {0}};
      hsa_amd_agent_iterate_memory_pools(aq.found, find_pool, &pq);
      char *want = (char *)bufs[ARG(1)] + ARG(2);
      hsa_amd_vmem_alloc_handle_t h;
      hsa_amd_memory_access_desc_t acc = {HSA_ACCESS_PERMISSION_RW, aq.found};
      r = hsa_amd_vmem_handle_create(pq.found, ARG(3), MEMORY_TYPE_PINNED, 0, &h);
      if (!r) r = hsa_amd_vmem_address_reserve(&p, ARG(3), (uint64_t)(uintptr_t)want, 0);
      if (!r) r = hsa_amd_vmem_map(p, ARG(3), 0, h, 0);
      if (!r) r = hsa_amd_vmem_set_access(p, ARG(3), &acc, 1);
      if (!r) printf("sink %s\n", p == want ? "at-hint" : "elsewhere");
    }
    else if (!strcmp(op, "array")) {
      hipChannelFormatDesc desc = {32, 0, 0, 0, 2};
      hipArray_t a = NULL;
      r = hipMallocArray(&a, &desc, ARG(1), ARG(2), 0);
      if (!r) bufs[nbufs++] = a->data;
    }
    else if (!strcmp(op, "poolasync")) {
      hipMemPoolProps props;
      memset(&props, 0, sizeof props);
      props.allocType = hipMemAllocationTypePinned;
      props.location.type = hipMemLocationTypeDevice;
      hipMemPool_t mp = NULL;
      r = hipMemPoolCreate(&mp, &props);
      if (!r) r = hipMallocFromPoolAsync(&p, ARG(1), mp, NULL);
      if (!r) bufs[nbufs++] = p;
    }
    else if (!strcmp(op, "range")) {
      void *base = NULL;
      size_t size = 0;
      r = hipMemGetAddressRange(&base, &size, (char *)bufs[ARG(1)] + ARG(2));
      printf("range base+%lld size %zu\n", (long long)((char *)base - (char *)bufs[ARG(1)]), size);
    }
    else if (!strcmp(op, "write")) r = simgpuLaunchWrite(bufs[ARG(1)], ARG(2), ARG(3));
    else if (!strcmp(op, "memset")) r = hipMemset(bufs[ARG(1)], 0x5a, ARG(2));
    else if (!strcmp(op, "advise")) r = hipMemAdvise(bufs[ARG(1)], 4096, (int)ARG(2), 0);
    else if (!strcmp(op, "free")) r = hipFree(bufs[ARG(1)]);
    else if (!strcmp(op, "hostfree")) r = hipHostFree(bufs[ARG(1)]);
    else if (!strcmp(op, "hsa-free")) r = hsa_amd_memory_pool_free(bufs[ARG(1)]);
    else if (!strcmp(op, "sync")) r = hipDeviceSynchronize();
    else if (!strcmp(op, "lasterror")) { printf("last error %d\n", hipGetLastError()); r = 0; }
    else if (!strcmp(op, "setdev")) r = hipSetDevice((int)ARG(1));
    else if (!strcmp(op, "count")) { int n = -1; r = hipGetDeviceCount(&n); printf("devices %d\n", n); }
    else if (!strcmp(op, "arch")) {
      hipDeviceProp_tR0600 prop;
      int d = 0;
      hipGetDevice(&d);
      r = hipGetDevicePropertiesR0600(&prop, d);
      if (!r) printf("arch %s name %s\n", prop.gcnArchName, prop.name);
    }
    else if (!strcmp(op, "handler") || !strcmp(op, "early-handler")) {
      int suppress = nf > 1 && !strcmp(f[1], "suppress");
      if (!strcmp(op, "handler")) hsa_init();
      r = hsa_amd_register_system_event_handler(on_event, suppress ? (void *)1 : NULL);
    }
    else { fprintf(stderr, "simwork: unknown step '%s'\n", argv[i]); return 2; }
    printf("%s -> %ld\n", argv[i], r);
    if (r) failed = 1;
  }
  return failed;
}
