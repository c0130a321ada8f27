"""The run engine. The database is the source of truth; Celery messages carry only ids.

- ``transitions``: guarded status changes and the event log.
- ``context``: what one attempt of a step works with, and the errors that end it.
- ``calls``: provider and tool calls, the policies asked before each, their accounting.
- ``kinds``: what each step kind does (agent, tool, approval, condition), one module each.
- ``core``: advance a run, execute a step, reap what was lost.
"""
