/*
 * fake_dcmi.c - a fake libdcmi.so (Huawei Ascend DCMI) for the Ascend backend tests.
 *
 * Reads the fixture named by $FAKE_DCMI_FIXTURE (format and common keys: fixture.h; driver_version defaults
 * to 24.1.rc2). Device i (logic id i) sits on card i / per_card, device id i % per_card. DCMI-specific keys:
 *   per_card=1                   NPUs per card
 *   dev<i>.phy_id                physical id (default i)
 *   dev<i>.chip_type / .chip_name / .npu_name   (defaults "Ascend", "910B3", "")
 *   dev<i>.hbm_total_mb / .hbm_used_mb          HBM (dcmi_get_device_hbm_info), 910-class chips only: on
 *                                                any other chip (310, 310P) the HBM query fails with
 *   dev<i>.hbm_error (default -8005 INNER_ERR)   as Huawei's plugin expects (it asks 910 chips only; the
 *                                                real code for a 310P is not documented)
 *   dev<i>.mem_total_mb / .mem_available_mb     dcmi_get_device_memory_info_v3
 *   dev<i>.util (AI Core %) / .power (0.1 W units) / .temp (C)
 *   dev<i>.health (0 healthy) / .errors (comma-separated hex codes)
 *   dev<i>.bus_id (dddd:bb:dd.f)
 * Symbols that can be left out with -DOMIT_<symbol> (missing-symbol and fallback tests):
 * dcmi_get_driver_version, dcmi_get_card_list, dcmi_get_device_chip_info_v2, dcmi_get_device_hbm_info,
 * dcmi_get_device_power_info.
 * Built with -DDCMI_V2_ONLY it is a newer driver's library (A5/950 class): no v1 dcmi_* symbol at all, only
 * the dcmiv2_* family of dcmi_interface_api_v2.h, where device i is dev_id i (from dcmiv2_get_device_list).
 */
#define FX_ENV "FAKE_DCMI_FIXTURE"
#include "fixture.h"

#define DCMI_OK 0
#define ERR_INVALID_PARAMETER (-8001)
#define ERR_INVALID_DEVICE_ID (-8007)
#define ERR_NOT_SUPPORT (-8255)

struct dcmi_chip_info {
    unsigned char chip_type[32];
    unsigned char chip_name[32];
    unsigned char chip_ver[32];
    unsigned int aicore_cnt;
};

struct dcmi_chip_info_v2 {
    unsigned char chip_type[32];
    unsigned char chip_name[32];
    unsigned char chip_ver[32];
    unsigned int aicore_cnt;
    unsigned char npu_name[32];
};

struct dcmi_hbm_info {
    unsigned long long memory_size;
    unsigned int freq;
    unsigned long long memory_usage;
    int temp;
    unsigned int bandwith_util_rate;
};

struct dcmi_get_memory_info_stru {
    unsigned long long memory_size;
    unsigned long long memory_available;
    unsigned int freq;
    unsigned long hugepagesize;
    unsigned long hugepages_total;
    unsigned long hugepages_free;
    unsigned int utiliza;
    unsigned char reserve[60];
};

struct dcmi_pcie_info_all {
    unsigned int venderid, subvenderid, deviceid, subdeviceid;
    int domain;
    unsigned int bdf_busid, bdf_deviceid, bdf_funcid;
    unsigned char reserve[32];
};

static inline int per_card(void) {
    int value = (int)fx_int("per_card", 1);
    return value > 0 ? value : 1;
}

/* The device index at (card, device), or -1. */
static inline int index_at(int card_id, int device_id) {
    if (card_id < 0 || device_id < 0 || device_id >= per_card()) return -1;
    int index = card_id * per_card() + device_id;
    return index < fx_count() ? index : -1;
}

#define DEVICE_CALL(name, card, dev, index_var)                       \
    int index_var = index_at(card, dev);                              \
    if (index_var < 0) return ERR_INVALID_DEVICE_ID;                  \
    {                                                                 \
        int fault_ = fx_fault(name, index_var);                       \
        if (fault_) return fault_;                                    \
    }

