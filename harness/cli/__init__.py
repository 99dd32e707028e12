"""The `harness` command: one thin parser per sub-command in front of one library call.
"""
