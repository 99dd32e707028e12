"""Experiment design: what a grid cannot identify (`design_check`), the intervals a design will
give, simulated with the seed study's noise (`noise_prior`, `forecast`, `design_forecast`), and
adaptive design, the next runs that narrow a target most per FLOP (`adaptive`, `adaptive_law`,
evaluated on finished sweeps by `replay`). Uses the laws; never the figures or the sweep pipeline."""
