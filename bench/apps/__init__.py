"""Worker-side apps: each module defines the system's app object and its no-op job, whose
body is ``bench.probe.run_async`` / ``run_sync``. They import only the system's library
and ``bench.probe``; settings come from environment variables set by the adapter."""
