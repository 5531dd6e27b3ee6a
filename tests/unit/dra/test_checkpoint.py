"""The checkpoint journal: one appended line per change, compacted, a torn last line ignored, version 1 read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from krakenplug.dra.checkpoint import Checkpoint, PreparedClaim, PreparedDevice


def _claim(uid: str) -> PreparedClaim:
    return PreparedClaim(uid=uid, namespace="ns", name=f"c-{uid}", spec_file=f"x_claim_{uid}.json",
                         devices=(PreparedDevice(request_names=("r",), pool="n", device="fake-0",
                                                 cdi_ids=("x/claim=1",)),))


def test_a_change_is_one_appended_line_not_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    checkpoint = Checkpoint(path)
    inode, lines = os.stat(path).st_ino, len(path.read_text().splitlines())
    checkpoint.put(_claim("a"))
    checkpoint.put(_claim("b"))
    checkpoint.drop("a")
    assert os.stat(path).st_ino == inode  # appended in place: no temporary file, no rename
    assert len(path.read_text().splitlines()) == lines + 3
    checkpoint.close()
    assert [c.uid for c in Checkpoint(path).all()] == ["b"]


def test_the_journal_is_compacted_and_keeps_every_live_claim(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    checkpoint = Checkpoint(path)
    for number in range(500):
        checkpoint.put(_claim(str(number)))
        if number % 10:
            checkpoint.drop(str(number))
    checkpoint.close()
    assert len(path.read_text().splitlines()) < 2 * 50 + 64 + 2  # bounded by the live claims, not the history
    assert sorted(int(c.uid) for c in Checkpoint(path).all()) == list(range(0, 500, 10))


def test_a_last_line_cut_short_by_a_crash_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    checkpoint = Checkpoint(path)
    checkpoint.put(_claim("a"))
    checkpoint.close()
    with path.open("a") as journal:
        journal.write(json.dumps({"put": _claim("b").to_json()})[:40])
    assert [c.uid for c in Checkpoint(path).all()] == ["a"]
    assert not path.with_name("checkpoint.json.corrupt").exists()


def test_a_version_1_checkpoint_is_read(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    path.write_text(json.dumps({"version": 1, "claims": {"a": _claim("a").to_json()}}, indent=2))
    assert Checkpoint(path).all() == [_claim("a")]
    assert json.loads(path.read_text().splitlines()[0]) == {"version": 2}  # rewritten as a journal


def test_an_unreadable_checkpoint_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    path.write_text("{not json\n{\n")
    assert Checkpoint(path).all() == []
    assert path.with_name("checkpoint.json.corrupt").read_text() == "{not json\n{\n"


def test_prepares_only_append_compaction_waits_for_an_unprepare(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    checkpoint = Checkpoint(path)
    inode = os.stat(path).st_ino
    for number in range(200):
        checkpoint.put(_claim(str(number)))
        if number < 100:
            checkpoint.put(_claim(str(number)))  # a prepare written twice (its spec was lost): still appended
    assert os.stat(path).st_ino == inode and len(path.read_text().splitlines()) == 1 + 300  # never rewritten
    for number in range(150):
        checkpoint.drop(str(number))
    assert len(path.read_text().splitlines()) < 2 * 50 + 64 + 2  # compacted on the unprepares
    checkpoint.close()
    reloaded = Checkpoint(path).all()
    assert sorted(int(c.uid) for c in reloaded) == list(range(150, 200))
    assert reloaded[0] == _claim(reloaded[0].uid)  # the hand-written JSON round-trips


def test_a_whole_file_checkpoint_of_an_unknown_version_is_moved_aside_naming_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "checkpoint.json"
    path.write_text(json.dumps({"version": 7, "claims": {"a": _claim("a").to_json()}}, indent=2))
    assert Checkpoint(path).all() == []
    assert path.with_name("checkpoint.json.corrupt").exists()
    assert "version 7, expected 1 or 2" in caplog.text
