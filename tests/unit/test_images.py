"""images' decisions: what is kept as PREVIOUS, and what follows a new image."""

from __future__ import annotations

import pytest

from theiaos_pkg import images

A, B, C = "a" * 64, "b" * 64, "c" * 64


@pytest.mark.parametrize(("before", "running", "kept"), [
    (A, A, A),        # the usual case
    (B, A, A),        # the name was moved by hand: what runs is what works
    (A, None, A),     # stopped: the name's image
    (None, None, None),  # nothing yet: nothing to keep
])
def test_what_is_kept(before: str | None, running: str | None, kept: str | None) -> None:
    assert images.to_keep(before, running) == kept


@pytest.mark.parametrize(("before", "after", "running", "step"), [
    (A, A, A, "unchanged"),       # the same build again
    (A, None, A, "unchanged"),    # the load left no image of that name
    (A, B, A, "restart"),
    (None, B, None, "left stopped"),
    (A, B, None, "left stopped"),
    (A, B, C, "restart"),         # runs something else: restart onto the new one
])
def test_what_follows_a_change(before: str | None, after: str | None, running: str | None,
                               step: str) -> None:
    assert images.next_step(before, after, running) == step
