"""conveyor against every Python peer, side by side: ``python -m bench``.

See docs/benchmarks.md.
"""
