/* cherryq Vulkan backend: instance, physical-device choice, capabilities,
 * logical device, and the registry entry points probe / devices. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#include "backends.h"
#include "vk_internal.h"

#define NO_DEVICE_REASON "no Vulkan device found (is mesa-vulkan-drivers or a GPU driver installed?)"

const char *cq_vk_result_str(VkResult r)
{
    switch (r) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_NOT_READY: return "VK_NOT_READY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_INCOMPLETE: return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_FORMAT_NOT_SUPPORTED: return "VK_ERROR_FORMAT_NOT_SUPPORTED";
    case VK_ERROR_FRAGMENTED_POOL: return "VK_ERROR_FRAGMENTED_POOL";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    default: return "VkResult error";
    }
}

int cq_vk_status(VkResult r)
{
    switch (r) {
    case VK_SUCCESS: return CQ_OK;
    case VK_ERROR_OUT_OF_HOST_MEMORY:
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
    case VK_ERROR_OUT_OF_POOL_MEMORY:
    case VK_ERROR_FRAGMENTED_POOL:
    case VK_ERROR_TOO_MANY_OBJECTS: return CQ_ENOMEM;
    case VK_ERROR_INITIALIZATION_FAILED:
    case VK_ERROR_INCOMPATIBLE_DRIVER: return CQ_ENODEV;
    case VK_ERROR_FEATURE_NOT_PRESENT:
    case VK_ERROR_EXTENSION_NOT_PRESENT: return CQ_ENOTSUP;
    default: return CQ_EIO;
    }
}

/* ------------------------------------------------------------ validation
 *
 * CQ_VULKAN_VALIDATE=1 runs the backend under the Khronos validation layer
 * with synchronization validation on (Debian: vulkan-validationlayers):
 * every error or warning it reports goes to the log as "vulkan validation:
 * ...". Lavapipe runs a missing barrier correctly (it executes dispatches
 * in order); a GPU does not, and the layer sees the hazard on either, so
 * tests/vulkan_validation.sh runs the Vulkan tests this way. */
#define VALIDATION_LAYER "VK_LAYER_KHRONOS_validation"

static VKAPI_ATTR VkBool32 VKAPI_CALL validation_message(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                                         VkDebugUtilsMessageTypeFlagsEXT type,
                                                         const VkDebugUtilsMessengerCallbackDataEXT *d, void *user)
{
    (void)type;
    const cq_vk *vk = user;
    /* Unused bindings all get one placeholder buffer (cq_vk_dispatch). The
     * layer takes a binding the shader could write as written, so it sees
     * hazards on the placeholder between dispatches that never touch it
     * (attention without lse writes nothing to binding 7): not real. */
    if (vk && vk->dummy && d)
        for (uint32_t i = 0; i < d->objectCount; i++)
            if (d->pObjects[i].objectType == VK_OBJECT_TYPE_BUFFER &&
                d->pObjects[i].objectHandle == (uint64_t)vk->dummy->buf)
                return VK_FALSE;
    const char *msg = d && d->pMessage ? d->pMessage : "(no message)";
    if (sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) cq_error("vulkan validation: %s", msg);
    else cq_warn("vulkan validation: %s", msg);
    return VK_FALSE;
}

static const VkDebugUtilsMessengerCreateInfoEXT messenger_info = {
    .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
    .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
    .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                   VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
    .pfnUserCallback = validation_message,
};

static bool want_validation(void)
{
    const char *e = getenv("CQ_VULKAN_VALIDATE");
    return e && *e && strcmp(e, "0");
}

static bool have_layer(const char *name)
{
    uint32_t n = 0;
    bool found = false;
    if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || !n) return false;
    VkLayerProperties *lp = calloc(n, sizeof *lp);
    if (lp && vkEnumerateInstanceLayerProperties(&n, lp) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++) found = !strcmp(lp[i].layerName, name);
    free(lp);
    return found;
}

/* ------------------------------------------------------------ instance */

/* validate: CQ_VULKAN_VALIDATE is set (the layer and the messenger when
 * they exist; *validating says whether they do) */
