"""Sweeps: grids and presets, one subprocess per point, resume, and the live view."""
