"""Placement: feasibility → ranking → selection, in one pipeline (see pipeline.py)."""
