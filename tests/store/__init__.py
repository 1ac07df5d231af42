"""Contract tests for every StateStore, plus SQLite-specific durability tests."""
