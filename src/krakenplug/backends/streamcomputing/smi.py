"""``stc-smi``: the only source of NPU utilization and memory use (STCML has no getter for them).

``parse_stc_smi`` is a pure function over the summary table (HPE 1.7 - 1.9)::

    |    STC-SMI: 1.7.0                            Driver Version: 1.7.0           |
    |  NPU        Name      Frequency|         Bus-Id        |            NPU-Util |
    |  Fan        Temp          Power|   ClusterCount        |  Memory Used /Total |
    +==============================================================================+
    |    0     STCP920          1000M|   0000:01:00.0        |                 0 % |
    |  N/A       33.6C   36.4W / 160W|              4        |     624.00M /16.00G |
    +------------------------------------------------------------------------------+

Two lines per NPU, each block closed by a ``+---+`` line; the process table follows. ``SmiPoller`` runs
the tool in the background every ``interval`` seconds (never once per scrape), bounded by a timeout,
and keeps the last good table; a table older than ``max_age`` counts as absent.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import threading
import time

from krakenplug.backends import _sysfs

logger = logging.getLogger(__name__)

_HEADER = re.compile(r"STC-SMI:\s*(?P<smi>\S+).*Driver Version:\s*(?P<driver>[^\s|]+)")
_TEMPERATURE = re.compile(r"^(?P<value>-?\d+(?:\.\d+)?)C$")
_POWER = re.compile(r"(?P<used>\d+(?:\.\d+)?)\s*W\s*/")
_PERCENT = re.compile(r"^(?P<value>\d+(?:\.\d+)?)\s*%$")
_MEMORY = re.compile(r"^(?P<used>\d+(?:\.\d+)?)\s*(?P<used_unit>[KMGT]?)(?:i?B)?\s*/\s*"
                     r"(?P<total>\d+(?:\.\d+)?)\s*(?P<total_unit>[KMGT]?)(?:i?B)?$")
_MB_PER_UNIT = {"K": 1 / 1024, "": 1.0, "M": 1.0, "G": 1024.0, "T": 1024.0 * 1024.0}


@dataclasses.dataclass(frozen=True)
class SmiReading:
    """One NPU's row; None where the tool printed N/A or something we cannot read."""

    index: int
    name: str
    bus_id: str | None
    utilization_percent: float | None
    temperature_celsius: float | None
    power_watts: float | None
    memory_used_mb: float | None
    memory_total_mb: float | None


@dataclasses.dataclass(frozen=True)
class SmiTable:
    smi_version: str | None
    driver_version: str | None
    npus: tuple[SmiReading, ...]

    def find(self, *, bus_id: str | None, index: int) -> SmiReading | None:
        """The row of the NPU at ``bus_id`` (when known), else the row numbered ``index``."""
        rows = [row for row in self.npus if bus_id is not None and row.bus_id == bus_id]
        rows = rows or [row for row in self.npus if row.index == index and (bus_id is None or row.bus_id is None)]
        return rows[0] if rows else None


def parse_stc_smi(text: str) -> SmiTable:
    """Parses the summary table; ValueError naming the line when its structure is not the expected one."""
    lines = text.splitlines()
    header = next((match for line in lines if (match := _HEADER.search(line))), None)
    start = next((number for number, line in enumerate(lines) if re.fullmatch(r"\s*\+=+\+\s*", line)), None)
    if start is None:
        raise ValueError("stc-smi output: no '+====+' line before the NPU table")
    rows: list[str] = []
    npus = []
    for number in range(start + 1, len(lines)):
        line = lines[number].strip()
        if "Processes:" in line:
            break
        if line.startswith("|"):
            rows.append(line)
            continue
        if len(rows) == 2:
            npus.append(_parse_npu(rows[0], rows[1], line_number=number - 1))
        elif rows:
            raise ValueError(f"stc-smi output line {number}: expected 2 lines per NPU, got {len(rows)}: {rows!r}")
        rows = []
        if not line.startswith("+-"):
            break  # the blank line before the process table
    return SmiTable(header["smi"] if header else None, header["driver"] if header else None, tuple(npus))


def _parse_npu(first: str, second: str, *, line_number: int) -> SmiReading:
    top, bottom = _cells(first), _cells(second)
    if len(top) < 3 or len(bottom) < 3:
        raise ValueError(f"stc-smi output line {line_number}: expected 3 columns in {first!r} / {second!r}")
    words = top[0].split()
    if not words or not words[0].isdigit():
        raise ValueError(f"stc-smi output line {line_number}: no NPU index in {first!r}")
    temperature = next((float(m["value"]) for word in bottom[0].split() if (m := _TEMPERATURE.match(word))), None)
    power = _POWER.search(bottom[0])
    used, total = _memory_mb(bottom[2])
    percent = _PERCENT.match(top[2])
    return SmiReading(
        index=int(words[0]), name=" ".join(words[1:-1]) if len(words) > 2 else " ".join(words[1:]),
        bus_id=_bus_id(top[1]), utilization_percent=float(percent["value"]) if percent else None,
        temperature_celsius=temperature, power_watts=float(power["used"]) if power else None,
        memory_used_mb=used, memory_total_mb=total,
    )


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _bus_id(text: str) -> str | None:
    try:
        return _sysfs.normalize_bus_id(text)
    except ValueError:
        return None


def _memory_mb(text: str) -> tuple[float | None, float | None]:
    match = _MEMORY.match(text)
    if not match:
        return None, None
    return (float(match["used"]) * _MB_PER_UNIT[match["used_unit"]],
            float(match["total"]) * _MB_PER_UNIT[match["total_unit"]])


class SmiPoller:
    """Runs stc-smi in a background thread and keeps the last good table."""

    def __init__(self, path: str, *, interval_seconds: float, timeout_seconds: float) -> None:
        self.path = path
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._max_age = 3 * interval_seconds + timeout_seconds
        self._lock = threading.Lock()
        self._table: SmiTable | None = None
        self._taken_at = 0.0
        self._last_problem: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Takes a first reading now (bounded by the timeout), then keeps refreshing in the background."""
        self.refresh()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="stc-smi", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout + 5)
            self._thread = None

    def latest(self) -> SmiTable | None:
        """The last good table, or None when there is none or it is too old to trust."""
        with self._lock:
            if self._table is None or time.monotonic() - self._taken_at > self._max_age:
                return None
            return self._table

    def refresh(self) -> None:
        try:
            result = subprocess.run([self.path], capture_output=True, text=True, timeout=self._timeout, check=False)
            if result.returncode != 0:
                raise ValueError(f"exit status {result.returncode}: {result.stderr.strip()[:200]}")
            table = parse_stc_smi(result.stdout)
        except FileNotFoundError:
            self._problem(f"{self.path} not found; NPU utilization and memory metrics are not available")
            return
        except subprocess.TimeoutExpired:
            self._problem(f"{self.path} did not finish within {self._timeout:g} s")
            return
        except (OSError, ValueError) as err:
            self._problem(f"{self.path}: {err}")
            return
        with self._lock:
            self._table, self._taken_at = table, time.monotonic()
        if self._last_problem is not None:
            logger.info("%s works again", self.path)
            self._last_problem = None

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.refresh()

    def _problem(self, message: str) -> None:
        if message != self._last_problem:
            logger.warning("%s", message)
        self._last_problem = message
