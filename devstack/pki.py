"""Throwaway PKI of one stack: a CA and the certificates signed by it.

Every stack gets its own CA (like controller-runtime's envtest), so TLS is verified
for real everywhere (kube-apiserver, Kafka's SASL_SSL listener, HAProxy's Scout
front) without trusting anything outside the stack directory. Keys are ECDSA P-256:
quick to generate and accepted by Go, Java, OpenSSL (librdkafka, HAProxy) and
Python alike. The service-account signing key is RSA because that is what
kube-apiserver documents for ``--service-account-signing-key-file``.

Files are created once per stack directory and reused by later ``up`` calls.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL_NAMES = ("localhost",)
LOCAL_IPS = ("127.0.0.1",)
VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class CertFiles:
    """Paths of a PEM certificate and its PEM private key."""

    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{path} is not an EC key")
    return key


class PKI:
    """The CA of one stack, rooted at ``directory`` (``root/pki``)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = CertFiles(directory / "ca.crt", directory / "ca.key")

    def ensure_ca(self) -> None:
        """Create the CA unless it exists already (idempotent)."""
        if self.ca.cert.exists() and self.ca.key.exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mwa-staging devstack CA")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write_key(self.ca.key, key)
        self.ca.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        return x509.load_pem_x509_certificate(self.ca.cert.read_bytes()), _load_key(self.ca.key)

    def issue(
        self,
        name: str,
        *,
        common_name: str,
        organizations: tuple[str, ...] = (),
        server: bool = True,
        client: bool = False,
    ) -> CertFiles:
        """A leaf certificate ``name.crt``/``name.key``; server ones carry the loopback SANs.

        Reused when it exists, so restarting a component keeps its identity.
        """
        files = CertFiles(self.dir / f"{name}.crt", self.dir / f"{name}.key")
        if files.cert.exists() and files.key.exists():
            return files
        self.ensure_ca()
        ca_cert, ca_key = self._ca()
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if server:
            sans: list[x509.GeneralName] = [x509.DNSName(n) for n in LOCAL_NAMES]
            sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in LOCAL_IPS]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(files.key, key)
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return files

    def combined_pem(self, files: CertFiles) -> Path:
        """Certificate, CA chain and key in one file: the form HAProxy's ``crt`` wants."""
        path = files.cert.with_suffix(".pem")
        if not path.exists():
            path.write_bytes(
                files.cert.read_bytes() + self.ca.cert.read_bytes() + files.key.read_bytes()
            )
            path.chmod(0o600)
        return path

    def pkcs12(self, files: CertFiles, password: str) -> Path:
        """A PKCS12 keystore (key, certificate, CA) for Java (Kafka's ``ssl.keystore``)."""
        path = files.cert.with_suffix(".p12")
        if path.exists():
            return path
        ca_cert, _ = self._ca()
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        data = pkcs12.serialize_key_and_certificates(
            name=b"server",
            key=_load_key(files.key),
            cert=cert,
            cas=[ca_cert],
            encryption_algorithm=serialization.BestAvailableEncryption(password.encode()),
        )
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def service_account_key(self) -> CertFiles:
        """RSA key pair for signing (private) and verifying (public) ServiceAccount tokens."""
        files = CertFiles(self.dir / "sa.pub", self.dir / "sa.key")
        if files.cert.exists() and files.key.exists():
            return files
        self.dir.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(files.key, key)
        files.cert.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return files
