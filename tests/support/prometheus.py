"""Prometheus for the tests: Debian's ``prometheus`` and ``promtool`` (scripts/install_prometheus.sh installs them;
``make setup`` does as root, so CI has them), a server on a free loopback port with its own configuration and
storage, the metric names a PromQL expression reads, and the dashboard's builder whose queries read them.

Without the binaries the tests skip, saying how to install them; with ``CI=true`` they fail instead.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import promql_parser

from consumer.tools.localstack import free_port
from consumer.tools.paths import REPO_ROOT
from tests.support.requirements import require_tool

__all__ = ["PrometheusServer", "dashboard_builder", "defined_metric_names", "metric_names", "tool"]

INSTALL_HINT = "run `sudo bash scripts/install_prometheus.sh` (Debian's prometheus package: server and promtool)"


def tool(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``; unavailable (:mod:`tests.support.requirements`) without it."""
    return require_tool(name, INSTALL_HINT)


def metric_names(expr: str, variables: Mapping[str, str] | None = None) -> set[str]:
    """The metric names of every selector in a PromQL expression (Grafana's variables replaced first)."""
    for variable, value in sorted((variables or {}).items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def dashboard_builder() -> ModuleType:
    """dashboards/build.py as a module: the dashboard's panels, its queries and their variables."""
    spec = importlib.util.spec_from_file_location("dashboard_build", REPO_ROOT / "dashboards" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def defined_metric_names() -> set[str]:
    """Every sample name the consumer can export (shard processes' and launcher's), from its metric definitions."""
    from prometheus_client import CollectorRegistry

    from consumer.pipeline.meter import ShardMetrics
    from consumer.runtime.health import LauncherState
    from consumer.runtime.metrics import LauncherCollector

    registry = CollectorRegistry()
    ShardMetrics.create(registry)
    state = LauncherState(Path("/nonexistent"))
    state.model_prepared({"name": "n", "version": "1", "uri": "u"}, 1.0)
    exited = subprocess.Popen(["true"])
    exited.wait()
    state.daemon_started(exited)
    registry.register(LauncherCollector(state))
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]}


class PrometheusServer:
    """``prometheus`` on 127.0.0.1, scraping ``targets`` every ``scrape_interval``, with ``rule_files`` loaded."""

    def __init__(
        self,
        work_dir: Path,
        targets: Sequence[str],
        *,
        rule_files: Sequence[Path] = (),
        scrape_interval: str = "1s",
        job: str = "ride-consumer",
    ) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work_dir / "prometheus.log"
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
        }
        work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = work_dir / "prometheus.yml"
        self.config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    tool("prometheus"),
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.work_dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"prometheus was not ready within {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def api(self, path: str, **params: Any) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        return self.api("query", **params)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """A range query's result: [{"metric": {...}, "values": [[t, "v"], ...]}, ...]."""
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
