"""Pure logic: glob semantics, slots, planning, batching, coverage, run tallies, value types.

Nothing here performs I/O or imports redis or anyio (a test holds it to that).
"""
