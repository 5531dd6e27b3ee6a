"""ctypes bindings for Huawei's DCMI (``libdcmi.so``): structs, signatures, status names, typed queries.

Two API generations, as mind-cluster's devmanager has them:

* ``dcmi``: the v1 ``dcmi_*`` functions; NPUs are addressed as (card id, device id in card).
* ``dcmiv2``: the ``dcmiv2_*`` functions that newer drivers ship instead (``dcmi_init`` absent); NPUs are
  addressed by one dev_id (a logic id) from ``dcmiv2_get_device_list``.

An address is a tuple either way, splatted into the call: every query passes it to the choke point as the
call's key, so a stuck call marks exactly that NPU Unhealthy.
"""

from __future__ import annotations

import ctypes
from collections.abc import Hashable
from ctypes import POINTER, byref, c_char, c_int, c_ubyte, c_uint, c_ulong, c_ulonglong

from krakenplug.backends import _vendorlib

MAX_CARDS = 64
ERROR_CODE_SLOTS = 128  # what Huawei's own plugin passes to dcmi_get_device_errorcode_v2
INPUT_AI_CORE = 2  # dcmi_get_device_utilization_rate input_type for AI Core

CODE_NAMES = {
    -8001: "DCMI_ERR_CODE_INVALID_PARAMETER",
    -8002: "DCMI_ERR_CODE_OPER_NOT_PERMITTED",
    -8003: "DCMI_ERR_CODE_MEM_OPERATE_FAIL",
    -8004: "DCMI_ERR_CODE_SECURE_FUN_FAIL",
    -8005: "DCMI_ERR_CODE_INNER_ERR",
    -8006: "DCMI_ERR_CODE_TIME_OUT",
    -8007: "DCMI_ERR_CODE_INVALID_DEVICE_ID",
    -8008: "DCMI_ERR_CODE_DEVICE_NOT_EXIST",
    -8009: "DCMI_ERR_CODE_IOCTL_FAIL",
    -8010: "DCMI_ERR_CODE_SEND_MSG_FAIL",
    -8011: "DCMI_ERR_CODE_RECV_MSG_FAIL",
    -8012: "DCMI_ERR_CODE_NOT_READY",
    -8013: "DCMI_ERR_CODE_NOT_SUPPORT_IN_CONTAINER",
    -8014: "DCMI_ERR_CODE_FILE_OPERATE_FAIL",
    -8015: "DCMI_ERR_CODE_RESET_FAIL",
    -8016: "DCMI_ERR_CODE_ABORT_OPERATE",
    -8017: "DCMI_ERR_CODE_IS_UPGRADING",
    -8020: "DCMI_ERR_CODE_RESOURCE_OCCUPIED",
    -8022: "DCMI_ERR_CODE_PARTITION_NOT_RIGHT",
    -8023: "DCMI_ERR_CODE_CONFIG_INFO_NOT_EXIST",
    -8255: "DCMI_ERR_CODE_NOT_SUPPORT",
}
UNSUPPORTED_CODES = (-8013, -8255)
NOT_READY = -8012  # Huawei's plugin reads this as "the card dropped off the bus"
# Chips Huawei's devmanager asks for HBM; the others (310, 310B, 310P) report memory through
# dcmi_get_device_memory_info_v3 and may fail the HBM query with an error that is not NOT_SUPPORT.
HBM_CHIP_PREFIXES = ("910",)


class ChipInfo(ctypes.Structure):
    _fields_ = [("chip_type", c_ubyte * 32), ("chip_name", c_ubyte * 32), ("chip_ver", c_ubyte * 32),
                ("aicore_cnt", c_uint)]


class ChipInfoV2(ctypes.Structure):
    _fields_ = ChipInfo._fields_ + [("npu_name", c_ubyte * 32)]


class HbmInfo(ctypes.Structure):
    _fields_ = [("memory_size", c_ulonglong), ("freq", c_uint), ("memory_usage", c_ulonglong), ("temp", c_int),
                ("bandwith_util_rate", c_uint)]


class MemoryInfoV3(ctypes.Structure):
    _fields_ = [("memory_size", c_ulonglong), ("memory_available", c_ulonglong), ("freq", c_uint),
                ("hugepagesize", c_ulong), ("hugepages_total", c_ulong), ("hugepages_free", c_ulong),
                ("utiliza", c_uint), ("reserve", c_ubyte * 60)]


class PcieInfoAll(ctypes.Structure):
    _fields_ = [("venderid", c_uint), ("subvenderid", c_uint), ("deviceid", c_uint), ("subdeviceid", c_uint),
                ("domain", c_int), ("bdf_busid", c_uint), ("bdf_deviceid", c_uint), ("bdf_funcid", c_uint),
                ("reserve", c_ubyte * 32)]


