"""Differential privacy: per-example clipping and its kernels, privacy accounting (Opacus),
LazyDP's owed-noise kernel, noise keys and the dense noise engines.
"""
