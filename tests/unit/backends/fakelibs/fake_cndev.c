/*
 * fake_cndev.c - a fake libcndev.so (Cambricon CNDev) for the Cambricon backend tests.
 *
 * Reads the fixture named by $FAKE_CNDEV_FIXTURE (format and common keys: fixture.h; driver_version is
 * major.minor.build, default 5.10.22). Device handles are 1000 + index, so a caller that passes an index
 * where a handle belongs gets INVALID_DEVICE_ID. CNDev-specific keys:
 *   api_version=6                newest struct version accepted (a higher one: UNSUPPORTED_API_VERSION)
 *   dev<i>.uuid / .name (model string) / .minor / .bus_id (dddd:bb:dd.f) / .numa (CNDev's own NUMA id)
 *   dev<i>.memory_total_mb / .memory_used_mb / .util (%) / .power_w / .temp_chip / .temp_board (C)
 *   dev<i>.health (1 healthy) / .device_state (1 GOOD) / .driver_state (4 RUNNING)
 *   dev<i>.compute_mode          cndevGetComputeMode: 0 DEFAULT, 1 EXCLUSIVE, 2 PROHIBITED
 *   dev<i>.links                 comma-separated UUIDs of the MLUs each MLU-Link port reaches, one per port
 *                                ("-" for a port without a link: cndevGetMLULinkRemoteInfo answers INVALID_LINK)
 * Symbols that can be left out with -DOMIT_<symbol>: cndevGetTemperatureInfo, cndevGetDevicePowerInfo,
 * cndevDeviceGetMinorNumber.
 * Built with -DCNDEV_2022 it is the 2022 library (mlu-exporter's cndev.h of v1.6.7): highest struct version 5
 * (api_version defaults to 5), calls take int devId, and the handle generation's cndevGetDeviceHandleByIndex,
 * cndevGetMemoryUsageV2, cndevGetPCIeInfoV2, cndevGetDevicePowerInfo and cndevDeviceGetMinorNumber do not
 * exist (memory comes from cndevGetMemoryUsage).
 */
#define FX_ENV "FAKE_CNDEV_FIXTURE"
#include "fixture.h"

typedef int cndevRet_t;
typedef int cndevDevice_t;

enum {
    CNDEV_SUCCESS = 0,
    CNDEV_ERROR_UNSUPPORTED_API_VERSION = 3,
    CNDEV_ERROR_INVALID_ARGUMENT = 5,
    CNDEV_ERROR_INVALID_DEVICE_ID = 6,
    CNDEV_ERROR_UNKNOWN = 7,
    CNDEV_ERROR_INVALID_LINK = 11,
};

#ifdef CNDEV_2022
#define API_VERSION_DEFAULT 5
#define OMIT_cndevGetDevicePowerInfo
#define OMIT_cndevDeviceGetMinorNumber
#else
#define API_VERSION_DEFAULT 6
#endif

#ifdef CNDEV_2022
#define HANDLE_BASE 0 /* calls take the device index (int devId) itself */
#else
#define HANDLE_BASE 1000
#endif

typedef struct { int version; unsigned number; } cndevCardInfo_t;
typedef struct { int version; unsigned char uuid[37]; unsigned long ncsUUID64; } cndevUUID_t;
typedef struct {
    long physicalMemoryTotal, physicalMemoryUsed, reservedMemory, virtualMemoryTotal, virtualMemoryUsed;
    unsigned long globalMemory;
    unsigned long reserved[16];
} cndevMemoryInfoV2_t;
typedef struct { int version; int averageCoreUtilization; int coreUtilization[80]; } cndevUtilizationInfo_t;
typedef struct { int version; int health; int deviceState; int driverState; } cndevCardHealthState_t;
typedef struct {
    unsigned subsystemId, deviceId;
    unsigned short vendor, subsystemVendor;
    unsigned domain, bus, device, function;
    unsigned short moduleId, slotId;
    unsigned reserved[8];
} cndevPCIeInfoV2_t;
typedef struct { int version; int nodeId; } cndevNUMANodeId_t;
typedef struct { int usage, cap, machine, tdp, maxPower; int reserved[16]; } cndevDevicePowerInfo_t;
typedef struct {
    int version, board, cluster[20], memoryDie[8], chip, airInlet, airOutlet, memory, videoInput, cpu, isp;
} cndevTemperatureInfo_t;
typedef struct { int version; int mode; } cndevComputeMode_t;
typedef struct {
    int version;
    unsigned long mcSn, baSn;
    unsigned slotId, portId;
    unsigned char devIp[16];
    unsigned char uuid[37];
    unsigned devIpVersion, isIpValid;
    int connectType;
    unsigned long ncsUUID64;
    unsigned char mac_addr[6];
    char port_name[64];
} cndevMLULinkRemoteInfo_t;
typedef struct {
    int version;
    long physicalMemoryTotal, physicalMemoryUsed, virtualMemoryTotal, virtualMemoryUsed, channelNumber;
    long channelMemoryUsed[20];
} cndevMemoryInfo_t;
typedef struct {
    int version;
    unsigned mcuMajorVersion, mcuMinorVersion, mcuBuildVersion;
    unsigned driverMajorVersion, driverMinorVersion, driverBuildVersion;
} cndevVersionInfo_t;

