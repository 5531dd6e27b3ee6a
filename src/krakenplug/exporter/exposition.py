"""A fast renderer of the Prometheus text format (0.0.4) for ``/metrics``.

prometheus_client's ``generate_latest`` costs about 25 µs per series in CPython (it builds a Sample
and a labels dict per series, then formats and sorts them again): about 14 ms for a node with 64
devices and 200 pods, too slow for the scrape budget. Most of that work repeats itself from one scrape
to the next, because label sets rarely change. This renderer produces the same bytes (a test compares
them on every family and on hostile label values) but keeps each series' ``name{labels} `` prefix
from the previous scrape, so a scrape formats only the values.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client.utils import floatToGoString

from krakenplug.exporter.families import Family

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MAX_CACHED_VALUES = 4096


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


class TextRenderer:
    """Renders families; thread-safe (concurrent scrapes may each rebuild a few cache entries)."""

    def __init__(self) -> None:
        self._prefixes: dict[tuple[str, tuple[str, ...]], str] = {}
        self._headers: dict[tuple[str, str, tuple[str, ...]], tuple[str, tuple[int, ...]]] = {}
        self._values: dict[float, str] = {}
        self._lock = threading.Lock()

    def render(self, families: Iterable[Family]) -> bytes:
        previous = self._prefixes
        current: dict[tuple[str, tuple[str, ...]], str] = {}
        out: list[str] = []
        for family in families:
            header, order = self._header(family)
            out.append(header)
            for labels, value in family.samples:
                key = (family.name, labels)
                prefix = previous.get(key)
                if prefix is None:
                    prefix = _series_prefix(family, labels, order)
                current[key] = prefix
                out.append(prefix)
                out.append(self._format(value))
        # Only the series of this scrape are kept, so departed pods do not pile up in memory.
        with self._lock:
            self._prefixes = current
        return "".join(out).encode("utf-8")

    def _header(self, family: Family) -> tuple[str, tuple[int, ...]]:
        key = (family.name, family.documentation, family.labelnames)
        cached = self._headers.get(key)
        if cached is None:
            header = (f"# HELP {family.name} {escape_help(family.documentation)}\n"
                      f"# TYPE {family.name} gauge\n")
            order = tuple(sorted(range(len(family.labelnames)), key=lambda i: family.labelnames[i]))
            cached = self._headers[key] = (header, order)
        return cached

    def _format(self, value: float) -> str:
        if value == 0.0 or value != value:  # -0.0 equals 0.0 as a key, and NaN equals nothing
            return floatToGoString(value) + "\n"
        text = self._values.get(value)
        if text is None:
            text = floatToGoString(value) + "\n"
            if len(self._values) >= _MAX_CACHED_VALUES:
                self._values = {}
            self._values[value] = text
        return text


def _series_prefix(family: Family, labels: tuple[str, ...], order: tuple[int, ...]) -> str:
    if not labels:
        return f"{family.name} "
    pairs = ",".join(f'{family.labelnames[i]}="{escape_label_value(labels[i])}"' for i in order)
    return f"{family.name}{{{pairs}}} "
