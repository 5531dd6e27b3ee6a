"""Kubernetes label syntax: turning vendor strings into valid label values and checking keys.

The API server refuses a whole patch when one label is invalid, so nothing leaves this package
without passing :func:`is_valid_value` or :func:`is_valid_key` (rules from the Kubernetes docs,
"Labels and Selectors": names and values at most 63 characters, alphanumeric at both ends, with
``-``, ``_`` and ``.`` between; a key prefix is a DNS subdomain of at most 253 characters).
"""

from __future__ import annotations

import re
import unicodedata

MAX_VALUE_LENGTH = 63
MAX_PREFIX_LENGTH = 253

_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_INVALID_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_DASH_RUNS = re.compile(r"-{2,}")
_NON_ALNUM_EDGES = re.compile(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$")


def sanitize_value(raw: str) -> str:
    """Makes ``raw`` a valid label value, keeping as much of it as possible.

    Accents and full-width forms are folded to ASCII first (``Ｔｅｓｌａ`` -> ``Tesla``); every run of
    other characters outside ``[A-Za-z0-9_.-]`` (spaces, slashes, CJK, ...) becomes one ``-``; runs
    of ``-`` collapse to one; non-alphanumeric characters are trimmed from both ends; the result is
    cut to 63 characters and trimmed again. The result may be empty.
    """
    folded = unicodedata.normalize("NFKD", raw)
    folded = "".join(char for char in folded if not unicodedata.combining(char))
    text = _INVALID_CHARS.sub("-", folded)
    text = _DASH_RUNS.sub("-", text)
    text = _NON_ALNUM_EDGES.sub("", text)
    return _NON_ALNUM_EDGES.sub("", text[:MAX_VALUE_LENGTH])


def is_valid_value(value: str) -> bool:
    return len(value) <= MAX_VALUE_LENGTH and _VALUE.fullmatch(value) is not None


def is_valid_key(key: str) -> bool:
    """A qualified name: optional ``prefix/`` (a DNS subdomain) and a non-empty name."""
    prefix, slash, name = key.rpartition("/")
    if slash and not _is_dns_subdomain(prefix):
        return False
    return bool(name) and is_valid_value(name)


def is_dns_label(text: str) -> bool:
    """Lowercase alphanumerics and inner dashes, at most 63 characters: what a vendor name may be."""
    return len(text) <= MAX_VALUE_LENGTH and _DNS_LABEL.fullmatch(text) is not None


def _is_dns_subdomain(text: str) -> bool:
    return 0 < len(text) <= MAX_PREFIX_LENGTH and all(is_dns_label(part) for part in text.split("."))
