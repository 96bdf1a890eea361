"""Run inside ``unshare --net`` by tests/e2e/test_egress.py: an end-to-end run with nothing to reach but loopback,
and every packet that would have left counted.

The namespace gets loopback and one black-hole link carrying the default route: a veth pair whose two ends are both
in the namespace (``egress0`` with a documentation address, 192.0.2.1, no ARP, and its peer ``egress1``), IPv6 off.
A packet to anywhere but loopback (a SYN to 169.254.169.254, a DNS query) goes out of ``egress0`` into its peer and
dies there: ``egress0``'s transmit counter says how many tried, and a sniffer on the peer records where each was
going, so that a failure names the destination. (A ``dummy`` link would do as the black hole; these machines'
kernels lack the module.)

    python -m tests.e2e.egress_run CONFIG.json RESULT.json

CONFIG: model_uri, tracking_uri, work_dir. RESULT: the counter before and after the run, the run's ledger, the packets
the sniffer saw, and the control that proves the counter and the sniffer see a probe: after the run, a connect to the
instance metadata address (169.254.169.254) from this process, in the same namespace.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

LINK, PEER = "egress0", "egress1"
_STARTED = time.monotonic()


def now() -> float:
    """Seconds since this runner started: the clock of the packets and of the phases in the result."""
    return round(time.monotonic() - _STARTED, 1)


BLACK_HOLE_ADDRESS = "192.0.2.1/32"  # TEST-NET-1 (RFC 5737): never routed anywhere
#: Variables some libraries read to switch themselves off under test or CI (MLflow's usage telemetry does): the run
#: goes without them, as in production, so that the test does not pass only because it is a test.
TEST_MARKERS = ("PYTEST_CURRENT_TEST", "CI")


def interfaces() -> dict[str, int]:
    """Interface -> transmitted packets, from /proc/net/dev (per network namespace, unlike /sys/class/net here)."""
    counters = {}
    for line in Path("/proc/net/dev").read_text().splitlines()[2:]:
        name, _, fields = line.partition(":")
        counters[name.strip()] = int(fields.split()[9])
    return counters


def set_up_namespace() -> None:
    if set(interfaces()) != {"lo"}:
        sys.exit(f"refusing to run outside a fresh network namespace (interfaces: {sorted(interfaces())})")
    for command in (
        ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "add", LINK, "type", "veth", "peer", "name", PEER],
        ["ip", "addr", "add", BLACK_HOLE_ADDRESS, "dev", LINK],
        ["ip", "link", "set", LINK, "arp", "off"],  # packets go out as they are, destination and port readable
        ["ip", "link", "set", PEER, "up"],
        ["ip", "link", "set", LINK, "up"],
        ["ip", "route", "add", "default", "dev", LINK],
    ):
        subprocess.run(command, check=True)
    if set(interfaces()) != {"lo", LINK, PEER}:
        sys.exit(f"unexpected interfaces after setup: {sorted(interfaces())}")


def sent() -> int:
    return interfaces()[LINK]


def _dns_question(message: bytes) -> str:
    """The name a DNS query asks for (its first question), so that a failure says what was looked up."""
    labels, offset = [], 12
    while offset < len(message) and message[offset]:
        length = message[offset]
        labels.append(message[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length
    return ".".join(labels)


class Sniffer(threading.Thread):
    """Records ``[seconds, protocol, destination, port]`` of every IPv4 packet arriving on the black hole's peer."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.packets: list[list[Any]] = []
        self._socket = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self._socket.bind((PEER, 0))
        self._socket.settimeout(0.5)

    def run(self) -> None:
        while True:
            try:
                frame = self._socket.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if struct.unpack("!H", frame[12:14])[0] != 0x0800:
                self.packets.append([now(), "not ipv4", None, None])
                continue
            header = (frame[14] & 0x0F) * 4
            protocol = {6: "tcp", 17: "udp"}.get(frame[23], str(frame[23]))
            port = struct.unpack("!H", frame[16 + header : 18 + header])[0] if protocol in ("tcp", "udp") else None
            packet = [now(), protocol, socket.inet_ntoa(frame[30:34]), port]
            if (protocol, port) == ("udp", 53):
                packet.append(_dns_question(frame[14 + header + 8 :]))
            self.packets.append(packet)


def wait_until(condition: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(1.0)
    return value


def end_to_end(config: dict[str, str], result: dict[str, Any]) -> None:
    from consumer.tools.harness import POISON_RECORDS, ConsumerProcess, consumer_env
    from consumer.tools.ledger import read_ledger
    from consumer.tools.localstack import LocalStack
    from consumer.tools.paths import DEFAULT_TRIPS
    from consumer.tools.replay import put_payloads, replay

    work = Path(config["work_dir"])
    with LocalStack(work / "stack") as stack:
        for name, shards in (("rides", 2), ("predictions", 1), ("dead-letters", 1)):
            stack.create_stream(name, shards)
        kinesis = stack.kinesis_client()

        env = consumer_env(
            stack.env(),
            input_stream="rides",
            predictions_stream="predictions",
            dead_letter_stream="dead-letters",
            model_uri=config["model_uri"],
            tracking_uri=config["tracking_uri"],
            application_name="egress",
            work_dir=work,
        )

        result["phases"] = {"run": now()}
        before = sent()
        replay(DEFAULT_TRIPS, client=kinesis, stream_name="rides", limit=300, skip_invalid=True, progress=False)
        put_payloads(kinesis, "rides", POISON_RECORDS)
        consumer = ConsumerProcess(env, work / "egress.log").start()

        def accounted() -> dict[str, int] | None:
            counts = read_ledger(kinesis, "rides", "predictions", "dead-letters", timeout=30).counts
            return counts if counts["in"] == 310 and counts["predicted"] + counts["dead_lettered"] == 310 else None

        counts = wait_until(accounted, timeout=300)
        result["run"] = {
            "ledger": counts or read_ledger(kinesis, "rides", "predictions", "dead-letters", timeout=30).counts,
            "accounted": bool(counts),
            "stop_status": consumer.stop(timeout=60),
            "sent_before": before,
            "sent_after": sent(),
            "log_tail": consumer.tail(30),
        }


def python_probe(result: dict[str, Any]) -> None:
    """The control: a connect to the instance metadata address from Python, as a metadata probe would."""
    result["phases"]["python_control"] = now()
    before = sent()
    error = "connected"  # cannot happen: nothing answers in the namespace
    with socket.socket() as probe:
        probe.settimeout(2)
        try:
            probe.connect(("169.254.169.254", 80))
        except OSError as exc:
            error = str(exc)
    time.sleep(0.5)
    result["python_control"] = {"sent_before": before, "sent_after": sent(), "connect_error": error}


def main(config_path: str, result_path: str) -> int:
    config = json.loads(Path(config_path).read_text())
    for name in TEST_MARKERS:
        os.environ.pop(name, None)
    result: dict[str, Any] = {}
    set_up_namespace()
    sniffer = Sniffer()
    sniffer.start()
    result["idle_sent"] = sent()
    try:
        end_to_end(config, result)
        python_probe(result)
    finally:
        time.sleep(0.5)
        result["packets"] = sniffer.packets
        Path(result_path).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
