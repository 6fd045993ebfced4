"""Tests for shared.factors.factorize (no database, redis or network needed)."""

from __future__ import annotations

import itertools
import math
import os
import re
import stat
import sys
import time
from pathlib import Path

import pytest
import sympy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sympy import isprime, nextprime

from shared.factors import factorize as factor
from shared.factors.factorize import NO_FAC, factorize, find_gp, format_factors

GP = find_gp()
NO_GP_REASON = "PARI/GP `gp` is not on PATH (Debian/Ubuntu package: pari-gp)"

# gp_path values: the real gp (skipped when absent) and None (forces the sympy child).
PATHS = [
    pytest.param(GP, id="gp", marks=pytest.mark.skipif(GP is None, reason=NO_GP_REASON)),
    pytest.param(None, id="sympy-fallback"),
]

P20 = nextprime(10**19 + 12345)
Q20 = nextprime(3 * 10**19 + 999)
SEMI40 = P20 * Q20  # 40 digits: gp needs ~30 ms, sympy ~2 s
P8 = nextprime(10**8 + 7)
EASY_CHILD = P8 * P20  # > 2**64 with no factor below 2**16; sympy's rho finds P8 quickly
HARD = nextprime(10**59 + 12345) * nextprime(3 * 10**59 + 6789)  # 120 digits: hopeless in 0.5 s

FORMAT_RE = re.compile(r"\[((-1,1|0,1|\d+,\d+)(;\d+,\d+)*)?\]")

EXAMPLES = [
    (12, "[2,2;3,1]"),
    (-12, "[-1,1;2,2;3,1]"),
    (1, "[]"),
    (0, "[0,1]"),
    (-1, "[-1,1]"),
    (2, "[2,1]"),
    (-8, "[-1,1;2,3]"),
    (2**64, "[2,64]"),
]


def parse(s: str) -> list[tuple[int, int]]:
    assert FORMAT_RE.fullmatch(s), s
    body = s[1:-1]
    if not body:
        return []
    pairs = []
    for item in body.split(";"):
        p, e = item.split(",")
        pairs.append((int(p), int(e)))
    return pairs


def check(value: int, s: str, max_value: int = factor.DEFAULT_MAX_VALUE) -> None:
    """The result is NO_FAC or a correct, canonical factorization string."""
    if abs(value) > max_value:
        assert s == NO_FAC
        return
    if s == NO_FAC:
        return
    pairs = parse(s)
    if value == 0:
        assert pairs == [(0, 1)]
        return
    if value < 0:
        assert pairs[0] == (-1, 1)
        pairs = pairs[1:]
    primes = [p for p, _ in pairs]
    assert all(a < b for a, b in itertools.pairwise(primes)), s
    assert all(isprime(p) for p in primes), s
    assert all(e >= 1 for _, e in pairs), s
    assert math.prod(p**e for p, e in pairs) == abs(value)


# ------------------------------------------------------------------------ format_factors


@pytest.mark.parametrize(("value", "expected"), EXAMPLES)
def test_format_factors_examples(value: int, expected: str) -> None:
    assert format_factors(value, sympy.factorint(abs(value)) if value else {}) == expected


def test_format_factors_accepts_sympy_style_sign_and_zero() -> None:
    assert format_factors(-12, sympy.factorint(-12)) == "[-1,1;2,2;3,1]"
    assert format_factors(0, sympy.factorint(0)) == "[0,1]"
    assert format_factors(-1, {}) == "[-1,1]"
    assert format_factors(10, {5: 1, 2: 1}) == "[2,1;5,1]"  # order of the mapping is irrelevant


@pytest.mark.parametrize(
    ("value", "factors"),
    [
        (12, {2: 2}),  # wrong product
        (12, {2: 2, 3: 1, 5: 0}),  # zero exponent
        (12, {1: 1, 2: 2, 3: 1}),  # 1 is not a factor
        (12, {-1: 1, 2: 2, 3: 1}),  # -1 on a positive value
        (0, {2: 1}),
        (2, {2: 10**15}),  # absurd exponent must be rejected without computing it
    ],
)
def test_format_factors_rejects_wrong_factors(value: int, factors: dict[int, int]) -> None:
    with pytest.raises(ValueError):
        format_factors(value, factors)


# ------------------------------------------------------------------------ factorize


@pytest.mark.parametrize("gp_path", PATHS)
@pytest.mark.parametrize(("value", "expected"), EXAMPLES)
def test_examples(value: int, expected: str, gp_path: str | None) -> None:
    assert factorize(value, gp_path=gp_path) == expected


