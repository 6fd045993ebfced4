"""A synthetic OEIS the size of the real one, for benchmarks of a local search index.

    python bench/synthetic_oeis.py OUT_DIR [--entries 390000] [--seed 1] [--changed N]
                                           [--no-oeisdata]

Writes, in the formats of ../shared/spec/oeis.md ("Local OEIS data", "Bulk files"):

- `OUT_DIR/names.gz` and `OUT_DIR/stripped.gz`: a few `#` header lines, then one line
  per entry in A-number order (`A000001 <name>`; `A000001 ,1,1,1,2,...,`);
- unless --no-oeisdata, an oeisdata-like tree `OUT_DIR/oeisdata/seq/A000/A000001.seq`
  in the internal format (%I %S %T %U %N %C %H %F %Y %K %O %A lines), and beside `seq/`
  a small `synthetic_oeis.json` that records what the tree holds.

Why: how long an index takes to build and to answer depends on the sizes of the files
and on how words, terms and cross-references are distributed, not on what the entries
mean. The real data is about 1 GB, changes every day and is not ours to ship in a
benchmark; this is the same input every time, as large as the real thing, made in a
couple of minutes with the standard library alone.

What it looks like:

- names: templates of the OEIS's own phrasing ("Number of partitions of n into ...",
  "Numbers k such that ...", "a(n) = 3*a(n-1) + n^2.", "Triangle read by rows: ...",
  "Decimal expansion of ...", "Expansion of ...", R. H. Hardin-style array counts)
  filled from word lists ranked by a Zipf law: about 5,000 distinct words (ignoring
  case), among them accented names (Erdős, Möbius, Pólya) and made-up words, more than
  a thousand of which occur at most five times in the whole file, so that rare terms
  exist. Lengths
  follow a log-normal law: median about 60 characters, 90th percentile about 150, a
  tail up to 1,000. About 20% of the names mention other A-numbers ("A000045(n) + 1").
- terms: linear, polynomial and recurrent formulas, counts that grow geometrically,
  increasing lists ("numbers k such that"), small arithmetic functions, triangles read
  by rows, decimal digits and continued fractions, values up to 40 digits; packed as
  the OEIS does into at most three lines of at most 80 characters (the real sample
  A153080 has an 80-character %T line), which gives stripped lines of about 225
  characters on average. About 5% of the entries have negative terms (keyword `sign`),
  about 7% only a few terms.
- cross-references (%Y, and mentions in names and comments) pick their targets half
  from a power law over a popularity rank (famous entries such as A000045 and A000040
  first, then the low A-numbers), the rest near the citing entry or anywhere: the most
  cited entries are cited by thousands of others, most entries by 0 to 3.
- keywords: `nonn` or `sign`, and `core` (about 0.5%), `nice` (2%), `dead` (1%),
  `easy`, `tabl`, `cons`, `cofr`, `base`, `more`, `fini`, `full` and a few rarer ones.

Every entry is made by its own random.Random seeded from (seed, A-number), so entries
do not depend on each other and the output is the same, byte for byte, for the same
arguments. `--changed N` makes the same base, then changes N entries spread over the
range: 80% get a new name and/or new terms and a higher revision in %I, 10% are removed
and 10% are new A-numbers after the last one. When OUT_DIR already holds the tree of the
same seed and entry count (made by this program, with any --changed), only the files of
the entries that differ are rewritten, deleted or created, so that the modification
times of the others stay as they were (as after a `git pull`); otherwise the whole tree
is written again. The bulk files are always written whole, as the OEIS serves them.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import gzip
import itertools
import json
import math
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Generic, TypeVar

GENERATOR_VERSION = 1  # bump when the output for given arguments changes
MARKER = "synthetic_oeis.json"
LINE_WIDTH = 80  # at most this many characters of terms on each %S/%T/%U line
MAX_VALUE = 10**40
CHUNK = 2_000  # entries per task of the process pool
_SEED_MASK = 0xFFFF_FFFF_FFFF  # 48 bits of the seed go into each entry's random seed
BASE_DATE = "Jan 15 2024"
CHANGED_DATE = "Feb 15 2024"
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

T = TypeVar("T")


class Zipf(Generic[T]):
    """Draws items with weight 1/(rank + q)^s: the first items are the common ones."""

    __slots__ = ("cum", "items", "last", "total")

    def __init__(self, items: Sequence[T], s: float = 1.0, q: float = 1.0) -> None:
        if not items:
            raise ValueError("Zipf needs at least one item")
        self.items = list(items)
        self.cum = list(itertools.accumulate(1.0 / (r + q) ** s for r in range(len(items))))
        self.total = self.cum[-1]
        self.last = len(items) - 1

    def __call__(self, rng: random.Random) -> T:
        return self.items[min(bisect.bisect(self.cum, rng.random() * self.total), self.last)]


# ---------------------------------------------------------------------------------------
# Vocabulary. Lists are ordered from common to rare; made-up words come from a fixed
# random.Random, so the vocabulary is the same for every --seed.

COMMON_WORDS = """
number numbers sequence sum primes prime terms triangle squares digits divisors sigma
base binary partitions order product values positive integers distinct parts odd even
square least smallest largest first row column index length graph matrix polynomial
coefficients expansion decimal continued fraction function nodes edges trees labeled
unlabeled rooted connected permutations sets words strings paths walks lattice array
antidiagonals transform binomial Fibonacci Catalan Lucas Stirling Bell Euler Bernoulli
triangular pentagonal composite semiprimes squarefree palindromes palindromic repunits
factorial factorials powers cubes exponents modulo residues congruent period cycle
orbit iterations steps reversal concatenation digital root reverse representation
multiplicative additive characteristic generating exponential ordinary Dirichlet
series convolution inverse partial sums differences ratio limit constant root roots
real complex imaginary integer rational irrational algebraic transcendental quadratic
cubic quartic field ring group groups order orders elements subgroups automorphisms
isomorphism classes equivalence relation relations posets lattices semigroups monoids
necklaces bracelets colors beads compositions involutions derangements fixed points
descents ascents inversions peaks valleys runs records excedances cycles blocks
subsets intervals tilings dominoes tiles rectangle board chessboard queens kings
rooks knights moves polyominoes polyiamonds polyhexes cells hexagonal cubic square
triangular grid king honeycomb spanning independent dominating cliques colorings
chromatic Hamiltonian Eulerian planar regular bipartite complete cycle wheel ladder
star path tournament digraphs hypergraphs matroids codes weight Hamming minimal
maximal optimal perfect abundant deficient amicable sociable practical harmonic
smooth rough powerful Achilles Carmichael pseudoprimes Fermat Mersenne Wieferich
Sophie Germain twin cousin sexy balanced emirps Chen Ramanujan Smith Harshad Niven
Kaprekar Keith happy lucky evil odious automorphic narcissistic polite untouchable
superabundant highly totient cototient phi tau mu omega bigomega lambda psi rad core
floor ceiling round nearest integer part fractional log sqrt exp sin cos tan arctan
zeta gamma pi golden ratio silver mean Pell Jacobsthal Padovan Perrin tribonacci
tetranacci Motzkin Schröder Narayana Delannoy Riordan Fubini Genocchi Euler-Zigzag
Apéry Hermite Laguerre Legendre Chebyshev Jacobi Dedekind Kronecker Liouville Mertens
Goldbach Collatz Ulam Stern Thue-Morse Rudin-Shapiro Golomb Hofstadter Conway Wythoff
Beatty Zeckendorf Lagrange Gauss Eisenstein Hurwitz Cullen Woodall Proth Sierpiński
Riesel Kummer Zumkeller Erdős Möbius Pólya Gödel Cantor Pascal Sloane Lah Bessel
Lambert Landau Rényi Turán Ramsey Szekeres Hilbert Peano Wallis Vieta Somos Moser
Frobenius Schur Bézout Cayley Kirchhoff Petersen Hamilton Wiener Hosoya Randić Kekulé
Dyck Young tableaux standard semistandard plane skew shifted hook shape shapes
symmetric alternating signed unsigned central diagonal main antidiagonal upper lower
left right top bottom middle column row sums products maximum minimum average median
number-theoretic arithmetic geometric progression progressions arithmetic-geometric
recurrence linear nonlinear homogeneous signature characteristic eigenvalue
determinant permanent trace rank Hankel Toeplitz circulant adjacency incidence Laplacian
spectrum eigenvector walk self-avoiding directed undirected loops multigraph
pseudograph forest forests leaves internal vertex vertices degree degrees diameter
radius girth genus crossing crossings knots links braids surfaces polyhedra polytopes
simplices faces facets hyperplanes regions arrangements chambers zones points lines
circles spheres balls packing packings covering coverings kissing sphere density
triangles quadrilaterals pentagons hexagons polygons convex concave lattice-points
visible primitive Pythagorean triples hypotenuse legs sides perimeter area volume
diagonals diagonal heights depth width level levels generations generation
automaton cellular rule elementary toothpick pattern patterns avoiding avoidance
containing consecutive adjacent nonadjacent neighboring alternate alternating
increasing decreasing nondecreasing nonincreasing unimodal monotone zigzag up-down
noncrossing nonnesting crossing nesting Boolean switching threshold monotone
functions variables clauses formulas satisfying assignments truth tables gates
circuits depth-first breadth-first heaps binary-search red-black AVL B-trees
ordered unordered plane planted binary-trees ternary quaternary k-ary full complete
Schröder-paths Motzkin-paths Dyck-paths ballot sequences Riordan-arrays Pascal-like
Sheffer Appell umbral Bell-transform Stirling-transform Euler-transform Möbius-transform
inverse-Möbius binomial-transform Hankel-transform Mellin Laplace Fourier
"""

CONNECTIVES = (
    "of",
    "of the",
    "in the",
    "with",
    "such that",
    "where",
    "in which",
    "and",
    "for",
    "having",
    "avoiding",
    "containing",
    "without",
    "modulo",
    "over",
    "between",
    "into",
    "under",
    "at most",
    "at least",
    "exactly",
    "excluding",
    "by the",
    "to the",
)

OBJECTS = (
    "partitions of n",
    "divisors of n",
    "partitions of n into distinct parts",
    "compositions of n",
    "permutations of [n]",
    "binary words of length n",
    "prime factors of n",
    "partitions of n into odd parts",
    "set partitions of [n]",
    "Dyck paths of semilength n",
    "unlabeled trees with n nodes",
    "rooted trees with n nodes",
    "labeled graphs on n nodes",
    "connected graphs with n edges",
    "ordered trees with n edges",
    "lattice paths from (0,0) to (n,n)",
    "n X n binary matrices",
    "necklaces with n beads of 2 colors",
    "bracelets with n beads",
    "polyominoes with n cells",
    "tilings of a 2 X n rectangle",
    "subsets of {1..n}",
    "involutions of [n]",
    "derangements of [n]",
    "integer triangles with perimeter n",
    "Motzkin paths of length n",
    "noncrossing partitions of [n]",
    "Schröder paths of semilength n",
    "ways to write n as a sum of two squares",
    "ways to write n as a sum of three primes",
    "solutions to x^2 + y^2 = n",
    "binary strings of length n with no two adjacent 1's",
    "plane partitions of n",
    "standard Young tableaux with n cells",
    "primes <= n",
    "squarefree numbers <= n",
    "steps to reach 1 in the Collatz (3x+1) problem starting at n",
    "1's in the binary expansion of n",
    "digits in n!",
    "groups of order n",
    "Abelian groups of order n",
    "semigroups of order n",
    "posets on n elements",
    "Boolean functions of n variables",
    "knots with n crossings",
    "Latin squares of order n",
    "Hamiltonian cycles on the n-cube",
    "spanning trees in the n-wheel",
    "independent vertex sets in the n X n grid graph",
    "matchings in the n-ladder graph",
    "walks of length n on the square lattice",
    "self-avoiding walks of length n on the hexagonal lattice",
    "perfect matchings in the complete graph K_{2n}",
    "polyhexes with n cells",
    "domino tilings of a 3 X 2n rectangle",
    "ways to place n nonattacking queens on an n X n board",
    "words of length n over a 3-letter alphabet",
    "integer partitions of n with no part 1",
    "unordered pairs of primes that sum to 2n",
    "n-node unlabeled graphs with no isolated vertices",
    "cyclic compositions of n",
    "permutations of [n] avoiding the pattern 132",
    "connected labeled bipartite graphs on n nodes",
    "symmetric n X n (0,1)-matrices",
    "Lyndon words of length n",
    "2-colored necklaces of length n",
    "degree sequences of graphs with n vertices",
    "triangulations of a convex n-gon",
    "achiral polyominoes with n cells",
    "directed animals of size n",
    "free polyominoes with n cells",
    "forests with n nodes",
    "ways to tile an n X n square with squares",
    "permutations of [n] with exactly 2 cycles",
    "partitions of n into at most 3 parts",
    "partitions of n into parts of 2 kinds",
    "partitions of n into prime parts",
    "partitions of n into squares",
    "ordered factorizations of n",
    "unordered factorizations of n",
    "representations of n as a sum of distinct Fibonacci numbers",
    "primes between n^2 and (n+1)^2",
    "k such that k*n + 1 is prime",
    "carries when adding n to itself in base 2",
    "distinct values taken by the sum of two squares mod n",
    "closed walks of length 2n on the cube",
    "equivalence classes of n X n binary matrices",
)

PROPERTIES = (
    "prime",
    "a square",
    "a palindrome",
    "squarefree",
    "a cube",
    "a triangular number",
    "semiprime",
    "a perfect power",
    "composite",
    "a Fibonacci number",
    "abundant",
    "deficient",
    "divisible by the sum of its digits",
    "a multiple of 3",
    "odd",
    "even",
    "3-smooth",
    "powerful",
    "a pentagonal number",
    "a Harshad number",
    "an emirp",
    "a twin prime",
    "the sum of two squares",
    "a Carmichael number",
    "a repunit",
    "a Smith number",
    "a happy number",
    "an evil number",
    "an odious number",
    "a practical number",
    "a zeroless number",
    "an Achilles number",
    "a Sophie Germain prime",
)

FUNCTIONS = (
    "sigma(n)",
    "phi(n)",
    "prime(n)",
    "tau(n)",
    "n!",
    "binomial(2*n,n)",
    "Fibonacci(n)",
    "2^n",
    "n^2",
    "mu(n)",
    "omega(n)",
    "bigomega(n)",
    "pi(n)",
    "Lucas(n)",
    "Catalan(n)",
    "rad(n)",
    "lpf(n)",
    "gpf(n)",
    "floor(n/2)",
    "n^3",
    "digsum(n)",
    "reversal(n)",
    "lambda(n)",
    "psi(n)",
    "usigma(n)",
    "sopfr(n)",
    "core(n)",
    "d(n)",
    "binomial(n,2)",
    "floor(sqrt(n))",
    "prime(n)^2",
    "n*(n+1)/2",
    "3^n",
    "(2*n)!",
    "sigma_2(n)",
)

CONSTANTS = (
    "Pi",
    "sqrt(2)",
    "e",
    "the golden ratio phi = (1+sqrt(5))/2",
    "log(2)",
    "sqrt(3)",
    "zeta(3)",
    "Euler's constant gamma",
    "Catalan's constant",
    "Pi^2/6",
    "1/Pi",
    "e^Pi",
    "2^(1/3)",
    "Apéry's constant",
    "the Feigenbaum constant delta",
    "Khinchin's constant",
    "the Glaisher-Kinkelin constant",
    "the real root of x^3 - x - 1",
    "sqrt(5)",
    "log(3)",
    "Pi/4",
    "exp(-1)",
    "the plastic number",
    "the silver mean 1 + sqrt(2)",
    "the Lambert W function at 1",
    "the Euler-Mascheroni constant squared",
    "zeta(5)",
    "Pi*e",
    "the lemniscate constant",
    "the Dottie number",
)

TRANSFORMS = (
    "Partial sums of",
    "Binomial transform of",
    "First differences of",
    "Inverse binomial transform of",
    "Euler transform of",
    "Möbius transform of",
    "Inverse Möbius transform of",
    "Bisection of",
    "Self-convolution of",
    "Row sums of",
    "Main diagonal of",
    "Hankel transform of",
    "Characteristic function of",
    "Complement of",
    "Boustrophedon transform of",
    "Pólya transform of",
    "Stirling transform of",
)

ARRAY_CONSTRAINTS = (
    "every 2X2 subblock having sum 2",
    "no element equal to a strict majority of its horizontal and vertical neighbors",
    "rows and columns in nondecreasing order",
    "every element equal to the number of its king-move neighbors equal to itself",
    "no 2X2 subblock having the same value in all four positions",
    "each row sum equal to the column sum of the same index",
    "every 3X3 subblock containing exactly two 1's",
    "no row equal to the reverse of another row",
    "every element differing from at most one horizontal or vertical neighbor",
    "the sum of every 2X2 subblock differing from its horizontal neighbors",
)


def _w(text: str) -> list[str]:
    return text.split()


PREFIXES = _w(
    "quasi semi pseudo hyper anti super poly multi co sub ultra bi tri tetra penta hexa "
    "hepta octa non pan iso para meta ortho holo xeno proto omni retro neo"
)
ROOTS = _w(
    "perfect prime palindromic abundant deficient amicable smooth square cyclic harmonic "
    "magic balanced lucky happy digital polite practical regular automatic modular "
    "symmetric triangular pentagonal powerful additive multiplicative"
)

_ONSETS = _w("b br c ch d dr f fl g gr h j k kr l m n p pl r s sh st t th tr v w z")
_VOWELS = _w("a e i o u a e i o ai ei ou y ö é á")
_CODAS = ["", "", "", "n", "r", "s", "l", "m", "x", "t", "nd", "rk", "sk", "v"]
_NAME_ENDS = ["", "", "ov", "ski", "son", "berg", "ini", "escu", "ová", "sen", "ez", "ić", "ő"]
_WORD_ENDS = ["ic", "al", "ous", "oid", "ary", "ion", "ant", "ex", "ism", "ite", "ive"]
_FIRST = _w(
    "Jane John Maria Paul Anna Peter Laura David Sara Michael Elena Thomas Olga Robert "
    "Chen Li Wei Yuki Hiro Amir Fatima Omar Ingrid Lars Søren Zoltán Ágnes José Inés "
    "François Hélène Jürgen Björn Małgorzata Jiří Dorota Ahmed Priya Ravi Nadia Ivan"
)
_LAST = _w(
    "Doe Smith Miller Jones Brown Garcia Martin Müller Nowak Kovács Nguyen Öztürk Rossi "
    "Schmidt Novák Silva Costa Dubois Moreau Hansen Larsen Johansson Virtanen Popescu "
    "Petrov Ivanova Tanaka Suzuki Kim Park Singh Patel Khan Cohen Levy Walsh Murphy "
    "Søndergaard Pérez López Fernández Łukowski Dvořák Horváth Nagy"
)


def _made_up(rng: random.Random, ends: Sequence[str], capital: bool, taken: set[str]) -> str:
    while True:
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
            for _ in range(rng.choice((1, 2, 2, 3)))
        ) + rng.choice(ends)
        if capital:
            word = word[0].upper() + word[1:]
        if len(word) >= 4 and word.lower() not in taken:
            taken.add(word.lower())
            return word


def _vocabulary() -> tuple[list[str], list[str], list[str], list[str]]:
    """(words ranked for the Zipf law, rare words, proper names, authors)."""
    rng = random.Random(20240115)
    common = list(dict.fromkeys(COMMON_WORDS.split()))
    taken = {w.lower() for w in common}
    compounds = [p + r for p in PREFIXES for r in ROOTS]
    rng.shuffle(compounds)
    compounds = compounds[:500]
    taken.update(compounds)
    names = [_made_up(rng, _NAME_ENDS, True, taken) for _ in range(1_300)]
    inventions = [_made_up(rng, _WORD_ENDS, False, taken) for _ in range(700)]
    middle = compounds + names + inventions
    rng.shuffle(middle)
    rare = [_made_up(rng, _WORD_ENDS + _NAME_ENDS, rng.random() < 0.4, taken) for _ in range(2_000)]
    authors = [f"{first} {last}" for first in _FIRST for last in _LAST]
    rng.shuffle(authors)
    authors = ["Jane Doe", *[a for a in authors if a != "Jane Doe"]]
    proper = [w for w in common if w[0].isupper()] + names
    return common + middle, rare, proper, authors


_WORDS, _RARE, _PROPER, _AUTHORS = _vocabulary()
WORD = Zipf(_WORDS, s=1.0, q=2.0)
PROPER = Zipf(_PROPER, s=0.9, q=3.0)
AUTHOR = Zipf(_AUTHORS, s=0.9, q=1.0)
OBJECT = Zipf(OBJECTS, s=1.0, q=3.0)
PROPERTY = Zipf(PROPERTIES, s=1.0, q=2.0)
FUNCTION = Zipf(FUNCTIONS, s=1.0, q=2.0)
CONSTANT = Zipf(CONSTANTS, s=1.0, q=2.0)
TRANSFORM = Zipf(TRANSFORMS, s=1.0, q=2.0)
CONNECTIVE = Zipf(CONNECTIVES, s=1.0, q=1.0)

# Entries cited most often, in order: the top of the popularity rank.
FAMOUS = (
    45, 40, 27, 217, 290, 5, 10, 203, 108, 142, 79, 32, 7318, 41, 120, 1045, 12, 35, 124,
    225, 578, 326, 2275, 984, 1477, 5843, 330, 292, 302, 244, 110, 111, 166, 204, 129, 96,
    4, 7, 201, 6, 8, 9, 3, 1, 2, 11, 14, 55, 81, 88, 123, 165, 196, 213, 257, 396, 670,
)  # fmt: skip


# ---------------------------------------------------------------------------------------
# Entries


@dataclass(slots=True)
class Entry:
    number: int
    name: str
    terms: list[int]
    offset: int
    revision: int
    modified: str  # the %I time
    created: str  # the %A date
    author: str
    keywords: list[str]
    comments: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    formulas: list[str] = field(default_factory=list)
    xrefs: list[str] = field(default_factory=list)


_N = re.compile(r"\bn\b")


def with_var(text: str, var: str) -> str:
    """The formula `text` with the variable n renamed."""
    return _N.sub(var, text)


def anum(number: int) -> str:
    return f"A{number:06d}"


class Citer:
    """Picks the A-numbers an entry cites: popular ones far more often than others."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        top = min(5_000, entries)
        famous = [n for n in FAMOUS if n <= top]
        seen = set(famous)
        self.table = famous + [n for n in range(1, top + 1) if n not in seen]
        self.exponent = 0.8  # weight of rank r ~ r^-0.8
        self.span = (entries + 1) ** (1 - self.exponent) - 1
        self.near = math.log(3_000)

    def __call__(self, rng: random.Random, citing: int) -> int:
        r = rng.random()
        if r < 0.5:  # by popularity
            rank = int((1 + rng.random() * self.span) ** (1 / (1 - self.exponent)))
            rank = min(max(rank, 1), self.entries)
            target = self.table[rank - 1] if rank <= len(self.table) else rank
        elif r < 0.85:  # a neighbour: the OEIS cites nearby entries a lot
            step = int(math.exp(rng.random() * self.near))
            target = citing - step if rng.random() < 0.7 else citing + step
            if not 1 <= target <= self.entries:
                target = rng.randint(1, self.entries)
        else:
            target = rng.randint(1, self.entries)
        if target == citing:
            target = citing - 1 if citing > 1 else citing + 1
        return target