/* HBM of device i: a 910-class chip has it; another chip fails the query. */
static inline int fill_hbm(int index, struct dcmi_hbm_info *info) {
    char name[32];
    fx_dev_str(index, "chip_name", name, sizeof name, "910B3");
    if (strncmp(name, "910", 3) != 0) return (int)fx_dev_int(index, "hbm_error", -8005);
    memset(info, 0, sizeof *info);
    info->memory_size = (unsigned long long)fx_dev_int(index, "hbm_total_mb", 65536);
    info->memory_usage = (unsigned long long)fx_dev_int(index, "hbm_used_mb", 0);
    info->temp = (int)fx_dev_int(index, "hbm_temp", 40);
    info->freq = 1600;
    return DCMI_OK;
}

static inline void fill_chip(int index, unsigned char *type, unsigned char *name, unsigned char *version,
                             unsigned int *cores) {
    fx_dev_str(index, "chip_type", (char *)type, 32, "Ascend");
    fx_dev_str(index, "chip_name", (char *)name, 32, "910B3");
    fx_dev_str(index, "chip_ver", (char *)version, 32, "V1");
    *cores = (unsigned)fx_dev_int(index, "aicore_cnt", 20);
}

static inline int fill_pcie(int index, struct dcmi_pcie_info_all *info) {
    struct fx_pci address;
    if (!fx_dev_pci(index, 0xc1 + index, &address)) return ERR_INVALID_PARAMETER;
    memset(info, 0, sizeof *info);
    info->venderid = 0x19e5;
    info->deviceid = 0xd802;
    info->domain = (int)address.domain;
    info->bdf_busid = address.bus;
    info->bdf_deviceid = address.slot;
    info->bdf_funcid = address.function;
    return DCMI_OK;
}

static inline int fill_error_codes(int index, int *error_count, unsigned int *codes, unsigned int list_len) {
    char value[FX_LINE];
    fx_dev_str(index, "errors", value, sizeof value, "");
    int found = 0;
    for (char *cursor = value; *cursor && (unsigned)found < list_len;) {
        char *end;
        unsigned long code = strtoul(cursor, &end, 16);
        if (end == cursor) break;
        codes[found++] = (unsigned)code;
        cursor = *end == ',' ? end + 1 : end;
    }
    *error_count = found;
    return DCMI_OK;
}

static inline int version_text(const char *name, char *out, unsigned length) {
    int fault = fx_fault(name, -1);
    if (fault) return fault;
    char value[FX_LINE];
    fx_str("driver_version", value, sizeof value, "24.1.rc2");
    return fx_copy_out(out, length, value) ? ERR_INVALID_PARAMETER : DCMI_OK;
}

#ifndef DCMI_V2_ONLY
int dcmi_init(void) { return fx_init_result("dcmi_init"); }

#ifndef OMIT_dcmi_get_driver_version
int dcmi_get_driver_version(char *version, unsigned int length) {
    return version_text("dcmi_get_driver_version", version, length);
}
#endif

int dcmi_get_dcmi_version(char *version, unsigned int length) {
    return version_text("dcmi_get_dcmi_version", version, length);
}

static int card_list(const char *name, int *card_num, int *cards, int list_len) {
    int fault = fx_fault(name, -1);
    if (fault) return fault;
    int total = (fx_count() + per_card() - 1) / per_card();
    if (total > list_len) return ERR_INVALID_PARAMETER;
    for (int card = 0; card < total; card++) cards[card] = card;
    *card_num = total;
    return DCMI_OK;
}

#ifndef OMIT_dcmi_get_card_list
int dcmi_get_card_list(int *card_num, int *cards, int list_len) {
    return card_list("dcmi_get_card_list", card_num, cards, list_len);
}
#endif

int dcmi_get_card_num_list(int *card_num, int *cards, int list_len) {
    return card_list("dcmi_get_card_num_list", card_num, cards, list_len);
}

int dcmi_get_device_num_in_card(int card_id, int *device_num) {
    if (index_at(card_id, 0) < 0) return ERR_INVALID_DEVICE_ID;
    int fault = fx_fault("dcmi_get_device_num_in_card", -1);
    if (fault) return fault;
    int remaining = fx_count() - card_id * per_card();
    *device_num = remaining < per_card() ? remaining : per_card();
    return DCMI_OK;
}

