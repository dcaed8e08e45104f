"""``SessionCA``: the per-session certificate authority the egress proxy intercepts TLS with.

A session whose vaults hold ``environment_variable`` credentials gets a CA of its own, generated
when its sandbox is first built (ECDSA P-256, valid for 10 days, ``pathlen:0``, name constraints
none: it only ever signs leaves for hosts the proxy intercepts). Its private key lives only in
this object, in the Hangar process's memory; the sandbox gets the *certificate* alone, appended
to the system CA bundle (:meth:`SessionCA.bundle`).

For each host the proxy intercepts, :meth:`SessionCA.server_context` issues a leaf certificate
(a DNS or IP subject alternative name, valid for 2 days) signed by the CA and returns a
server-side :class:`ssl.SSLContext` for it (cached per host). :mod:`ssl` loads certificate chains
only from files, so the leaf's key and chain are written to a 0600 temporary file outside the
sandbox, loaded and unlinked at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 10
LEAF_DAYS = 2
_LEAF_CACHE_MAX = 256

SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # macOS, some BSDs
)


def system_bundle() -> Path | None:
    """The system's CA bundle file (``None`` when none of the usual places holds one)."""
    default = ssl.get_default_verify_paths().cafile
    for candidate in (default, *SYSTEM_BUNDLES):
        if candidate and os.path.isfile(candidate):
            return Path(os.path.realpath(candidate))
    return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SessionCA:
    """A CA for one session (see the module docstring)."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hangar"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"Hangar egress CA {session_id}"[:64]),
            ]
        )
        now = _now()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._contexts: dict[str, ssl.SSLContext] = {}

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def bundle(self, system: Path | None = None) -> bytes:
        """The system CA bundle (``system``, default :func:`system_bundle`) followed by this CA's
        certificate: what the sandbox trusts."""
        path = system if system is not None else system_bundle()
        base = path.read_bytes() if path is not None else b""
        if base and not base.endswith(b"\n"):
            base += b"\n"
        return base + self.cert_pem

    def leaf_pem(self, host: str) -> bytes:
        """A PEM chain (leaf, CA) for ``host`` (a DNS name or an IP literal)."""
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        now = _now()
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64] or "host")]))
            .issuer_name(self.cert.subject)
            .public_key(self._leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        return leaf.public_bytes(serialization.Encoding.PEM) + self.cert_pem

    def server_context(self, host: str) -> ssl.SSLContext:
        """A server-side TLS context presenting a leaf for ``host`` (HTTP/1.1 only via ALPN)."""
        context = self._contexts.get(host)
        if context is not None:
            return context
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        key_pem = self._leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd, name = tempfile.mkstemp(prefix="hangar-leaf-", suffix=".pem")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key_pem + self.leaf_pem(host))
            context.load_cert_chain(name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
        if len(self._contexts) >= _LEAF_CACHE_MAX:
            self._contexts.pop(next(iter(self._contexts)))
        self._contexts[host] = context
        return context


def upstream_context(extra_ca_file: Path | None = None) -> ssl.SSLContext:
    """The client-side context the proxy uses towards the real host: the system trust store,
    plus ``extra_ca_file`` when given (tests' own CAs); hostname checked; HTTP/1.1 via ALPN."""
    context = ssl.create_default_context()
    if extra_ca_file is not None:
        context.load_verify_locations(cafile=str(extra_ca_file))
    context.set_alpn_protocols(["http/1.1"])
    return context
