"""Every app of ours is collected by the test command and checked by the import layers: an app
left out of either would have its tests or its imports silently skipped in CI."""

import tomllib
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_local_app_with_tests_is_in_testpaths():
    testpaths = set(PYPROJECT["tool"]["pytest"]["ini_options"]["testpaths"])
    with_tests = {app for app in settings.LOCAL_APPS if (ROOT / app / "tests").is_dir()}
    assert with_tests - testpaths == set()


def test_every_local_app_is_a_layer_of_the_import_contracts():
    contracts = PYPROJECT["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    assert set(settings.LOCAL_APPS) - {"sparkops"} == set(layers)
