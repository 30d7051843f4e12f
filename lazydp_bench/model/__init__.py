"""The DLRM with one fused embedding weight, its fast initialization, and huge pages for a host-
resident table.
"""