static VkResult create_instance(VkInstance *out, bool validate, bool *validating)
{
    uint32_t next = 0;
    VkExtensionProperties *exts = NULL;
    bool portability = false, debug_utils = false;
    if (vkEnumerateInstanceExtensionProperties(NULL, &next, NULL) == VK_SUCCESS && next) {
        exts = calloc(next, sizeof *exts);
        if (exts && vkEnumerateInstanceExtensionProperties(NULL, &next, exts) == VK_SUCCESS)
            for (uint32_t i = 0; i < next; i++) {
                if (!strcmp(exts[i].extensionName, "VK_KHR_portability_enumeration")) portability = true;
                if (!strcmp(exts[i].extensionName, VK_EXT_DEBUG_UTILS_EXTENSION_NAME)) debug_utils = true;
            }
        free(exts);
    }
    if (validating) *validating = false;
    if (validate && !have_layer(VALIDATION_LAYER)) {
        cq_warn("vulkan: CQ_VULKAN_VALIDATE is set but the validation layer " VALIDATION_LAYER
                " is not installed (Debian: vulkan-validationlayers); running without it");
        validate = false;
    }
    /* the layer provides VK_EXT_debug_utils itself */
    if (validate) debug_utils = true;
    const char *ext_names[2];
    uint32_t n_ext = 0;
    if (portability) ext_names[n_ext++] = "VK_KHR_portability_enumeration";
    if (validate && debug_utils) ext_names[n_ext++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    const char *layers[1] = { VALIDATION_LAYER };
    static const VkValidationFeatureEnableEXT enables[1] = {
        VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT,
    };
    VkDebugUtilsMessengerCreateInfoEXT mi = messenger_info;   /* messages of vkCreateInstance itself */
    VkValidationFeaturesEXT vf = {
        .sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
        .pNext = &mi,
        .enabledValidationFeatureCount = 1,
        .pEnabledValidationFeatures = enables,
    };
    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "cherryq",
        .applicationVersion = 1,
        .pEngineName = "cherryq",
        .engineVersion = 1,
        .apiVersion = VK_API_VERSION_1_1,
    };
    VkInstanceCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pNext = validate ? &vf : NULL,
        .pApplicationInfo = &app,
        .enabledLayerCount = validate ? 1 : 0,
        .ppEnabledLayerNames = validate ? layers : NULL,
        .enabledExtensionCount = n_ext,
        .ppEnabledExtensionNames = n_ext ? ext_names : NULL,
        .flags = portability ? 0x00000001 /* VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR */ : 0,
    };
    VkResult vr = vkCreateInstance(&ci, NULL, out);
    if (vr == VK_SUCCESS && validating) *validating = validate;
    return vr;
}

/* Usable devices: Vulkan >= 1.1 with a compute queue. */
static int usable_devices(VkInstance inst, VkPhysicalDevice *devs, int max)
{
    uint32_t n = 0;
    if (vkEnumeratePhysicalDevices(inst, &n, NULL) != VK_SUCCESS || n == 0) return 0;
    VkPhysicalDevice *all = calloc(n, sizeof *all);
    if (!all) return 0;
    if (vkEnumeratePhysicalDevices(inst, &n, all) < 0) {
        free(all);
        return 0;
    }
    int k = 0;
    for (uint32_t i = 0; i < n; i++) {
        VkPhysicalDeviceProperties p;
        vkGetPhysicalDeviceProperties(all[i], &p);
        if (p.apiVersion < VK_API_VERSION_1_1) {
            cq_debug("vulkan: skipping %s (Vulkan %u.%u < 1.1)", p.deviceName,
                     VK_API_VERSION_MAJOR(p.apiVersion), VK_API_VERSION_MINOR(p.apiVersion));
            continue;
        }
        uint32_t nq = 0;
        vkGetPhysicalDeviceQueueFamilyProperties(all[i], &nq, NULL);
        VkQueueFamilyProperties qp[16];
        if (nq > 16) nq = 16;
        vkGetPhysicalDeviceQueueFamilyProperties(all[i], &nq, qp);
        bool compute = false;
        for (uint32_t q = 0; q < nq; q++)
            if (qp[q].queueFlags & VK_QUEUE_COMPUTE_BIT) compute = true;
        if (!compute) continue;
        if (k < max) devs[k] = all[i];
        k++;
    }
    free(all);
    return k < max ? k : max;
}