int dcmi_get_device_logic_id(int *logic_id, int card_id, int device_id) {
    DEVICE_CALL("dcmi_get_device_logic_id", card_id, device_id, index);
    *logic_id = index;
    return DCMI_OK;
}

int dcmi_get_device_phyid_from_logicid(unsigned int logic_id, unsigned int *phy_id) {
    if ((int)logic_id >= fx_count()) return ERR_INVALID_DEVICE_ID;
    int fault = fx_fault("dcmi_get_device_phyid_from_logicid", (int)logic_id);
    if (fault) return fault;
    *phy_id = (unsigned)fx_dev_int((int)logic_id, "phy_id", logic_id);
    return DCMI_OK;
}

#ifndef OMIT_dcmi_get_device_chip_info_v2
int dcmi_get_device_chip_info_v2(int card_id, int device_id, struct dcmi_chip_info_v2 *info) {
    DEVICE_CALL("dcmi_get_device_chip_info_v2", card_id, device_id, index);
    memset(info, 0, sizeof *info);
    fill_chip(index, info->chip_type, info->chip_name, info->chip_ver, &info->aicore_cnt);
    fx_dev_str(index, "npu_name", (char *)info->npu_name, sizeof info->npu_name, "");
    return DCMI_OK;
}
#endif

int dcmi_get_device_chip_info(int card_id, int device_id, struct dcmi_chip_info *info) {
    DEVICE_CALL("dcmi_get_device_chip_info", card_id, device_id, index);
    memset(info, 0, sizeof *info);
    fill_chip(index, info->chip_type, info->chip_name, info->chip_ver, &info->aicore_cnt);
    return DCMI_OK;
}

#ifndef OMIT_dcmi_get_device_hbm_info
int dcmi_get_device_hbm_info(int card_id, int device_id, struct dcmi_hbm_info *info) {
    DEVICE_CALL("dcmi_get_device_hbm_info", card_id, device_id, index);
    return fill_hbm(index, info);
}
#endif

int dcmi_get_device_memory_info_v3(int card_id, int device_id, struct dcmi_get_memory_info_stru *info) {
    DEVICE_CALL("dcmi_get_device_memory_info_v3", card_id, device_id, index);
    memset(info, 0, sizeof *info);
    info->memory_size = (unsigned long long)fx_dev_int(index, "mem_total_mb", 15360);
    info->memory_available = (unsigned long long)fx_dev_int(index, "mem_available_mb", 15360);
    info->hugepagesize = 2048;
    return DCMI_OK;
}

int dcmi_get_device_utilization_rate(int card_id, int device_id, int input_type, unsigned int *rate) {
    DEVICE_CALL("dcmi_get_device_utilization_rate", card_id, device_id, index);
    if (input_type != 2) return ERR_NOT_SUPPORT; /* the fake knows only AI Core */
    *rate = (unsigned)fx_dev_int(index, "util", 0);
    return DCMI_OK;
}

#ifndef OMIT_dcmi_get_device_power_info
int dcmi_get_device_power_info(int card_id, int device_id, int *power) {
    DEVICE_CALL("dcmi_get_device_power_info", card_id, device_id, index);
    *power = (int)fx_dev_int(index, "power", 700);
    return DCMI_OK;
}
#endif

int dcmi_get_device_temperature(int card_id, int device_id, int *temperature) {
    DEVICE_CALL("dcmi_get_device_temperature", card_id, device_id, index);
    *temperature = (int)fx_dev_int(index, "temp", 45);
    return DCMI_OK;
}

int dcmi_get_device_health(int card_id, int device_id, unsigned int *health) {
    DEVICE_CALL("dcmi_get_device_health", card_id, device_id, index);
    *health = (unsigned)fx_dev_int(index, "health", 0);
    return DCMI_OK;
}

int dcmi_get_device_errorcode_v2(int card_id, int device_id, int *error_count, unsigned int *codes,
                                 unsigned int list_len) {
    DEVICE_CALL("dcmi_get_device_errorcode_v2", card_id, device_id, index);
    return fill_error_codes(index, error_count, codes, list_len);
}

