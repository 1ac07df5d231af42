"""Sharing one cluster between teams: priorities and preemption, quotas with borrowing,
gang placement and GPU devices. Pure decisions; see README.md for how the orchestrator
calls them."""
