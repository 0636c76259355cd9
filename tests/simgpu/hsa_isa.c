/*
 * simgpu's ISA queries (libhsa-runtime64.so.1): what rocminfo asks of each
 * agent. A GPU agent has one ISA, named as ROCr names it:
 * "amdgcn-amd-amdhsa--<gfx name>" plus ":xnack-" where the target lists the
 * xnack feature (gfx1010–gfx1013, ROCR-Runtime isa.cpp); a CPU agent has none.
 * hsa_isa_t handles are 1 + the agent's index in hsa_iterate_agents order.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "calllog.h"
#include "simgpu.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_ISAS 64

struct find { hsa_agent_t agent; uint64_t index; int found; };

static hsa_status_t find_cb(hsa_agent_t a, void *data) {
  struct find *f = data;
  if (a.handle == f->agent.handle) { f->found = 1; return HSA_STATUS_INFO_BREAK; }
  f->index++;
  return HSA_STATUS_SUCCESS;
}

struct nth { uint64_t want, at; hsa_agent_t agent; int found; };

static hsa_status_t nth_cb(hsa_agent_t a, void *data) {
  struct nth *n = data;
  if (n->at++ == n->want) { n->agent = a; n->found = 1; return HSA_STATUS_INFO_BREAK; }
  return HSA_STATUS_SUCCESS;
}

static int isa_name(hsa_agent_t agent, char *out, size_t n) {
  char name[64] = {0};
  if (hsa_agent_get_info(agent, HSA_AGENT_INFO_NAME, name) != HSA_STATUS_SUCCESS) return -1;
  int rdna1 = !strncmp(name, "gfx101", 6);
  snprintf(out, n, "amdgcn-amd-amdhsa--%s%s", name, rdna1 ? ":xnack-" : "");
  return 0;
}

EXPORT hsa_status_t hsa_agent_iterate_isas(hsa_agent_t agent, hsa_status_t (*cb)(hsa_isa_t, void *), void *data) {
  char hs[32];
  hsa_status_t st = HSA_STATUS_SUCCESS;
  uint32_t type = 0;
  struct find f = {agent, 0, 0};
  if (!cb) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else if ((st = hsa_agent_get_info(agent, HSA_AGENT_INFO_DEVICE, &type)) != HSA_STATUS_SUCCESS) {
  } else if (type == HSA_DEVICE_TYPE_GPU) {
    hsa_iterate_agents(find_cb, &f);
    if (!f.found) st = HSA_STATUS_ERROR_INVALID_AGENT;
    else st = cb((hsa_isa_t){f.index + 1}, data);
  }
  calllog("hsa", "hsa_agent_iterate_isas", st, "\"agent\":%s", PTRSTR(hs, agent.handle));
  return st;
}

EXPORT hsa_status_t hsa_isa_get_info_alt(hsa_isa_t isa, uint32_t attribute, void *value) {
  hsa_status_t st = HSA_STATUS_SUCCESS;
  struct nth n = {isa.handle - 1, 0, {0}, 0};
  char name[96];
  if (!value) st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  else if (hsa_iterate_agents(nth_cb, &n) == HSA_STATUS_ERROR_NOT_INITIALIZED) st = HSA_STATUS_ERROR_NOT_INITIALIZED;
  else if (!isa.handle || !n.found || isa_name(n.agent, name, sizeof name)) st = 0x100F; /* HSA_STATUS_ERROR_INVALID_ISA */
  else if (attribute == HSA_ISA_INFO_NAME_LENGTH) *(uint32_t *)value = (uint32_t)strlen(name) + 1;
  else if (attribute == HSA_ISA_INFO_NAME) memcpy(value, name, strlen(name) + 1);
  else st = HSA_STATUS_ERROR_INVALID_ARGUMENT;
  calllog("hsa", "hsa_isa_get_info_alt", st, "\"isa\":%lu,\"attribute\":%u", (unsigned long)isa.handle, attribute);
  return st;
}
