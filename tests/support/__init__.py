"""What the test tiers share; one of each.

- :mod:`~tests.support.requirements`: what a test needs from the machine, and the one policy when it is missing
  (skip with the reason; under CI=true a failure).
- :mod:`~tests.support.stack`: the emulators (``local_stack``, ``kinesis``, ``make_stream``), the consumer's
  ``streams``, the daemon's lease table.
- :mod:`~tests.support.models`: the TLC trips file, training rows, model pipelines, prepared and MLflow model
  directories, a local MLflow store with the model registered.
- :mod:`~tests.support.fakes`: the fake checkpointer, amazon_kclpy's inputs, a constant model.
- :mod:`~tests.support.factories`: ride payloads, KCL-like records, a record processor on in-memory sinks.
- :mod:`~tests.support.probes`: JSON log lines, HTTP answers, waiting for a process to be gone.
- :mod:`~tests.support.prometheus`: a Prometheus server, the metric names of PromQL, the dashboard's builder.
- :mod:`~tests.support.launcher` and :mod:`~tests.support.fake_daemon`: the launcher supervising a fake daemon.
- :mod:`~tests.support.fork_server`: the fork server with a scripted shard, and a record processor using it.

``tests/conftest.py`` loads the fixtures of ``stack`` and ``models`` for every tier.
"""
