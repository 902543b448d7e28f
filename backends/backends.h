/* cherryq: entry points every backend provides to the registry (core/backend.c).
 * A backend that is not built provides the same functions from
 * backends/stubs.c, reporting "not built". */
#ifndef CQ_BACKENDS_H
#define CQ_BACKENDS_H

#include "cq_tensor.h"

/* CPU: always built (backends/cpu.c). */
int cq_cpu_backend_create(cq_backend **out);
int cq_cpu_backend_devices(cq_device_info *devs, int max);

/* Vulkan (backends/vulkan/). probe fills n_devices/reason without creating
 * a device; devices lists usable devices; create opens device `device`
 * (-1 = default: CQ_VULKAN_DEVICE / CQ_DEVICE env, else the first discrete
 * GPU, else the first device). */
int cq_vulkan_probe(cq_backend_info *info);
int cq_vulkan_devices(cq_device_info *devs, int max);
int cq_vulkan_backend_create(cq_backend **out, int device);

/* CUDA (backends/cuda/). */
int cq_cuda_probe(cq_backend_info *info);
int cq_cuda_devices(cq_device_info *devs, int max);
int cq_cuda_backend_create(cq_backend **out, int device);

#endif
