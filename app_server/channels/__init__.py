"""Channels: topic publish/subscribe that reaches WebSockets in every worker
and on every host (SPEC §9).

Modules: ``payload`` (typed data as wire bytes), ``history`` (offsets,
epochs and replay, pure), ``backend`` (the backend Protocol and the local
backend), ``redis`` (the Redis backend), ``hub`` (a worker's subscribers and
delivery), ``facade`` (``app.channels``) and ``runtime`` (the worker opens
and closes the backend). Nothing is imported here, so importing one module
loads only what it needs.
"""