static void query_caps(VkPhysicalDevice pd, cq_vk_caps *c, VkPhysicalDeviceMemoryProperties *mp)
{
    memset(c, 0, sizeof *c);
    VkPhysicalDeviceSubgroupProperties sg = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES };
    VkPhysicalDeviceProperties2 p2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &sg };
    vkGetPhysicalDeviceProperties2(pd, &p2);
    const VkPhysicalDeviceProperties *p = &p2.properties;
    snprintf(c->name, sizeof c->name, "%s", p->deviceName);
    c->type = p->deviceType;
    c->vendor_id = p->vendorID;
    c->device_id = p->deviceID;
    c->api_version = p->apiVersion;
    c->driver_version = p->driverVersion;
    c->subgroup_size = sg.subgroupSize ? sg.subgroupSize : 1;
    c->subgroup_arith = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                        (sg.supportedOperations & VK_SUBGROUP_FEATURE_BASIC_BIT) &&
                        (sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
    c->max_sb_range = p->limits.maxStorageBufferRange;
    c->min_sb_align = p->limits.minStorageBufferOffsetAlignment;
    c->max_wg_inv = p->limits.maxComputeWorkGroupInvocations;
    for (int i = 0; i < 3; i++) {
        c->max_wg_size[i] = p->limits.maxComputeWorkGroupSize[i];
        c->max_wg_count[i] = p->limits.maxComputeWorkGroupCount[i];
    }
    c->max_shared = p->limits.maxComputeSharedMemorySize;
    c->max_push = p->limits.maxPushConstantsSize;

    /* 16-bit features: Vulkan11/12 feature structs on 1.2+, else the 1.1 one */
    VkPhysicalDeviceFeatures2 f2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2 };
    VkPhysicalDeviceVulkan11Features f11 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES };
    VkPhysicalDeviceVulkan12Features f12 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES };
    VkPhysicalDevice16BitStorageFeatures s16 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES };
    if (p->apiVersion >= VK_API_VERSION_1_2) {
        f2.pNext = &f11;
        f11.pNext = &f12;
    } else {
        f2.pNext = &s16;
    }
    vkGetPhysicalDeviceFeatures2(pd, &f2);
    if (p->apiVersion >= VK_API_VERSION_1_2) {
        c->storage16 = f11.storageBuffer16BitAccess;
        c->fp16 = f12.shaderFloat16;
    } else {
        c->storage16 = s16.storageBuffer16BitAccess;
    }
    c->fp64 = f2.features.shaderFloat64;

    vkGetPhysicalDeviceMemoryProperties(pd, mp);
    for (uint32_t h = 0; h < mp->memoryHeapCount; h++)
        if ((mp->memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
            mp->memoryHeaps[h].size > c->heap_device)
            c->heap_device = mp->memoryHeaps[h].size;
    for (uint32_t t = 0; t < mp->memoryTypeCount; t++) {
        VkMemoryPropertyFlags f = mp->memoryTypes[t].propertyFlags;
        VkDeviceSize hs = mp->memoryHeaps[mp->memoryTypes[t].heapIndex].size;
        if ((f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) && hs > c->heap_host) c->heap_host = hs;
        /* UMA: the largest device-local heap is host-visible + coherent (not
         * just a small BAR window of a discrete GPU) */
        if ((f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) && (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) &&
            (f & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT) && hs == c->heap_device)
            c->uma = true;
    }
    if (c->heap_device == 0) c->heap_device = c->heap_host;
}

static const char *type_name(VkPhysicalDeviceType t)
{
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete GPU";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated GPU";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual GPU";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "CPU";
    default: return "other";
    }
}

void cq_vk_caps_describe(const cq_vk_caps *c, char *buf, size_t n)
{
    snprintf(buf, n,
             "%s, Vulkan %u.%u, subgroup %u%s, fp16 %s, 16-bit storage %s, fp64 %s, "
             "maxStorageBufferRange %u MiB, workgroup <= %u invocations, shared %u KiB, "
             "device memory %llu MiB%s",
             type_name(c->type), VK_API_VERSION_MAJOR(c->api_version), VK_API_VERSION_MINOR(c->api_version),
             c->subgroup_size, c->subgroup_arith ? " (arithmetic)" : "", c->fp16 ? "yes" : "no",
             c->storage16 ? "yes" : "no", c->fp64 ? "yes" : "no", c->max_sb_range >> 20, c->max_wg_inv,
             c->max_shared >> 10, (unsigned long long)(c->heap_device >> 20), c->uma ? " (host-visible)" : "");
}

