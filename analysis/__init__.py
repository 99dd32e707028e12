"""Torch-free analysis of harness records: load -> fit -> plot."""
