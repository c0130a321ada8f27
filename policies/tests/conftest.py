import pytest

from runs.tests.factories import bare_run, make_catalog, make_workflow


@pytest.fixture
def catalog(team):
    """The project's echo price, calc tool and agents (writer, helper)."""
    return make_catalog(team.project)


@pytest.fixture
def run(catalog):
    """A run of the project's default workflow (agent steps a, then b), its calls to be judged."""
    return bare_run(make_workflow(catalog.project))
