"""A fast renderer of the Prometheus text format (0.0.4) for ``/metrics``.

prometheus_client's ``generate_latest`` costs about 25 µs per series in CPython (it builds a Sample
and a labels dict per series, then formats and sorts them again): about 14 ms for a node with 64
devices and 200 pods, too slow for the scrape budget. Most of that work repeats itself from one scrape
to the next, because label sets rarely change. This renderer produces the same bytes (a test compares
them on every family and on hostile label values) but keeps each series' ``name{labels} `` prefix
from the previous scrape, so a scrape formats only the values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client.utils import floatToGoString

from krakenplug.exporter.families import Family

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MAX_CACHED_VALUES = 1024


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


class TextRenderer:
    """Renders families; thread-safe (concurrent scrapes may each rebuild a few cache entries)."""

    def __init__(self) -> None:
        self._prefixes: dict[str, dict[tuple[str, ...], str]] = {}  # family name -> labels -> prefix
        self._blocks: dict[str, tuple[object, str]] = {}  # family name -> (cache token, its whole text)
        self._headers: dict[tuple[str, str, tuple[str, ...]], tuple[str, tuple[int, ...]]] = {}
        self._values: dict[float, str] = {}

    def render(self, families: Iterable[Family]) -> bytes:
        out: list[str] = []
        for family in families:
            token = family.cache_token
            if token is None:
                out.append(self._render_family(family))
                continue
            cached = self._blocks.get(family.name)
            if cached is None or cached[0] is not token:
                cached = self._blocks[family.name] = (token, self._render_family(family))
            out.append(cached[1])
        return "".join(out).encode("utf-8")

    def _render_family(self, family: Family) -> str:
        header, order = self._header(family)
        prefixes = self._prefixes.get(family.name)
        if prefixes is None or len(prefixes) > 2 * len(family.samples) + 64:
            # Started over now and then, so the series of departed pods do not pile up in memory.
            prefixes = self._prefixes[family.name] = {}
        values = self._values
        out = [header]
        for labels, value in family.samples:
            prefix = prefixes.get(labels)
            if prefix is None:
                prefix = prefixes[labels] = _series_prefix(family, labels, order)
            text = values.get(value)
            if text is None or value == 0.0:  # -0.0 is a key equal to 0.0 but renders differently
                text = self._format(value)
            out.append(prefix)
            out.append(text)
        return "".join(out)

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
        text = floatToGoString(value) + "\n"
        if not math.isnan(value) and value != 0.0:  # NaN equals nothing and zero has a sign: never cached
            if len(self._values) >= _MAX_CACHED_VALUES:
                self._values = {}
            self._values[value] = text
        return text


def _series_prefix(family: Family, labels: tuple[str, ...], order: tuple[int, ...]) -> str:
    if not labels:
        return f"{family.name} "
    pairs = ",".join(f'{family.labelnames[i]}="{escape_label_value(labels[i])}"' for i in order)
    return f"{family.name}{{{pairs}}} "
