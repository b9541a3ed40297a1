"""Lanewarden's benchmarks: scripts that print their figures and save them as JSON.

Run one with ``python -m bench.dispatch`` or all with ``python -m bench all``.
They are not tests: nothing here asserts a time.
"""
