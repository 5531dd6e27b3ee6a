"""A throw-away PKI for TLS tests: a CA, certificates it signed, and a self-signed stranger.

Importable from every test (pytest puts tests/ on sys.path for tests/conftest.py); needs the
``cryptography`` package from the test extras.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer_name: x509.Name,
                 issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False, ip: str | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def make_pki(base: Path) -> Path:
    """Writes ca.crt, server/client .crt+.key (signed by the CA, for 127.0.0.1) and stranger (self-signed)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test CA", ca_key, _name("test CA"), ca_key, ca=True)
    _write(base / "ca", ca, None)
    for name, signed in (("server", True), ("client", True), ("stranger", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        issuer_name, issuer_key = (ca.subject, ca_key) if signed else (_name(name), key)
        _write(base / name, _certificate(name, key, issuer_name, issuer_key, ip="127.0.0.1"), key)
    return base
