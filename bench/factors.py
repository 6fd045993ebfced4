"""`make bench-factors`: how long factoring takes, with the default per-value budget.

Calls shared.factors.factorize directly (no database, Redis or workers needed) on:

- the first 1,000 Fibonacci numbers, F(0) .. F(999) (A000045);
- the first 60 Euclid numbers, 1 + the product of the first n primes, n = 0 .. 59
  (A006862).

For each set it prints the wall time (one process, one value after another, as one
worker slot runs them), the slowest value, and how many values ended as "no_fac":
split into those above the size limit (never tried) and those out of time.

    python bench/factors.py [--budget SECONDS] [--max-bits BITS]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sympy

from shared.factors.factorize import DEFAULT_BUDGET, NO_FAC, factorize, find_gp


def fibonacci(count: int) -> list[int]:
    values, a, b = [], 0, 1
    for _ in range(count):
        values.append(a)
        a, b = b, a + b
    return values


def euclid(count: int) -> list[int]:
    values, product = [], 1
    for p in [1, *sympy.primerange(2, sympy.prime(count) + 1)][:count]:
        product *= p
        values.append(product + 1)
    return values


def run(name: str, values: list[int], budget: float, max_value: int) -> None:
    too_big = sum(abs(v) > max_value for v in values)
    slowest, slowest_at = 0.0, 0
    no_fac = 0
    started = time.monotonic()
    for index, value in enumerate(values):
        t = time.monotonic()
        result = factorize(value, budget=budget, max_value=max_value)
        took = time.monotonic() - t
        if took > slowest:
            slowest, slowest_at = took, index
        no_fac += result == NO_FAC
    total = time.monotonic() - started
    print(
        f"{name:<28} {len(values):>5} values  {total:8.1f} s  "
        f"slowest {slowest:5.2f} s (n = {slowest_at})  "
        f"no_fac {no_fac:>4} ({too_big} above the size limit, {no_fac - too_big} out of time)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds per value")
    parser.add_argument("--max-bits", type=int, default=512, help="largest value tried: 2**bits")
    args = parser.parse_args()
    gp = find_gp()
    print(
        f"budget {args.budget:g} s per value, values up to 2^{args.max_bits}, "
        f"{'PARI/GP at ' + gp if gp else 'no gp: sympy in a child process'}"
    )
    max_value = 2**args.max_bits
    run("Fibonacci F(0)..F(999)", fibonacci(1000), args.budget, max_value)
    run("Euclid numbers n = 0..59", euclid(60), args.budget, max_value)


if __name__ == "__main__":
    main()
