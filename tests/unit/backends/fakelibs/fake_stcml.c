/*
 * fake_stcml.c - a fake StreamComputing libstcml.so for the streamcomputing backend tests.
 *
 * Signatures from the vendor's STCML API page (stcDevice_t is opaque; return codes are negative). State
 * comes from the fixture named by $FAKE_STCML_FIXTURE (format and common keys: fixture_b.h). Device fields:
 *   dev.<i>.bus_id   dddd:bb:dd.f the bus-ID lookup matches (default 0000:<i+1>:00.0)
 *   dev.<i>.index    what stcmlDeviceGetIndex says (default i)
 *   dev.<i>.name / .uuid / .serial     text (defaults STCP920, UUID-STC-<i>, SN-STC-<i>)
 *   dev.<i>.power    watts (float)        dev.<i>.temp    core temperature, degrees C (float)
 *   dev.<i>.board    stcmlDeviceGetBoardStatus: 0 on (default), 1 off
 * plus driver_version=<text>. The bus-ID lookup is exported under the documentation's misspelling
 * stcmlDevcieGetHandleByPciBusId; build variants:
 *   -DSTC_CORRECT_SPELLING    export stcmlDeviceGetHandleByPciBusId instead
 *   -DOMIT_STCML_BY_BUS_ID    export neither spelling
 *   -DOMIT_STCML_POWER        no stcmlDeviceGetPower
 */
#define FX_ENV "FAKE_STCML_FIXTURE"
#include "fixture_b.h"

typedef int stcmlReturn_t;

enum {
    STCML_SUCCESS = 0,
    STCML_ERROR_INVALID_PARAM = -2,
    STCML_ERROR_NO_DEVICE = -4,
    STCML_ERROR_NOT_FOUND = -5,
    STCML_ERROR_OVERFLOW = -8,
    STCML_ERROR_OTHER = -99,
};

#define MAX_DEVICES 64

typedef struct stcDevice_st {
    int index;
} stcDevice_t;

typedef struct {
    float coreValue, alertValue, shutdownValue, frontValue, backValue;
} stcmlTemperatureInfo_t;

static stcDevice_t devices[MAX_DEVICES];
static int initialised;

static int device_count(void) {
    long long count = fxb_int("count", 0);
    return count < 0 ? 0 : (count > MAX_DEVICES ? MAX_DEVICES : (int)count);
}

static int enter(const char *function, stcDevice_t *device, const void *out) {
    if (!initialised) return STCML_ERROR_OTHER;
    if (device == NULL || out == NULL || device < devices || device >= devices + MAX_DEVICES)
        return STCML_ERROR_INVALID_PARAM;
    if (device->index >= device_count()) return STCML_ERROR_NO_DEVICE;
    return fxb_fault(function, device->index);
}

static int text_field(const char *function, stcDevice_t *device, char *out, unsigned length, const char *field,
                      const char *prefix /* NULL: the model name */) {
    char value[FXB_LINE], fallback[64];
    int code = enter(function, device, out);
    if (code != 0) return code;
    if (prefix != NULL)
        snprintf(fallback, sizeof fallback, "%s%d", prefix, device->index);
    else
        snprintf(fallback, sizeof fallback, "STCP920");
    fxb_dev_str(device->index, field, value, sizeof value, fallback);
    return fxb_copy_out(out, length, value) ? STCML_ERROR_OVERFLOW : STCML_SUCCESS;
}

stcmlReturn_t stcmlInit(void) {
    int code = fxb_fault("stcmlInit", -1);
    if (code == 0) code = (int)fxb_int("init_error", 0);
    if (code != 0) return code;
    for (int i = 0; i < MAX_DEVICES; i++) devices[i].index = i;
    initialised = 1;
    return STCML_SUCCESS;
}

stcmlReturn_t stcmlShutdown(void) {
    initialised = 0;
    return STCML_SUCCESS;
}

const char *stcmlErrorString(stcmlReturn_t result) {
    return result == STCML_SUCCESS ? "success" : "error";
}

stcmlReturn_t stcmlSystemGetDriverVersion(char *version, unsigned length) {
    char value[FXB_LINE];
    if (!initialised) return STCML_ERROR_OTHER;
    int code = fxb_fault("stcmlSystemGetDriverVersion", -1);
    if (code != 0) return code;
    if (!fxb_get("driver_version", value, sizeof value)) snprintf(value, sizeof value, "1.9.3");
    return fxb_copy_out(version, length, value) ? STCML_ERROR_OVERFLOW : STCML_SUCCESS;
}

