"""Datasets: the formats on disk (numpy only, checked at plan time), the loader and its shared
cache.
"""
