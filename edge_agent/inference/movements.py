"""Movements: named entry → exit pairs of lines or zones, one per track.

A track's entry is the first line it crosses (in the movement's entry direction, when one
is set) or the first zone it enters that some movement starts from. Its movement is the
first configured movement from that entry whose exit it touches later; then it is done.
A U-turn (out through the line it came in by) counts only where a movement names that line
as both entry and exit; otherwise it counts nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from edge_agent.config.cameras import MovementConfig


def _matches(end: str, direction: str | None, element: str, crossed: str | None) -> bool:
    return end == element and (direction is None or direction == crossed)


class Movements:
    def __init__(self, movements: Sequence[MovementConfig]) -> None:
        self.movements = list(movements)
        self._entry: dict[int, tuple[str, str | None]] = {}
        self._done: set[int] = set()

    def touch(self, track_id: int, element: str, direction: str | None) -> MovementConfig | None:
        """`track_id` crossed line `element` in `direction` (or entered zone `element`,
        direction None); returns the movement this completes, if any."""
        if track_id in self._done or not self.movements:
            return None
        entry = self._entry.get(track_id)
        if entry is None:
            if any(
                _matches(m.entry, m.entry_direction, element, direction) for m in self.movements
            ):
                self._entry[track_id] = (element, direction)
            return None
        for m in self.movements:
            if _matches(m.entry, m.entry_direction, *entry) and _matches(
                m.exit, m.exit_direction, element, direction
            ):
                self._done.add(track_id)
                return m
        return None

    def forget(self, live: Iterable[int]) -> None:
        keep = set(live)
        self._entry = {k: v for k, v in self._entry.items() if k in keep}
        self._done &= keep