stcmlReturn_t stcmlDeviceGetCount(unsigned *count) {
    if (!initialised) return STCML_ERROR_OTHER;
    if (count == NULL) return STCML_ERROR_INVALID_PARAM;
    int code = fxb_fault("stcmlDeviceGetCount", -1);
    if (code != 0) return code;
    *count = (unsigned)device_count();
    return STCML_SUCCESS;
}

stcmlReturn_t stcmlDeviceGetHandleByIndex(unsigned index, stcDevice_t **device) {
    if (!initialised) return STCML_ERROR_OTHER;
    if (device == NULL || index >= (unsigned)device_count()) return STCML_ERROR_INVALID_PARAM;
    int code = fxb_fault("stcmlDeviceGetHandleByIndex", (int)index);
    if (code != 0) return code;
    *device = &devices[index];
    return STCML_SUCCESS;
}

#ifndef OMIT_STCML_BY_BUS_ID
static int same_bus_id(const char *left, const char *right) {
    unsigned a[4], b[4];
    if (sscanf(left, "%x:%x:%x.%x", &a[0], &a[1], &a[2], &a[3]) != 4) return 0;
    if (sscanf(right, "%x:%x:%x.%x", &b[0], &b[1], &b[2], &b[3]) != 4) return 0;
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

static stcmlReturn_t by_bus_id(const char *function, const char *bus_id, stcDevice_t **device) {
    char value[FXB_LINE], fallback[32];
    if (!initialised) return STCML_ERROR_OTHER;
    if (bus_id == NULL || device == NULL) return STCML_ERROR_INVALID_PARAM;
    for (int i = 0; i < device_count(); i++) {
        snprintf(fallback, sizeof fallback, "0000:%02x:00.0", i + 1);
        fxb_dev_str(i, "bus_id", value, sizeof value, fallback);
        if (!same_bus_id(value, bus_id)) continue;
        int code = fxb_fault(function, i);
        if (code != 0) return code;
        *device = &devices[i];
        return STCML_SUCCESS;
    }
    return STCML_ERROR_NOT_FOUND;
}

#ifdef STC_CORRECT_SPELLING
stcmlReturn_t stcmlDeviceGetHandleByPciBusId(const char *bus_id, stcDevice_t **device) {
    return by_bus_id("stcmlDeviceGetHandleByPciBusId", bus_id, device);
}
#else
stcmlReturn_t stcmlDevcieGetHandleByPciBusId(const char *bus_id, stcDevice_t **device) {
    return by_bus_id("stcmlDevcieGetHandleByPciBusId", bus_id, device);
}
#endif
#endif

stcmlReturn_t stcmlDeviceGetIndex(stcDevice_t *device, unsigned *index) {
    int code = enter("stcmlDeviceGetIndex", device, index);
    if (code != 0) return code;
    *index = (unsigned)fxb_dev_int(device->index, "index", device->index);
    return STCML_SUCCESS;
}

stcmlReturn_t stcmlDeviceGetName(stcDevice_t *device, char *name, unsigned length) {
    return text_field("stcmlDeviceGetName", device, name, length, "name", NULL);
}

stcmlReturn_t stcmlDeviceGetUuid(stcDevice_t *device, char *uuid, unsigned length) {
    return text_field("stcmlDeviceGetUuid", device, uuid, length, "uuid", "UUID-STC-");
}

stcmlReturn_t stcmlDeviceGetSerial(stcDevice_t *device, char *serial, unsigned length) {
    return text_field("stcmlDeviceGetSerial", device, serial, length, "serial", "SN-STC-");
}

#ifndef OMIT_STCML_POWER
stcmlReturn_t stcmlDeviceGetPower(stcDevice_t *device, float *power) {
    int code = enter("stcmlDeviceGetPower", device, power);
    if (code != 0) return code;
    *power = (float)fxb_dev_num(device->index, "power", 36.5);
    return STCML_SUCCESS;
}
#endif

stcmlReturn_t stcmlDeviceGetTemperatureInfo(stcDevice_t *device, stcmlTemperatureInfo_t *info) {
    int code = enter("stcmlDeviceGetTemperatureInfo", device, info);
    if (code != 0) return code;
    info->coreValue = (float)fxb_dev_num(device->index, "temp", 33.5);
    info->alertValue = 91;
    info->shutdownValue = 95;
    info->frontValue = 24.25f;
    info->backValue = 28.0f;
    return STCML_SUCCESS;
}

stcmlReturn_t stcmlDeviceGetBoardStatus(stcDevice_t *device, unsigned *status) {
    int code = enter("stcmlDeviceGetBoardStatus", device, status);
    if (code != 0) return code;
    *status = (unsigned)fxb_dev_int(device->index, "board", 0);
    return STCML_SUCCESS;
}
