"""The training core (as NVlabs/edm2's training/): the loop and its state, the ECT and EDM losses,
the optimiser, the EMAs, checkpoints, the evaluation hook and the stats loggers.
"""
