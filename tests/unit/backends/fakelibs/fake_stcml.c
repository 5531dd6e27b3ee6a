/*
 * fake_stcml.c - a fake StreamComputing libstcml.so for the streamcomputing backend tests.
 *
 * Signatures from the vendor's STCML API page (stcDevice_t is opaque; return codes are negative). State
 * comes from the fixture named by $FAKE_STCML_FIXTURE (format and common keys: fixture.h; driver_version
 * defaults to 1.9.3). Device fields:
 *   dev<i>.bus_id   dddd:bb:dd.f the bus-ID lookup matches (default 0000:<i+1>:00.0)
 *   dev<i>.index    what stcmlDeviceGetIndex says (default i)
 *   dev<i>.name / .uuid / .serial     text (defaults STCP920, UUID-STC-<i>, SN-STC-<i>)
 *   dev<i>.power    watts (float)        dev<i>.temp    core temperature, degrees C (float)
 *   dev<i>.board    stcmlDeviceGetBoardStatus: 0 on (default), 1 off
 * The bus-ID lookup is exported under the documentation's misspelling stcmlDevcieGetHandleByPciBusId, or
 * with -DSTC_CORRECT_SPELLING as stcmlDeviceGetHandleByPciBusId instead. Symbols that can be left out with
 * -DOMIT_<symbol>: stcmlDevcieGetHandleByPciBusId, stcmlDeviceGetHandleByPciBusId, stcmlDeviceGetPower.
 * With -DSTC_CXX_NAMES stcmlInit, stcmlShutdown and stcmlDeviceGetCount are exported under Itanium-mangled
 * names (_Z9stcmlInitv ...), as a C++ build of the library without extern "C" would export them, so the
 * plain-name lookups fail (the vendor's page is titled "C++ API" and no header is public: either build may
 * be what ships).
 */
#define FX_ENV "FAKE_STCML_FIXTURE"
#include "fixture.h"

#ifdef STC_CXX_NAMES
/* The mangled names of a C++ build; the plain names are then not exported. */
#define stcmlInit stcmlInit_cxx
#define stcmlShutdown stcmlShutdown_cxx
#define stcmlDeviceGetCount stcmlDeviceGetCount_cxx
int stcmlInit_cxx(void) __asm__("_Z9stcmlInitv");
int stcmlShutdown_cxx(void) __asm__("_Z13stcmlShutdownv");
int stcmlDeviceGetCount_cxx(unsigned *count) __asm__("_Z19stcmlDeviceGetCountPj");
#endif

typedef int stcmlReturn_t;

enum {
    STCML_SUCCESS = 0,
    STCML_ERROR_INVALID_PARAM = -2,
    STCML_ERROR_NO_DEVICE = -4,
    STCML_ERROR_NOT_FOUND = -5,
    STCML_ERROR_OVERFLOW = -8,
    STCML_ERROR_OTHER = -99,
};

typedef struct stcDevice_st {
    int index;
} stcDevice_t;

typedef struct {
    float coreValue, alertValue, shutdownValue, frontValue, backValue;
} stcmlTemperatureInfo_t;

static stcDevice_t devices[FX_MAX_DEVICES];
static int initialised;

static int enter(const char *function, stcDevice_t *device, const void *out) {
    if (!initialised) return STCML_ERROR_OTHER;
    if (device == NULL || out == NULL || device < devices || device >= devices + FX_MAX_DEVICES)
        return STCML_ERROR_INVALID_PARAM;
    if (device->index >= fx_count()) return STCML_ERROR_NO_DEVICE;
    return fx_fault(function, device->index);
}

static int text_field(const char *function, stcDevice_t *device, char *out, unsigned length, const char *field,
                      const char *prefix /* NULL: the model name */) {
    char value[FX_LINE], fallback[64];
    int code = enter(function, device, out);
    if (code != 0) return code;
    if (prefix != NULL)
        snprintf(fallback, sizeof fallback, "%s%d", prefix, device->index);
    else
        snprintf(fallback, sizeof fallback, "STCP920");
    fx_dev_str(device->index, field, value, sizeof value, fallback);
    return fx_copy_out(out, length, value) ? STCML_ERROR_OVERFLOW : STCML_SUCCESS;
}

