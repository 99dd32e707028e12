"""What a network costs: parameters and FLOPs (measured once, shipped for the presets) and GPU
memory per rank. Planning reads the tables; torch only to measure a new architecture.
"""
