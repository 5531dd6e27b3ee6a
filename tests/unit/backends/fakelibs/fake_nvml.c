/*
 * fake_nvml.c - a fake libnvidia-ml.so.1 for the NVIDIA backend tests (read through pynvml).
 *
 * Exports the NVML symbols the backend calls, with NVML's struct layouts (nvml.h, NVML_API_VERSION 13),
 * and reads its state from the fixture named by $FAKE_NVML_FIXTURE (format and common keys: fixture.h;
 * driver_version defaults to 550.54.15, nvml_version to 12.550.54.15). NVML-specific keys:
 *   dev<i>.uuid / .name / .minor / .bus_id (dddd:bb:dd.f, printed the NVML way "%08X:%02X:%02X.0")
 *   dev<i>.memory_total_mb / .memory_used_mb / .memory_reserved_mb (handed out in bytes). As in the real
 *       library, v1 nvmlDeviceGetMemoryInfo reports used = reserved + allocated, nvmlDeviceGetMemoryInfo_v2
 *       reports reserved apart and used without it (and wants version = nvmlMemory_v2, else
 *       ARGUMENT_VERSION_MISMATCH)
 *   dev<i>.util / .mem_util (percent) / .temp (C) / .power_mw (milliwatts) / .sm (multiprocessors)
 *   dev<i>.supported_events (mask; default 0x1f)
 *   dev<i>.nvlinks=<peer>,<peer>,...  one active NVLink per entry to GPU <peer>; links after those are
 *       inactive up to 18, beyond that INVALID_ARGUMENT; without the key the GPU has no NVLink
 *       (nvmlDeviceGetNvLinkState: NOT_SUPPORTED)
 *   topo.<i>.<j>=<nvmlGpuTopologyLevel_t>  common ancestor of GPUs i and j (either order; default 50,
 *       SYSTEM; a GPU with itself is 0, INTERNAL)
 *   MIG, as nvml.h describes it:
 *   dev<i>.mig_mode=0|1      current MIG mode; without it the GPU is not MIG capable (GetMigMode:
 *                            NOT_SUPPORTED, GetMaxMigDeviceCount: 0)
 *   dev<i>.mig_max=<n>       nvmlDeviceGetMaxMigDeviceCount (default 7 when MIG is enabled, else 0)
 *   dev<i>.mig<j>.uuid       a MIG device exists at index j (indexes may have holes: NOT_FOUND there)
 *   dev<i>.mig<j>.gi / .ci / .gi_slices / .ci_slices / .memory_mb / .memory_used_mb / .sm / .name
 *                            (name default "<parent name> MIG <gi_slices>g.<GB>gb", as NVML names them)
 *   MIG device handles: utilization, temperature and power are NOT_SUPPORTED; so is utilization of a
 *   MIG-enabled GPU ("On MIG-enabled GPUs, querying device utilization rates is not currently
 *   supported"). Faults: dev<i>.fail and fail.<function>.<i> also hit the GPU's MIG devices;
 *   fail.<function>.mig<i>.<j>=<code> hits one MIG device.
 *   event.<seq>=<dev>:<type>:<data>[:<gi>:<ci>]  an event; nvmlEventSetWait_v2 delivers each once per
 *                                     event set, in sequence order, if the device registered that type
 *                                     (dev -1: an event with a NULL device handle); gi/ci default
 *                                     0xFFFFFFFF (the whole GPU)
 * Symbols that can be left out with -DOMIT_<symbol>: nvmlDeviceGetTemperature, nvmlDeviceGetPowerUsage,
 * nvmlDeviceGetMemoryInfo_v2 (a driver older than the v2 call).
 */
#define FX_ENV "FAKE_NVML_FIXTURE"
#include "fixture.h"

#include <pthread.h>

typedef int nvmlReturn_t;

enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

#define NO_INSTANCE 0xFFFFFFFFu
#define MAX_MIG 8
#define MAX_NVLINKS 18

/* A GPU handle points into gpus[], a MIG device handle into migs[][]; both are opaque to the caller. */
struct nvmlDevice_st {
    int index;
    int mig; /* -1: the GPU itself, else the MIG device index under GPU `index` */
};
typedef struct nvmlDevice_st *nvmlDevice_t;

struct nvmlEventSet_st {
    pthread_mutex_t lock;
    long long delivered; /* highest sequence number handed out by this set */
    unsigned long long masks[FX_MAX_DEVICES];
};
typedef struct nvmlEventSet_st *nvmlEventSet_t;

typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;

typedef struct {
    unsigned version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
#define NVML_MEMORY_V2 ((unsigned)(sizeof(nvmlMemory_v2_t) | (2u << 24)))

typedef struct {
    unsigned multiprocessorCount, sharedCopyEngineCount, sharedDecoderCount, sharedEncoderCount, sharedJpegCount,
        sharedOfaCount, gpuInstanceSliceCount, computeInstanceSliceCount;
    unsigned long long memorySizeMB;
} nvmlDeviceAttributes_t;

typedef struct {
    unsigned gpu, memory;
} nvmlUtilization_t;

typedef struct {
    char busIdLegacy[16];
    unsigned domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned gpuInstanceId, computeInstanceId;
} nvmlEventData_t;

static struct nvmlDevice_st handles[FX_MAX_DEVICES];
static struct nvmlDevice_st migs[FX_MAX_DEVICES][MAX_MIG];

static nvmlDevice_t gpu_handle(int index) {
    handles[index].index = index;
    handles[index].mig = -1;
    return &handles[index];
}

/* The GPU index behind a GPU handle, or -1 when it is not one of ours or the GPU is gone. */
static int index_of(nvmlDevice_t device) {
    if (device < handles || device >= handles + FX_MAX_DEVICES) return -1;
    int index = (int)(device - handles);
    return index < fx_count() ? index : -1;
}

static int mig_key_int(int gpu, int mig, const char *field, long long fallback, long long *out) {
    char key[128];
    snprintf(key, sizeof key, "dev%d.mig%d.%s", gpu, mig, field);
    char value[FX_LINE];
    if (!fx_lookup(key, value, sizeof value)) {
        *out = fallback;
        return 0;
    }
    *out = strtoll(value, NULL, 0);
    return 1;
}

static long long mig_int(int gpu, int mig, const char *field, long long fallback) {
    long long value;
    mig_key_int(gpu, mig, field, fallback, &value);
    return value;
}

static int mig_str(int gpu, int mig, const char *field, char *out, size_t size) {
    char key[128];
    snprintf(key, sizeof key, "dev%d.mig%d.%s", gpu, mig, field);
    return fx_lookup(key, out, size);
}

static int mig_enabled(int gpu) { return fx_dev_int(gpu, "mig_mode", 0) == 1; }

/* A MIG device exists at (gpu, mig) when MIG is on and the fixture names its UUID. */
static int mig_exists(int gpu, int mig) {
    char uuid[96];
    return mig >= 0 && mig < MAX_MIG && mig_enabled(gpu) && mig_str(gpu, mig, "uuid", uuid, sizeof uuid);
}

/* The (gpu, mig) pair behind a MIG device handle; 0 when it is not a live MIG handle. */
static int mig_of(nvmlDevice_t device, int *gpu, int *mig) {
    struct nvmlDevice_st *first = &migs[0][0];
    if (device < first || device >= first + FX_MAX_DEVICES * MAX_MIG) return 0;
    long offset = device - first;
    *gpu = (int)(offset / MAX_MIG);
    *mig = (int)(offset % MAX_MIG);
    return *gpu < fx_count() && mig_exists(*gpu, *mig);
}

/* The fault for a call on a MIG device: its own key, else its GPU's. */
static int mig_fault(const char *function, int gpu, int mig) {
    char key[256];
    snprintf(key, sizeof key, "fail.%s.mig%d.%d", function, gpu, mig);
    long long code = fx_int(key, 0);
    return code ? (int)code : fx_fault(function, gpu);
}

/* Resolves a handle that may be a GPU or a MIG device; returns an error code, or 0 with gpu/mig set. */
static int resolve(const char *function, nvmlDevice_t device, int *gpu, int *mig) {
    if (mig_of(device, gpu, mig)) return mig_fault(function, *gpu, *mig);
    *gpu = index_of(device);
    *mig = -1;
    if (*gpu < 0) return NVML_ERROR_INVALID_ARGUMENT;
    return fx_fault(function, *gpu);
}

/* A call that takes a GPU handle only (a MIG handle is INVALID_ARGUMENT there). */
#define DEVICE_CALL(name, device, index_var)                          \
    int index_var = index_of(device);                                 \
    if (index_var < 0) return NVML_ERROR_INVALID_ARGUMENT;            \
    {                                                                 \
        int fault_ = fx_fault(name, index_var);                       \
        if (fault_) return fault_;                                    \
    }

/* A call that takes a GPU or a MIG device handle. */
#define ANY_CALL(name, device, gpu_var, mig_var)                      \
    int gpu_var, mig_var;                                             \
    {                                                                 \
        int fault_ = resolve(name, device, &gpu_var, &mig_var);       \
        if (fault_) return fault_;                                    \
    }

nvmlReturn_t nvmlInitWithFlags(unsigned flags) {
    (void)flags;
    return fx_init_result("nvmlInitWithFlags");
}

nvmlReturn_t nvmlInit_v2(void) { return fx_init_result("nvmlInit_v2"); }

nvmlReturn_t nvmlShutdown(void) { return fx_fault("nvmlShutdown", -1); }

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case 9: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

/* A library-wide version string: an injected fault for `function`, else the fixture's `key` or `fallback`. */
static nvmlReturn_t version_text(const char *function, const char *key, const char *fallback, char *out,
                                 unsigned length) {
    int fault = fx_fault(function, -1);
    if (fault) return fault;
    char value[FX_LINE];
    fx_str(key, value, sizeof value, fallback);
    return fx_copy_out(out, length, value) ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned length) {
    return version_text("nvmlSystemGetDriverVersion", "driver_version", "550.54.15", version, length);
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned length) {
    return version_text("nvmlSystemGetNVMLVersion", "nvml_version", "12.550.54.15", version, length);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned *count) {
    int fault = fx_fault("nvmlDeviceGetCount_v2", -1);
    if (fault) return fault;
    *count = (unsigned)fx_count();
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned index, nvmlDevice_t *device) {
    if ((int)index >= fx_count()) return NVML_ERROR_INVALID_ARGUMENT;
    int fault = fx_fault("nvmlDeviceGetHandleByIndex_v2", (int)index);
    if (fault) return fault;
    *device = gpu_handle((int)index);
    return NVML_SUCCESS;
}

static void default_uuid(int index, char *out, size_t size) {
    snprintf(out, size, "GPU-00000000-0000-0000-0000-%012d", index);
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    int fault = fx_fault("nvmlDeviceGetHandleByUUID", -1);
    if (fault) return fault;
    for (int index = 0; index < fx_count(); index++) {
        char fallback[96], value[96];
        default_uuid(index, fallback, sizeof fallback);
        fx_dev_str(index, "uuid", value, sizeof value, fallback);
        if (strcmp(value, uuid) == 0) {
            *device = gpu_handle(index);
            return NVML_SUCCESS;
        }
        for (int mig = 0; mig < MAX_MIG; mig++) {
            if (mig_exists(index, mig) && mig_str(index, mig, "uuid", value, sizeof value) &&
                strcmp(value, uuid) == 0) {
                *device = &migs[index][mig];
                return NVML_SUCCESS;
            }
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

static nvmlReturn_t copy_text(const char *value, char *out, unsigned length) {
    return fx_copy_out(out, length, value) ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
}

static unsigned long long mig_memory_mb(int gpu, int mig) { return (unsigned long long)mig_int(gpu, mig, "memory_mb", 9856); }

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned length) {
    ANY_CALL("nvmlDeviceGetName", device, gpu, mig);
    char parent[96], value[200];
    fx_dev_str(gpu, "name", parent, sizeof parent, "NVIDIA Fake GPU");
    if (mig < 0) return copy_text(parent, name, length);
    if (!mig_str(gpu, mig, "name", value, sizeof value))
        snprintf(value, sizeof value, "%s MIG %lldg.%llugb", parent, mig_int(gpu, mig, "gi_slices", 1),
                 (mig_memory_mb(gpu, mig) + 1023) / 1024);
    return copy_text(value, name, length);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned length) {
    ANY_CALL("nvmlDeviceGetUUID", device, gpu, mig);
    char fallback[96], value[96];
    if (mig >= 0) {
        mig_str(gpu, mig, "uuid", value, sizeof value);
        return copy_text(value, uuid, length);
    }
    default_uuid(gpu, fallback, sizeof fallback);
    fx_dev_str(gpu, "uuid", value, sizeof value, fallback);
    return copy_text(value, uuid, length);
}

nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned *minor) {
    DEVICE_CALL("nvmlDeviceGetMinorNumber", device, index);
    *minor = (unsigned)fx_dev_int(index, "minor", index);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    DEVICE_CALL("nvmlDeviceGetPciInfo_v3", device, index);
    struct fx_pci address;
    if (!fx_dev_pci(index, 0x18 + index, &address)) return NVML_ERROR_UNKNOWN;
    memset(pci, 0, sizeof *pci);
    pci->domain = address.domain;
    pci->bus = address.bus;
    pci->device = address.slot;
    pci->pciDeviceId = (0x2330u << 16) | 0x10de;
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0", address.domain, address.bus,
             address.slot);
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.0", address.domain, address.bus, address.slot);
    return NVML_SUCCESS;
}

/* Total, reserved and allocated memory of a GPU or MIG device, in bytes. */
static void memory_of(int gpu, int mig, unsigned long long *total, unsigned long long *reserved,
                      unsigned long long *used) {
    unsigned long long mib = 1024ULL * 1024ULL;
    if (mig >= 0) {
        *total = mig_memory_mb(gpu, mig) * mib;
        *reserved = 0;
        *used = (unsigned long long)mig_int(gpu, mig, "memory_used_mb", 0) * mib;
        return;
    }
    *total = (unsigned long long)fx_dev_int(gpu, "memory_total_mb", 81559) * mib;
    *reserved = (unsigned long long)fx_dev_int(gpu, "memory_reserved_mb", 0) * mib;
    *used = (unsigned long long)fx_dev_int(gpu, "memory_used_mb", 0) * mib;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    ANY_CALL("nvmlDeviceGetMemoryInfo", device, gpu, mig);
    unsigned long long total, reserved, used;
    memory_of(gpu, mig, &total, &reserved, &used);
    memory->total = total;
    memory->used = reserved + used; /* v1: the driver's reserved memory counts as used */
    memory->free = total - memory->used;
    return NVML_SUCCESS;
}

#ifndef OMIT_nvmlDeviceGetMemoryInfo_v2
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    ANY_CALL("nvmlDeviceGetMemoryInfo_v2", device, gpu, mig);
    if (memory == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (memory->version != NVML_MEMORY_V2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    unsigned long long total, reserved, used;
    memory_of(gpu, mig, &total, &reserved, &used);
    memory->total = total;
    memory->reserved = reserved;
    memory->used = used;
    memory->free = total - reserved - used;
    return NVML_SUCCESS;
}
#endif

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    ANY_CALL("nvmlDeviceGetUtilizationRates", device, gpu, mig);
    if (mig >= 0 || mig_enabled(gpu)) return NVML_ERROR_NOT_SUPPORTED;
    utilization->gpu = (unsigned)fx_dev_int(gpu, "util", 0);
    utilization->memory = (unsigned)fx_dev_int(gpu, "mem_util", 0);
    return NVML_SUCCESS;
}

#ifndef OMIT_nvmlDeviceGetTemperature
nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned *temperature) {
    ANY_CALL("nvmlDeviceGetTemperature", device, index, mig);
    if (mig >= 0) return NVML_ERROR_NOT_SUPPORTED;
    if (sensor != 0) return NVML_ERROR_INVALID_ARGUMENT;
    *temperature = (unsigned)fx_dev_int(index, "temp", 40);
    return NVML_SUCCESS;
}
#endif