class Maker:
    """Makes entry `number` from (seed, number) alone."""

    def __init__(self, seed: int, entries: int) -> None:
        self.seed = seed & _SEED_MASK
        self.entries = entries
        self.cite = Citer(entries)

    def rng(self, stream: int, number: int) -> random.Random:
        return random.Random(((self.seed << 8 | stream) << 32) | number)

    # -- text -----------------------------------------------------------------------

    def ref(self, rng: random.Random, number: int) -> str:
        return anum(self.cite(rng, number))

    def words(self, rng: random.Random, count: int) -> str:
        out = []
        for i in range(count):
            if i and rng.random() < 0.3:
                out.append(CONNECTIVE(rng))
            out.append(_RARE[rng.randrange(len(_RARE))] if rng.random() < 0.012 else WORD(rng))
        return " ".join(out)

    def expr(self, rng: random.Random, number: int, var: str = "n") -> str:
        r = rng.random()
        c = rng.choice((1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 24, 100))
        if r < 0.2:
            return f"{c}*{var}^{rng.randint(2, 5)} + {rng.randint(1, 30)}"
        if r < 0.35:
            return f"{var}^2 + {var} + {c}"
        if r < 0.5:
            return f"{c}*{var} + {rng.randint(1, 99)}"
        if r < 0.6:
            return f"{c}^{var} + {rng.choice((1, -1, 3, -3))}".replace("+ -", "- ")
        if r < 0.92:
            return with_var(FUNCTION(rng), var)
        if r < 0.96:
            return f"{var}*{self.ref(rng, number)}({var}) + {c}"
        return f"{self.ref(rng, number)}({var}) + {c}"

    def formula(self, rng: random.Random, number: int) -> str:
        r = rng.random()
        c, d = rng.randint(2, 9), rng.randint(1, 12)
        if r < 0.25:
            return f"{c}*a(n-1) + {rng.choice(('n', 'n^2', str(d), '(-1)^n', '2^n'))}"
        if r < 0.4:
            return f"a(n-1) + {c}*a(n-2)"
        if r < 0.55:
            return f"{d}*n^2 + {c}*n + {rng.randint(0, 9)}"
        if r < 0.72:
            return f"binomial({c}*n,n)/({c - 1}*n+1)"
        if r < 0.8:
            return f"{self.ref(rng, number)}(n) {rng.choice('+-*')} {self.expr(rng, number)}"
        if r < 0.9:
            return f"Sum_{{k=0..n}} binomial(n,k)*{with_var(FUNCTION(rng), 'k')}"
        return f"{FUNCTION(rng)} {rng.choice('+-')} {FUNCTION(rng)}"

    def clause(self, rng: random.Random, number: int) -> str:
        r = rng.random()
        if r < 0.22:
            return f" such that {self.expr(rng, number, 'k')} is {PROPERTY(rng)}"
        if r < 0.36:
            return f", where a(n) = {self.formula(rng, number)}"
        if r < 0.5:
            return f" with {rng.randint(2, 9)} {self.words(rng, rng.randint(1, 3))}"
        if r < 0.77:
            return f" {CONNECTIVE(rng)} {self.words(rng, rng.randint(2, 6))}"
        if r < 0.8:
            return f" (see {self.ref(rng, number)})"
        if r < 0.9:
            return f"; {self.words(rng, rng.randint(1, 3))} of {OBJECT(rng)}"
        return f", {rng.choice(('for', 'with', 'where'))} n >= {rng.randint(0, 5)}"

    def name(self, rng: random.Random, number: int) -> tuple[str, str]:
        """(name, kind): the kind chooses how the terms are made."""
        r = rng.random()
        ref = self.ref
        if r < 0.15:
            core, kind = f"Number of {OBJECT(rng)}", "count"
        elif r < 0.27:
            var = rng.choice("knp")
            core = (
                f"{rng.choice(('Numbers', 'Numbers', 'Primes', 'Integers'))} {var} such that "
                f"{self.expr(rng, number, var)} is {PROPERTY(rng)}"
            )
            kind = "list"
        elif r < 0.38:
            core, kind = f"a(n) = {self.formula(rng, number)}", "formula"
        elif r < 0.44:
            gf = rng.choice(
                (
                    f"1/((1-x)*(1-{rng.randint(2, 9)}*x))",
                    f"(1+x)/(1-{rng.randint(2, 5)}*x-x^2)",
                    f"Product_{{k>=1}} 1/(1-x^k)^{rng.randint(2, 8)}",
                    f"exp(x)/(1-{rng.randint(2, 4)}*x)",
                    f"(1-sqrt(1-{rng.randint(4, 8)}*x))/(2*x)",
                    f"x/(1-x-x^{rng.randint(2, 6)})",
                )
            )
            prefix = rng.choice(("Expansion of ", "Expansion of e.g.f. ", "Expansion of g.f. "))
            core, kind = prefix + gf, "gf"
        elif r < 0.5:
            core = rng.choice(
                (
                    f"Triangle read by rows: T(n,k) = {self.formula(rng, number)}",
                    f"Triangle read by rows: T(n,k) is the number of {OBJECT(rng)} with k "
                    f"{self.words(rng, rng.randint(1, 2))}",
                    f"Triangle T(n,k) read by rows: coefficients of {PROPER(rng)} polynomials",
                    f"Square array A(n,k) read by antidiagonals: A(n,k) = "
                    f"{with_var(self.formula(rng, number), 'k')}",
                )
            )
            kind = "tabl"
        elif r < 0.54:
            core, kind = f"Decimal expansion of {CONSTANT(rng)}", "cons"
        elif r < 0.555:
            core, kind = f"Continued fraction for {CONSTANT(rng)}", "cofr"
        elif r < 0.61:
            core = rng.choice(
                (
                    f"{PROPER(rng)} numbers",
                    f"{PROPER(rng)} primes",
                    f"Generalized {PROPER(rng)} numbers of order {rng.randint(2, 9)}",
                    f"{PROPER(rng)} pseudoprimes to base {rng.randint(2, 17)}",
                    f"{self.words(rng, 1).capitalize()} numbers: {self.words(rng, 2)}",
                )
            )
            kind = "list"
        elif r < 0.71:
            rows = rng.choice("1234567")
            core = (
                f"Number of nX{rows} 0..{rng.randint(1, 3)} arrays with "
                f"{rng.choice(ARRAY_CONSTRAINTS)}"
            )
            kind = "count"
        elif r < 0.76:
            core = rng.choice(
                (
                    f"{ref(rng, number)}(n) + {rng.randint(1, 9)}",
                    f"{ref(rng, number)}({ref(rng, number)}(n))",
                    f"{ref(rng, number)}(n)^2 - {ref(rng, number)}(n)",
                    f"a(n) = {ref(rng, number)}(n) mod {rng.randint(2, 12)}",
                    f"{ref(rng, number)}(2n+1)",
                )
            )
            kind = "formula"
        elif r < 0.81:
            core = (
                f"{rng.choice(('Smallest', 'Least', 'Largest'))} {rng.choice('kmp')} such "
                f"that {self.expr(rng, number, 'n')} {rng.choice(('divides', 'is', 'exceeds'))}"
                f" {rng.choice((PROPERTY(rng), FUNCTION(rng), OBJECT(rng)))}"
            )
            kind = "arith"
        elif r < 0.87:
            core, kind = f"{TRANSFORM(rng)} {ref(rng, number)}", "formula"
        elif r < 0.9:
            core, kind = f"Primes of the form {self.expr(rng, number)}", "list"
        elif r < 0.93:
            b = rng.choice((2, 2, 3, 4, 5, 8, 10, 10, 12, 16))
            core = rng.choice(
                (
                    f"n written in base {b}",
                    f"Sum of digits of {self.expr(rng, number)} in base {b}",
                    f"Numbers whose base-{b} representation is {PROPERTY(rng)}",
                    f"Number of 1's in the base-{b} expansion of {FUNCTION(rng)}",
                )
            )
            kind = "base"
        elif r < 0.96:
            core, kind = f"{FUNCTION(rng)} {rng.choice('+-*')} {FUNCTION(rng)}", "arith"
        else:
            core = f"{self.words(rng, rng.randint(2, 5)).capitalize()} {OBJECT(rng)}"
            kind = "count"
        if kind != "formula" and rng.random() < 0.02:
            core += f" (a(n) = {ref(rng, number)}(n) for n < {rng.randint(10, 100)})"
        # Log-normal target length: median ~60, 90th percentile ~150, at most ~1000.
        target = min(950.0, 30.0 * math.exp(rng.gauss(0.0, 1.1)))
        while len(core) < target:
            core += self.clause(rng, number)
        return (core + "." if rng.random() < 0.9 else core), kind

    # -- terms ----------------------------------------------------------------------

    def terms(self, rng: random.Random, kind: str, count: int) -> list[int]:
        out: list[int] = []
        add = out.append
        if kind == "cons":
            add(rng.randint(1, 9))
            out.extend(rng.randrange(10) for _ in range(count - 1))
            return out
        if kind == "cofr":
            add(rng.randint(0, 5))
            for _ in range(count - 1):
                add(
                    int(10 ** rng.uniform(2, 6))
                    if rng.random() < 0.02
                    else 1 + int(rng.expovariate(0.35))
                )
            return out
        if kind == "tabl":
            m, edge = rng.choice((1, 1, 1, 2, 3)), rng.choice((1, 1, 2, 3))
            row = [1]
            while len(out) < count:
                out.extend(row)
                row = [1, *(row[k - 1] + m * row[k] for k in range(1, len(row))), edge]
                if row[len(row) // 2] > MAX_VALUE:
                    break
            return out[:count]
        if kind == "base":
            if rng.random() < 0.5:
                b = rng.choice((2, 3, 4, 5, 8))
                for n in range(count):
                    digits, v = "", n
                    while True:
                        digits = str(v % b) + digits
                        v //= b
                        if not v:
                            break
                    add(int(digits))
            else:
                out.extend(rng.randint(0, 2 + n // 3) for n in range(count))
            return out
        if kind == "list":
            r = rng.random()
            v = int(10 ** rng.uniform(10, 38)) if r < 0.05 else int(10 ** rng.uniform(0, 4))
            mean = 10 ** rng.uniform(0, 3.5)
            for _ in range(count):
                add(v)
                v += 1 + int(rng.expovariate(1 / mean))
            return out
        if kind == "arith":
            style = rng.randrange(3)
            for n in range(1, count + 1):
                if style == 0:
                    add(1 + int(rng.expovariate(0.3)))
                elif style == 1:
                    add(rng.randint(1, n))
                else:
                    add(n + rng.randrange(2 * n + 1))
            return out
        # count, gf, formula: grows like a polynomial or a geometric series.
        style = rng.randrange(4) if kind == "formula" else 3
        if style == 0:
            a, b = int(10 ** rng.uniform(0, 2)), rng.randint(0, 99)
            out.extend(a * n + b for n in range(count))
        elif style == 1:
            p, c2, c1 = rng.randint(2, 6), rng.randint(1, 12), rng.randint(0, 9)
            out.extend(c2 * n**p + c1 * n for n in range(count))
        elif style == 2:
            p, q, a, b = rng.randint(1, 4), rng.randint(0, 3), rng.randint(0, 2), 1
            for _ in range(count):
                add(a)
                if a > MAX_VALUE:
                    break
                a, b = b, p * b + q * a + rng.randint(0, 1)
        else:
            num = int(10 ** rng.uniform(2.05, 3.6))  # ratio num/100: about 1.1 to 40
            a = rng.randint(1, 3)
            for _ in range(count):
                add(a)
                if a > MAX_VALUE:
                    break
                a = max(a + 1, a * num // 100 + rng.randrange(1 + a // 5))
        return [v for v in out if v < MAX_VALUE] or [0]

    # -- the entry --------------------------------------------------------------------

    def date(self, rng: random.Random, number: int) -> tuple[int, str]:
        year = 1991 + int(33 * min(number, self.entries) / (self.entries + 1))
        if number > self.entries:
            year = 2024
        return year, f"{MONTHS[rng.randrange(12)]} {rng.randint(1, 28):02d} {year}"

    def entry(self, number: int) -> Entry:
        rng = self.rng(0, number)
        dead = rng.random() < 0.01
        if dead:
            kind = rng.choice(("count", "list", "formula", "arith"))
            name = (
                f"{rng.choice(('Duplicate of', 'Erroneous version of', 'Obsolete version of'))}"
                f" {self.ref(rng, number)}."
            )
        else:
            name, kind = self.name(rng, number)
        few = rng.random() < 0.06
        terms = self.terms(rng, kind, rng.randint(1, 15) if few else 140)
        if rng.random() < 0.05 and kind not in ("cons", "cofr", "base"):
            style = rng.randrange(3)
            if style == 0:
                terms = [-v if i % 2 else v for i, v in enumerate(terms)]
            elif style == 1:
                terms = [-v if rng.random() < 0.35 else v for v in terms]
            else:
                shift = terms[len(terms) // 2] if len(terms) > 2 else 1
                terms = [v - shift for v in terms]
            if not any(v < 0 for v in terms):
                terms[-1] = -terms[-1] or -1
        year, created = self.date(rng, number)
        revision = 1 + int(rng.expovariate(1 / (4 + 30 * (1 - year / 2025) ** 0.5 * 4)))
        modified_year = rng.randint(year, max(year, 2023))
        modified = (
            f"{MONTHS[rng.randrange(12)]} {rng.randint(1, 28):02d} {modified_year} "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        )
        first = rng.choices((0, 1, 2, 3, -1, 5), (45, 44, 5, 3, 1, 2))[0]
        if kind in ("list", "cons", "cofr"):
            first = 1 if rng.random() < 0.8 else first
        author = AUTHOR(rng)
        e = Entry(number, name, terms, first, revision, modified, created, author, [])
        e.keywords = self.keywords(rng, number, kind, terms, few, dead)
        for _ in range(rng.choice((1, 1, 1, 2))):
            e.comments.append(self.comment(rng, number))
        if rng.random() < 0.6:
            last = first + rng.choice((100, 1000, 1000, 10000, 2000, 500, 50))
            e.links.append(
                f'{AUTHOR(rng)}, <a href="/{anum(number)}/b{number:06d}.txt">Table of n, a(n)'
                f" for n = {first}..{last}</a>"
            )
        if rng.random() < 0.15:
            e.links.append(
                f'<a href="/index/Rec#order_0{rng.randint(1, 6)}">Index entries for linear '
                f"recurrences with constant coefficients</a>, signature "
                f"({','.join(str(rng.randint(-3, 4)) for _ in range(rng.randint(1, 5)))})"
            )
        if rng.random() < 0.4:
            e.formulas.append(self.signed(rng, f"a(n) = {self.formula(rng, number)}.", year))
        if rng.random() < 0.15:
            gf = f"G.f.: x*(1+{rng.randint(1, 9)}*x)/(1-x)^{rng.randint(2, 5)}."
            e.formulas.append(self.signed(rng, gf, year))
        lines = rng.choices((0, 1, 2, 3, 4), (15, 45, 25, 10, 5))[0]
        for _ in range(lines):
            cited = sorted({self.cite(rng, number) for _ in range(1 + int(rng.expovariate(0.6)))})
            cited_text = ", ".join(anum(c) for c in cited)
            if rng.random() < 0.12:
                e.xrefs.append(
                    f"{rng.choice(('Row sums give', 'Column k=1 gives', 'Bisection of'))} "
                    f"{cited_text}."
                )
            else:
                e.xrefs.append(f"Cf. {cited_text}.")
        return e

    def signed(self, rng: random.Random, text: str, year: int) -> str:
        if rng.random() < 0.6:
            return f"{text} - _{AUTHOR(rng)}_, {self.date_after(rng, year)}"
        return text

    def date_after(self, rng: random.Random, year: int) -> str:
        later = rng.randint(year, max(year, 2023))
        return f"{MONTHS[rng.randrange(12)]} {rng.randint(1, 28):02d} {later}"

    def comment(self, rng: random.Random, number: int) -> str:
        r = rng.random()
        if r < 0.2:
            text = f"a(n) is also the number of {OBJECT(rng)}."
        elif r < 0.35:
            text = f"Also the number of {OBJECT(rng)} {self.words(rng, rng.randint(3, 12))}."
        elif r < 0.45:
            text = f"Conjecture: a(n) = {self.formula(rng, number)} for n > {rng.randint(1, 9)}."
        elif r < 0.55:
            text = f"Apparently a(n) = {self.ref(rng, number)}(n) for n < {rng.randint(9, 99)}."
        elif r < 0.65:
            text = (
                f"Equivalently, numbers k such that {self.expr(rng, number, 'k')} is "
                f"{PROPERTY(rng)}."
            )
        else:
            text = f"{self.words(rng, rng.randint(5, 40)).capitalize()}."
        return self.signed(rng, text, 1991 + 33 * number // (self.entries + 1))

    def keywords(
        self, rng: random.Random, number: int, kind: str, terms: list[int], few: bool, dead: bool
    ) -> list[str]:
        if dead:
            return ["dead"] if rng.random() < 0.6 else ["nonn", "dead"]
        out = []
        if rng.random() < (0.05 if number <= 20_000 else 0.0027):
            out.append("core")
        out.append("sign" if any(v < 0 for v in terms) else "nonn")
        extra = {"tabl": "tabl", "cons": "cons", "cofr": "cofr", "base": "base"}.get(kind)
        if extra:
            out.append(extra)
        if rng.random() < (0.5 if kind == "formula" else 0.06):
            out.append("easy")
        if few:
            out.extend(("fini", "full") if rng.random() < 0.4 else ("more",))
        elif rng.random() < 0.08:
            out.append("more")
        for keyword, p in (
            ("hard", 0.02),
            ("mult", 0.02),
            ("frac", 0.01),
            ("word", 0.01),
            ("walk", 0.01 if kind == "count" else 0.0),
            ("uned", 0.01),
            ("less", 0.03),
            ("look", 0.005),
            ("obsc", 0.005),
            ("nice", 0.02),
        ):
            if rng.random() < p:
                out.append(keyword)
        return out

    def changed(self, e: Entry) -> Entry:
        """The entry as --changed leaves it: a new name and/or new terms."""
        rng = self.rng(1, e.number)
        what = rng.choices(("name", "terms", "both"), (40, 35, 25))[0]
        if what in ("name", "both"):
            if rng.random() < 0.5:
                e.name = e.name.rstrip(".") + self.clause(rng, e.number) + "."
            else:
                e.name = self.name(rng, e.number)[0]
        if what in ("terms", "both"):
            terms = list(e.terms)
            if rng.random() < 0.3 or len(terms) < 3:
                terms = self.terms(rng, "count", 140)
            else:
                for _ in range(rng.randint(1, 3)):
                    i = rng.randrange(len(terms))
                    terms[i] = terms[i] + rng.choice((-1, 1)) * rng.randint(1, 1 + abs(terms[i]))
            e.terms = terms
            sign = "sign" if any(v < 0 for v in terms) else "nonn"
            e.keywords = [sign if k in ("sign", "nonn") else k for k in e.keywords]
        e.revision += rng.randint(1, 3)
        e.modified = f"{CHANGED_DATE} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
        return e


# ---------------------------------------------------------------------------------------
# Formats


def pack(terms: list[int]) -> list[str]:
    """The terms that fit on three lines of at most LINE_WIDTH characters, as lines."""
    lines: list[str] = []
    line = ""
    for value in terms:
        text = f"{value},"
        if len(line) + len(text) > LINE_WIDTH:
            lines.append(line)
            if len(lines) == 3:
                break
            line = ""
        line += text
    else:
        lines.append(line)
    lines[-1] = lines[-1].rstrip(",")
    return [s for s in lines if s]


def seq_text(e: Entry, lines: list[str]) -> str:
    a = anum(e.number)
    out = [f"%I {a} #{e.revision} {e.modified}"]
    out.extend(f"%{letter} {a} {line}" for letter, line in zip("STU", lines, strict=False))
    out.append(f"%N {a} {e.name}")
    out.extend(f"%C {a} {c}" for c in e.comments)
    out.extend(f"%H {a} {h}" for h in e.links)
    out.extend(f"%F {a} {f}" for f in e.formulas)
    out.extend(f"%Y {a} {y}" for y in e.xrefs)
    out.append(f"%K {a} {','.join(e.keywords)}")
    values = "".join(lines).split(",")
    second = next((i for i, v in enumerate(values, 1) if abs(int(v)) > 1), 1)
    out.append(f"%O {a} {e.offset},{second}")
    out.append(f"%A {a} _{e.author}_, {e.created}")
    return "\n".join(out) + "\n"


def seq_path(tree: Path, number: int) -> Path:
    a = anum(number)
    return tree / "seq" / a[:4] / f"{a}.seq"


def header(kind: str, seed: int, entries: int, changed: int) -> str:
    what = "Names" if kind == "names" else "Data"
    date = "February 15 10:00 UTC 2024" if changed else "January 15 10:00 UTC 2024"
    return (
        f"# SYNTHETIC OEIS Sequence {what}, in the format of https://oeis.org/{kind}.gz\n"
        f"# Made by Backscope's bench/synthetic_oeis.py (seed {seed}, {entries} entries, "
        f"{changed} changed): not real OEIS data\n"
        f"# Last Modified: {date}\n"
        f"# Licensed under CC BY-SA 4.0 (synthetic data in the OEIS's format; see "
        f"https://oeis.org/LICENSE)\n"
    )


# ---------------------------------------------------------------------------------------
# The change plan and the workers


@dataclass(frozen=True, slots=True)
class Plan:
    modified: frozenset[int]
    removed: frozenset[int]
    added: tuple[int, ...]

    @property
    def touched(self) -> set[int]:
        return set(self.modified) | set(self.removed) | set(self.added)


def plan(seed: int, entries: int, changed: int) -> Plan:
    removed_count = added_count = changed // 10
    modified_count = changed - removed_count - added_count
    if modified_count + removed_count > entries:
        raise SystemExit(f"--changed {changed} is too many for {entries} entries")
    if entries + added_count > 999_999:
        raise SystemExit("A-numbers have six digits: too many entries")
    rng = random.Random(f"synthetic-oeis changes {seed} {entries} {changed}")
    picked = rng.sample(range(1, entries + 1), modified_count + removed_count)
    return Plan(
        frozenset(picked[removed_count:]),
        frozenset(picked[:removed_count]),
        tuple(range(entries + 1, entries + 1 + added_count)),
    )


@dataclass(frozen=True, slots=True)
class Job:
    seed: int
    entries: int
    plan: Plan
    tree: Path | None  # write every .seq file of the chunk under it, or none


_maker: Maker | None = None


def final(maker: Maker, p: Plan, number: int) -> Entry | None:
    """Entry `number` as the plan leaves it, or None if the plan has no such entry."""
    if number in p.removed or number - maker.entries > len(p.added):
        return None
    e = maker.entry(number)
    return maker.changed(e) if number in p.modified else e


def _work(job: Job, numbers: range) -> tuple[str, str, int, int]:
    """Names and stripped lines of the chunk; .seq files written and their bytes."""
    global _maker
    if _maker is None or (_maker.seed, _maker.entries) != (job.seed & _SEED_MASK, job.entries):
        _maker = Maker(job.seed, job.entries)
    names, stripped = [], []
    files = size = 0
    for number in numbers:
        e = final(_maker, job.plan, number)
        if e is None:
            continue
        lines = pack(e.terms)
        a = anum(number)
        names.append(f"{a} {e.name}\n")
        stripped.append(f"{a} ,{''.join(lines)},\n")
        if job.tree is not None:
            data = seq_text(e, lines).encode()
            with open(seq_path(job.tree, number), "wb") as f:
                f.write(data)
            files += 1
            size += len(data)
    return "".join(names), "".join(stripped), files, size


def _run_chunk(args: tuple[Job, int, int]) -> tuple[str, str, int, int]:
    job, start, stop = args
    return _work(job, range(start, stop))


def chunks(job: Job, last: int) -> Iterable[tuple[Job, int, int]]:
    for start in range(1, last + 1, CHUNK):
        yield job, start, min(start + CHUNK, last + 1)


# ---------------------------------------------------------------------------------------
# The tree marker: what the tree holds, so that --changed can rewrite only what differs


def read_marker(tree: Path) -> dict[str, object] | None:
    try:
        return json.loads((tree / MARKER).read_text())
    except (OSError, ValueError):
        return None


def write_marker(tree: Path, seed: int, entries: int, changed: int, complete: bool) -> None:
    state = {
        "generator": "bench/synthetic_oeis.py",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "entries": entries,
        "changed": changed,
        "complete": complete,
    }
    tmp = tree / (MARKER + ".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, tree / MARKER)


def prepare_full_tree(tree: Path) -> None:
    """Empty the tree for a full write; refuse to touch a tree that is not ours."""
    seq = tree / "seq"
    if seq.exists():
        if read_marker(tree) is None and any(seq.iterdir()):
            raise SystemExit(
                f"{tree} holds a tree this program did not write (no {MARKER}): "
                "remove it or choose another OUT_DIR"
            )
        shutil.rmtree(seq)
    seq.mkdir(parents=True)


def update_tree(maker: Maker, tree: Path, new: Plan, old: Plan) -> tuple[int, int, int]:
    """Rewrite, create or delete the files that differ between two plans' trees:
    (rewritten, created, deleted)."""
    rewritten = created = deleted = 0
    for number in sorted(new.touched | old.touched):
        path = seq_path(tree, number)
        e = final(maker, new, number)
        if e is None:
            if path.exists():
                path.unlink()
                deleted += 1
                with contextlib.suppress(OSError):  # as git leaves no empty folder
                    path.parent.rmdir()
            continue
        data = seq_text(e, pack(e.terms)).encode()
        try:
            if path.read_bytes() == data:
                continue
            rewritten += 1
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            created += 1
        with open(path, "wb") as f:
            f.write(data)
    return rewritten, created, deleted


def open_gz(raw: BinaryIO, name: str) -> gzip.GzipFile:
    # mtime=0 and a fixed name in the header: the same bytes on every run.
    return gzip.GzipFile(name, "wb", compresslevel=6, fileobj=raw, mtime=0)


def workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def generate(out: Path, entries: int, seed: int, changed: int, oeisdata: bool) -> dict[str, object]:
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    new = plan(seed, entries, changed)
    maker = Maker(seed, entries)
    tree = out / "oeisdata"
    mode = "none"
    if oeisdata:
        marker = read_marker(tree)
        if (
            marker is not None
            and marker.get("complete") is True
            and marker.get("version") == GENERATOR_VERSION
            and marker.get("seed") == seed
            and marker.get("entries") == entries
            and isinstance(marker.get("changed"), int)
            and (tree / "seq").is_dir()
        ):
            mode = "incremental"
            old = plan(seed, entries, int(marker["changed"]))  # type: ignore[arg-type]
        else:
            mode = "full"
            prepare_full_tree(tree)
            for folder in range(0, (entries + len(new.added)) // 1000 + 1):
                (tree / "seq" / f"A{folder:03d}").mkdir(exist_ok=True)
        write_marker(tree, seed, entries, changed, complete=False)
    job = Job(seed, entries, new, tree if mode == "full" else None)
    last = entries + len(new.added)
    files = tree_bytes = count = 0
    names_path, stripped_path = out / "names.gz.tmp", out / "stripped.gz.tmp"
    with (
        open(names_path, "wb") as names_raw,
        open(stripped_path, "wb") as stripped_raw,
        open_gz(names_raw, "names") as names,
        open_gz(stripped_raw, "stripped") as stripped,
        ProcessPoolExecutor(workers()) as pool,
    ):
        names.write(header("names", seed, entries, changed).encode())
        stripped.write(header("stripped", seed, entries, changed).encode())
        for names_part, stripped_part, n_files, n_bytes in pool.map(_run_chunk, chunks(job, last)):
            names.write(names_part.encode())
            stripped.write(stripped_part.encode())
            count += names_part.count("\n")
            files += n_files
            tree_bytes += n_bytes
    os.replace(names_path, out / "names.gz")
    os.replace(stripped_path, out / "stripped.gz")
    rewritten = created = deleted = 0
    if mode == "incremental":
        rewritten, created, deleted = update_tree(maker, tree, new, old)
    if mode != "none":
        write_marker(tree, seed, entries, changed, complete=True)
    return {
        "entries": count,
        "modified": len(new.modified),
        "removed": len(new.removed),
        "added": len(new.added),
        "names_mb": (out / "names.gz").stat().st_size / 1e6,
        "stripped_mb": (out / "stripped.gz").stat().st_size / 1e6,
        "mode": mode,
        "files": files,
        "tree_mb": tree_bytes / 1e6,
        "rewritten": rewritten,
        "created": created,
        "deleted": deleted,
        "seconds": time.monotonic() - started,
    }


def summary(out: Path, r: dict[str, object], changed: int) -> str:
    text = (
        f"{out}: {r['entries']:,} entries; names.gz {r['names_mb']:.1f} MB, "
        f"stripped.gz {r['stripped_mb']:.1f} MB"
    )
    if r["mode"] == "full":
        text += f", oeisdata/seq {r['files']:,} files ({r['tree_mb']:.0f} MB) written"
    elif r["mode"] == "incremental":
        text += (
            f", oeisdata/seq updated in place ({r['rewritten']} files rewritten, "
            f"{r['created']} created, {r['deleted']} deleted)"
        )
    if changed:
        text += f"; changed {r['modified']}, removed {r['removed']}, added {r['added']}"
    return text + f"; {r['seconds']:.1f} s"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, metavar="OUT_DIR")
    parser.add_argument("--entries", type=int, default=390_000, help="default 390000")
    parser.add_argument("--seed", type=int, default=1, help="default 1")
    parser.add_argument(
        "--changed",
        type=int,
        default=0,
        metavar="N",
        help="change N entries of the base: 80%% modified, 10%% removed, 10%% added",
    )
    parser.add_argument(
        "--no-oeisdata", action="store_true", help="write only names.gz and stripped.gz"
    )
    args = parser.parse_args(argv)
    if args.entries < 1 or args.changed < 0:
        parser.error("--entries must be positive and --changed not negative")
    result = generate(args.out, args.entries, args.seed, args.changed, not args.no_oeisdata)
    print(summary(args.out, result, args.changed))


if __name__ == "__main__":
    sys.exit(main())
