"""Every module of the package imports (a broken module must fail CI, not wait for a user)."""

import importlib
import pkgutil

import pytest

import prefopt

MODULES = sorted(m.name for m in pkgutil.walk_packages(prefopt.__path__, prefix="prefopt."))


def test_package_has_modules():
    assert "prefopt.losses" in MODULES and "prefopt.logps" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)
