"""Searching the OEIS: the ranked query on the local index (query), building that index
(indexer) from the bulk files or oeisdata (sources), and, with no index, whose searches
sent to the OEIS are still wanted (interest)."""