def test_find_gp_matches_default() -> None:
    assert factor._resolve_gp(factor.AUTO) == GP


@pytest.fixture
def no_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if factorize starts a child process."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("no child process expected")

    monkeypatch.setattr(factor.subprocess, "Popen", refuse)


def test_smooth_large_values_need_no_child(no_child: None) -> None:
    big_prime = nextprime(10**100)
    cube = nextprime(10**50) ** 3
    values = [math.factorial(90), -(2**500), 3**300, big_prime, -cube, 2**200 * P20]
    for value in values:
        result = factorize(value, budget=0)
        assert result != NO_FAC, value.bit_length()
        check(value, result)
    assert factorize(2**150 * big_prime, budget=0) == f"[2,150;{big_prime},1]"


@pytest.mark.parametrize("gp_path", PATHS)
def test_over_max_value_is_immediate(no_child: None, gp_path: str | None) -> None:
    start = time.thread_time()  # CPU time: what "immediate" means, whatever else runs
    assert factorize(2**512 + 1, gp_path=gp_path) == NO_FAC
    assert factorize(-(2**600), gp_path=gp_path) == NO_FAC
    assert factorize(HARD**5, gp_path=gp_path) == NO_FAC
    assert factorize(2**11, max_value=2**10, gp_path=gp_path) == NO_FAC
    assert factorize(-(2**10), max_value=2**10, gp_path=gp_path) == "[-1,1;2,10]"  # inclusive
    assert factorize(0, max_value=0, gp_path=gp_path) == "[0,1]"
    assert time.thread_time() - start < 0.5


@pytest.mark.skipif(GP is None, reason=NO_GP_REASON)
def test_gp_factors_what_sympy_cannot_in_budget() -> None:
    assert factorize(SEMI40, budget=5, gp_path=GP) == f"[{P20},1;{Q20},1]"
    assert factorize(-SEMI40, budget=5, gp_path=GP) == f"[-1,1;{P20},1;{Q20},1]"
    f300 = sympy.fibonacci(300)
    check(f300, factorize(f300, gp_path=GP))
    assert factorize(f300, gp_path=GP) != NO_FAC
    value = 2**300 + 1
    assert factorize(value, gp_path=GP) == format_factors(value, sympy.factorint(value))


def test_fallback_child_factors_a_cofactor(monkeypatch: pytest.MonkeyPatch) -> None:
    # EASY_CHILD > 2**64 and has no prime factor below 2**16; without the in-process
    # Pollard attempt it goes to the Python child.
    monkeypatch.setattr(factor, "_quick_split", lambda m: None)
    # Budgets far above what the child needs (well under a second), even on a busy machine.
    assert factorize(EASY_CHILD, budget=60, gp_path=None) == f"[{P8},1;{P20},1]"
    expected = f"[-1,1;2,100;{P8},1;{P20},1]"
    assert factorize(-EASY_CHILD * 2**100, budget=60, gp_path=None) == expected


