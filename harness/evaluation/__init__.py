"""Scoring networks: samplers, the metrics (FD through torch-fidelity) and their feature
extractors, and the metric's own floor.
"""
