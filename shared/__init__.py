"""What the API and the workers share: configuration (config), connections (db,
redis_db), the schema (models), ids, errors, logs and metrics, and, by domain, the work
queue (work/), the cached data (store/), the OEIS (oeis/), search (search/), factoring
(factors/) and maintenance (admin/)."""
