"""The model's two other deployments, besides the stream: batch scoring of a TLC month file
(``python -m consumer score``, :mod:`~consumer.serving.batch`) and the web endpoint (``python -m consumer serve``,
:mod:`~consumer.serving.web` served by :mod:`~consumer.serving.server`).

Both use what the stream uses: the model prepared from ``MODEL_URI`` under the same trust rules, scored on the
same fast path, each ride validated by :func:`consumer.pipeline.events.validate_ride` and scored through
:func:`consumer.pipeline.batch.predict_each` (:mod:`~consumer.serving.scoring`), so all three give the same
prediction for the same ride. The runtime never imports this package; the development tools may.
"""
