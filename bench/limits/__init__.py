"""Engine limits: the same claim/complete cycle as a job queue, in raw SQL / raw Redis
commands with batching (N = 10 per claim), so the tables show how close each system gets
to what the engine itself can do. Method: the project's engine-limits reference."""
