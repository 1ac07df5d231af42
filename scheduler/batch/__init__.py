"""Chronos side: schedules, the dependency graph, the job engine, run statistics."""
