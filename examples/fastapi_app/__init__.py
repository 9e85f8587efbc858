"""FastAPI + conveyor: enqueue in a route, the status API and dashboard mounted, the
worker in a second process. How to run it: app.py, and docs/integrations.md."""
