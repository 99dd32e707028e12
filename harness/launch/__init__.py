"""Launching and watching: submission to a backend, the `harness run` driver, prefix links between
runs, and scoring saved networks again.
"""
