"""Label-value sanitization and label syntax checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from krakenplug.discovery import sanitize

from .apiserver import label_problem

CASES = [
    ("NVIDIA A100-SXM4-80GB", "NVIDIA-A100-SXM4-80GB"),
    ("Tesla T4", "Tesla-T4"),
    ("Ascend/910B", "Ascend-910B"),
    ("MLU370 / X8", "MLU370-X8"),
    ("  padded  ", "padded"),
    ("a  --  b", "a-b"),
    ("(rev 2)", "rev-2"),
    ("v1.2_rc", "v1.2_rc"),
    ("535.104.05", "535.104.05"),
    ("-.leading and trailing._", "leading-and-trailing"),
    ("昇腾910B", "910B"),
    ("Tésla Ñ", "Tesla-N"),
    ("Ｔｅｓｌａ　Ｔ４", "Tesla-T4"),
    ("", ""),
    ("///", ""),
    ("中文", ""),
    ("x" * 70, "x" * 63),
    ("y" * 62 + "/z", "y" * 62),
    ("a" * 62 + ".b", "a" * 62),
]


@pytest.mark.parametrize(("raw", "expected"), CASES, ids=[
    "spaces", "one-space", "slash", "spaced-slash", "edges", "dash-runs", "parentheses", "dot-and-underscore",
    "version", "trim-non-alphanumeric", "cjk-dropped", "accents-folded", "full-width-folded", "empty",
    "only-invalid", "only-cjk", "over-63-truncated", "truncation-then-retrim", "truncated-at-dot",
])
def test_sanitize_value_makes_valid_label_values(raw: str, expected: str) -> None:
    result = sanitize.sanitize_value(raw)
    assert result == expected
    assert sanitize.is_valid_value(result)
    assert label_problem("example.com/key", result) is None


@given(st.text(max_size=200))
def test_sanitize_value_output_is_always_a_valid_label_value(raw: str) -> None:
    result = sanitize.sanitize_value(raw)
    assert sanitize.is_valid_value(result)
    assert label_problem("example.com/key", result) is None


@pytest.mark.parametrize(("value", "valid"), [
    ("", True), ("a", True), ("a.b-c_d", True), ("-a", False), ("a-", False), ("a b", False),
    ("a/b", False), ("x" * 63, True), ("x" * 64, False), ("é", False),
], ids=["empty", "one-char", "inner-punctuation", "leading-dash", "trailing-dash", "space", "slash",
        "63-chars", "64-chars", "non-ascii"])
def test_is_valid_value(value: str, valid: bool) -> None:
    assert sanitize.is_valid_value(value) is valid


@pytest.mark.parametrize(("key", "valid"), [
    ("krakenplug.pcl.ac.cn/device.model", True),
    ("plain", True),
    ("krakenplug.pcl.ac.cn/", False),
    ("Upper.Case/name", False),
    ("krakenplug.pcl.ac.cn/" + "n" * 64, False),
    ("-bad.prefix/name", False),
    ("krakenplug.pcl.ac.cn/fake.model.A100-80GB.count", True),
], ids=["domain-key", "no-prefix", "empty-name", "uppercase-prefix", "name-too-long", "bad-prefix", "per-model"])
def test_is_valid_key(key: str, valid: bool) -> None:
    assert sanitize.is_valid_key(key) is valid
    assert (label_problem(key, "v") is None) is valid
