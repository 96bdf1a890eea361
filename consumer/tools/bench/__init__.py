"""The benchmark the project ships: ``python -m consumer bench`` (``make bench``), a table on stdout and JSON.

Everything runs on this machine against the local emulators, in one run, on the same held-out rides (the last
week of the January 2022 TLC file, which the model never saw). One module per concept:

- :mod:`~consumer.tools.bench.config`: what a run does (:class:`BenchConfig`, and its quick mode);
- :mod:`~consumer.tools.bench.rides`: the held-out rides;
- :mod:`~consumer.tools.bench.model`: the model, prepared with the fast path and without, and the **model** section
  (the compiled fast path against the sklearn pipeline on every held-out ride);
- :mod:`~consumer.tools.bench.lambda_baseline`: the **lambda_baseline** section, what the Lambda this service
  replaces did per record;
- :mod:`~consumer.tools.bench.processor`: ``record_processor.py`` through the MultiLang protocol
  (:mod:`consumer.tools.multilang`): the **processor**, **batch_size**, **shards** and **cold_start** sections;
- :mod:`~consumer.tools.bench.daemon`: the **daemon** section, the real KCL daemon: latency, each shard's way from
  its lease to its first prediction, memory, and the pod's CPU idle and at rates up to the highest sustained;
- :mod:`~consumer.tools.bench.pod_cpu`: the pod's CPU by process from /proc, per 1,000 rides above idle, and the
  shards at AWS's write limit one core keeps up with;
- :mod:`~consumer.tools.bench.batch`: the **batch** section, ``python -m consumer score`` on the month file;
- :mod:`~consumer.tools.bench.web`: the **web** section, ``python -m consumer serve`` under vegeta at fixed rates;
- :mod:`~consumer.tools.bench.kcl_log`: when each shard reached each step, from the consumer's and the daemon's log;
- :mod:`~consumer.tools.bench.accounting`: CPU and memory (RSS, PSS, USS) of processes;
- :mod:`~consumer.tools.bench.stats`: medians of runs, latency quantiles;
- :mod:`~consumer.tools.bench.report`: the sections, the goals, the Markdown tables;
- :mod:`~consumer.tools.bench.charts`: the charts (latency distribution, CPU and memory by process) as PNGs;
- :mod:`~consumer.tools.bench.docs`: docs/performance.md rendered from a report, its charts in docs/img/;
- :mod:`~consumer.tools.bench.run`: one run of every section, the JSON written and the table printed;
- :mod:`~consumer.tools.bench.soak`: apart from the run, the metrics soak (``--soak``) and its page,
  docs/metrics-soak.md.

Figures are medians of ``runs`` runs (the daemon part runs once per mode). They depend on the machine and on
what else runs on it: the machine's load average is recorded at the start and the end.
"""

from consumer.tools.bench.config import BenchConfig
from consumer.tools.bench.docs import render_performance_doc, write_performance_docs
from consumer.tools.bench.report import SECTIONS, format_table
from consumer.tools.bench.run import run_bench

__all__ = ["SECTIONS", "BenchConfig", "format_table", "render_performance_doc", "run_bench", "write_performance_docs"]
