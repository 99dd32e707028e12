"""Scaling-law experiment harness for Easy Consistency Tuning (ECT, Geng et al., ICLR 2025)."""

__version__ = "0.1.0"
