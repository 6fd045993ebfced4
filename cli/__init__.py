"""The `backscope` command line (cli/commands.py, which names the module of each command),
and the PostgreSQL and Redis of the project's own that it starts where none answers
(cli/embedded.py)."""