#ifndef OMIT_nvmlDeviceGetPowerUsage
nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned *power) {
    ANY_CALL("nvmlDeviceGetPowerUsage", device, index, mig);
    if (mig >= 0) return NVML_ERROR_NOT_SUPPORTED;
    *power = (unsigned)fx_dev_int(index, "power_mw", 70000);
    return NVML_SUCCESS;
}
#endif

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned *current, unsigned *pending) {
    DEVICE_CALL("nvmlDeviceGetMigMode", device, index);
    long long mode = fx_dev_int(index, "mig_mode", -1);
    if (mode < 0) return NVML_ERROR_NOT_SUPPORTED; /* not a MIG-capable GPU */
    *current = (unsigned)mode;
    *pending = (unsigned)fx_dev_int(index, "mig_pending", mode);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned *count) {
    DEVICE_CALL("nvmlDeviceGetMaxMigDeviceCount", device, index);
    *count = (unsigned)fx_dev_int(index, "mig_max", mig_enabled(index) ? 7 : 0); /* zero when MIG is off */
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned index, nvmlDevice_t *mig) {
    DEVICE_CALL("nvmlDeviceGetMigDeviceHandleByIndex", device, gpu);
    if (!mig_enabled(gpu)) return NVML_ERROR_NOT_SUPPORTED;
    if (index >= MAX_MIG || !mig_exists(gpu, (int)index)) return NVML_ERROR_NOT_FOUND;
    migs[gpu][index].index = gpu;
    migs[gpu][index].mig = (int)index;
    *mig = &migs[gpu][index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned *is_mig) {
    int gpu, mig;
    if (mig_of(device, &gpu, &mig)) {
        *is_mig = 1;
        return NVML_SUCCESS;
    }
    if (index_of(device) < 0) return NVML_ERROR_INVALID_ARGUMENT;
    *is_mig = 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t device, nvmlDevice_t *parent) {
    int gpu, mig;
    if (!mig_of(device, &gpu, &mig)) return NVML_ERROR_INVALID_ARGUMENT;
    int fault = mig_fault("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", gpu, mig);
    if (fault) return fault;
    *parent = gpu_handle(gpu);
    return NVML_SUCCESS;
}

/* A MIG device's GPU or compute instance id: fixture `field`, else `fallback` (-1: the MIG index). */
static nvmlReturn_t instance_id(const char *function, nvmlDevice_t device, const char *field, long long fallback,
                                unsigned *id) {
    int gpu, mig;
    if (!mig_of(device, &gpu, &mig)) return index_of(device) < 0 ? NVML_ERROR_INVALID_ARGUMENT
                                                                  : NVML_ERROR_NOT_SUPPORTED;
    int fault = mig_fault(function, gpu, mig);
    if (fault) return fault;
    *id = (unsigned)mig_int(gpu, mig, field, fallback < 0 ? mig : fallback);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned *id) {
    return instance_id("nvmlDeviceGetGpuInstanceId", device, "gi", -1, id);
}

nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned *id) {
    return instance_id("nvmlDeviceGetComputeInstanceId", device, "ci", 0, id);
}

nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t device, nvmlDeviceAttributes_t *attributes) {
    ANY_CALL("nvmlDeviceGetAttributes_v2", device, gpu, mig);
    memset(attributes, 0, sizeof *attributes);
    if (mig < 0) {
        attributes->multiprocessorCount = (unsigned)fx_dev_int(gpu, "sm", 132);
        attributes->gpuInstanceSliceCount = attributes->computeInstanceSliceCount = 7;
        attributes->memorySizeMB = (unsigned long long)fx_dev_int(gpu, "memory_total_mb", 81559);
        return NVML_SUCCESS;
    }
    long long gi_slices = mig_int(gpu, mig, "gi_slices", 1);
    attributes->gpuInstanceSliceCount = (unsigned)gi_slices;
    attributes->computeInstanceSliceCount = (unsigned)mig_int(gpu, mig, "ci_slices", gi_slices);
    attributes->multiprocessorCount = (unsigned)mig_int(gpu, mig, "sm", 16 * gi_slices);
    attributes->sharedCopyEngineCount = (unsigned)gi_slices;
    attributes->memorySizeMB = mig_memory_mb(gpu, mig);
    return NVML_SUCCESS;
}

/* The peer GPU on NVLink `link` of GPU `index`: 1 and *peer set for an active link, 0 for an inactive one,
 * -1 when the GPU has no NVLink or the link number is out of range (*code says which). */
