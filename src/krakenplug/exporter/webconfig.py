"""TLS and basic auth the way Prometheus exporters do it: an exporter-toolkit web config file.

The format is exporter-toolkit's (docs/web-configuration.md in prometheus/exporter-toolkit), in the subset
that Python's ``ssl`` module can honour exactly::

    tls_server_config:
      cert_file: server.crt          # PEM; relative paths are relative to the config file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # or NoClientCert (default), VerifyClientCertIfGiven
      client_ca_file: ca.crt
      min_version: TLS12             # TLS10 .. TLS13; TLS12 by default, as in exporter-toolkit
      max_version: TLS13
    http_server_config:
      headers: {X-Frame-Options: deny}   # added to every answer; http2 is accepted and ignored
    basic_auth_users:
      prometheus: $2b$12$...         # bcrypt hashes only

``RequestClientCert`` and ``RequireAnyClientCert`` ask for a client certificate without verifying it, which
Python's ssl cannot do; they are refused with an error naming them rather than silently weakened or made
stricter. Go-specific fields (cipher_suites, curve_preferences, client_allowed_sans, ...) are refused by
name too. Like exporter-toolkit, the file is re-read when it (or a certificate it names) changes, so a
rotated Secret takes effect without a restart; a broken new version keeps the last good one (logged once).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import bcrypt
import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from krakenplug import errors
from krakenplug.settings import read_yaml_file
from krakenplug.transitions import TransitionLog

__all__ = ["BasicAuth", "WebConfigSource", "WebSecurity", "load"]

logger = logging.getLogger(__name__)

_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
_MAX_FILE_BYTES = 1024 * 1024
_RECHECK_SECONDS = 1.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _TLSServerConfig(_Strict):
    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS13"

    @field_validator("client_auth_type")
    @classmethod
    def _known_client_auth(cls, value: str) -> str:
        if value in _UNVERIFIED_CLIENT_AUTH:
            raise ValueError(f"{value} (a client certificate without verification) is not supported by Python's "
                             "ssl; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file")
        if value not in _CLIENT_AUTH:
            raise ValueError(f"expected one of {', '.join(_CLIENT_AUTH)}")
        return value


class _HTTPServerConfig(_Strict):
    http2: bool = True  # accepted for compatibility; this server speaks HTTP/1.1
    headers: dict[str, str] = Field(default_factory=dict)


class _WebConfigFile(_Strict):
    tls_server_config: _TLSServerConfig | None = None
    http_server_config: _HTTPServerConfig = _HTTPServerConfig()
    basic_auth_users: dict[str, str] = Field(default_factory=dict)

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, str]) -> dict[str, str]:
        for user, hashed in users.items():
            if ":" in user:
                raise ValueError(f"user {user!r}: a basic-auth user name cannot contain ':'")
            if not hashed.startswith(("$2a$", "$2b$", "$2y$")) or len(hashed) != 60:
                raise ValueError(f"user {user!r}: expected a bcrypt hash ($2b$..., 60 characters), "
                                 f"got {len(hashed)} characters starting {hashed[:4]!r}")
        return users


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes; remembers passwords that matched.

    bcrypt is slow on purpose (tens of ms per check), and Prometheus sends the same credentials every
    scrape, so a successful check is cached under a digest of (user, hash, password), as exporter-toolkit
    does. Unknown users are checked against a dummy hash, so timing does not tell which users exist.
    """

    _CACHE_LIMIT = 64

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        self._dummy = bcrypt.hashpw(b"krakenplug-no-such-user", bcrypt.gensalt(rounds=4))
        self._accepted: set[bytes] = set()
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._users)

    def check(self, header: str | None) -> bool:
        credentials = _basic_credentials(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        key = hashlib.sha256(b"\0".join((user.encode(), hashed or b"", password))).digest()
        with self._lock:
            if hashed is not None and key in self._accepted:
                return True
        try:
            matched = bcrypt.checkpw(password, hashed or self._dummy) and hashed is not None
        except ValueError:  # a malformed hash (validated at load, so only a truly odd one gets here)
            return False
        if matched:
            with self._lock:
                if len(self._accepted) >= self._CACHE_LIMIT:
                    self._accepted.clear()
                self._accepted.add(key)
        return matched


def _basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return user.decode("utf-8", "replace"), password


@dataclasses.dataclass(frozen=True)
class WebSecurity:
    """What one version of the web config asks for; ``ssl_context`` None means plain HTTP."""

    ssl_context: ssl.SSLContext | None = None
    auth: BasicAuth | None = None
    headers: tuple[tuple[str, str], ...] = ()


def load(path: Path) -> WebSecurity:
    """Parses and applies ``path``; raises ConfigError naming the file, the field and the value."""
    where = f"exporter.web_config_file {path}"
    raw = read_yaml_file(path, what=where, max_bytes=_MAX_FILE_BYTES)  # bounded and strict, as the config file
    try:
        parsed = _WebConfigFile.model_validate(raw if raw is not None else {})
    except pydantic.ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in problem['loc']) or '(root)'}: {problem['msg']}"
                             f" (got {str(problem.get('input'))[:80]!r})" for problem in err.errors())
        raise errors.ConfigError(f"{where}: {problems}") from err
    base = path.parent
    context = _ssl_context(parsed.tls_server_config, base, where) if parsed.tls_server_config else None
    auth = BasicAuth(parsed.basic_auth_users) if parsed.basic_auth_users else None
    return WebSecurity(ssl_context=context, auth=auth, headers=tuple(parsed.http_server_config.headers.items()))


