"""Talking to the OEIS: the web site's client (client) under a global rate limit
(ratelimit), a local oeisdata checkout (local), and parsing what either sends (parsing)."""