_P_INT, _P_UINT = POINTER(c_int), POINTER(c_uint)
_CARD_DEV = [c_int, c_int]
_DEV = [c_int]
SIGNATURES: dict[str, _vendorlib.Signature] = {
    "dcmi_init": (c_int, []),
    "dcmi_get_driver_version": (c_int, [POINTER(c_char), c_uint]),
    "dcmi_get_dcmi_version": (c_int, [POINTER(c_char), c_uint]),
    "dcmi_get_card_list": (c_int, [_P_INT, _P_INT, c_int]),
    "dcmi_get_card_num_list": (c_int, [_P_INT, _P_INT, c_int]),
    "dcmi_get_device_num_in_card": (c_int, [c_int, _P_INT]),
    "dcmi_get_device_logic_id": (c_int, [_P_INT, c_int, c_int]),
    "dcmi_get_device_phyid_from_logicid": (c_int, [c_uint, _P_UINT]),
    "dcmi_get_device_chip_info_v2": (c_int, _CARD_DEV + [POINTER(ChipInfoV2)]),
    "dcmi_get_device_chip_info": (c_int, _CARD_DEV + [POINTER(ChipInfo)]),
    "dcmi_get_device_hbm_info": (c_int, _CARD_DEV + [POINTER(HbmInfo)]),
    "dcmi_get_device_memory_info_v3": (c_int, _CARD_DEV + [POINTER(MemoryInfoV3)]),
    "dcmi_get_device_utilization_rate": (c_int, _CARD_DEV + [c_int, _P_UINT]),
    "dcmi_get_device_power_info": (c_int, _CARD_DEV + [_P_INT]),
    "dcmi_get_device_temperature": (c_int, _CARD_DEV + [_P_INT]),
    "dcmi_get_device_health": (c_int, _CARD_DEV + [_P_UINT]),
    "dcmi_get_device_errorcode_v2": (c_int, _CARD_DEV + [_P_INT, _P_UINT, c_uint]),
    "dcmi_get_device_pcie_info_v2": (c_int, _CARD_DEV + [POINTER(PcieInfoAll)]),
    # dcmiv2 (dcmi_interface_api_v2.h); the device list takes (list, count, length): so say the header, the
    # library's own definition and the devmanager caller (its cgo shim names the first two the other way
    # round but passes them through in place).
    "dcmiv2_init": (c_int, []),
    "dcmiv2_get_dcmi_version": (c_int, [POINTER(c_char), c_int]),
    "dcmiv2_get_device_list": (c_int, [_P_INT, _P_INT, c_int]),
    "dcmiv2_get_chip_phy_id_by_dev_id": (c_int, [c_uint, _P_UINT]),
    "dcmiv2_get_device_chip_info": (c_int, _DEV + [POINTER(ChipInfoV2)]),
    "dcmiv2_get_device_hbm_info": (c_int, _DEV + [POINTER(HbmInfo)]),
    "dcmiv2_get_device_utilization_rate": (c_int, _DEV + [c_int, _P_UINT]),
    "dcmiv2_get_device_power_info": (c_int, _DEV + [_P_INT]),
    "dcmiv2_get_device_temperature": (c_int, _DEV + [_P_INT]),
    "dcmiv2_get_device_health": (c_int, _DEV + [_P_UINT]),
    "dcmiv2_get_device_error_code_list": (c_int, _DEV + [_P_INT, _P_UINT, c_uint]),
    "dcmiv2_get_device_pcie_info": (c_int, _DEV + [POINTER(PcieInfoAll)]),
}
API_V1, API_V2 = "dcmi", "dcmiv2"

Address = tuple[int, ...]  # (card id, device id in card) for dcmi, (dev_id,) for dcmiv2


def describe(address: Hashable) -> str:
    """How messages name an NPU: "card 0 device 1" (dcmi) or "dev_id 3" (dcmiv2)."""
    parts = address if isinstance(address, tuple) else (address,)
    return "card {} device {}".format(*parts) if len(parts) == 2 else f"dev_id {parts[0]}"


def _text(raw: ctypes.Array) -> str:  # type: ignore[type-arg]
    return bytes(raw).split(b"\0", 1)[0].decode(errors="replace").strip()


def is_dropped(err: Exception) -> bool:
    return isinstance(err, _vendorlib.VendorCallError) and err.code == NOT_READY


