"""Redis glob patterns: validation, exact Redis 7.0 matching, literal prefixes and slot inference.

The pattern language is the one of Redis's ``stringmatchlen`` (``util.c``), case-sensitive:

* ``*`` any run of bytes, ``?`` any one byte (both include ``\\n``, ``\\x00`` and non-UTF-8 bytes);
* ``[abc]``, ``[^abc]``, ``[a-z]`` (a reversed range ``[z-a]`` is the same set), ``\\`` escapes
  inside a set; ``[]`` is an empty set (matches nothing) and ``[^]`` matches any one byte;
* ``\\x`` is the literal byte ``x``.

Redis accepts every byte string as a pattern and gives odd meanings to malformed ones (an
unclosed ``[`` or a trailing ``\\``). :func:`validate_pattern` refuses those before anything is
deleted. :meth:`Glob.match` answers exactly what ``SCAN ... MATCH`` would (it runs a regular
expression built from the same parse Redis performs); :func:`redis_glob_match` is a line-by-line
port of ``stringmatchlen`` kept as the reference the regular expression is tested against.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from clusterinval._core.slots import key_slot
from clusterinval.errors import InvalidPatternError

__all__ = [
    "MAX_PATTERN_BYTES",
    "MAX_STARS",
    "Glob",
    "common_literal_prefix",
    "compile_pattern",
    "escape",
    "redis_glob_match",
    "subsumes",
    "validate_pattern",
]

MAX_PATTERN_BYTES: Final = 4096
MAX_STARS: Final = 64

# Redis compares set ranges as C `char`, which is signed on x86-64 (the platform Redis servers
# nearly always run on) and unsigned on ARM. Validation refuses ranges whose meaning differs.
_SIGNED_CHAR: Final = True
# Redis (7.0.15 as patched by Debian for CVE-2024-31228, 7.2.6+ upstream) gives up past this
# depth of nested '*'.
_MAX_NESTING: Final = 1000

_STAR: Final = 0x2A  # *
_QMARK: Final = 0x3F  # ?
_LBRACKET: Final = 0x5B  # [
_RBRACKET: Final = 0x5D  # ]
_BACKSLASH: Final = 0x5C  # \
_CARET: Final = 0x5E  # ^
_DASH: Final = 0x2D  # -
_METACHARS: Final = frozenset(b"*?[\\")
_ALL_BYTES: Final = frozenset(range(256))


@dataclass(frozen=True, slots=True)
class Glob:
    """A validated Redis glob, with what the engine needs to know about the keys it matches."""

    pattern: bytes
    literal_prefix: bytes
    is_literal: bool
    literal: bytes | None
    matches_all: bool
    slot: int | None
    # True when the pattern is `literal_prefix` followed only by '*': it then matches exactly the
    # keys that start with literal_prefix (and are non-empty).
    prefix_only: bool
    # True when no byte of a key is constrained: only '*', '?' and sets that accept every byte
    # ('?*', '[^]*', '**?**' ...). Such a pattern matches every key (of the lengths it allows).
    unconstrained: bool

    @property
    def regex(self) -> re.Pattern[bytes]:
        """A regex whose fullmatch agrees with Redis for every non-empty key."""
        # Compiled when first needed: a prefix pattern served server-side never needs one, and
        # a storm of per-entity patterns would otherwise compile one per call.
        return _compiled_regex(self.pattern)

    def match(self, key: bytes) -> bool:
        """Whether ``SCAN ... MATCH pattern`` (or ``KEYS pattern``) would report ``key``."""
        if key:
            return self.regex.fullmatch(key) is not None
        # stringmatchlen never matches an empty key, but SCAN and KEYS skip matching altogether
        # for the pattern "*" and so do report an empty key.
        return self.pattern == b"*"


def validate_pattern(pattern: bytes | str) -> bytes:
    """Return ``pattern`` as bytes, or raise InvalidPatternError saying what to fix."""
    raw = _to_bytes(pattern)
    if not raw:
        raise InvalidPatternError(
            "pattern is empty; pass a glob such as 'prefix:*', or pass exact keys as keys=",
            pattern,
        )
    if len(raw) > MAX_PATTERN_BYTES:
        raise InvalidPatternError(
            f"pattern is {len(raw)} bytes long; the limit is {MAX_PATTERN_BYTES} bytes "
            "(Redis 7 limits how far it follows long patterns): use a shorter pattern",
            pattern,
        )
    parsed = _parse(raw)
    if parsed.problems:
        raise InvalidPatternError(f"{parsed.problems[0]} in pattern {_show(raw)}", pattern)
    if parsed.stars > MAX_STARS:
        raise InvalidPatternError(
            f"pattern has {parsed.stars} unescaped '*'; the limit is {MAX_STARS} "
            "(Redis 7 limits the recursion of '*' matching): remove some '*', "
            r"or write '\*' for a literal '*'",
            pattern,
        )
    return raw


def compile_pattern(pattern: bytes | str) -> Glob:
    """Validate ``pattern`` and build its :class:`Glob`."""
    return _compile_valid(validate_pattern(pattern))


def redis_glob_match(pattern: bytes, key: bytes) -> bool:
    """Reference port of Redis 7.0 ``stringmatchlen(pattern, key, nocase=0)``; no validation."""
    return _stringmatch(pattern, 0, key, 0, [False], 0)


def escape(literal: bytes) -> bytes:
    """A pattern that matches exactly the key ``literal`` (metacharacters escaped)."""
    out = bytearray()
    for b in literal:
        if b in _METACHARS:
            out.append(_BACKSLASH)
        out.append(b)
    return bytes(out)


def common_literal_prefix(globs: Sequence[Glob]) -> bytes:
    """The longest byte string that every key matching any of ``globs`` starts with."""
    if not globs:
        return b""
    prefix = globs[0].literal_prefix
    for g in globs[1:]:
        other = g.literal_prefix
        n = 0
        limit = min(len(prefix), len(other))
        while n < limit and prefix[n] == other[n]:
            n += 1
        prefix = prefix[:n]
        if not prefix:
            break
    return prefix


def subsumes(a: Glob, b: Glob) -> bool:
    """True only when every key matching ``b`` surely matches ``a``; False when unsure."""
    # Only "*" matches the empty key (see Glob.match), so it is the one pattern nothing else
    # subsumes unless it is "*" too.
    if b.pattern == b"*":
        return a.pattern == b"*"
    if a.matches_all or a.pattern == b.pattern:
        return True
    if b.literal is not None:
        return a.match(b.literal)
    if a.prefix_only:
        return b.literal_prefix.startswith(a.literal_prefix)
    return False


# --- parsing --------------------------------------------------------------------------------

_LIT: Final = 0
_ANY: Final = 1
_SET: Final = 2
_STAR_TOKEN: Final = 3

# A token is (kind, payload): _LIT -> the byte, _SET -> frozenset of accepted bytes,
# _ANY / _STAR_TOKEN -> None.
_Token = tuple[int, int | frozenset[int] | None]


@dataclass(frozen=True, slots=True)
class _Parsed:
    tokens: tuple[_Token, ...]
    problems: tuple[str, ...]
    stars: int


def _char(b: int) -> int:
    """The value C gives the byte ``b`` as a ``char`` on the servers we model."""
    return b - 256 if _SIGNED_CHAR and b >= 0x80 else b


def _parse(p: bytes) -> _Parsed:
    """Split ``p`` into tokens exactly as stringmatchlen walks it, noting malformed parts."""
    tokens: list[_Token] = []
    problems: list[str] = []
    stars = 0
    n = len(p)
    i = 0
    while i < n:
        c = p[i]
        if c == _STAR:
            tokens.append((_STAR_TOKEN, None))
            stars += 1
        elif c == _QMARK:
            tokens.append((_ANY, None))
        elif c == _LBRACKET:
            i = _parse_set(p, i, tokens, problems)
        elif c == _BACKSLASH:
            if i + 1 < n:
                i += 1
                tokens.append((_LIT, p[i]))
            else:
                # Redis reads a lone trailing backslash as a literal backslash.
                tokens.append((_LIT, _BACKSLASH))
                problems.append(
                    f"trailing unescaped '\\' at byte {i}: write '\\\\' for a literal "
                    "backslash, or remove it"
                )
        else:
            tokens.append((_LIT, c))
        i += 1
    return _Parsed(tuple(tokens), tuple(problems), stars)


def _parse_set(p: bytes, start: int, tokens: list[_Token], problems: list[str]) -> int:
    """Parse the set opening at ``start``; return the index of its last byte (as Redis does)."""
    n = len(p)
    i = start + 1
    negate = i < n and p[i] == _CARET
    if negate:
        i += 1
    members: set[int] = set()
    closed = False
    swallowed_bracket: int | None = None
    while True:
        if n - i >= 2 and p[i] == _BACKSLASH:
            i += 1
            members.add(p[i])
        elif i >= n:
            i -= 1  # Redis backs up so that its common "next byte" step ends the pattern
            break
        elif p[i] == _RBRACKET:
            closed = True
            break
        elif n - i >= 3 and p[i + 1] == _DASH:
            first, last = p[i], p[i + 2]
            lo, hi = sorted((_char(first), _char(last)))
            members.update(b for b in range(256) if lo <= _char(b) <= hi)
            if (first < 0x80) != (last < 0x80):
                problems.append(
                    f"range {_show(p[i : i + 3])} at byte {i} mixes bytes below and above 0x80; "
                    "Redis compares them as C chars, whose sign depends on the server's CPU: "
                    "split it into one range per side of 0x80"
                )
            if last == _RBRACKET and swallowed_bracket is None:
                swallowed_bracket = i + 2
            i += 2
        else:
            members.add(p[i])
        i += 1
    if not closed:
        if swallowed_bracket is not None:
            problems.append(
                f"unclosed '[' at byte {start}: Redis reads the ']' at byte {swallowed_bracket} "
                "as the end of a range; write '\\-' for a literal '-', and close the set with ']'"
            )
        else:
            problems.append(
                f"unclosed '[' at byte {start}: close the set with ']', "
                "or write '\\[' for a literal '['"
            )
    tokens.append((_SET, frozenset(_ALL_BYTES - members if negate else members)))
    return i


def _to_bytes(pattern: object) -> bytes:
    if isinstance(pattern, bytes):
        return pattern
    if isinstance(pattern, str):
        try:
            return pattern.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidPatternError(
                f"pattern is not valid Unicode text ({exc.reason}); pass bytes instead", pattern
            ) from None
    raise InvalidPatternError(f"pattern must be str or bytes, got {type(pattern).__name__}", None)


def _show(raw: bytes) -> str:
    return repr(raw.decode("utf-8", "backslashreplace"))


# --- compiling ------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _compile_valid(raw: bytes) -> Glob:
    tokens = _parse(raw).tokens
    prefix = bytearray()
    for kind, payload in tokens:
        if kind != _LIT:
            break
        assert isinstance(payload, int)
        prefix.append(payload)
    literal_prefix = bytes(prefix)
    is_literal = len(prefix) == len(tokens)
    rest = tokens[len(prefix) :]
    return Glob(
        pattern=raw,
        literal_prefix=literal_prefix,
        is_literal=is_literal,
        literal=literal_prefix if is_literal else None,
        matches_all=raw.count(b"*") == len(raw),
        slot=key_slot(literal_prefix) if is_literal else _prefix_slot(literal_prefix),
        prefix_only=bool(rest) and all(kind == _STAR_TOKEN for kind, _ in rest),
        unconstrained=all(
            kind in (_STAR_TOKEN, _ANY)
            or (kind == _SET and isinstance(payload, frozenset) and len(payload) == 256)
            for kind, payload in tokens
        ),
    )


@lru_cache(maxsize=512)
def _compiled_regex(raw: bytes) -> re.Pattern[bytes]:
    return _regex(_parse(raw).tokens)


def _prefix_slot(prefix: bytes) -> int | None:
    """The slot fixed by a hash tag that lies wholly inside ``prefix``, if any."""
    open_ = prefix.find(b"{")
    if open_ == -1:
        return None
    close = prefix.find(b"}", open_ + 1)
    if close <= open_ + 1:  # no '}' yet (a later byte decides) or an empty tag "{}"
        return None
    return key_slot(prefix[: close + 1])


def _regex(tokens: Sequence[_Token]) -> re.Pattern[bytes]:
    """A regex whose fullmatch agrees with stringmatchlen on non-empty keys."""
    # Split on runs of '*' (Redis collapses a run into one '*').
    segments: list[list[_Token]] = [[]]
    after_star = False
    for tok in tokens:
        if tok[0] == _STAR_TOKEN:
            if not after_star:
                segments.append([])
            after_star = True
        else:
            segments[-1].append(tok)
            after_star = False
    if len(segments) == 1:
        body = _segment_regex(segments[0])
    else:
        # Between two '*' every segment has a fixed length, so taking its leftmost occurrence
        # and never revisiting it (an atomic group) is correct and keeps matching linear-ish
        # instead of letting the regex engine backtrack across every '*'.
        head, *middle, tail = segments
        body = (
            _segment_regex(head)
            + b"".join(b"(?>.*?" + _segment_regex(seg) + b")" for seg in middle)
            + b".*"
            + _segment_regex(tail)
        )
    return re.compile(body, re.DOTALL)


def _segment_regex(seg: Sequence[_Token]) -> bytes:
    out: list[bytes] = []
    run = bytearray()
    for kind, payload in seg:
        if kind == _LIT:
            assert isinstance(payload, int)
            run.append(payload)
            continue
        if run:
            out.append(re.escape(bytes(run)))
            run.clear()
        if kind == _ANY:
            out.append(b".")
        else:
            assert isinstance(payload, frozenset)
            out.append(_set_regex(payload))
    if run:
        out.append(re.escape(bytes(run)))
    return b"".join(out)


def _set_regex(members: frozenset[int]) -> bytes:
    if not members:
        return b"(?!)"
    if len(members) == 256:
        return b"."
    parts: list[bytes] = []
    ordered = sorted(members)
    lo = prev = ordered[0]
    for b in [*ordered[1:], -1]:
        if b == prev + 1:
            prev = b
            continue
        parts.append(b"\\x%02x" % lo if lo == prev else b"\\x%02x-\\x%02x" % (lo, prev))
        lo = prev = b
    return b"[" + b"".join(parts) + b"]"


# --- reference port -------------------------------------------------------------------------


def _stringmatch(
    p: bytes, pi: int, s: bytes, si: int, skip_longer: list[bool], nesting: int
) -> bool:
    """stringmatchlen_impl with indices for pointers; skip_longer is the shared out-flag."""
    if nesting > _MAX_NESTING:
        return False
    plen = len(p)
    slen = len(s)
    while pi < plen and si < slen:
        c = p[pi]
        if c == _STAR:
            # C reads the NUL terminator past the end, never a '*'.
            while pi + 1 < plen and p[pi + 1] == _STAR:
                pi += 1
            if plen - pi == 1:
                return True
            while si < slen:
                if _stringmatch(p, pi + 1, s, si, skip_longer, nesting + 1):
                    return True
                if skip_longer[0]:
                    return False
                si += 1
            # No match of the rest anywhere in what is left: a longer match for an earlier
            # '*' cannot help either.
            skip_longer[0] = True
            return False
        if c == _QMARK:
            si += 1
        elif c == _LBRACKET:
            pi += 1
            negate = pi < plen and p[pi] == _CARET
            if negate:
                pi += 1
            matched = False
            while True:
                if plen - pi >= 2 and p[pi] == _BACKSLASH:
                    pi += 1
                    if p[pi] == s[si]:
                        matched = True
                elif pi >= plen:
                    pi -= 1
                    break
                elif p[pi] == _RBRACKET:
                    break
                elif plen - pi >= 3 and p[pi + 1] == _DASH:
                    lo, hi = _char(p[pi]), _char(p[pi + 2])
                    if lo > hi:
                        lo, hi = hi, lo
                    pi += 2
                    if lo <= _char(s[si]) <= hi:
                        matched = True
                elif p[pi] == s[si]:
                    matched = True
                pi += 1
            if negate:
                matched = not matched
            if not matched:
                return False
            si += 1
        else:
            if c == _BACKSLASH and plen - pi >= 2:
                pi += 1
            if p[pi] != s[si]:
                return False
            si += 1
        pi += 1
        if si == slen:
            while pi < plen and p[pi] == _STAR:
                pi += 1
            break
    return pi == plen and si == slen
