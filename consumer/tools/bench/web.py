"""The **web** section: ``python -m consumer serve`` under a real HTTP load generator, vegeta
(``scripts/install_vegeta.sh`` builds it on first use).

vegeta sends requests at a fixed rate whatever the latency of the answers (an open loop: a slow answer does not
slow the load, so the latency it reports is what a caller sees), each ``POST /predict`` carrying one held-out
ride, cycling through them. Each phase reports vegeta's latency quantiles, the rate achieved, the share of 200s,
and the CPU the server's processes used (requests per CPU-second). One more phase sends lists of rides, and one
sends as fast as a fixed number of connections allow (the endpoint's ceiling on this machine, load generator
included). Everything runs on loopback; vegeta shares the machine's cores with the server.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import psutil

from consumer.tools.bench.accounting import cpu_seconds
from consumer.tools.bench.config import BenchConfig, say
from consumer.tools.bench.model import BenchModel
from consumer.tools.bench.rides import Rides
from consumer.tools.paths import REPO_ROOT

__all__ = ["web_section"]

VEGETA = REPO_ROOT / ".cache" / "vegeta" / "bin" / "vegeta"
#: Distinct rides the load cycles through.
TARGET_RIDES = 2_000
#: Rides per request in the list phase.
LIST_RIDES = 50
#: Connections of the ceiling phase (vegeta's workers; rate 0 = as fast as they get answers).
CEILING_CONNECTIONS = 16


def _vegeta() -> Path:
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "install_vegeta.sh")], check=False)
    if result.returncode != 0:
        raise RuntimeError("scripts/install_vegeta.sh failed: the web section needs vegeta (and go to build it)")
    return VEGETA


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _targets(url: str, bodies: list[bytes], path: Path) -> Path:
    header = {"Content-Type": ["application/json"]}
    with path.open("wb") as out:
        for body in bodies:
            target = {"method": "POST", "url": url, "body": base64.b64encode(body).decode(), "header": header}
            out.write(orjson.dumps(target) + b"\n")
    return path


def _start_server(config: BenchConfig, model: BenchModel, work_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "MLFLOW_", "SERVE_"))}
    env.update(
        MODEL_URI=model.uri,
        MLFLOW_TRACKING_URI=model.tracking_uri,
        MLFLOW_DISABLE_TELEMETRY="true",
        MODEL_CACHE_DIR=str(model.prepared.parent),
        PROMETHEUS_MULTIPROC_DIR=str(work_dir / "metrics"),
        SERVE_HOST="127.0.0.1",
        SERVE_PORT=str(port),
        SERVE_WORKERS=str(config.web_workers),
        LOG_LEVEL="WARNING",
    )
    with (work_dir / "serve.log").open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "consumer", "serve"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return process, url
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"serve did not become ready; see {work_dir / 'serve.log'}")
        time.sleep(0.2)


def _server_cpu(server: psutil.Process) -> float:
    total = 0.0
    for process in [server, *server.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += cpu_seconds(process)
    return total


def _attack(
    vegeta: Path, targets: Path, server: psutil.Process, *, rate: int, seconds: float, workers: int = 0
) -> dict[str, Any]:
    """One phase: vegeta at ``rate`` requests a second (0: as fast as ``workers`` connections go) for ``seconds``."""
    command = [str(vegeta), "attack", "-format=json", f"-targets={targets}", f"-duration={seconds}s", "-timeout=10s"]
    command += [f"-rate={rate}/s"] if rate else ["-rate=0", f"-workers={workers}", f"-max-workers={workers}"]
    cpu_before = _server_cpu(server)
    attack = subprocess.Popen(command, stdout=subprocess.PIPE)
    report = subprocess.run([str(vegeta), "report", "-type=json"], stdin=attack.stdout, capture_output=True, check=True)
    attack.wait()
    server_cpu = _server_cpu(server) - cpu_before
    result = orjson.loads(report.stdout)
    latencies = result["latencies"]
    requests = int(result["requests"])
    return {
        "rate": rate or None,
        "connections": workers or None,
        "requests": requests,
        "throughput": round(result["throughput"], 1),
        "success": result["success"],
        "status_codes": result["status_codes"],
        "latency_ms": {
            key: round(latencies[name] / 1e6, 2)
            for key, name in (("p50", "50th"), ("p90", "90th"), ("p99", "99th"), ("max", "max"))
        },
        "server_cpu_cores": round(server_cpu / seconds, 2),
        "requests_per_cpu_second": round(requests / server_cpu) if server_cpu else None,
    }


def _memory(server: psutil.Process) -> dict[str, Any]:
    def one(process: psutil.Process) -> dict[str, float]:
        info = process.memory_full_info()
        return {"rss_mb": round(info.rss / 1e6, 1), "uss_mb": round(info.uss / 1e6, 1)}

    return {"server": one(server), "workers": [one(worker) for worker in server.children()]}


def web_section(config: BenchConfig, model: BenchModel, rides: Rides) -> dict[str, Any]:
    """Latency and throughput of the endpoint at each fixed rate, with lists of rides, and at its ceiling."""
    vegeta = _vegeta()
    work_dir = config.work_dir / "web"
    work_dir.mkdir(parents=True, exist_ok=True)
    fields = [orjson.loads(payload)["ride"] for payload in rides.payloads[:TARGET_RIDES]]
    process, url = _start_server(config, model, work_dir)
    server = psutil.Process(process.pid)
    try:
        single = _targets(f"{url}/predict", [orjson.dumps(ride) for ride in fields], work_dir / "single.jsonl")
        lists = [orjson.dumps(fields[start : start + LIST_RIDES]) for start in range(0, len(fields), LIST_RIDES)]
        listed = _targets(f"{url}/predict", lists, work_dir / "lists.jsonl")
        say(f"web: {config.web_seconds:g} s at each of {config.web_rates} requests/s (vegeta)")
        _attack(vegeta, single, server, rate=50, seconds=2)  # warm-up: connections, first requests of each worker
        phases = {
            str(rate): _attack(vegeta, single, server, rate=rate, seconds=config.web_seconds)
            for rate in config.web_rates
        }
        list_rate = max(1, min(config.web_rates) // 5)
        listed_phase = _attack(vegeta, listed, server, rate=list_rate, seconds=config.web_seconds)
        listed_phase["rides_per_request"] = LIST_RIDES
        ceiling = _attack(vegeta, single, server, rate=0, seconds=config.web_seconds, workers=CEILING_CONNECTIONS)
        memory = _memory(server)
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
    return {
        "workers": config.web_workers,
        "seconds_per_phase": config.web_seconds,
        "fixed_rate": phases,
        "lists": listed_phase,
        "ceiling": ceiling,
        "memory": memory,
        "load_generator": "vegeta v12.13.0 (open loop), on the same machine",
    }
