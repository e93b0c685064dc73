/* A Vulkan layer over the real driver (Mesa's lavapipe in CI) for the backend-probe test:
   - every physical device reports itself as a discrete GPU (so automatic selection starts it),
     when FAKE_DISCRETE is set;
   - vkAllocateMemory lets the first FAIL_ALLOC_AFTER allocations through and then fails with
     VK_ERROR_OUT_OF_DEVICE_MEMORY: a device that starts but cannot hold a buffer.
   The Vulkan headers are not installed here, so the few types a layer needs are declared below
   with the layouts of vulkan_core.h and vk_layer.h (interface version 2). */
#include <stdint.h>
#include <string.h>
#include <stddef.h>

typedef int32_t VkResult;
typedef void (*PFN_vkVoidFunction)(void);
typedef struct VkInstance_T *VkInstance;
typedef struct VkPhysicalDevice_T *VkPhysicalDevice;
typedef struct VkDevice_T *VkDevice;
typedef PFN_vkVoidFunction (*PFN_vkGetInstanceProcAddr)(VkInstance, const char *);
typedef PFN_vkVoidFunction (*PFN_vkGetDeviceProcAddr)(VkDevice, const char *);
typedef PFN_vkVoidFunction (*PFN_GetPhysicalDeviceProcAddr)(VkInstance, const char *);

typedef struct { int sType; const void *pNext; } VkBaseIn;

typedef struct VkLayerInstanceLink_ {
    struct VkLayerInstanceLink_ *pNext;
    PFN_vkGetInstanceProcAddr pfnNextGetInstanceProcAddr;
    PFN_GetPhysicalDeviceProcAddr pfnNextGetPhysicalDeviceProcAddr;
} VkLayerInstanceLink;
typedef struct {
    int sType; const void *pNext; int function;
    union { VkLayerInstanceLink *pLayerInfo; void *other; } u;
} VkLayerInstanceCreateInfo;

typedef struct VkLayerDeviceLink_ {
    struct VkLayerDeviceLink_ *pNext;
    PFN_vkGetInstanceProcAddr pfnNextGetInstanceProcAddr;
    PFN_vkGetDeviceProcAddr pfnNextGetDeviceProcAddr;
} VkLayerDeviceLink;
typedef struct {
    int sType; const void *pNext; int function;
    union { VkLayerDeviceLink *pLayerInfo; void *other; } u;
} VkLayerDeviceCreateInfo;

typedef struct {
    int sType; void *pNext; uint32_t loaderLayerInterfaceVersion;
    PFN_vkGetInstanceProcAddr pfnGetInstanceProcAddr;
    PFN_vkGetDeviceProcAddr pfnGetDeviceProcAddr;
    PFN_GetPhysicalDeviceProcAddr pfnGetPhysicalDeviceProcAddr;
} VkNegotiateLayerInterface;

#define LOADER_INSTANCE_CREATE_INFO 47
#define LOADER_DEVICE_CREATE_INFO 48
#define LAYER_LINK_INFO 0

static PFN_vkGetInstanceProcAddr next_gipa;
static VkInstance the_instance;
typedef void (*PFN_Props)(VkPhysicalDevice, void *);
static PFN_Props next_props, next_props2;
static PFN_vkGetDeviceProcAddr next_gdpa;

typedef VkResult (*PFN_CreateInstance)(const void *, const void *, VkInstance *);
typedef VkResult (*PFN_CreateDevice)(VkPhysicalDevice, const void *, const void *, VkDevice *);

#include <stdlib.h>
typedef VkResult (*PFN_Alloc)(VkDevice, const void *, const void *, void *);
static int allocs;
static VkResult fail_alloc(VkDevice d, const void *info, const void *alloc, void *mem) {
    const char *after = getenv("FAIL_ALLOC_AFTER");
    if (after && allocs++ < atoi(after)) {
        PFN_Alloc next = (PFN_Alloc)next_gdpa(d, "vkAllocateMemory");
        return next(d, info, alloc, mem);
    }
    return -2; /* VK_ERROR_OUT_OF_DEVICE_MEMORY */
}

