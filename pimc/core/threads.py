"""torch's thread count for a stage (``compute.torch_threads``)."""

from __future__ import annotations

import os


def set_threads(requested: int | None) -> int:
    """Set torch's intra-op thread count: ``requested``, or (None) the cores free now, i.e.
    cores minus the 1-minute load average, at least 1. Returns the count set."""
    if requested is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        requested = max(1, (os.cpu_count() or 1) - round(load))
    import torch  # imported here: loading the config never pays for torch

    torch.set_num_threads(requested)
    return requested
