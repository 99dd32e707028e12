"""From a sweep file to a plan, torch-free: loading and checking the file, expanding it into
jobs, the runs recorded under older ids, missing inputs, and the plan with its costs.
"""
