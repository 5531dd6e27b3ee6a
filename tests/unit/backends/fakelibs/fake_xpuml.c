/*
 * fake_xpuml.c - a fake Kunlunxin libxpuml.so.1 for the kunlun backend tests.
 *
 * Real symbol names and struct layouts (go-xpuml xpuml.h; every struct padded to 128 bytes). State comes
 * from the fixture named by $FAKE_XPUML_FIXTURE (format and common keys: fixture.h; driver_version defaults
 * to 4.0.25). Device fields:
 *   dev<i>.serial        serial number (stable ID)            dev<i>.name      model name (R200, R200-VF-5G)
 *   dev<i>.minor         N of /dev/xpuN (default i)          dev<i>.bus_id    dddd:bb:dd.f (default 0000:<i+1>:00.0)
 *   dev<i>.memory_total  bytes                               dev<i>.memory_used  bytes
 *   dev<i>.util          XPU utilization %                   dev<i>.temp      degrees C
 *   dev<i>.power_mw      power in milliwatts                 dev<i>.state     xpumlDeviceState_t (default 201 RUNNING)
 *   dev<i>.model_id      xpumlDeviceAttributes_t.modelId     dev<i>.memory_mb attributes globalMemorySizeMB
 *                        (a PF with VFs on has its *_SRIOV_PF id: 200, 204, 208 ...)
 *   dev<i>.vxpu_mode     xpumlDeviceGetHostVxpuMode: 0 NON_SRIOV (default), 1 SRIOV_OFF, 2 SRIOV_ON
 * xpumlDeviceSetSriovVfNum(dev, n) answers like the vendor's xpu_smi -V: n above attributes.maxVFCount (3) is
 * INVALID_ARGUMENT; otherwise it appends "dev<i>.vf_num=<n>" to the fixture file (the test plays the driver
 * and re-lists the devices, re-numbered, as the real one does) and returns SUCCESS.
 * Symbols that can be left out with -DOMIT_<symbol>: xpumlDeviceGetName, xpumlDeviceGetMinorNumber,
 * xpumlDeviceGetPowerUsage, xpumlDeviceGetHostVxpuMode, xpumlDeviceSetSriovVfNum.
 */
#define FX_ENV "FAKE_XPUML_FIXTURE"
#include "fixture.h"

typedef int xpumlReturn_t;

enum {
    XPUML_SUCCESS = 0,
    XPUML_ERROR_UNINITIALIZED = 1,
    XPUML_ERROR_INVALID_ARGUMENT = 2,
    XPUML_ERROR_NOT_SUPPORTED = 3,
    XPUML_ERROR_INSUFFICIENT_SIZE = 7,
    XPUML_ERROR_XPU_IS_LOST = 15,
    XPUML_ERROR_UNKNOWN = 999,
};

struct xpumlDevice_st {
    int index;
};
typedef struct xpumlDevice_st *xpumlDevice_t;

typedef struct {
    unsigned domain, bus, device, function, pciDeviceId, pciSubSystemId;
    char busId[32];
    unsigned long long reserved[9];
} xpumlPciInfo_t;

typedef struct {
    unsigned xpu, memory;
    unsigned long long reserved[15];
} xpumlUtilization_t;

typedef struct {
    unsigned long long pageSizeGlobalMemory, totalGlobalMemory, freeGlobalMemory, usedGlobalMemory;
    unsigned long long pageSizeL3Memory, totalL3Memory, freeL3Memory, usedL3Memory;
    unsigned long long reserved[8];
} xpumlMemory_t;

typedef struct {
    int archId, boardId, modelId;
    unsigned clusterCount, sdnnCount, dmaEngineCount, decoderCount, encoderCount, imgProcCount, maxVFCount;
    unsigned long long globalMemorySizeMB, l3MemorySizeMB, sn[2], reserved[7];
} xpumlDeviceAttributes_t;

_Static_assert(sizeof(xpumlPciInfo_t) == 128, "xpumlPciInfo_t is 128 bytes");
_Static_assert(sizeof(xpumlUtilization_t) == 128, "xpumlUtilization_t is 128 bytes");
_Static_assert(sizeof(xpumlMemory_t) == 128, "xpumlMemory_t is 128 bytes");
_Static_assert(sizeof(xpumlDeviceAttributes_t) == 128, "xpumlDeviceAttributes_t is 128 bytes");

static struct xpumlDevice_st devices[FX_MAX_DEVICES];
static int initialised;

