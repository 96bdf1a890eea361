"""The service's runtime: settings, logs, metrics and health, the daemon (its jars, properties and command), the
launcher that supervises it, the fork server, and the shard process the daemon starts per lease.

It depends on the record pipeline and the model, never on :mod:`consumer.tools`.
"""
