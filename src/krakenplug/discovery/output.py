"""Writing labels out for node-feature-discovery (NVIDIA GFD's ``output`` half).

NFD's ``local`` source reads every file in its ``features.d`` directory (one ``key=value`` per line,
``#`` comments, hidden files skipped) and labels the node with what it finds. Each krakenplug process
writes its own file there; the other krakenplug files in the same directory are also how a process
learns what other vendors on the node have when it cannot reach the API server.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from krakenplug.discovery import labels

logger = logging.getLogger(__name__)

_MAX_SIBLING_BYTES = 65536  # NFD refuses bigger feature files too


def render(values: Mapping[str, str], *, vendor: str) -> str:
    """The file content: a header comment, then sorted ``key=value`` lines."""
    lines = [f"# node labels from krakenplug discovery ({vendor}); rewritten on every change, do not edit"]
    lines += [f"{name}={value}" for name, value in sorted(values.items())]
    return "\n".join(lines) + "\n"


def parse(text: str) -> dict[str, str]:
    """``key=value`` lines as NFD reads them: comments skipped, a bare key means ``true``."""
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        result[name] = value if sep else "true"
    return result


class FeaturesFile:
    """One NFD feature file, replaced atomically and only when its content changes."""

    def __init__(self, path: Path, *, vendor: str) -> None:
        self.path = Path(path)
        self._vendor = vendor

    def write(self, values: Mapping[str, str]) -> bool:
        """Writes ``values`` unless the file already holds exactly them; True when it wrote.

        Raises OSError when the directory or file cannot be written.
        """
        content = render(values, vendor=self._vendor)
        if self._read(self.path) == content:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A hidden temporary file in the same directory: NFD skips it, and os.replace is atomic there.
        handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(handle, "w") as stream:
                stream.write(content)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temporary, 0o644)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        logger.info("wrote %d labels to %s", len(values), self.path)
        return True

    def siblings(self) -> dict[str, str]:
        """krakenplug labels found in the other (non-hidden) files of the same directory."""
        found: dict[str, str] = {}
        try:
            entries = sorted(self.path.parent.iterdir())
        except OSError:
            return found
        for entry in entries:
            if entry.name.startswith(".") or entry.name == self.path.name or not entry.is_file():
                continue
            text = self._read(entry, limit=_MAX_SIBLING_BYTES)
            if text is None:
                continue
            found.update({name: value for name, value in parse(text).items()
                          if name.startswith(f"{labels.DOMAIN}/")})
        return found

    @staticmethod
    def _read(path: Path, *, limit: int | None = None) -> str | None:
        try:
            if limit is not None and path.stat().st_size > limit:
                return None
            return path.read_text()
        except (OSError, UnicodeDecodeError):
            return None
