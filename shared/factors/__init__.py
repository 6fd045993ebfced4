"""Factoring the terms: the maths (factorize) and a sequence's terms factored in
batches and stored (batches). Only the factor workers import this."""
