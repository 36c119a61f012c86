"""The one way pimc derives a seed from several integers (config seed, stream, step, patch...)."""

from __future__ import annotations

__all__ = ["mix_seed"]

_PRIME = 1_000_003  # larger than any part but the first, so small tuples never collide


def mix_seed(*parts: int) -> int:
    """``((p0·P + p1)·P + p2)·P + …`` with the prime ``P = 1_000_003``.

    Tuples of the same length whose parts after the first lie in ``[0, P)`` map to distinct
    integers, e.g. ``mix_seed(seed, patch_id)`` for every patch of a run.

    Args:
        parts: At least one integer; ``mix_seed(s)`` is ``s``.

    Returns:
        An unbounded Python int; reduce it where a generator needs a bounded seed.
    """
    if not parts:
        raise TypeError("mix_seed needs at least one part")
    mixed = 0
    for part in parts:
        mixed = mixed * _PRIME + part
    return mixed
