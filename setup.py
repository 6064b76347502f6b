"""Setuptools shim: maps the top-level ``methods/``, ``evaluators/`` and ``data/`` folders into
the ``dsdistill.*`` namespace. All metadata lives in pyproject.toml.

``find_packages`` (rather than an explicit list) is deliberate: an explicit ``packages=[...]``
silently drops new subpackages from wheels while editable installs still see them.
"""
from setuptools import find_packages, setup

MAPPED = {"dsdistill.methods": "methods", "dsdistill.evaluators": "evaluators", "dsdistill.data": "data"}

packages = find_packages(include=["dsdistill", "dsdistill.*"])
for package, folder in MAPPED.items():
    packages += [package] + [f"{package}.{sub}" for sub in find_packages(where=folder)]

setup(packages=packages, package_dir={"dsdistill": "dsdistill", **MAPPED})
