"""Development tools around the service: the demo, replay, tail, the ledger, the benchmark, the local stack
(emulators), training, and the harness the demo and the tests share.

Nothing of the runtime, the pipeline or the model imports this package; the image does not ship it.
"""