class Dcmi:
    """Typed DCMI queries over the VendorCalls choke point; every method raises DeviceQueryError subclasses."""

    def __init__(self, calls: _vendorlib.VendorCalls) -> None:
        self.calls = calls
        self.api = API_V1 if calls.supports("dcmi_init") else API_V2

    def _status(self, v1: str, v2: str, address: Address, *args: object) -> None:
        self.calls.status(v1 if self.api == API_V1 else v2, *address, *args, key=address)

    def init(self) -> None:
        self.calls.status("dcmi_init" if self.api == API_V1 else "dcmiv2_init")

    def driver_version(self) -> str:
        names = ("dcmi_get_driver_version", "dcmi_get_dcmi_version") if self.api == API_V1 else (
            "dcmiv2_get_dcmi_version",)
        for name in names:
            if self.calls.supports(name):
                buffer = ctypes.create_string_buffer(64)
                self.calls.status(name, buffer, len(buffer))
                return buffer.value.decode(errors="replace").strip()
        raise _vendorlib.NotSupported(names[0], None, "not exported")

    def addresses(self) -> list[Address]:
        """Every NPU's address; the older v1 function name is used when the current one is missing."""
        count, ids = c_int(0), (c_int * MAX_CARDS)()
        if self.api == API_V2:
            self.calls.status("dcmiv2_get_device_list", ids, byref(count), MAX_CARDS)
            return [(dev_id,) for dev_id in ids[:max(0, min(count.value, MAX_CARDS))]]
        name = "dcmi_get_card_list" if self.calls.supports("dcmi_get_card_list") else "dcmi_get_card_num_list"
        self.calls.status(name, byref(count), ids, MAX_CARDS)
        found: list[Address] = []
        for card in ids[:max(0, min(count.value, MAX_CARDS))]:
            chips = c_int(0)
            self.calls.status("dcmi_get_device_num_in_card", card, byref(chips))
            found.extend((card, device) for device in range(chips.value))
        return found

    def physical_id(self, address: Address) -> int:
        physical = c_uint(0)
        if self.api == API_V2:
            self.calls.status("dcmiv2_get_chip_phy_id_by_dev_id", address[0], byref(physical), key=address)
            return physical.value
        logic = c_int(0)
        self.calls.status("dcmi_get_device_logic_id", byref(logic), *address, key=address)
        self.calls.status("dcmi_get_device_phyid_from_logicid", logic.value, byref(physical), key=address)
        return physical.value

    def chip(self, address: Address) -> tuple[str, str]:
        """(chip type, chip name), e.g. ("Ascend", "910B3"); v2 first, like Huawei's plugin."""
        info: ctypes.Structure = ChipInfoV2()
        try:
            self._status("dcmi_get_device_chip_info_v2", "dcmiv2_get_device_chip_info", address, byref(info))
        except _vendorlib.NotSupported:
            if self.api == API_V2:
                raise
            info = ChipInfo()
            self.calls.status("dcmi_get_device_chip_info", *address, byref(info), key=address)
        return _text(info.chip_type), _text(info.chip_name)

    def memory_mb(self, address: Address, chip_name: str) -> tuple[int, int]:
        """(total, used) in MB: HBM on 910-class chips, the v3 memory query on the others (as Huawei does)."""
        if chip_name.upper().startswith(HBM_CHIP_PREFIXES) or self.api == API_V2:
            hbm = HbmInfo()
            try:
                self._status("dcmi_get_device_hbm_info", "dcmiv2_get_device_hbm_info", address, byref(hbm))
                return hbm.memory_size, hbm.memory_usage
            except _vendorlib.NotSupported:
                if self.api == API_V2:
                    raise
        memory = MemoryInfoV3()
        self.calls.status("dcmi_get_device_memory_info_v3", *address, byref(memory), key=address)
        return memory.memory_size, max(0, memory.memory_size - memory.memory_available)

    def ai_core_utilization(self, address: Address) -> int:
        rate = c_uint(0)
        self._status("dcmi_get_device_utilization_rate", "dcmiv2_get_device_utilization_rate", address,
                     INPUT_AI_CORE, byref(rate))
        return rate.value

    def power_watts(self, address: Address) -> float:
        tenths = c_int(0)  # DCMI reports 0.1 W units
        self._status("dcmi_get_device_power_info", "dcmiv2_get_device_power_info", address, byref(tenths))
        return tenths.value / 10

    def temperature(self, address: Address) -> int | None:
        celsius = c_int(0)
        self._status("dcmi_get_device_temperature", "dcmiv2_get_device_temperature", address, byref(celsius))
        return celsius.value if celsius.value >= -275 else None  # below absolute zero means "no reading"

    def health(self, address: Address) -> int:
        """0 is healthy; other values are alarm levels (1 minor, 2 major, 3 critical)."""
        code = c_uint(0)
        self._status("dcmi_get_device_health", "dcmiv2_get_device_health", address, byref(code))
        return code.value

    def error_codes(self, address: Address) -> list[int]:
        count, codes = c_int(0), (c_uint * ERROR_CODE_SLOTS)()
        self._status("dcmi_get_device_errorcode_v2", "dcmiv2_get_device_error_code_list", address, byref(count),
                     codes, ERROR_CODE_SLOTS)
        return list(codes[:max(0, min(count.value, ERROR_CODE_SLOTS))])

    def bus_id(self, address: Address) -> str:
        pcie = PcieInfoAll()
        self._status("dcmi_get_device_pcie_info_v2", "dcmiv2_get_device_pcie_info", address, byref(pcie))
        return f"{pcie.domain:04x}:{pcie.bdf_busid:02x}:{pcie.bdf_deviceid:02x}.{pcie.bdf_funcid}"
