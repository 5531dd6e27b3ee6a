"""A fast renderer of the two formats Prometheus negotiates: text (0.0.4 / 1.0.0) and OpenMetrics 1.0.0.

The one hand-written piece of the exporter's exposition, kept because bench/exporter_scrape.py showed
prometheus_client alone missing the 25 ms p99 bar at 64 devices and 200 pods on the development VM
(docs/exporter.md, "Performance"). ``generate_latest`` costs about 13 µs per series there (it builds a
Sample and a labels dict per series, then escapes, sorts and formats them again): 8-11 ms a scrape,
most of it repeating itself, because label sets rarely change. This renderer produces the same bytes
(tests compare them with the library on every family, on hostile label values and for each Accept
header Prometheus sends) but keeps each series' ``name{labels} `` prefix from the previous scrape, so a
scrape formats only the values. Negotiation, gzip, ``name[]`` and any other format stay the library's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client.utils import floatToGoString

from krakenplug.exporter.families import Family

_MAX_CACHED_VALUES = 1024


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def escape_help(text: str, *, openmetrics: bool = False) -> str:
    escaped = text.replace("\\", r"\\").replace("\n", r"\n")
    return escaped.replace('"', r'\"') if openmetrics else escaped


class TextRenderer:
    """Renders families; thread-safe (concurrent scrapes may each rebuild a few cache entries).

    ``openmetrics`` selects OpenMetrics 1.0.0 (quotes escaped in HELP, ``# EOF`` at the end).
    """

    def __init__(self, *, openmetrics: bool = False) -> None:
        self.openmetrics = openmetrics
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
        if self.openmetrics:
            out.append("# EOF\n")
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
            header = (f"# HELP {family.name} {escape_help(family.documentation, openmetrics=self.openmetrics)}\n"
                      f"# TYPE {family.name} gauge\n")
            order = tuple(sorted(range(len(family.labelnames)), key=lambda i: family.labelnames[i]))
            cached = self._headers[key] = (header, order)
        return cached

    def _format(self, value: float) -> str:
        text = str(floatToGoString(value)) + "\n"  # type: ignore[no-untyped-call]  # untyped in the library
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