int dcmi_get_device_pcie_info_v2(int card_id, int device_id, struct dcmi_pcie_info_all *info) {
    DEVICE_CALL("dcmi_get_device_pcie_info_v2", card_id, device_id, index);
    return fill_pcie(index, info);
}
#endif /* DCMI_V2_ONLY */

#ifdef DCMI_V2_ONLY
/* dcmiv2: device i is dev_id i. */
#define V2_CALL(name, dev_id)                                         \
    if (dev_id < 0 || dev_id >= fx_count()) return ERR_INVALID_DEVICE_ID; \
    {                                                                 \
        int fault_ = fx_fault(name, dev_id);                          \
        if (fault_) return fault_;                                    \
    }

int dcmiv2_init(void) { return fx_init_result("dcmiv2_init"); }

int dcmiv2_get_dcmi_version(char *version, int length) {
    return version_text("dcmiv2_get_dcmi_version", version, (unsigned)length);
}

int dcmiv2_get_device_list(int *device_list, int *device_num, int list_len) {
    int fault = fx_fault("dcmiv2_get_device_list", -1);
    if (fault) return fault;
    if (fx_count() > list_len) return ERR_INVALID_PARAMETER;
    for (int dev = 0; dev < fx_count(); dev++) device_list[dev] = dev;
    *device_num = fx_count();
    return DCMI_OK;
}

int dcmiv2_get_chip_phy_id_by_dev_id(unsigned int dev_id, unsigned int *phy_id) {
    V2_CALL("dcmiv2_get_chip_phy_id_by_dev_id", (int)dev_id);
    *phy_id = (unsigned)fx_dev_int((int)dev_id, "phy_id", dev_id);
    return DCMI_OK;
}

int dcmiv2_get_device_chip_info(int dev_id, struct dcmi_chip_info_v2 *info) {
    V2_CALL("dcmiv2_get_device_chip_info", dev_id);
    memset(info, 0, sizeof *info);
    fill_chip(dev_id, info->chip_type, info->chip_name, info->chip_ver, &info->aicore_cnt);
    fx_dev_str(dev_id, "npu_name", (char *)info->npu_name, sizeof info->npu_name, "");
    return DCMI_OK;
}

int dcmiv2_get_device_hbm_info(int dev_id, struct dcmi_hbm_info *info) {
    V2_CALL("dcmiv2_get_device_hbm_info", dev_id);
    return fill_hbm(dev_id, info);
}

int dcmiv2_get_device_utilization_rate(int dev_id, int input_type, unsigned int *rate) {
    V2_CALL("dcmiv2_get_device_utilization_rate", dev_id);
    if (input_type != 2) return ERR_NOT_SUPPORT;
    *rate = (unsigned)fx_dev_int(dev_id, "util", 0);
    return DCMI_OK;
}

int dcmiv2_get_device_power_info(int dev_id, int *power) {
    V2_CALL("dcmiv2_get_device_power_info", dev_id);
    *power = (int)fx_dev_int(dev_id, "power", 700);
    return DCMI_OK;
}

int dcmiv2_get_device_temperature(int dev_id, int *temperature) {
    V2_CALL("dcmiv2_get_device_temperature", dev_id);
    *temperature = (int)fx_dev_int(dev_id, "temp", 45);
    return DCMI_OK;
}

int dcmiv2_get_device_health(int dev_id, unsigned int *health) {
    V2_CALL("dcmiv2_get_device_health", dev_id);
    *health = (unsigned)fx_dev_int(dev_id, "health", 0);
    return DCMI_OK;
}

int dcmiv2_get_device_error_code_list(int dev_id, int *error_count, unsigned int *codes, unsigned int list_len) {
    V2_CALL("dcmiv2_get_device_error_code_list", dev_id);
    return fill_error_codes(dev_id, error_count, codes, list_len);
}

int dcmiv2_get_device_pcie_info(int dev_id, struct dcmi_pcie_info_all *info) {
    V2_CALL("dcmiv2_get_device_pcie_info", dev_id);
    return fill_pcie(dev_id, info);
}
#endif
