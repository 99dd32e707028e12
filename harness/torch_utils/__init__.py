"""Torch plumbing of training and evaluation (as NVlabs/edm2's torch_utils/): process groups,
the device and its threads, and the per-sample random draws of a step.
"""
