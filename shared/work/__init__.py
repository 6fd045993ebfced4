"""The work queue both sides use: units of work (units), the lock that dedupes them
(lock), sending and joining tasks (queue), and who still waits for them (waiting)."""
