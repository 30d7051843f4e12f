"""Measurement: stage ids and the stage timer, energy, host CPU shares, machine facts, `info` and
the noise micro-benchmark.
"""