static int index_of(cndevDevice_t handle) {
    int index = handle - HANDLE_BASE;
    return index >= 0 && index < fx_count() ? index : -1;
}

static int version_ok(int version) { return version >= 1 && version <= fx_int("api_version", API_VERSION_DEFAULT); }

#define DEVICE_CALL(name, handle, index_var)                          \
    int index_var = index_of(handle);                                 \
    if (index_var < 0) return CNDEV_ERROR_INVALID_DEVICE_ID;          \
    {                                                                 \
        int fault_ = fx_fault(name, index_var);                       \
        if (fault_) return fault_;                                    \
    }

#define CHECK_VERSION(info)                                                   \
    if (!version_ok((info)->version)) return CNDEV_ERROR_UNSUPPORTED_API_VERSION;

cndevRet_t cndevInit(int reserved) {
    (void)reserved;
    return fx_init_result("cndevInit");
}

cndevRet_t cndevRelease(void) { return fx_fault("cndevRelease", -1); }

const char *cndevGetErrorString(cndevRet_t code) {
    return code == CNDEV_SUCCESS ? "success" : "fake cndev error";
}

cndevRet_t cndevGetDeviceCount(cndevCardInfo_t *info) {
    int fault = fx_fault("cndevGetDeviceCount", -1);
    if (fault) return fault;
    CHECK_VERSION(info);
    info->number = (unsigned)fx_count();
    return CNDEV_SUCCESS;
}

#ifndef CNDEV_2022
cndevRet_t cndevGetDeviceHandleByIndex(int index, cndevDevice_t *handle) {
    if (index < 0 || index >= fx_count()) return CNDEV_ERROR_INVALID_DEVICE_ID;
    int fault = fx_fault("cndevGetDeviceHandleByIndex", index);
    if (fault) return fault;
    *handle = HANDLE_BASE + index;
    return CNDEV_SUCCESS;
}
#endif

static char names[FX_MAX_DEVICES][64];

const char *cndevGetCardNameStringByDevId(cndevDevice_t handle) {
    int index = index_of(handle);
    if (index < 0 || fx_fault("cndevGetCardNameStringByDevId", index)) return NULL;
    fx_dev_str(index, "name", names[index], sizeof names[index], "MLU370-X8");
    return names[index];
}

cndevRet_t cndevGetUUID(cndevUUID_t *info, cndevDevice_t handle) {
    DEVICE_CALL("cndevGetUUID", handle, index);
    CHECK_VERSION(info);
    char fallback[40];
    snprintf(fallback, sizeof fallback, "00000000-0000-0000-0000-%012d", index);
    memset(info->uuid, 0, sizeof info->uuid);
    fx_dev_str(index, "uuid", (char *)info->uuid, sizeof info->uuid, fallback);
    info->ncsUUID64 = 0;
    return CNDEV_SUCCESS;
}

#ifdef CNDEV_2022
cndevRet_t cndevGetMemoryUsage(cndevMemoryInfo_t *info, int devId) {
    DEVICE_CALL("cndevGetMemoryUsage", devId, index);
    CHECK_VERSION(info);
    info->physicalMemoryTotal = (long)fx_dev_int(index, "memory_total_mb", 24576);
    info->physicalMemoryUsed = (long)fx_dev_int(index, "memory_used_mb", 0);
    return CNDEV_SUCCESS;
}
#else
cndevRet_t cndevGetMemoryUsageV2(cndevMemoryInfoV2_t *info, cndevDevice_t handle) {
    DEVICE_CALL("cndevGetMemoryUsageV2", handle, index);
    memset(info, 0, sizeof *info);
    info->physicalMemoryTotal = (long)fx_dev_int(index, "memory_total_mb", 24576);
    info->physicalMemoryUsed = (long)fx_dev_int(index, "memory_used_mb", 0);
    info->reservedMemory = 1202;
    return CNDEV_SUCCESS;
}
#endif

cndevRet_t cndevGetDeviceUtilizationInfo(cndevUtilizationInfo_t *info, cndevDevice_t handle) {
    DEVICE_CALL("cndevGetDeviceUtilizationInfo", handle, index);
    CHECK_VERSION(info);
    info->averageCoreUtilization = (int)fx_dev_int(index, "util", 0);
    for (int core = 0; core < 80; core++) info->coreUtilization[core] = info->averageCoreUtilization;
    return CNDEV_SUCCESS;
}

cndevRet_t cndevGetCardHealthState(cndevCardHealthState_t *info, cndevDevice_t handle) {
    DEVICE_CALL("cndevGetCardHealthState", handle, index);
    CHECK_VERSION(info);
    info->health = (int)fx_dev_int(index, "health", 1);
    info->deviceState = (int)fx_dev_int(index, "device_state", 1);
    info->driverState = (int)fx_dev_int(index, "driver_state", 4);
    return CNDEV_SUCCESS;
}

