"""Running steps: the trainer (plan, init, warm up, measure, flush), CUDA-graph steps, sync-free
sparse row ops, hybrid host work, per-step device scalars, and `verify`.
"""
