"""The only code that talks to a node: a small protocol, its redis-py implementation, the Lua
scripts, and an in-memory cluster that implements the same protocol for fast engine tests."""
