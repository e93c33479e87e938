"""Certificates made for a test run with trustme: a certificate authority of the test's
own and server certificates it signs, written as PEM files for mysqlgate, mariadbd and the
clients. A second authority that signed nothing served stands for "the wrong CA"."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class ServerCert:
    """A server's certificate chain and private key (PEM files), and the names it is for."""

    cert: Path
    key: Path
    names: tuple[str, ...]


class CertAuthority:
    """A CA whose certificate is in `ca_file` (`directory`/`label`.pem); `issue()` writes
    server certificates it signs into the same directory."""

    def __init__(self, directory: Path, label: str = "ca") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._ca = trustme.CA(organization_name=f"mysqlgate tests ({label})")
        self.ca_file = directory / f"{label}.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))

    def issue(self, label: str, *names: str) -> ServerCert:
        """A certificate for `names` (host names and IP addresses, which become
        subjectAltName entries), in `label`.crt and `label`.key."""
        leaf = self._ca.issue_cert(*names)
        cert = self.directory / f"{label}.crt"
        key = self.directory / f"{label}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        return ServerCert(cert, key, tuple(names))
