"""One pod for a daemon measurement: ``python -m consumer run`` on emulators of its own (kinesis-mock slows as it
holds more records, and the sections before hold many) and streams of its own, and a reader of its predictions. A
context manager: the emulators start and the streams are made on the way in, the consumer starts on
:meth:`BenchPod.start`, and both stop on the way out."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from consumer.tools.bench.model import BenchModel

__all__ = ["BenchPod"]


class BenchPod:
    """The consumer on streams named ``<purpose>-*-<random>``, ``shards`` of them on the input; ``settings`` are
    added to the harness's environment (:func:`~consumer.tools.harness.consumer_env`)."""

    def __init__(
        self,
        model: BenchModel,
        work_root: Path,
        *,
        purpose: str,
        shards: int,
        settings: Mapping[str, str],
    ) -> None:
        from consumer.tools.localstack import LocalStack

        suffix = uuid.uuid4().hex[:6]
        self.input = f"{purpose}-rides-{suffix}"
        self.output = f"{purpose}-predictions-{suffix}"
        self.dead = f"{purpose}-dead-{suffix}"
        self.work = work_root / f"{purpose}-{suffix}"
        self.stack = LocalStack(self.work / "emulators")
        self.predictions: list[Any] = []
        self._model, self._purpose, self._suffix, self._shards = model, purpose, suffix, shards
        self._settings = dict(settings)
        self._metrics_dir: Path | None = None
        self._consumer: Any = None
        self._reader: Any = None

    def __enter__(self) -> Self:
        from consumer.tools.tail import StreamReader

        self.stack.start()
        try:
            self.stack.create_stream(self.input, self._shards)
            self.stack.create_stream(self.output, 1)
            self.stack.create_stream(self.dead, 1)
            self.client = self.stack.kinesis_client()
            self._reader = StreamReader(self.client, self.output)
        except BaseException:
            self.stack.stop(keep_work_dir=True)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._consumer is not None:
                self._consumer.stop(timeout=60)
        finally:
            self.stack.stop(keep_work_dir=exc_type is not None)

    def start(self) -> None:
        """Start the consumer (on what is already on the input stream, from its start)."""
        from consumer.tools.harness import ConsumerProcess, consumer_env

        env = consumer_env(
            self.stack.env(),
            input_stream=self.input,
            predictions_stream=self.output,
            dead_letter_stream=self.dead,
            model_uri=self._model.uri,
            tracking_uri=self._model.tracking_uri,
            application_name=f"{self._purpose}-{self._suffix}",
            work_dir=self.work,
            extra={"MODEL_CACHE_DIR": str(self._model.prepared.parent), **self._settings},
        )
        self._metrics_dir = Path(env["PROMETHEUS_MULTIPROC_DIR"])
        self._consumer = ConsumerProcess(env, self.work / "consumer.log").start()

    @property
    def consumer(self) -> Any:
        """The :class:`~consumer.tools.harness.ConsumerProcess` (after :meth:`start`)."""
        assert self._consumer is not None, "start() the pod first"
        return self._consumer

    @property
    def metrics_dir(self) -> Path:
        """The pod's metrics folder (``PROMETHEUS_MULTIPROC_DIR``), where its shard processes write (after
        :meth:`start`)."""
        assert self._metrics_dir is not None, "start() the pod first"
        return self._metrics_dir

    @property
    def pid(self) -> int:
        """The launcher's pid: the root of the pod's processes."""
        process = self.consumer.process
        assert process is not None
        return int(process.pid)

    @property
    def emulator_pid(self) -> int:
        return int(self.stack.pids["kinesis-local"])

    def put(self, payloads: list[tuple[bytes, str]]) -> None:
        from consumer.tools.replay import put_payloads

        put_payloads(self.client, self.input, payloads)

    def wait_out(self, count: int, what: str, *, timeout: float = 240) -> None:
        """Read predictions until ``count`` are out in all; raise, naming ``what``, if the consumer exits or
        ``timeout`` seconds pass first."""
        from consumer.tools.harness import wait_for

        def out() -> bool:
            self.predictions.extend(self._reader.poll())
            if not self.consumer.running():
                raise RuntimeError(f"the consumer exited:\n{self.consumer.tail()}")
            return len(self.predictions) >= count

        if not wait_for(out, timeout=timeout, interval=0.2):
            raise RuntimeError(f"{what}: {len(self.predictions)} of {count} out:\n{self.consumer.tail()}")
