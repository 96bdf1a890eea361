"""The model: resolve MODEL_URI, trust and load what it names, prepare it once, compile its fast path, and score.

Two sides: preparing (:mod:`~consumer.model.prepare`, :mod:`~consumer.model.resolve`, :mod:`~consumer.model.trust`,
:mod:`~consumer.model.compile`; MLflow and scikit-learn) and scoring (:mod:`~consumer.model.scorer`,
:mod:`~consumer.model.fastpath`; no MLflow), joined by the prepared directory (:mod:`~consumer.model.prepared`).
It depends on nothing else of the package but :mod:`consumer.errors`.
"""
