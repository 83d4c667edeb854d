"""Throw-away certificates for TLS tests of the server transports (tcp, http): a CA, a server certificate
for ``localhost`` / ``127.0.0.1`` and a client certificate, made with the ``openssl`` command line."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

import pytest

__all__ = ["make_test_pki", "PKI_FILES", "pki"]

#: the files :func:`make_test_pki` writes (keys of the mapping it returns)
PKI_FILES = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")


def make_test_pki(directory: Path) -> Optional[dict[str, str]]:
    """Write a CA, a server and a client certificate (2 days, RSA 2048) into ``directory``; return
    ``{file name: path}`` (:data:`PKI_FILES`), or None when ``openssl`` is not installed (the caller skips)."""
    if shutil.which("openssl") is None:
        return None
    directory = Path(directory)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "ca.key", "-out", "ca.pem",
        "-subj", "/CN=funboost test CA")
    for name, ext in (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        (directory / f"{name}.ext").write_text(ext + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext")
    return {k: str(directory / k) for k in PKI_FILES}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: Any) -> dict[str, str]:
    """:func:`make_test_pki` once per test module (skips when ``openssl`` is missing). Import it into a test
    module to use it: ``from funboost.testing.tls import pki  # noqa: F401``."""
    files = make_test_pki(tmp_path_factory.mktemp("tls"))
    if files is None:
        pytest.skip("openssl is not installed: cannot make test certificates")
    return files
