"""One pod for a daemon measurement: ``python -m consumer run`` on input, prediction and dead-letter streams of its
own (fresh, so that no earlier run's records slow the emulator or reach the run), and a reader of its predictions.
A context manager: the consumer is stopped on the way out."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from consumer.tools.bench.model import BenchModel

__all__ = ["BenchPod"]


class BenchPod:
    """The consumer on streams named ``<purpose>-*-<random>``, ``shards`` of them on the input; ``settings`` are
    added to the harness's environment (:func:`~consumer.tools.harness.consumer_env`)."""

    def __init__(
        self,
        stack: Any,
        model: BenchModel,
        work_root: Any,
        *,
        purpose: str,
        shards: int,
        settings: Mapping[str, str],
    ) -> None:
        from consumer.tools.harness import ConsumerProcess, consumer_env

        suffix = uuid.uuid4().hex[:6]
        self.input = f"{purpose}-rides-{suffix}"
        self.output = f"{purpose}-predictions-{suffix}"
        self.dead = f"{purpose}-dead-{suffix}"
        stack.create_stream(self.input, shards)
        stack.create_stream(self.output, 1)
        stack.create_stream(self.dead, 1)
        self.client = stack.kinesis_client()
        self.work = work_root / f"{purpose}-{suffix}"
        env = consumer_env(
            stack.env(),
            input_stream=self.input,
            predictions_stream=self.output,
            dead_letter_stream=self.dead,
            model_uri=model.uri,
            tracking_uri=model.tracking_uri,
            application_name=f"{purpose}-{suffix}",
            work_dir=self.work,
            extra={"MODEL_CACHE_DIR": str(model.prepared.parent), **settings},
        )
        self.consumer = ConsumerProcess(env, self.work / "consumer.log")
        self.predictions: list[Any] = []
        self._reader: Any = None

    def __enter__(self) -> Self:
        from consumer.tools.tail import StreamReader

        self._reader = StreamReader(self.client, self.output)
        self.consumer.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.consumer.stop(timeout=60)

    @property
    def pid(self) -> int:
        """The launcher's pid: the root of the pod's processes."""
        assert self.consumer.process is not None
        return self.consumer.process.pid

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
