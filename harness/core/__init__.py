"""Torch-free plumbing every layer uses: stable hashing, atomic file writes, git provenance,
image units and strict loading of dataclasses. Imports nothing else of the harness.
"""