#ifndef CNDEV_2022
cndevRet_t cndevGetPCIeInfoV2(cndevPCIeInfoV2_t *info, cndevDevice_t handle) {
    DEVICE_CALL("cndevGetPCIeInfoV2", handle, index);
    struct fx_pci address;
    if (!fx_dev_pci(index, 0x39 + index, &address)) return CNDEV_ERROR_UNKNOWN;
    memset(info, 0, sizeof *info);
    info->vendor = 0xcabc;
    info->domain = address.domain;
    info->bus = address.bus;
    info->device = address.slot;
    info->function = address.function;
    return CNDEV_SUCCESS;
}
#endif

cndevRet_t cndevGetNUMANodeIdByDevId(cndevNUMANodeId_t *info, cndevDevice_t handle) {
    DEVICE_CALL("cndevGetNUMANodeIdByDevId", handle, index);
    CHECK_VERSION(info);
    info->nodeId = (int)fx_dev_int(index, "numa", -1);
    return CNDEV_SUCCESS;
}

#ifndef OMIT_cndevGetTemperatureInfo
cndevRet_t cndevGetTemperatureInfo(cndevTemperatureInfo_t *info, cndevDevice_t handle) {
    DEVICE_CALL("cndevGetTemperatureInfo", handle, index);
    CHECK_VERSION(info);
    int version = info->version;
    memset(info, 0, sizeof *info);
    info->version = version;
    info->board = (int)fx_dev_int(index, "temp_board", 35);
    info->chip = (int)fx_dev_int(index, "temp_chip", 42);
    return CNDEV_SUCCESS;
}
#endif

#ifndef OMIT_cndevGetDevicePowerInfo
cndevRet_t cndevGetDevicePowerInfo(cndevDevicePowerInfo_t *info, cndevDevice_t handle) {
    DEVICE_CALL("cndevGetDevicePowerInfo", handle, index);
    memset(info, 0, sizeof *info);
    info->usage = (int)fx_dev_int(index, "power_w", 106);
    info->cap = 250;
    return CNDEV_SUCCESS;
}
#endif

#ifndef OMIT_cndevDeviceGetMinorNumber
cndevRet_t cndevDeviceGetMinorNumber(unsigned *minor, cndevDevice_t handle) {
    DEVICE_CALL("cndevDeviceGetMinorNumber", handle, index);
    *minor = (unsigned)fx_dev_int(index, "minor", index);
    return CNDEV_SUCCESS;
}
#endif

cndevRet_t cndevGetVersionInfo(cndevVersionInfo_t *info, cndevDevice_t handle) {
    DEVICE_CALL("cndevGetVersionInfo", handle, index);
    CHECK_VERSION(info);
    char value[64];
    fx_str("driver_version", value, sizeof value, "5.10.22");
    unsigned major = 0, minor = 0, build = 0;
    sscanf(value, "%u.%u.%u", &major, &minor, &build);
    info->driverMajorVersion = major;
    info->driverMinorVersion = minor;
    info->driverBuildVersion = build;
    return CNDEV_SUCCESS;
}

cndevRet_t cndevGetComputeMode(cndevComputeMode_t *info, cndevDevice_t handle) {
    DEVICE_CALL("cndevGetComputeMode", handle, index);
    CHECK_VERSION(info);
    info->mode = (int)fx_dev_int(index, "compute_mode", 0);
    return CNDEV_SUCCESS;
}

/* The link-th entry of dev<i>.links into out; 0 when there is none. */
static int link_peer(int index, int link, char *out, size_t size) {
    char value[FX_LINE];
    fx_dev_str(index, "links", value, sizeof value, "");
    char *cursor = value;
    for (int port = 0; *cursor; port++) {
        size_t length = strcspn(cursor, ",");
        if (port == link) {
            if (length >= size) length = size - 1;
            memcpy(out, cursor, length);
            out[length] = '\0';
            return 1;
        }
        cursor += length;
        if (*cursor == ',') cursor++;
    }
    return 0;
}

int cndevGetMLULinkPortNumber(cndevDevice_t handle) {
    int index = index_of(handle);
    if (index < 0) return 0;
    char value[FX_LINE];
    if (!fx_dev_str(index, "links", value, sizeof value, "") || value[0] == '\0') return 0;
    int ports = 1;
    for (char *cursor = value; *cursor; cursor++) ports += *cursor == ',';
    return ports;
}

cndevRet_t cndevGetMLULinkRemoteInfo(cndevMLULinkRemoteInfo_t *info, cndevDevice_t handle, int link) {
    DEVICE_CALL("cndevGetMLULinkRemoteInfo", handle, index);
    CHECK_VERSION(info);
    char peer[64];
    if (!link_peer(index, link, peer, sizeof peer) || strcmp(peer, "-") == 0) return CNDEV_ERROR_INVALID_LINK;
    int version = info->version;
    memset(info, 0, sizeof *info);
    info->version = version;
    info->portId = (unsigned)link;
    fx_copy((char *)info->uuid, sizeof info->uuid, peer);
    return CNDEV_SUCCESS;
}
