"""Searching the trade-offs over many recipes: the per-layer sensitivity scan, allocation of a target by it,
Pareto sweeps, and saved snapshots. Imports `core.measure` and everything below it.
"""
