/*
 * fake_nvml.c - a fake libnvidia-ml.so.1 for the NVIDIA backend tests (read through pynvml).
 *
 * Exports the NVML symbols the backend calls, with NVML's struct layouts, and reads its state from the
 * fixture named by $FAKE_NVML_FIXTURE (format and common keys: fixture.h; driver_version defaults to
 * 550.54.15). NVML-specific keys:
 *   dev<i>.uuid / .name / .minor / .bus_id (dddd:bb:dd.f, printed the NVML way "%08X:%02X:%02X.0")
 *   dev<i>.memory_total_mb / .memory_used_mb (handed out in bytes) / .util / .mem_util (percent)
 *   dev<i>.temp (C) / .power_mw (milliwatts) / .supported_events (mask; default 0x1f)
 *   event.<seq>=<dev>:<type>:<data>   an event; nvmlEventSetWait_v2 delivers each once per event set,
 *                                     in sequence order, if the device registered that type
 *                                     (dev -1: an event with a NULL device handle)
 * Symbols that can be left out with -DOMIT_<symbol>: nvmlDeviceGetTemperature, nvmlDeviceGetPowerUsage.
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
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_UNKNOWN = 999,
};

struct nvmlDevice_st {
    int index;
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

/* The index behind a handle, or -1 when the handle is not one of ours or the device is gone. */
static int index_of(nvmlDevice_t device) {
    if (device < handles || device >= handles + FX_MAX_DEVICES) return -1;
    int index = (int)(device - handles);
    return index < fx_count() ? index : -1;
}

#define DEVICE_CALL(name, device, index_var)                          \
    int index_var = index_of(device);                                 \
    if (index_var < 0) return NVML_ERROR_INVALID_ARGUMENT;            \
    {                                                                 \
        int fault_ = fx_fault(name, index_var);                       \
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

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned length) {
    int fault = fx_fault("nvmlSystemGetDriverVersion", -1);
    if (fault) return fault;
    char value[FX_LINE];
    fx_str("driver_version", value, sizeof value, "550.54.15");
    return fx_copy_out(version, length, value) ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
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
    handles[index].index = (int)index;
    *device = &handles[index];
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
            handles[index].index = index;
            *device = &handles[index];
            return NVML_SUCCESS;
        }
    }
    return 6; /* NVML_ERROR_NOT_FOUND */
}

static nvmlReturn_t copy_text(const char *value, char *out, unsigned length) {
    return fx_copy_out(out, length, value) ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned length) {
    DEVICE_CALL("nvmlDeviceGetName", device, index);
    char value[96];
    fx_dev_str(index, "name", value, sizeof value, "NVIDIA Fake GPU");
    return copy_text(value, name, length);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned length) {
    DEVICE_CALL("nvmlDeviceGetUUID", device, index);
    char fallback[96], value[96];
    default_uuid(index, fallback, sizeof fallback);
    fx_dev_str(index, "uuid", value, sizeof value, fallback);
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

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    DEVICE_CALL("nvmlDeviceGetMemoryInfo", device, index);
    unsigned long long mib = 1024ULL * 1024ULL;
    memory->total = (unsigned long long)fx_dev_int(index, "memory_total_mb", 81559) * mib;
    memory->used = (unsigned long long)fx_dev_int(index, "memory_used_mb", 0) * mib;
    memory->free = memory->total - memory->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    DEVICE_CALL("nvmlDeviceGetUtilizationRates", device, index);
    utilization->gpu = (unsigned)fx_dev_int(index, "util", 0);
    utilization->memory = (unsigned)fx_dev_int(index, "mem_util", 0);
    return NVML_SUCCESS;
}

#ifndef OMIT_nvmlDeviceGetTemperature
nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned *temperature) {
    DEVICE_CALL("nvmlDeviceGetTemperature", device, index);
    if (sensor != 0) return NVML_ERROR_INVALID_ARGUMENT;
    *temperature = (unsigned)fx_dev_int(index, "temp", 40);
    return NVML_SUCCESS;
}
#endif

#ifndef OMIT_nvmlDeviceGetPowerUsage
nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned *power) {
    DEVICE_CALL("nvmlDeviceGetPowerUsage", device, index);
    *power = (unsigned)fx_dev_int(index, "power_mw", 70000);
    return NVML_SUCCESS;
}
#endif

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
                      unsigned long long *data) {
    FILE *file = fx_open();
    if (!file) return 0;
    char line[FX_LINE];
    int found = 0;
    while (fgets(line, sizeof line, file)) {
        long long candidate;
        int candidate_dev;
        unsigned long long candidate_type, candidate_data;
        if (sscanf(line, "event.%lld=%d:%lli:%lli", &candidate, &candidate_dev, &candidate_type,
                   &candidate_data) != 4)
            continue;
        if (candidate <= after || (found && candidate >= *seq)) continue;
        *seq = candidate;
        *dev = candidate_dev;
        *type = candidate_type;
        *data = candidate_data;
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
        pthread_mutex_lock(&set->lock);
        while (next_event(set->delivered, &seq, &dev, &type, &payload)) {
            set->delivered = seq;
            int registered = dev < 0 || (dev < FX_MAX_DEVICES && (set->masks[dev] & type));
            if (!registered) continue;
            memset(data, 0, sizeof *data);
            data->device = dev < 0 ? NULL : &handles[dev];
            data->eventType = type;
            data->eventData = payload;
            data->gpuInstanceId = data->computeInstanceId = 0xFFFFFFFFu;
            pthread_mutex_unlock(&set->lock);
            return NVML_SUCCESS;
        }
        pthread_mutex_unlock(&set->lock);
        if (fx_now() >= deadline) return NVML_ERROR_TIMEOUT;
        fx_sleep(0.01);
    }
}
