"""Pieces shared by the property-based (hypothesis) tests."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import strategies as st

#: a short CSV cell that needs no quoting: printable ASCII without quote or comma
plain_cell = st.text(
    st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters='",'),
    max_size=8,
)


@contextmanager
def scratch() -> Iterator[Path]:
    # Hypothesis runs many examples per test: a fresh folder each, not pytest's one tmp_path.
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)
