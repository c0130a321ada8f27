"""The run engine. The database is the source of truth; Celery messages carry only ids.

- ``transitions``: guarded status changes and the event log.
- ``steps``: what each step kind does (agent, tool, approval, condition).
- ``core``: advance a run, execute a step, reap what was lost.
"""