/* Common entry checks of a per-device call: initialised, valid handle, injected faults. */
static int enter(const char *function, xpumlDevice_t device, const void *out) {
    if (!initialised) return XPUML_ERROR_UNINITIALIZED;
    if (device == NULL || out == NULL || device < devices || device >= devices + FX_MAX_DEVICES)
        return XPUML_ERROR_INVALID_ARGUMENT;
    if (device->index >= fx_count()) return XPUML_ERROR_XPU_IS_LOST;
    return fx_fault(function, device->index);
}

xpumlReturn_t xpumlInit(void) {
    int code = fx_init_result("xpumlInit");
    if (code != 0) return code;
    for (int i = 0; i < FX_MAX_DEVICES; i++) devices[i].index = i;
    initialised = 1;
    return XPUML_SUCCESS;
}

xpumlReturn_t xpumlShutdown(void) {
    initialised = 0;
    return XPUML_SUCCESS;
}

const char *xpumlErrorString(xpumlReturn_t result) {
    switch (result) {
    case XPUML_SUCCESS: return "Success";
    case XPUML_ERROR_UNINITIALIZED: return "Uninitialized";
    case XPUML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case XPUML_ERROR_XPU_IS_LOST: return "XPU is lost";
    default: return "Unknown Error";
    }
}

xpumlReturn_t xpumlSystemGetDriverVersion(char *version, unsigned length) {
    char value[FX_LINE];
    if (!initialised) return XPUML_ERROR_UNINITIALIZED;
    int code = fx_fault("xpumlSystemGetDriverVersion", -1);
    if (code != 0) return code;
    fx_str("driver_version", value, sizeof value, "4.0.25");
    return fx_copy_out(version, length, value) ? XPUML_ERROR_INSUFFICIENT_SIZE : XPUML_SUCCESS;
}

xpumlReturn_t xpumlDeviceGetCount(unsigned *count) {
    if (!initialised) return XPUML_ERROR_UNINITIALIZED;
    if (count == NULL) return XPUML_ERROR_INVALID_ARGUMENT;
    int code = fx_fault("xpumlDeviceGetCount", -1);
    if (code != 0) return code;
    *count = (unsigned)fx_count();
    return XPUML_SUCCESS;
}

xpumlReturn_t xpumlDeviceGetHandleByIndex(unsigned index, xpumlDevice_t *device) {
    if (!initialised) return XPUML_ERROR_UNINITIALIZED;
    if (device == NULL || index >= (unsigned)fx_count()) return XPUML_ERROR_INVALID_ARGUMENT;
    int code = fx_fault("xpumlDeviceGetHandleByIndex", (int)index);
    if (code != 0) return code;
    *device = &devices[index];
    return XPUML_SUCCESS;
}

xpumlReturn_t xpumlDeviceGetSerial(xpumlDevice_t device, char *serial, unsigned length) {
    char value[FX_LINE], fallback[32];
    int code = enter("xpumlDeviceGetSerial", device, serial);
    if (code != 0) return code;
    snprintf(fallback, sizeof fallback, "SN-KL-%04d", device->index);
    fx_dev_str(device->index, "serial", value, sizeof value, fallback);
    return fx_copy_out(serial, length, value) ? XPUML_ERROR_INSUFFICIENT_SIZE : XPUML_SUCCESS;
}

#ifndef OMIT_xpumlDeviceGetName
xpumlReturn_t xpumlDeviceGetName(xpumlDevice_t device, char *name, unsigned length) {
    char value[FX_LINE];
    int code = enter("xpumlDeviceGetName", device, name);
    if (code != 0) return code;
    fx_dev_str(device->index, "name", value, sizeof value, "R200");
    return fx_copy_out(name, length, value) ? XPUML_ERROR_INSUFFICIENT_SIZE : XPUML_SUCCESS;
}
#endif

#ifndef OMIT_xpumlDeviceGetMinorNumber
xpumlReturn_t xpumlDeviceGetMinorNumber(xpumlDevice_t device, unsigned *minor) {
    int code = enter("xpumlDeviceGetMinorNumber", device, minor);
    if (code != 0) return code;
    *minor = (unsigned)fx_dev_int(device->index, "minor", device->index);
    return XPUML_SUCCESS;
}
#endif

xpumlReturn_t xpumlDeviceGetPciInfo(xpumlDevice_t device, xpumlPciInfo_t *pci) {
    struct fx_pci address;
    int code = enter("xpumlDeviceGetPciInfo", device, pci);
    if (code != 0) return code;
    if (!fx_dev_pci(device->index, device->index + 1, &address)) return XPUML_ERROR_UNKNOWN;
    memset(pci, 0, sizeof *pci);
    pci->domain = address.domain;
    pci->bus = address.bus;
    pci->device = address.slot;
    pci->function = address.function;
    pci->pciDeviceId = (0x3684u << 16) | 0x1d22u;
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.%01X", address.domain, address.bus, address.slot,
             address.function);
    return XPUML_SUCCESS;
}