def test_fallback_splits_easy_cofactors_in_process(
    no_child: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    p6 = nextprime(300_000)  # rho finds factors up to ~10**6 within its bounded effort
    assert factorize(p6 * P20, budget=0, gp_path=None) == f"[{p6},1;{P20},1]"
    f300 = sympy.fibonacci(300)
    assert factorize(f300, budget=0, gp_path=None) == format_factors(f300, sympy.factorint(f300))
    # A perfect power of a composite: its base is split, once; the power itself never is.
    split: list[int] = []
    real = factor._quick_split
    monkeypatch.setattr(factor, "_quick_split", lambda m: split.append(m) or real(m))
    base = p6 * P20
    assert factorize(base**3, budget=0, gp_path=None) == f"[{p6},3;{P20},3]"
    assert split == [base]
    # One no cheap method splits: its base needs a child, which a zero budget forbids.
    split.clear()
    assert factorize(SEMI40**2, budget=0, gp_path=None) == NO_FAC
    assert split == [SEMI40]


@pytest.mark.parametrize("gp_path", PATHS)
def test_hard_value_times_out_and_others_still_factored(gp_path: str | None) -> None:
    budget = 0.5
    start = time.monotonic()
    assert factorize(HARD, budget=budget, gp_path=gp_path) == NO_FAC
    # Given up at the budget: factoring HARD takes hours, so 20 s cannot be mistaken.
    assert time.monotonic() - start < budget + 20
    assert _new_children() == []  # the child was killed and reaped

    # Later calls are not hurt by one that timed out: HARD values time out again, and the
    # others are factored (given budgets far above what they need, even on a busy
    # machine: a child process does the gp ones in well under 0.1 s).
    others = [12, -(2**300), 3**200 * P20, sympy.fibonacci(300), 0, -1, nextprime(2**400)]
    if gp_path is not None:
        others += [SEMI40, 2**300 + 1]  # need a child
    values = [*others[:3], HARD, *others[3:], -HARD]
    results = [
        factorize(value, budget=budget if abs(value) == HARD else 60, gp_path=gp_path)
        for value in values
    ]
    assert results[3] == NO_FAC
    assert results[-1] == NO_FAC
    for value, result in zip(values, results, strict=True):
        if abs(value) != HARD:
            assert result != NO_FAC, value
            check(value, result)
    assert _new_children() == []


def test_zero_budget_skips_child_but_not_easy_values(no_child: None) -> None:
    assert factorize(HARD, budget=0) == NO_FAC
    assert factorize(HARD, budget=-1) == NO_FAC
    assert factorize(HARD, budget=float("nan")) == NO_FAC
    assert factorize(-12, budget=0) == "[-1,1;2,2;3,1]"


# ------------------------------------------------------------------------ property tests

signs = st.sampled_from([1, -1])
special = st.sampled_from([0, 1, -1, 2, -2, 2**64, -(2**64) + 1, 2**512, -(2**512) - 1])


def _prime(seed: int, sign: int) -> int:
    return sign * nextprime(seed)


def _prime_power(seed: int, exp: int, sign: int) -> int:
    return sign * nextprime(seed) ** exp


def _semiprime(a: int, b: int, sign: int) -> int:
    return sign * nextprime(a) * nextprime(b)


def _values(semiprime_digits: int) -> st.SearchStrategy[int]:
    seeds = st.integers(10 ** (semiprime_digits - 1), 10**semiprime_digits)
    return st.one_of(
        special,
        st.integers(-(10**25), 10**25),
        st.builds(_prime, st.integers(1, 10**40), signs),
        st.builds(_prime_power, st.integers(1, 10**12), st.integers(1, 12), signs),
        st.builds(_semiprime, seeds, seeds, signs),
    )


PROPERTY_SETTINGS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow],
}


@pytest.mark.skipif(GP is None, reason=NO_GP_REASON)
@settings(max_examples=60, **PROPERTY_SETTINGS)
@given(value=_values(semiprime_digits=20))
def test_property_gp(value: int) -> None:
    check(value, factorize(value, budget=2.0, gp_path=GP))


# The Python child pays ~0.4 s of start-up and sympy needs ~2 s for a 40-digit semiprime,
# so this uses ~10-digit primes (their products still exceed 2**64 and go to the child).
@settings(max_examples=20, **PROPERTY_SETTINGS)
@given(value=_values(semiprime_digits=10))
def test_property_sympy_fallback(value: int) -> None:
    check(value, factorize(value, budget=1.0, gp_path=None))


@settings(max_examples=3, **PROPERTY_SETTINGS)
@given(value=st.builds(_semiprime, st.integers(10**19, 10**20), st.integers(10**19, 10**20), signs))
def test_property_sympy_fallback_20_digit_primes(value: int) -> None:
    check(value, factorize(value, budget=0.5, gp_path=None))


# ------------------------------------------------------------------------ defensive parsing
# A fake `gp` (a shell script) shows that child output is verified, not trusted.


def _fake_gp(tmp_path: Path, body: str) -> str:
    path = tmp_path / "gp"
    path.write_text("#!/bin/sh\ncat >/dev/null\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.parametrize(
    "output",
    [
        f"F {SEMI40:x} 1\nEND",  # a composite claimed prime
        f"F {P20:x} 1\nF {P20 + 2:x} 1\nEND",  # wrong product
        "F 2 100000000000000000\nEND",  # absurd exponent
        f"F {P20:x} 1\nF {Q20:x} 1",  # no END: child did not finish
        f"F {P20:x} 1\nF {Q20:x} one\nEND",  # bad exponent (line ignored -> wrong product)
        "END",
        "",
    ],
)
def test_bad_child_output_gives_no_fac(tmp_path: Path, output: str) -> None:
    gp = _fake_gp(tmp_path, f"printf '%s\\n' '{output}'\n")
    assert factorize(SEMI40, gp_path=gp) == NO_FAC


