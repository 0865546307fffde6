"""Shared server runtime: one way to start, observe and stop every LabSight service."""
