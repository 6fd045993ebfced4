"""Code used by both the API and the workers: configuration, models, OEIS client, locks."""
