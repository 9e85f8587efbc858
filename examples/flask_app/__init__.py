"""Flask + conveyor: ``queue.enqueue_sync`` in a view, the worker in a second process.
How to run it: app.py, and docs/integrations.md."""
