"""The KCL version comparison: ``python -m consumer kcl-compare`` (``make kcl-compare``), on demand, not in CI.

It runs the real daemon of each KCL version the project considered (KCL 3.1.3, the newest 3.x that resolves, and
KCL 2.7.2, the newest 2.x, which ships) through ``python -m consumer run`` against the local stack,
one after the other, on the same timeline: a cold start on a new lease table, a steady load on one worker, a second
worker joining, a SIGTERM, a SIGKILL of a worker and a SIGKILL of KCL 3's leader, each judged by the ledger. Its
report is JSON; docs/kcl-versions.md is rendered from it (``--docs-from``). One module per concept:

- :mod:`~consumer.tools.kclcompare.variants`: what is compared (jar lock, daemon properties, lease table);
- :mod:`~consumer.tools.kclcompare.cluster`: workers of one variant against one set of streams, their load, the
  lease table and the ledger;
- :mod:`~consumer.tools.kclcompare.timeline`: the phases and what each measures;
- :mod:`~consumer.tools.kclcompare.report`: the side-by-side table and docs/kcl-versions.md;
- :mod:`~consumer.tools.kclcompare.run`: every variant in one run, the JSON written, the table printed.
"""

from consumer.tools.kclcompare.report import render_versions_doc, versions_table, write_versions_docs
from consumer.tools.kclcompare.run import run_comparison
from consumer.tools.kclcompare.variants import VARIANTS, Variant

__all__ = ["VARIANTS", "Variant", "render_versions_doc", "run_comparison", "versions_table", "write_versions_docs"]