stcmlReturn_t stcmlInit(void) {
    int code = fx_init_result("stcmlInit");
    if (code != 0) return code;
    for (int i = 0; i < FX_MAX_DEVICES; i++) devices[i].index = i;
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
    char value[FX_LINE];
    if (!initialised) return STCML_ERROR_OTHER;
    int code = fx_fault("stcmlSystemGetDriverVersion", -1);
    if (code != 0) return code;
    fx_str("driver_version", value, sizeof value, "1.9.3");
    return fx_copy_out(version, length, value) ? STCML_ERROR_OVERFLOW : STCML_SUCCESS;
}

stcmlReturn_t stcmlDeviceGetCount(unsigned *count) {
    if (!initialised) return STCML_ERROR_OTHER;
    if (count == NULL) return STCML_ERROR_INVALID_PARAM;
    int code = fx_fault("stcmlDeviceGetCount", -1);
    if (code != 0) return code;
    *count = (unsigned)fx_count();
    return STCML_SUCCESS;
}

stcmlReturn_t stcmlDeviceGetHandleByIndex(unsigned index, stcDevice_t **device) {
    if (!initialised) return STCML_ERROR_OTHER;
    if (device == NULL || index >= (unsigned)fx_count()) return STCML_ERROR_INVALID_PARAM;
    int code = fx_fault("stcmlDeviceGetHandleByIndex", (int)index);
    if (code != 0) return code;
    *device = &devices[index];
    return STCML_SUCCESS;
}

/* The bus-ID lookup, whichever spelling it is exported under (static inline: unused in the variant with none). */
static inline stcmlReturn_t by_bus_id(const char *function, const char *bus_id, stcDevice_t **device) {
    struct fx_pci wanted, address;
    if (!initialised) return STCML_ERROR_OTHER;
    if (bus_id == NULL || device == NULL) return STCML_ERROR_INVALID_PARAM;
    if (!fx_parse_pci(bus_id, &wanted)) return STCML_ERROR_NOT_FOUND;
    for (int i = 0; i < fx_count(); i++) {
        if (!fx_dev_pci(i, i + 1, &address) || !fx_pci_equal(&address, &wanted)) continue;
        int code = fx_fault(function, i);
        if (code != 0) return code;
        *device = &devices[i];
        return STCML_SUCCESS;
    }
    return STCML_ERROR_NOT_FOUND;
}

#if defined(STC_CORRECT_SPELLING) && !defined(OMIT_stcmlDeviceGetHandleByPciBusId)
stcmlReturn_t stcmlDeviceGetHandleByPciBusId(const char *bus_id, stcDevice_t **device) {
    return by_bus_id("stcmlDeviceGetHandleByPciBusId", bus_id, device);
}
#elif !defined(STC_CORRECT_SPELLING) && !defined(OMIT_stcmlDevcieGetHandleByPciBusId)
stcmlReturn_t stcmlDevcieGetHandleByPciBusId(const char *bus_id, stcDevice_t **device) {
    return by_bus_id("stcmlDevcieGetHandleByPciBusId", bus_id, device);
}
#endif

stcmlReturn_t stcmlDeviceGetIndex(stcDevice_t *device, unsigned *index) {
    int code = enter("stcmlDeviceGetIndex", device, index);
    if (code != 0) return code;
    *index = (unsigned)fx_dev_int(device->index, "index", device->index);
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

#ifndef OMIT_stcmlDeviceGetPower
stcmlReturn_t stcmlDeviceGetPower(stcDevice_t *device, float *power) {
    int code = enter("stcmlDeviceGetPower", device, power);
    if (code != 0) return code;
    *power = (float)fx_dev_num(device->index, "power", 36.5);
    return STCML_SUCCESS;
}
#endif

stcmlReturn_t stcmlDeviceGetTemperatureInfo(stcDevice_t *device, stcmlTemperatureInfo_t *info) {
    int code = enter("stcmlDeviceGetTemperatureInfo", device, info);
    if (code != 0) return code;
    info->coreValue = (float)fx_dev_num(device->index, "temp", 33.5);
    info->alertValue = 91;
    info->shutdownValue = 95;
    info->frontValue = 24.25f;
    info->backValue = 28.0f;
    return STCML_SUCCESS;
}

stcmlReturn_t stcmlDeviceGetBoardStatus(stcDevice_t *device, unsigned *status) {
    int code = enter("stcmlDeviceGetBoardStatus", device, status);
    if (code != 0) return code;
    *status = (unsigned)fx_dev_int(device->index, "board", 0);
    return STCML_SUCCESS;
}
