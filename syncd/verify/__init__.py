"""Verify: prove that a sync's target equals its source, and say where it does not.

Both databases sum row hashes over the same key segments; a segment whose count or
sum differs is split again, down to leaves small enough to compare key by key. Rows
move only where they differ. See ``compare`` for the search, ``canonical`` for what
a row's hash is made of, and ``postgres`` for the SQL.
"""
