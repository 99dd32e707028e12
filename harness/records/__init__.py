"""What runs leave on disk: the Parquet records (schema, file names, rows) and the run folder
(lock, status.json, checkpoint files). Torch only inside the checkpoint functions.
"""
