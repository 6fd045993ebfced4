"""The `backscope` command line (cli/commands.py)."""
