"""Processes of one server: a supervising main process, N worker processes, one audit writer.

``plan`` decides how many workers (``server.workers``); ``supervisor`` starts, watches, restarts
and drains them; ``peers`` is how one worker reaches the others (the metrics and status of the
whole server, model loads and unloads that hold server-wide); ``merge`` adds up their metrics.
docs/architecture.md explains the choice of ``SO_REUSEPORT`` workers.
"""
