"""The backend conformance suite: every verb of ``conveyor.backends.base.Backend``, called
directly (no Queue, no worker) on every store, asserting what its docstring promises.

A new backend is checked by adding its kind to ``tests.conftest.BACKENDS`` and its URL and
clean-up to ``tests.backends.conftest.Store``; every test then runs on it too.
"""
