"""Adaptive design: the next runs that narrow a target prediction most per FLOP, and the rounds
that buy them.
"""
