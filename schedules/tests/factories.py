"""Helpers for the schedules tests: a published one-step workflow on the offline echo provider,
built through the services so its rows are the ones the API and the admin would have written."""

from agents.models import Agent
from agents.services import agent_save
from workflows.services import workflow_create

INPUT_SCHEMA = {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]}


def published_workflow(project, slug: str = "digest"):
    """A workflow whose published version 1 echoes ``inputs.topic``."""
    if not Agent.objects.filter(project=project, slug="echo").exists():
        agent_save(agent=Agent(project=project, slug="echo", name="Echo", provider="echo", model="echo-1"))
    return workflow_create(
        project=project,
        user=None,
        name=slug.title(),
        slug=slug,
        definition={"steps": [{"key": "say", "kind": "agent", "agent": "echo", "prompt": "{{ inputs.topic }}"}]},
        input_schema=INPUT_SCHEMA,
        publish=True,
    )
