"""`harness bench`: step-time ratios, MFU, sampling, metric and loader timings, and their report.
"""
