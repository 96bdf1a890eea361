"""The daemon's Java runtime, cut with jlink to the modules of scripts/jre-modules.txt (scripts/build_jre.sh, which
`make setup` and the image build run): the list is still jdeps' answer for the locked jars, the runtime trusts the
roots AWS endpoints chain to, and the AWS SDK client the daemon builds first completes TLS and a signed call on it,
against an HTTPS endpoint on 127.0.0.1 with an ECDSA certificate (what jdk.crypto.ec, invisible to jdeps, is for)."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from consumer.runtime.jars import default_jar_dir, default_java_bin
from tests.support.requirements import require_file, require_tool

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "tests" / "support" / "java" / "SdkTlsProbe.java"
#: The roots AWS service endpoints chain to (Amazon Trust Services), as the JDK's CA store names them.
AWS_ROOTS = {"amazonrootca1", "amazonrootca2", "amazonrootca3", "amazonrootca4", "starfieldservicesrootg2ca"}


@pytest.fixture(scope="module")
def java() -> Path:
    return require_file(default_java_bin(), "`make setup` links the daemon's Java runtime there (scripts/build_jre.sh)")


def test_the_module_list_is_jdeps_answer_for_the_locked_jars():
    require_tool("jdeps", "a JDK 17+ (`make setup` checks for one)")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "jre_modules.py"), "--check", "--jars", str(default_jar_dir())],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_runtime_holds_exactly_the_listed_modules_and_what_they_require(java):
    listed = {
        line.split()[0]
        for line in (REPO / "scripts" / "jre-modules.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    result = subprocess.run([str(java), "--list-modules"], capture_output=True, text=True, check=True)
    linked = {line.split("@")[0] for line in result.stdout.split()}
    assert listed <= linked
    assert "java.se" not in linked and "jdk.compiler" not in linked, "a cut runtime, not the whole JDK"


def test_the_runtime_trusts_the_roots_aws_endpoints_chain_to(java):
    result = subprocess.run(
        [str(java.parent / "keytool"), "-list", "-cacerts", "-storepass", "changeit"],
        capture_output=True,
        text=True,
        check=True,
    )
    aliases = set(re.findall(r"^(\S+) \[jdk\]", result.stdout, re.MULTILINE))
    assert AWS_ROOTS <= aliases


class _ListTables(BaseHTTPRequestHandler):
    """Answers DynamoDB's ListTables with no tables, noting what each request looked like."""

    protocol_version = "HTTP/1.1"
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        connection = self.connection
        assert isinstance(connection, ssl.SSLSocket)
        self.seen.append(
            {
                "target": self.headers.get("X-Amz-Target", ""),
                "authorization": self.headers.get("Authorization", ""),
                "tls": connection.version() or "",
            }
        )
        body = json.dumps({"TableNames": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def https_endpoint(tmp_path) -> Iterator[tuple[str, Path]]:
    """An HTTPS endpoint on 127.0.0.1 with a fresh self-signed ECDSA (P-256) certificate; yields its URL and the
    certificate."""
    openssl = require_tool("openssl", "Debian: apt-get install openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    request = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    request += ["-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"]
    subprocess.run([*request, "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, check=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    _ListTables.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ListTables)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


def test_the_aws_sdk_completes_tls_and_a_signed_call_on_the_runtime(java, https_endpoint, tmp_path):
    url, cert = https_endpoint
    javac = require_tool("javac", "a JDK 17+ (`make setup` checks for one)")
    jars = f"{default_jar_dir()}/*"
    classes = tmp_path / "classes"
    subprocess.run(
        [javac, "--release", "17", "-cp", jars, "-d", str(classes), str(PROBE)], capture_output=True, check=True
    )
    truststore = tmp_path / "trust.p12"
    keytool = [str(java.parent / "keytool"), "-importcert", "-noprompt", "-alias", "probe", "-file", str(cert)]
    subprocess.run(
        [*keytool, "-keystore", str(truststore), "-storetype", "PKCS12", "-storepass", "changeit"],
        capture_output=True,
        check=True,
    )
    command = [str(java), f"-Djavax.net.ssl.trustStore={truststore}", "-Djavax.net.ssl.trustStorePassword=changeit"]
    command += ["-cp", f"{classes}{os.pathsep}{jars}", "SdkTlsProbe", url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert result.stdout.strip().endswith("tables []")
    assert [seen["target"] for seen in _ListTables.seen] == ["DynamoDB_20120810.ListTables"]
    assert _ListTables.seen[0]["authorization"].startswith("AWS4-HMAC-SHA256 ")
    assert _ListTables.seen[0]["tls"] in {"TLSv1.2", "TLSv1.3"}
