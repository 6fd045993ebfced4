"""The cached OEIS data in PostgreSQL: what the API reads (reads), every fenced write
(writes), following the OEIS's revisions (refresh), and downloading into it (ingest)."""
