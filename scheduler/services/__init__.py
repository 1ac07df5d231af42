"""Marathon side: reconciling apps, health checks, launch backoff."""