def _ssl_context(tls: _TLSServerConfig, base: Path, where: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.minimum_version = _TLS_VERSIONS[tls.min_version]
        context.maximum_version = _TLS_VERSIONS[tls.max_version]
    except ValueError as err:
        raise errors.ConfigError(f"{where}: tls_server_config.min_version/max_version: {err}") from err
    cert, key = _resolve(base, tls.cert_file), _resolve(base, tls.key_file)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        raise errors.ConfigError(f"{where}: tls_server_config.cert_file {cert} / key_file {key}: "
                                 f"cannot load: {getattr(err, 'strerror', None) or err}") from err
    context.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    if context.verify_mode != ssl.CERT_NONE:
        if not tls.client_ca_file:
            raise errors.ConfigError(f"{where}: tls_server_config.client_ca_file is required with "
                                     f"client_auth_type {tls.client_auth_type}")
        ca = _resolve(base, tls.client_ca_file)
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as err:
            raise errors.ConfigError(f"{where}: tls_server_config.client_ca_file {ca}: cannot load: "
                                     f"{getattr(err, 'strerror', None) or err}") from err
    return context


def _resolve(base: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else base / path


def _watched_files(path: Path) -> list[Path]:
    files = [path]
    try:
        raw = read_yaml_file(path, what=str(path), max_bytes=_MAX_FILE_BYTES) or {}
        tls = raw.get("tls_server_config") or {}
        files += [_resolve(path.parent, str(tls[key])) for key in ("cert_file", "key_file", "client_ca_file")
                  if tls.get(key)]
    except (errors.ConfigError, AttributeError):
        pass  # load() reports what is wrong with the file
    return files


def _fingerprint(files: list[Path]) -> tuple[tuple[int, int, int], ...]:
    marks = []
    for file in files:
        try:
            stat = os.stat(file)
            marks.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
        except OSError:
            marks.append((0, 0, 0))
    return tuple(marks)


class WebConfigSource:
    """The current ``WebSecurity``; re-reads the file when it or its certificates change."""

    def __init__(self, path: Path | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._log = TransitionLog(logger)
        self._mark: tuple[tuple[int, int, int], ...]
        self._files: list[Path]
        if path is None:
            self._current, self._files, self._mark = WebSecurity(), [], ()
        else:
            self._files = _watched_files(path)
            self._mark = _fingerprint(self._files)
            self._current = load(path)  # a bad file at start is a configuration error
        self._checked = clock()

    @property
    def tls(self) -> bool:
        return self.current().ssl_context is not None

    def current(self) -> WebSecurity:
        if self.path is None:
            return self._current
        with self._lock:
            now = self._clock()
            if now - self._checked < _RECHECK_SECONDS:
                return self._current
            self._checked = now
            # Stat the files already known; the file is parsed again only when one of them changed (the
            # config file names the certificates, so a new name shows as a change of the file itself).
            if _fingerprint(self._files) == self._mark:
                return self._current
            self._files = _watched_files(self.path)
            self._mark = _fingerprint(self._files)
            try:
                fresh = load(self.path)
            except errors.ConfigError as err:
                self._log.report("web-config", str(err), logging.ERROR,
                                 "keeping the previous web config: %s", err)
                return self._current
            if fresh.ssl_context is None and self._current.ssl_context is not None:
                # Turning TLS off would need a new listener; keep serving TLS rather than drop security.
                self._log.report("web-config", "tls-removed", logging.ERROR,
                                 "%s no longer has tls_server_config; keeping TLS until restart", self.path)
                return self._current
            self._log.clear("web-config")
            logger.info("web config %s reloaded", self.path)
            self._current = fresh
            return fresh
