"""What a run is, as data: the frozen RunConfig and its parts, what its id hashes, the dataset
registry, the presets and the job file. Torch-free; above `harness.core` only.
"""
