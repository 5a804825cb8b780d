"""The project's commands (run through ``scripts/python.sh``) and the modules they share.

A package so that scripts, benchmarks and tests import the shared modules by one name from the
checkout on ``PYTHONPATH``: ``from scripts import demo_data``, ``from scripts.lib import lslocal``.
"""
