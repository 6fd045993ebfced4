"""Maintenance, for the CLI and the maintenance tasks: the cached data (cache), the
database and its migrations (database), and the work queue (queue). The API never
imports this."""
