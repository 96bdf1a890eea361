"""During an end-to-end run on the real daemon, no process of the consumer sends a packet beyond loopback.

The run (the emulators, ``python -m consumer run`` with its daemon, fork server and shard processes) happens in a
network namespace whose only way out is a black-hole link carrying the default route (tests/e2e/egress_run.py):
whatever tries to leave (an instance-metadata probe, a DNS query, a telemetry call) is counted on that link and goes
nowhere. The count must stay 0. A control in the same namespace, after the run, shows that the count and the sniffer
see a probe: a connect to the instance metadata address 169.254.169.254 from Python (what KCL 3's worker metrics or a
credentials lookup without credentials would send).

Needs root (a network namespace) and ``unshare``/``ip``: skipped with the reason otherwise, a failure with CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from consumer.tools.paths import REPO_ROOT
from tests.support.requirements import unavailable


def _namespace_unavailable() -> str | None:
    missing = [tool for tool in ("unshare", "ip", "sysctl") if shutil.which(tool) is None]
    if missing:
        return f"the egress test needs {', '.join(missing)} (util-linux, iproute2, procps)"
    if os.geteuid() != 0:
        return "the egress test needs root to make a network namespace (CI runs as root)"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"unshare --net does not work here: {probe.stderr.strip()}"
    return None


def test_an_end_to_end_run_sends_nothing_beyond_loopback(registered_model, emulators_installed, tmp_path):
    if reason := _namespace_unavailable():
        unavailable(reason)
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "model_uri": registered_model.uri,
                "tracking_uri": registered_model.tracking_uri,
                "work_dir": str(tmp_path / "run"),
            }
        )
    )
    result_path = tmp_path / "result.json"
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "tests.e2e.egress_run", str(config), str(result_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(result_path.read_text())
    run = result["run"]
    assert run["accounted"], f"the run did not finish: {run['ledger']}\n{run['log_tail']}"
    assert run["ledger"]["predicted"] == 300 and run["ledger"]["dead_lettered"] == 10
    assert run["stop_status"] == 0
    assert result["idle_sent"] == 0
    control_at = result["phases"]["python_control"]
    leaving = [packet for packet in result["packets"] if packet[0] < control_at]
    assert run["sent_after"] == run["sent_before"] == 0, f"a process of the consumer tried to leave loopback: {leaving}"

    python = result["python_control"]
    assert python["sent_after"] > python["sent_before"], "the counter must see a connect to 169.254.169.254"
    probes = [packet for packet in result["packets"] if packet[0] >= control_at]
    assert ["tcp", "169.254.169.254", 80] in [packet[1:4] for packet in probes], "the sniffer must name its destination"