static VkResult create_instance(const VkBaseIn *info, const void *alloc, VkInstance *out) {
    VkLayerInstanceCreateInfo *chain = (VkLayerInstanceCreateInfo *)info->pNext;
    while (chain && !(chain->sType == LOADER_INSTANCE_CREATE_INFO && chain->function == LAYER_LINK_INFO))
        chain = (VkLayerInstanceCreateInfo *)chain->pNext;
    if (!chain) return -3;
    next_gipa = chain->u.pLayerInfo->pfnNextGetInstanceProcAddr;
    chain->u.pLayerInfo = chain->u.pLayerInfo->pNext;
    PFN_CreateInstance next = (PFN_CreateInstance)next_gipa(NULL, "vkCreateInstance");
    VkResult r = next(info, alloc, out);
    if (r == 0) {
        the_instance = *out;
        next_props = (PFN_Props)next_gipa(*out, "vkGetPhysicalDeviceProperties");
        next_props2 = (PFN_Props)next_gipa(*out, "vkGetPhysicalDeviceProperties2");
    }
    return r;
}

static VkResult create_device(VkPhysicalDevice pd, const VkBaseIn *info, const void *alloc, VkDevice *out) {
    VkLayerDeviceCreateInfo *chain = (VkLayerDeviceCreateInfo *)info->pNext;
    while (chain && !(chain->sType == LOADER_DEVICE_CREATE_INFO && chain->function == LAYER_LINK_INFO))
        chain = (VkLayerDeviceCreateInfo *)chain->pNext;
    if (!chain) return -3;
    PFN_vkGetInstanceProcAddr gipa = chain->u.pLayerInfo->pfnNextGetInstanceProcAddr;
    next_gdpa = chain->u.pLayerInfo->pfnNextGetDeviceProcAddr;
    chain->u.pLayerInfo = chain->u.pLayerInfo->pNext;
    PFN_CreateDevice next = (PFN_CreateDevice)gipa(NULL, "vkCreateDevice");
    return next(pd, info, alloc, out);
}

/* VkPhysicalDeviceProperties.deviceType is at byte 16; in ...Properties2 the properties start
   after sType, padding and pNext (16 bytes). 2 = VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU. */
static void props(VkPhysicalDevice pd, void *out) {
    next_props(pd, out);
    *(int32_t *)((char *)out + 16) = 2;
}
static void props2(VkPhysicalDevice pd, void *out) {
    next_props2(pd, out);
    *(int32_t *)((char *)out + 32) = 2;
}

PFN_vkVoidFunction layer_gdpa(VkDevice d, const char *name) {
    if (!strcmp(name, "vkAllocateMemory")) return (PFN_vkVoidFunction)fail_alloc;
    if (!strcmp(name, "vkGetDeviceProcAddr")) return (PFN_vkVoidFunction)layer_gdpa;
    return next_gdpa(d, name);
}

PFN_vkVoidFunction layer_gipa(VkInstance i, const char *name) {
    if (!strcmp(name, "vkCreateInstance")) return (PFN_vkVoidFunction)create_instance;
    if (!strcmp(name, "vkCreateDevice")) return (PFN_vkVoidFunction)create_device;
    if (!strcmp(name, "vkGetInstanceProcAddr")) return (PFN_vkVoidFunction)layer_gipa;
    if (!strcmp(name, "vkGetDeviceProcAddr")) return (PFN_vkVoidFunction)layer_gdpa;
    if (!strcmp(name, "vkAllocateMemory")) return (PFN_vkVoidFunction)fail_alloc;
    if (getenv("FAKE_DISCRETE")) {
        if (!strcmp(name, "vkGetPhysicalDeviceProperties")) return (PFN_vkVoidFunction)props;
        if (!strcmp(name, "vkGetPhysicalDeviceProperties2") || !strcmp(name, "vkGetPhysicalDeviceProperties2KHR"))
            return (PFN_vkVoidFunction)props2;
    }
    return next_gipa ? next_gipa(i, name) : NULL;
}

VkResult vkNegotiateLoaderLayerInterfaceVersion(VkNegotiateLayerInterface *v) {
    if (v->loaderLayerInterfaceVersion > 2) v->loaderLayerInterfaceVersion = 2;
    v->pfnGetInstanceProcAddr = layer_gipa;
    v->pfnGetDeviceProcAddr = layer_gdpa;
    v->pfnGetPhysicalDeviceProcAddr = NULL;
    return 0;
}
