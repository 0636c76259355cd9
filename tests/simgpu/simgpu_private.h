/* Between the two simulated libraries only (version node SIMGPU_PRIVATE). */
#ifndef SIMGPU_PRIVATE_H
#define SIMGPU_PRIVATE_H
#include <stddef.h>
#include <stdint.h>
#include "simgpu.h"

/* Fault rules (FAULT-MODEL.md): SIMGPU_FAULT_RULES names them. */
#define RULE_PAGE_NOT_PRESENT 0x01u
#define RULE_SEED_COHERENT 0x02u
#define RULE_OVERRIDE_FAMILY 0x04u
#define RULE_INTERNAL_COHERENCE 0x08u
#define RULE_OVERRIDE_RDNA1_AS_RDNA2 0x10u
/* Only rules with a source are on by default (FAULT-MODEL.md). */
#define SIMGPU_RULES_DEFAULT (RULE_PAGE_NOT_PRESENT | RULE_OVERRIDE_FAMILY)
#define SIMGPU_RULES_ALL \
  (SIMGPU_RULES_DEFAULT | RULE_SEED_COHERENT | RULE_INTERNAL_COHERENCE | RULE_OVERRIDE_RDNA1_AS_RDNA2)

enum { SIMGPU_LAUNCH_OK = 0, SIMGPU_LAUNCH_FAULTED = 1, SIMGPU_LAUNCH_DEAD = 2, SIMGPU_LAUNCH_BAD = 3,
       SIMGPU_LAUNCH_SKIPPED_UNMAPPED = 4 };
/* Or'ed into simgpu_hsa_launch's `write`: return without waiting for the kernel. */
#define SIMGPU_LAUNCH_NOWAIT 0x100

unsigned simgpu_fault_rules(void);
int simgpu_hsa_launch(hsa_agent_t agent, const void *addr, size_t bytes, int write);
int simgpu_hsa_queues_dead(void);
uint32_t simgpu_hsa_alloc_flags(const void *ptr);
int simgpu_hsa_range_state(const void *ptr, size_t n);
int simgpu_hsa_svm_forget(const void *ptr, size_t *size);
int simgpu_hsa_rocm_version(void);
void simgpu_hsa_wait_idle(void);
size_t simgpu_hsa_mapped_run(hsa_agent_t agent, const void *addr, size_t cap);
uint64_t simgpu_hsa_committed(hsa_agent_t agent);
#endif