static int nvlink_peer(int index, unsigned link, int *peer, int *code) {
    char value[FX_LINE];
    char key[64];
    snprintf(key, sizeof key, "dev%d.nvlinks", index);
    if (!fx_lookup(key, value, sizeof value)) {
        *code = NVML_ERROR_NOT_SUPPORTED;
        return -1;
    }
    if (link >= MAX_NVLINKS) {
        *code = NVML_ERROR_INVALID_ARGUMENT;
        return -1;
    }
    char *cursor = value;
    for (unsigned position = 0; *cursor; position++) {
        char *end;
        long found = strtol(cursor, &end, 10);
        if (end == cursor) break;
        if (position == link) {
            *peer = (int)found;
            return 1;
        }
        cursor = *end == ',' ? end + 1 : end;
    }
    return 0;
}

nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned link, unsigned *active) {
    DEVICE_CALL("nvmlDeviceGetNvLinkState", device, index);
    int peer, code;
    int state = nvlink_peer(index, link, &peer, &code);
    if (state < 0) return code;
    *active = (unsigned)state;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(nvmlDevice_t device, unsigned link, nvmlPciInfo_t *pci) {
    DEVICE_CALL("nvmlDeviceGetNvLinkRemotePciInfo_v2", device, index);
    int peer, code;
    int state = nvlink_peer(index, link, &peer, &code);
    if (state < 0) return code;
    if (state == 0 || peer < 0 || peer >= fx_count()) return NVML_ERROR_NOT_SUPPORTED;
    return nvmlDeviceGetPciInfo_v3(gpu_handle(peer), pci);
}

nvmlReturn_t nvmlDeviceGetTopologyCommonAncestor(nvmlDevice_t first, nvmlDevice_t second, int *level) {
    int left = index_of(first), right = index_of(second);
    if (left < 0 || right < 0) return NVML_ERROR_INVALID_ARGUMENT;
    int fault = fx_fault("nvmlDeviceGetTopologyCommonAncestor", left);
    if (fault) return fault;
    char key[64];
    snprintf(key, sizeof key, "topo.%d.%d", left, right);
    long long found = fx_int(key, -1);
    if (found < 0) {
        snprintf(key, sizeof key, "topo.%d.%d", right, left);
        found = fx_int(key, left == right ? 0 : 50);
    }
    *level = (int)found;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    int fault = fx_fault("nvmlEventSetCreate", -1);
    if (fault) return fault;
    nvmlEventSet_t created = calloc(1, sizeof *created);
    if (!created) return NVML_ERROR_UNKNOWN;
    pthread_mutex_init(&created->lock, NULL);
    *set = created;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    if (!set) return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_destroy(&set->lock);
    free(set);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device, unsigned long long *types) {
    DEVICE_CALL("nvmlDeviceGetSupportedEventTypes", device, index);
    *types = (unsigned long long)fx_dev_int(index, "supported_events", 0x1f);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long types, nvmlEventSet_t set) {
    DEVICE_CALL("nvmlDeviceRegisterEvents", device, index);
    if (!set) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long supported = (unsigned long long)fx_dev_int(index, "supported_events", 0x1f);
    if (types & ~supported) return NVML_ERROR_NOT_SUPPORTED;
    pthread_mutex_lock(&set->lock);
    set->masks[index] |= types;
    pthread_mutex_unlock(&set->lock);
    return NVML_SUCCESS;
}

/* Finds the pending event with the smallest sequence number above `after`; returns 1 when one exists. */
static int next_event(long long after, long long *seq, int *dev, unsigned long long *type,
                      unsigned long long *data, unsigned *gi, unsigned *ci) {
    FILE *file = fx_open();
    if (!file) return 0;
    char line[FX_LINE];
    int found = 0;
    while (fgets(line, sizeof line, file)) {
        long long candidate;
        int candidate_dev;
        unsigned long long candidate_type, candidate_data;
        long long candidate_gi = NO_INSTANCE, candidate_ci = NO_INSTANCE;
        int fields = sscanf(line, "event.%lld=%d:%lli:%lli:%lli:%lli", &candidate, &candidate_dev, &candidate_type,
                            &candidate_data, &candidate_gi, &candidate_ci);
        if (fields != 4 && fields != 6) continue;
        if (candidate <= after || (found && candidate >= *seq)) continue;
        *seq = candidate;
        *dev = candidate_dev;
        *type = candidate_type;
        *data = candidate_data;
        *gi = (unsigned)candidate_gi;
        *ci = (unsigned)candidate_ci;
        found = 1;
    }
    fclose(file);
    return found;
}

nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned timeoutms) {
    if (!set) return NVML_ERROR_INVALID_ARGUMENT;
    double deadline = fx_now() + timeoutms / 1000.0;
    for (;;) {
        int fault = fx_fault("nvmlEventSetWait_v2", -1);
        if (fault) return fault;
        long long seq;
        int dev;
        unsigned long long type, payload;
        unsigned gi, ci;
        pthread_mutex_lock(&set->lock);
        while (next_event(set->delivered, &seq, &dev, &type, &payload, &gi, &ci)) {
            set->delivered = seq;
            int registered = dev < 0 || (dev < FX_MAX_DEVICES && (set->masks[dev] & type));
            if (!registered) continue;
            memset(data, 0, sizeof *data);
            data->device = dev < 0 ? NULL : &handles[dev]; /* MIG events name the GPU plus (gi, ci) */
            data->eventType = type;
            data->eventData = payload;
            data->gpuInstanceId = gi;
            data->computeInstanceId = ci;
            pthread_mutex_unlock(&set->lock);
            return NVML_SUCCESS;
        }
        pthread_mutex_unlock(&set->lock);
        if (fx_now() >= deadline) return NVML_ERROR_TIMEOUT;
        fx_sleep(0.01);
    }
}
