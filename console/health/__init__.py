"""Health rules over broker snapshots: what ``qdeck check`` judges, the exporter exports and the console shows.

- ``model``: ``Level`` (Nagios exit codes) and ``Finding``.
- ``window``: recent snapshots of one broker, for the trend rules.
- ``rules_file``: thresholds, per-queue glob overrides, from TOML (``RuleSet``).
- ``catalog``: the rules' ids, units and built-in thresholds; ``judge`` and the one-line summary.
- ``evaluate``: every rule over a window (the rules themselves live in ``queue_rules``, ``group_rules``,
  ``trend_rules`` and ``broker_rules``; what they share in ``context``).
- ``collect`` and ``report``: ``qdeck check``'s polling (through ``console.poller``) and its Nagios line, table and
  JSON.
"""
