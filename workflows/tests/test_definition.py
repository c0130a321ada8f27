"""Helpers over a definition, and the purity of the modules the API, the admin and the engine share."""

import ast
import importlib
import inspect
import pkgutil

from workflows import dag, definition, kinds, templating, validation
from workflows.definition import same_json, spec_of
from workflows.tests.factories import agent_step, tool_step


def test_spec_of_finds_a_step_by_its_key():
    value = {"steps": [tool_step("a"), agent_step("b")]}
    assert spec_of(value, "b") == agent_step("b")


def test_same_json_tells_true_from_one():
    assert same_json({"a": 1, "b": [1]}, {"b": [1], "a": 1})
    assert not same_json({"a": True}, {"a": 1})
    assert not same_json({"a": 1.0}, {"a": 1})


def test_the_definition_modules_import_no_django():
    kind_modules = [importlib.import_module(f"workflows.kinds.{m.name}") for m in pkgutil.iter_modules(kinds.__path__)]
    for module in (dag, validation, definition, templating, kinds, *kind_modules):
        tree = ast.parse(inspect.getsource(module))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {name for name in imported if name.split(".")[0] in ("django", "rest_framework")}