/* ------------------------------------------------------------ selection */

static bool all_digits(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return false;
    return true;
}

static bool contains_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i])) i++;
        if (i == n) return true;
    }
    return n == 0;
}

static int type_rank(VkPhysicalDeviceType t)
{
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 0;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 1;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return 4;
    default: return 3;
    }
}

/* Index into devs[0..n) for `device` / env, or -1 with a message. */
static int choose(VkPhysicalDevice *devs, int n, int device)
{
    cq_vk_caps c;
    VkPhysicalDeviceMemoryProperties mp;
    if (device >= 0) {
        if (device >= n) {
            cq_error("vulkan: device %d requested but only %d Vulkan device%s found", device, n,
                     n == 1 ? "" : "s");
            return -1;
        }
        return device;
    }
    const char *env = getenv("CQ_VULKAN_DEVICE");
    const char *var = "CQ_VULKAN_DEVICE";
    if (!env || !*env) {
        env = getenv("CQ_DEVICE");
        var = "CQ_DEVICE";
    }
    if (env && *env) {
        if (all_digits(env)) {
            int i = atoi(env);
            if (i >= n) {
                cq_error("vulkan: %s=%s but only %d Vulkan device%s found", var, env, n, n == 1 ? "" : "s");
                return -1;
            }
            return i;
        }
        for (int i = 0; i < n; i++) {
            query_caps(devs[i], &c, &mp);
            if (contains_ci(c.name, env)) return i;
        }
        cq_error("vulkan: %s=%s matches no Vulkan device name", var, env);
        return -1;
    }
    int best = 0, best_rank = 99;
    for (int i = 0; i < n; i++) {
        query_caps(devs[i], &c, &mp);
        int r = type_rank(c.type);
        if (r < best_rank) {
            best_rank = r;
            best = i;
        }
    }
    return best;
}

/* ------------------------------------------------------------ open / close */

#define MAX_DEVS 16

int cq_vk_open(cq_vk *vk, int device)
{
    bool validating = false;
    VkResult vr = create_instance(&vk->inst, want_validation(), &validating);
    if (vr != VK_SUCCESS) {
        vk->inst = VK_NULL_HANDLE;
        cq_error("vulkan: cannot create an instance (%s): " NO_DEVICE_REASON, cq_vk_result_str(vr));
        return CQ_ENODEV;
    }
    if (validating) {
        PFN_vkCreateDebugUtilsMessengerEXT create_messenger =
            (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(vk->inst, "vkCreateDebugUtilsMessengerEXT");
        VkDebugUtilsMessengerCreateInfoEXT mi = messenger_info;
        mi.pUserData = vk;
        if (!create_messenger || create_messenger(vk->inst, &mi, NULL, &vk->messenger) != VK_SUCCESS) {
            vk->messenger = VK_NULL_HANDLE;
            cq_warn("vulkan: CQ_VULKAN_VALIDATE: cannot create the debug messenger; validation messages go to the "
                    "layer's own output");
        } else {
            cq_log(CQ_LOG_INFO, "vulkan: validation layer on, with synchronization validation");
        }
    }
    VkPhysicalDevice devs[MAX_DEVS];
    int n = usable_devices(vk->inst, devs, MAX_DEVS);
    if (n == 0) {
        cq_error("vulkan: " NO_DEVICE_REASON);
        return CQ_ENODEV;
    }
    int idx = choose(devs, n, device);
    if (idx < 0) return CQ_ENODEV;
    vk->index = idx;
    vk->phys = devs[idx];
    query_caps(vk->phys, &vk->caps, &vk->memprops);

    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(vk->phys, &nq, NULL);
    VkQueueFamilyProperties qp[16];
    if (nq > 16) nq = 16;
    vkGetPhysicalDeviceQueueFamilyProperties(vk->phys, &nq, qp);
    /* a compute family; prefer one without graphics (a dedicated compute queue) */
    int fam = -1;
    for (uint32_t q = 0; q < nq; q++)
        if ((qp[q].queueFlags & VK_QUEUE_COMPUTE_BIT) && !(qp[q].queueFlags & VK_QUEUE_GRAPHICS_BIT)) {
            fam = (int)q;
            break;
        }
    for (uint32_t q = 0; q < nq && fam < 0; q++)
        if (qp[q].queueFlags & VK_QUEUE_COMPUTE_BIT) fam = (int)q;
    vk->qfam = (uint32_t)fam;

    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = vk->qfam,
        .queueCount = 1,
        .pQueuePriorities = &prio,
    };
    /* No optional feature is enabled: the shaders need plain Vulkan 1.1
     * compute (16-bit data is unpacked from 32-bit words). */
    VkDeviceCreateInfo dci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &qci,
    };
    vr = vkCreateDevice(vk->phys, &dci, NULL, &vk->dev);
    if (vr != VK_SUCCESS) {
        vk->dev = VK_NULL_HANDLE;
        cq_error("vulkan: cannot create a logical device on %s: %s", vk->caps.name, cq_vk_result_str(vr));
        return cq_vk_status(vr);
    }
    vkGetDeviceQueue(vk->dev, vk->qfam, 0, &vk->queue);
    if (vk->caps.max_wg_inv < 64) {
        cq_error("vulkan: %s allows only %u invocations per workgroup (64 needed)", vk->caps.name,
                 vk->caps.max_wg_inv);
        return CQ_ENOTSUP;
    }
    return CQ_OK;
}

