"""Rendering stored records: rich tables and the paper's figures (DataFrame in, Figure out)."""
