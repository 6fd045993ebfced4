"""The cached OEIS data in PostgreSQL: what the API reads (reads), every fenced write
(writes), following the OEIS's revisions (revisions), and downloading into it (ingest)."""