def test_good_child_output_with_noise_is_accepted(tmp_path: Path) -> None:
    script = f"echo warning: noise\necho 'F {Q20:x} 1'\necho 'F {P20:x} 1'\necho END\n"
    gp = _fake_gp(tmp_path, script)
    assert factorize(-SEMI40, gp_path=gp) == f"[-1,1;{P20},1;{Q20},1]"


def test_failing_child_gives_no_fac(tmp_path: Path) -> None:
    gp = _fake_gp(tmp_path, f"echo 'F {P20:x} 1'\necho 'F {Q20:x} 1'\necho END\nexit 3\n")
    assert factorize(SEMI40, gp_path=gp) == NO_FAC
    assert factorize(SEMI40, gp_path=str(tmp_path / "missing-gp")) == NO_FAC
    assert factorize(12, gp_path=str(tmp_path / "missing-gp")) == "[2,2;3,1]"


@pytest.mark.parametrize(
    "then",
    [
        pytest.param("sleep 60\n", id="child hangs"),
        # The fake gp exits at once, but a background process keeps its stdout open.
        pytest.param("", id="grandchild holds the pipe"),
    ],
)
def test_timeout_kills_the_whole_process_group(tmp_path: Path, then: str) -> None:
    pidfile = tmp_path / "grandchild.pid"
    gp = _fake_gp(tmp_path, f"sleep 60 &\necho $! > '{pidfile}'\n{then}")
    start = time.monotonic()
    # (A budget that leaves the script time to write its pid file on a busy machine.)
    assert factorize(SEMI40, budget=2, gp_path=gp) == NO_FAC
    assert time.monotonic() - start < 30  # not the 60 s the script and grandchild take
    assert _new_children() == []
    assert _dead(int(pidfile.read_text()))


def test_child_cpu_time_is_capped_in_case_the_parent_dies() -> None:
    # The kernel ends a child that outlives a SIGKILLed worker once it has used its
    # budget (rounded up) plus a second of CPU. The child waits for its limit to be set
    # (just after it starts) before it reports it.
    code = (
        "import resource, time\n"
        "while resource.getrlimit(resource.RLIMIT_CPU)[0] == resource.RLIM_INFINITY:\n"
        "    time.sleep(0.01)\n"
        "print(resource.getrlimit(resource.RLIMIT_CPU))"
    )
    assert factor._run_child([sys.executable, "-c", code], "", timeout=30.5) == "(32, 33)\n"


def test_child_is_a_group_of_its_own_in_the_workers_session() -> None:
    # Its own process group, so a timeout kills it with anything it started; the
    # worker's session, since on Linux a new session is a new scheduling autogroup
    # whose share of the CPU ignores the child's niceness (BACKSCOPE_FACTOR_NICE).
    code = "import os; print(os.getpid(), os.getpgid(0), os.getsid(0))"
    pid, group, session = factor._run_child([sys.executable, "-c", code], "", 30).split()
    assert group == pid
    assert int(session) == os.getsid(0)


# ------------------------------------------------------------------------ helpers

_BASELINE: set[int] = set()


@pytest.fixture(autouse=True)
def _baseline_children() -> None:
    _BASELINE.clear()
    _BASELINE.update(_children())


def _new_children() -> list[int]:
    """Child processes that appeared since the session started (other test fixtures,
    e.g. a Celery worker subprocess, may be children of this process too)."""
    return [pid for pid in _children() if pid not in _BASELINE]


def _children() -> list[int]:
    """PIDs of live or unreaped child processes of this process (Linux /proc)."""
    if not os.path.isdir("/proc"):
        pytest.skip("needs /proc")
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat_line = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat_line.rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(entry))
    return found


def _dead(pid: int, wait: float = 30.0) -> bool:
    """True once ``pid`` is gone or a zombie (its parent may be a non-reaping init)."""
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("gp_path", PATHS)
def test_powers_of_a_composite_part_are_factored_once(gp_path: str | None, monkeypatch) -> None:
    children: list[int] = []
    real = factor._factor_in_child
    monkeypatch.setattr(
        factor, "_factor_in_child", lambda m, *rest: children.append(m) or real(m, *rest)
    )
    value = 3**5 * SEMI40**3  # trial division leaves SEMI40**3: its base once, exponents x 3
    # (The sympy child needs about 2 s of CPU for SEMI40: a budget a busy machine keeps.)
    assert factorize(value, budget=60, gp_path=gp_path) == f"[3,5;{P20},3;{Q20},3]"
    # No cheap in-process method splits SEMI40 (nor, without gp, the bounded Pollard
    # attempt: sympy's seeds are fixed), so exactly one child factored it.
    assert children == [SEMI40]
