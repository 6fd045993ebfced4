"""Integer factorization for OEIS sequence values, with a hard time budget.

The public contract (parsed by the front end) is a *factorization string*:
``prime,exponent`` pairs separated by ``;`` inside brackets, primes ascending::

    12  -> "[2,2;3,1]"
    -12 -> "[-1,1;2,2;3,1]"
    1   -> "[]"
    0   -> "[0,1]"
    -1  -> "[-1,1]"

A value that was not factored (too large, or out of time) is :data:`NO_FAC`.
Whenever a factorization string is returned, the product of ``p**e`` over its
pairs equals the value.

How a value is factored (cheapest first):

1. ``|value| > max_value``: :data:`NO_FAC` without trying.
2. In-process trial division by the primes below ``2**16``.  Most large OEIS
   terms (factorials, powers, binomials, ...) are fully resolved here, or leave
   a cofactor that is prime, a prime power, or small.
3. A small composite cofactor is factored in-process with ``sympy.factorint``;
   without gp, larger ones first get a bounded Pollard p-1/rho attempt in-process.
4. Anything harder runs in a *child process* (PARI/GP's ``gp`` when available,
   otherwise a Python interpreter running ``sympy.factorint``) with a hard
   wall-clock timeout.  On timeout the child's whole process group is killed
   with SIGKILL and reaped, and :data:`NO_FAC` is returned.  The calling process
   (e.g. a Celery worker) is never killed, and is blocked for at most the budget
   plus the bounded in-process steps above (typically milliseconds; the worst
   seen is ~0.4 s, for sympy on a 64-bit semiprime when gp is absent).

Whatever the child prints is parsed defensively and the result is verified in
this process (product equals the value, each factor passes ``sympy.isprime``)
before it is accepted; ``gp``'s ``factor`` can in rare cases return composite
"primes" for huge inputs, and verification turns that into :data:`NO_FAC`.

Numbers are exchanged with child processes in hexadecimal, so values with
more than 4300 decimal digits do not trip CPython's int/str conversion limit
on that channel.  (Formatting the *decimal* result string is still subject to
that limit; keep ``max_value`` far below it, as the default does.)
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import math
import operator
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Final

import sympy

__all__ = [
    "AUTO",
    "DEFAULT_BUDGET",
    "DEFAULT_MAX_VALUE",
    "NO_FAC",
    "factorize",
    "find_gp",
    "format_factors",
]

log = logging.getLogger(__name__)

NO_FAC: Final = "no_fac"
DEFAULT_BUDGET: Final = 2.0
DEFAULT_MAX_VALUE: Final = 2**512


class _Auto(enum.Enum):
    AUTO = "auto"


AUTO: Final = _Auto.AUTO
"""Sentinel for ``gp_path``: look ``gp`` up on ``PATH`` (see :func:`find_gp`)."""

# Trial division bound for the in-process first pass.  Dividing a 512-bit value by
# all 6542 primes below 2**16 takes about 1 ms.
_TRIAL_BOUND: Final = 2**16

# Composite cofactors below this are factored in-process with sympy.factorint.
# Measured (sympy 1.14, no gmpy2): balanced semiprimes of 50 bits take <= ~15 ms,
# of 64 bits a median of 0.1 ms but a tail of ~0.4 s.  A gp child costs ~5-10 ms
# regardless, so with gp the cut-off is lower; without gp, a Python child costs
# ~0.4 s of interpreter + sympy start-up before it does anything, so in-process
# sympy is the better deal all the way up to 2**64.
_INPROCESS_LIMIT_WITH_GP: Final = 2**50
_INPROCESS_LIMIT_WITHOUT_GP: Final = 2**64

# PARI stack ceiling for the gp child; the stack starts small and grows on demand.
_GP_PARISIZEMAX: Final = "256M"

_GP_SCRIPT: Final = (
    # Own line: if this default is unknown to some gp build, only this line fails.
    "default(nbthreads,1)\n"
    # One line, so any error (e.g. stack overflow) also suppresses the END marker.
    'N=0x{n:x};M=factor(N);for(i=1,matsize(M)[1],printf("F %x %d\\n",M[i,1],M[i,2]));'
    'print("END")\n'
    "\\q\n"
)

_PY_CHILD_CODE: Final = """\
import sys
from sympy import factorint
n = int(sys.stdin.readline(), 16)
out = [f"F {p:x} {e}" for p, e in sorted(factorint(n).items())]
out.append("END")
sys.stdout.write("\\n".join(out) + "\\n")
"""

_FACTOR_LINE: Final = re.compile(r"F ([0-9a-fA-F]+) ([0-9]+)")


def find_gp() -> str | None:
    """Return the path of PARI/GP's ``gp`` executable on ``PATH``, or ``None``.

    On Debian/Ubuntu it is provided by the ``pari-gp`` package.
    """
    return shutil.which("gp")


def _resolve_gp(gp_path: str | _Auto | None) -> str | None:
    return find_gp() if gp_path is AUTO else gp_path


def format_factors(value: int, factors: Mapping[int, int]) -> str:
    """Format the factorization of ``value`` as a factorization string.

    ``factors`` maps primes to exponents for ``abs(value)``; the sign is taken
    from ``value``.  For convenience a ``-1: 1`` entry (as produced by
    ``sympy.factorint`` for negative numbers) is accepted when ``value < 0``,
    and ``{0: 1}`` when ``value == 0``.  Primality is *not* checked here (that
    is :func:`factorize`'s job), but the product is: a mapping whose product is
    not ``abs(value)`` raises :class:`ValueError`, so an incorrect string can
    never be produced.
    """
    value = operator.index(value)
    items = [(_as_int(p), _as_int(e)) for p, e in factors.items()]
    if value == 0:
        if items and items != [(0, 1)]:
            raise ValueError(f"factors of 0 must be empty or {{0: 1}}, got {dict(factors)!r}")
        return "[0,1]"
    pairs: list[tuple[int, int]] = []
    for p, e in items:
        if p == -1 and value < 0 and e == 1:
            continue
        if p < 2 or e < 1:
            raise ValueError(f"invalid factor {p}^{e} for {value}")
        pairs.append((p, e))
    pairs.sort()
    if not _product_is(abs(value), pairs):
        raise ValueError(f"factors {dict(factors)!r} do not multiply to {value}")
    parts = ["-1,1"] if value < 0 else []
    parts.extend(f"{p},{e}" for p, e in pairs)
    return "[" + ";".join(parts) + "]"


def factorize(
    value: int,
    *,
    budget: float = DEFAULT_BUDGET,
    max_value: int = DEFAULT_MAX_VALUE,
    gp_path: str | _Auto | None = AUTO,
) -> str:
    """Return the factorization string of ``value``, or :data:`NO_FAC`.

    :param budget: wall-clock seconds this call may spend on values that need
        a child process.  Easy values (small, or smooth apart from a prime or
        small cofactor) are factored in-process regardless of the budget, which
        takes milliseconds.  The call returns within roughly ``budget`` plus the
        time needed to kill and reap the child.
    :param max_value: values with ``abs(value) > max_value`` give :data:`NO_FAC`
        immediately.
    :param gp_path: the ``gp`` executable to use; :data:`AUTO` (default) looks it
        up on ``PATH``; ``None`` forces the Python/sympy child process.
    """
    value = operator.index(value)
    if value == 0:
        return format_factors(0, {})
    n = abs(value)
    if n > max_value:
        return NO_FAC
    deadline = time.monotonic() + budget
    factors = _factor_abs(n, deadline, _resolve_gp(gp_path))
    if factors is None:
        return NO_FAC
    return format_factors(value, factors)


# --------------------------------------------------------------------------- internals


def _as_int(x: object) -> int:
    if isinstance(x, bool):
        raise TypeError("bool is not a valid factor or exponent")
    return operator.index(x)  # type: ignore[arg-type]


def _product_is(n: int, pairs: Iterable[tuple[int, int]]) -> bool:
    """Return whether the product of ``p**e`` equals ``n`` (``n >= 1``, ``p >= 2``).

    Guards against absurd exponents (from corrupt child output) before calling
    ``pow``, so a bogus ``2^10**12`` cannot exhaust memory.
    """
    limit = n.bit_length()
    product = 1
    for p, e in pairs:
        if p < 2 or e < 1 or e > limit:
            return False
        product *= p**e
        if product > n:
            return False
    return product == n


@functools.cache
def _small_primes() -> tuple[int, ...]:
    return tuple(sympy.primerange(2, _TRIAL_BOUND))


def _trial_divide(n: int) -> tuple[dict[int, int], int]:
    """Divide out the primes below ``_TRIAL_BOUND``; return (factors, cofactor)."""
    factors: dict[int, int] = {}
    for p in _small_primes():
        if p * p > n:
            break
        if n % p == 0:
            e = 0
            while n % p == 0:
                n //= p
                e += 1
            factors[p] = e
    if 1 < n < _TRIAL_BOUND**2:
        # No prime factor below the bound is left, so the cofactor is prime.
        factors[n] = factors.get(n, 0) + 1
        n = 1
    return factors, n


def _factor_abs(n: int, deadline: float, gp: str | None) -> dict[int, int] | None:
    """Factor ``n >= 1``; return a verified ``{prime: exponent}`` or ``None``."""
    factors, m = _trial_divide(n)
    if m > 1:
        rest = _factor_cofactor(m, deadline, gp)
        if rest is None:
            return None
        for p, e in rest.items():
            factors[p] = factors.get(p, 0) + e
    if not _verified(n, factors):
        log.error("factorization of %d failed verification: %r", n, factors)
        return None
    return factors


def _factor_cofactor(m: int, deadline: float, gp: str | None) -> dict[int, int] | None:
    """Factor ``m > 1`` that has no prime factor below ``_TRIAL_BOUND``.

    Composite parts are split with cheap in-process methods where possible and
    only what remains goes to a child process, one child per remaining part.
    """
    limit = _INPROCESS_LIMIT_WITH_GP if gp else _INPROCESS_LIMIT_WITHOUT_GP
    factors: dict[int, int] = {}
    todo = [(m, 1)]  # (part, how many times it divides m)
    while todo:
        part, times = todo.pop()
        found: Mapping[int, int] | None
        if part < limit:
            found = {int(p): int(e) for p, e in sympy.factorint(part).items()}
        elif sympy.isprime(part):
            found = {part: 1}
        elif power := sympy.perfect_power(part):
            # Factor the base once (one child at most), not once per copy.
            todo.append((int(power[0]), times * int(power[1])))
            continue
        elif not gp and (divisor := _quick_split(part)):
            todo += [(divisor, times), (part // divisor, times)]
            continue
        else:
            found = _factor_in_child(part, deadline, gp)
            if found is None:
                return None
        for p, e in found.items():
            factors[p] = factors.get(p, 0) + e * times
    return factors


def _quick_split(m: int) -> int | None:
    """Try to find a proper divisor of composite ``m`` with bounded effort.

    Only used without gp, where a child costs ~0.4 s of start-up: Pollard p-1
    and rho with small bounds take ~30 ms in all for a 512-bit ``m`` and often
    succeed when ``m`` has a factor below ~10**6 or a smooth ``p - 1``.
    """
    divisor = sympy.pollard_pm1(m, B=3000, retries=1) or sympy.pollard_rho(
        m, retries=1, max_steps=2000
    )
    return int(divisor) if divisor and 1 < divisor < m else None


def _verified(n: int, factors: Mapping[int, int]) -> bool:
    pairs = sorted(factors.items())
    return _product_is(n, pairs) and all(sympy.isprime(p) for p, _ in pairs)


def _factor_in_child(m: int, deadline: float, gp: str | None) -> dict[int, int] | None:
    timeout = deadline - time.monotonic()
    if not timeout > 0:  # also catches NaN
        return None
    if gp:
        argv = [gp, "-q", "-f", "-D", f"parisizemax={_GP_PARISIZEMAX}", "-D", "debugmem=0"]
        script = _GP_SCRIPT.format(n=m)
    else:
        argv = [sys.executable, "-c", _PY_CHILD_CODE]
        script = f"{m:x}\n"
    out = _run_child(argv, script, timeout)
    if out is None:
        return None
    factors = _parse_child_output(out)
    if factors is None:
        log.warning("unparsable factorization output from %s for %d", argv[0], m)
    return factors


def _run_child(argv: list[str], stdin_text: str, timeout: float) -> str | None:
    """Run ``argv`` feeding ``stdin_text``; return stdout, or ``None`` on any failure.

    The child gets its own process group so that on timeout -- or if this thread
    is interrupted, e.g. by a Celery soft time limit -- the child and anything it
    spawned are SIGKILLed together, then reaped.  Not its own session: on Linux a
    new session is a new scheduling autogroup, which gets a full share of the CPU
    against the API's whatever its niceness (BACKSCOPE_FACTOR_NICE would not apply).
    """
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            process_group=0,
        )
    except OSError as exc:
        log.warning("cannot start %s: %s", argv[0], exc)
        return None
    _limit_cpu(proc, timeout)
    finished = False
    try:
        out, err = proc.communicate(stdin_text, timeout=timeout)
        finished = True
    except subprocess.TimeoutExpired:
        log.info("%s timed out after %.2f s", argv[0], timeout)
        return None
    finally:
        if not finished:
            # Kill before reaping: an unreaped child keeps its pid (== pgid) reserved, so
            # the group cannot be confused with a new process.  Killing the group also gets
            # grandchildren that may still hold the output pipe.
            _kill_group(proc)
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    if proc.returncode != 0:
        log.warning("%s exited with %s: %s", argv[0], proc.returncode, (err or "")[-500:])
        return None
    return out


def _limit_cpu(proc: subprocess.Popen[str], timeout: float) -> None:
    """Cap the child's CPU time just above its wall-clock budget (Linux prlimit).

    The timeout above kills the child only while this process lives. If this process
    is SIGKILLed meanwhile (OOM killer, `docker kill`, a test tearing a worker down),
    the kernel still ends a single-threaded child that would otherwise grind on a hard
    number for hours. CPU time never exceeds wall time for such a child, so this never
    cuts a factorization the budget allows.
    """
    prlimit = getattr(resource, "prlimit", None)
    if prlimit is None:
        return
    seconds = math.ceil(timeout) + 1
    with contextlib.suppress(OSError, ValueError):  # e.g. the child has already exited
        prlimit(proc.pid, resource.RLIMIT_CPU, (seconds, seconds + 1))


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        # AttributeError: no killpg on this platform.  Kill at least the child.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def _parse_child_output(out: str) -> dict[int, int] | None:
    """Parse ``F <prime hex> <exponent>`` lines terminated by ``END``.

    Other lines (stray warnings) are ignored; a missing ``END`` means the child
    did not finish normally.  Returns ``None`` if the output is unusable; the
    values themselves are verified afterwards by :func:`_verified`.
    """
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if not lines or lines[-1] != "END":
        return None
    factors: dict[int, int] = {}
    for line in lines[:-1]:
        match = _FACTOR_LINE.fullmatch(line)
        if match is None:
            continue
        p, e = int(match[1], 16), int(match[2])
        factors[p] = factors.get(p, 0) + e
    return factors or None