xpumlReturn_t xpumlDeviceGetMemoryInfo(xpumlDevice_t device, xpumlMemory_t *memory) {
    int code = enter("xpumlDeviceGetMemoryInfo", device, memory);
    if (code != 0) return code;
    memset(memory, 0, sizeof *memory);
    memory->pageSizeGlobalMemory = 4096;
    memory->totalGlobalMemory = (unsigned long long)fx_dev_int(device->index, "memory_total", 16LL << 30);
    memory->usedGlobalMemory = (unsigned long long)fx_dev_int(device->index, "memory_used", 0);
    memory->freeGlobalMemory = memory->totalGlobalMemory - memory->usedGlobalMemory;
    memory->totalL3Memory = 64ULL << 20;
    memory->freeL3Memory = memory->totalL3Memory;
    return XPUML_SUCCESS;
}

xpumlReturn_t xpumlDeviceGetUtilizationRates(xpumlDevice_t device, xpumlUtilization_t *utilization) {
    int code = enter("xpumlDeviceGetUtilizationRates", device, utilization);
    if (code != 0) return code;
    memset(utilization, 0, sizeof *utilization);
    utilization->xpu = (unsigned)fx_dev_int(device->index, "util", 0);
    utilization->memory = (unsigned)fx_dev_int(device->index, "mem_util", 0);
    return XPUML_SUCCESS;
}

xpumlReturn_t xpumlDeviceGetTemperature(xpumlDevice_t device, int sensor, unsigned *temperature) {
    int code = enter("xpumlDeviceGetTemperature", device, temperature);
    if (code != 0) return code;
    if (sensor != 0) return XPUML_ERROR_INVALID_ARGUMENT;
    *temperature = (unsigned)fx_dev_int(device->index, "temp", 40);
    return XPUML_SUCCESS;
}

#ifndef OMIT_xpumlDeviceGetPowerUsage
xpumlReturn_t xpumlDeviceGetPowerUsage(xpumlDevice_t device, unsigned *power) {
    int code = enter("xpumlDeviceGetPowerUsage", device, power);
    if (code != 0) return code;
    *power = (unsigned)fx_dev_int(device->index, "power_mw", 75000);
    return XPUML_SUCCESS;
}
#endif

xpumlReturn_t xpumlDeviceGetState(xpumlDevice_t device, int *state) {
    int code = enter("xpumlDeviceGetState", device, state);
    if (code != 0) return code;
    *state = (int)fx_dev_int(device->index, "state", 201);
    return XPUML_SUCCESS;
}

xpumlReturn_t xpumlDeviceGetAttributes(xpumlDevice_t device, xpumlDeviceAttributes_t *attributes) {
    int code = enter("xpumlDeviceGetAttributes", device, attributes);
    if (code != 0) return code;
    memset(attributes, 0, sizeof *attributes);
    attributes->archId = 2;
    attributes->modelId = (int)fx_dev_int(device->index, "model_id", 2);
    attributes->clusterCount = 8;
    attributes->maxVFCount = 3;
    attributes->globalMemorySizeMB = (unsigned long long)fx_dev_int(device->index, "memory_mb", 16384);
    return XPUML_SUCCESS;
}

#ifndef OMIT_xpumlDeviceGetHostVxpuMode
xpumlReturn_t xpumlDeviceGetHostVxpuMode(xpumlDevice_t device, int *mode) {
    int code = enter("xpumlDeviceGetHostVxpuMode", device, mode);
    if (code != 0) return code;
    *mode = (int)fx_dev_int(device->index, "vxpu_mode", 0);
    return XPUML_SUCCESS;
}
#endif

#ifndef OMIT_xpumlDeviceSetSriovVfNum
xpumlReturn_t xpumlDeviceSetSriovVfNum(xpumlDevice_t device, int count) {
    int code = enter("xpumlDeviceSetSriovVfNum", device, &count);
    if (code != 0) return code;
    if (count < 0 || count > 3) return XPUML_ERROR_INVALID_ARGUMENT;
    const char *path = getenv(FX_ENV);
    FILE *file = path ? fopen(path, "a") : NULL;
    if (file == NULL) return XPUML_ERROR_UNKNOWN;
    fprintf(file, "dev%d.vf_num=%d\n", device->index, count);
    fclose(file);
    return XPUML_SUCCESS;
}
#endif
