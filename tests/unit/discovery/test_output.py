"""node-feature-discovery feature files: format, atomic replacement, writes only on change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from krakenplug.discovery import output

D = "krakenplug.pcl.ac.cn"
LABELS = {f"{D}/fake.count": "4", f"{D}/device.vendor": "fake"}


def test_render_writes_sorted_key_value_lines_after_a_comment() -> None:
    text = output.render(LABELS, vendor="fake")
    lines = text.splitlines()
    assert lines[0].startswith("# ") and not lines[0].startswith("# +")  # "# +" would be an NFD directive
    assert lines[1:] == [f"{D}/device.vendor=fake", f"{D}/fake.count=4"]
    assert text.endswith("\n")


def test_parse_reads_what_nfd_reads() -> None:
    text = "# comment\n# +no-label\n\n  a=1  \nb\nc=x=y\n"
    assert output.parse(text) == {"a": "1", "b": "true", "c": "x=y"}
    assert output.parse(output.render(LABELS, vendor="fake")) == LABELS


def test_write_creates_the_file_and_its_directory(tmp_path: Path) -> None:
    target = tmp_path / "features.d" / "krakenplug-fake"
    assert output.FeaturesFile(target, vendor="fake").write(LABELS) is True
    assert output.parse(target.read_text()) == LABELS
    assert target.stat().st_mode & 0o777 == 0o644
    assert [entry.name for entry in target.parent.iterdir()] == ["krakenplug-fake"]


def test_write_skips_identical_content(tmp_path: Path) -> None:
    target = tmp_path / "krakenplug-fake"
    features = output.FeaturesFile(target, vendor="fake")
    features.write(LABELS)
    before = os.stat(target)
    assert features.write(dict(reversed(list(LABELS.items())))) is False
    after = os.stat(target)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_write_replaces_the_file_atomically_on_change(tmp_path: Path) -> None:
    target = tmp_path / "krakenplug-fake"
    features = output.FeaturesFile(target, vendor="fake")
    features.write(LABELS)
    with open(target) as reader:  # a reader holding the old file keeps seeing complete old content
        old_inode = os.stat(target).st_ino
        assert features.write({**LABELS, f"{D}/fake.count": "5"}) is True
        assert os.stat(target).st_ino != old_inode
        assert output.parse(reader.read()) == LABELS
    assert output.parse(target.read_text())[f"{D}/fake.count"] == "5"
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["krakenplug-fake"]


def test_write_rewrites_a_file_edited_or_deleted_by_someone_else(tmp_path: Path) -> None:
    target = tmp_path / "krakenplug-fake"
    features = output.FeaturesFile(target, vendor="fake")
    features.write(LABELS)
    target.write_text("garbage\n")
    assert features.write(LABELS) is True
    target.unlink()
    assert features.write(LABELS) is True
    assert output.parse(target.read_text()) == LABELS


def test_write_failure_raises_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(OSError):
        output.FeaturesFile(blocker / "krakenplug-fake", vendor="fake").write(LABELS)
    directory = tmp_path / "features.d"
    directory.mkdir()
    (directory / "krakenplug-fake").mkdir()  # os.replace onto a directory fails after the temp file exists
    with pytest.raises(OSError):
        output.FeaturesFile(directory / "krakenplug-fake", vendor="fake").write(LABELS)
    assert sorted(entry.name for entry in directory.iterdir()) == ["krakenplug-fake"]


def test_siblings_reads_other_krakenplug_files_only(tmp_path: Path) -> None:
    (tmp_path / "krakenplug-ascend").write_text(f"# x\n{D}/ascend.count=8\n{D}/ascend.model=910B\n")
    (tmp_path / "gfd").write_text("nvidia.com/gpu.count=8\n")
    (tmp_path / ".krakenplug-hidden.tmp").write_text(f"{D}/hidden.count=9\n")
    (tmp_path / "huge").write_text(f"{D}/huge.count=1\n" + "#" * 70000)
    (tmp_path / "subdir").mkdir()
    features = output.FeaturesFile(tmp_path / "krakenplug-fake", vendor="fake")
    features.write({f"{D}/fake.count": "1"})
    assert features.siblings() == {f"{D}/ascend.count": "8", f"{D}/ascend.model": "910B"}


def test_siblings_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert output.FeaturesFile(tmp_path / "missing" / "f", vendor="fake").siblings() == {}