void cq_vk_close(cq_vk *vk)
{
    if (vk->dev) vkDestroyDevice(vk->dev, NULL);
    if (vk->messenger) {
        PFN_vkDestroyDebugUtilsMessengerEXT destroy_messenger =
            (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(vk->inst, "vkDestroyDebugUtilsMessengerEXT");
        if (destroy_messenger) destroy_messenger(vk->inst, vk->messenger, NULL);
        vk->messenger = VK_NULL_HANDLE;
    }
    if (vk->inst) vkDestroyInstance(vk->inst, NULL);
    vk->dev = VK_NULL_HANDLE;
    vk->inst = VK_NULL_HANDLE;
}

/* ------------------------------------------------------------ registry */

int cq_vulkan_probe(cq_backend_info *info)
{
    CQ_CHECK_ARG(info, CQ_EINVAL);
    info->n_devices = 0;
    info->n_hw_devices = 0;
    VkInstance inst;
    VkResult vr = create_instance(&inst, false, NULL);
    if (vr != VK_SUCCESS) {
        snprintf(info->reason, sizeof info->reason, "%s", NO_DEVICE_REASON);
        return CQ_OK;
    }
    VkPhysicalDevice devs[MAX_DEVS];
    int n = usable_devices(inst, devs, MAX_DEVS);
    for (int i = 0; i < n; i++) {
        VkPhysicalDeviceProperties p;
        vkGetPhysicalDeviceProperties(devs[i], &p);
        if (p.deviceType != VK_PHYSICAL_DEVICE_TYPE_CPU) info->n_hw_devices++;
    }
    info->n_devices = n;
    if (n == 0) snprintf(info->reason, sizeof info->reason, "%s", NO_DEVICE_REASON);
    vkDestroyInstance(inst, NULL);
    return CQ_OK;
}

int cq_vulkan_devices(cq_device_info *out, int max)
{
    CQ_CHECK_ARG(out || max == 0, CQ_EINVAL);
    VkInstance inst;
    if (create_instance(&inst, false, NULL) != VK_SUCCESS) return 0;
    VkPhysicalDevice devs[MAX_DEVS];
    int n = usable_devices(inst, devs, MAX_DEVS);
    int k = n < max ? n : max;
    for (int i = 0; i < k; i++) {
        cq_vk_caps c;
        VkPhysicalDeviceMemoryProperties mp;
        query_caps(devs[i], &c, &mp);
        memset(&out[i], 0, sizeof out[i]);
        snprintf(out[i].name, sizeof out[i].name, "%s", c.name);
        out[i].mem_total = (size_t)c.heap_device;
        cq_vk_caps_describe(&c, out[i].features, sizeof out[i].features);
    }
    vkDestroyInstance(inst, NULL);
    return k;
}
