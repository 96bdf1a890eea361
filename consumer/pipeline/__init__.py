"""The record pipeline: decode, validate, score, encode, put, checkpoint; one :class:`~consumer.pipeline.processor.
RideProcessor` per leased shard.

It depends on the model (:mod:`consumer.model`) and on nothing of the runtime or the tools: settings, clients and
metrics are passed in.
"""
