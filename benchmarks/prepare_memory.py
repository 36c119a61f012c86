"""Peak memory of the ``prepare`` stage vs the number of PASTIS patches.

``prepare`` streams patch by patch, so its peak RSS should stay flat as the dataset grows.
Each size runs in a fresh subprocess (ru_maxrss is a per-process high-water mark).

    python benchmarks/prepare_memory.py --patches 10 40 160 --patch-size 64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from pimc.core.config import PrepareConfig
from pimc.data.synthetic import SyntheticSpec, write_pastis
from pimc.stages.prepare import run_prepare
root, n, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
write_pastis(root / "PASTIS", SyntheticSpec(pastis_patches=n, patch_size=size), progress=False)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
stats = run_prepare(root / "PASTIS", PrepareConfig(out=str(root / "prep")), progress=False)
print(json.dumps({"patches": n, "pixels": stats["pixels"], "seconds": time.perf_counter() - t0,
                  "peak_rss_mib": stats["peak_rss_mib"], "rss_before_mib": base}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, nargs="+", default=[10, 40, 160])
    parser.add_argument("--patch-size", type=int, default=64)
    args = parser.parse_args()
    print(f"{'patches':>8} {'pixels':>8} {'seconds':>8} {'peak RSS MiB':>13}")
    rows = []
    for n in args.patches:
        with tempfile.TemporaryDirectory() as tmp:
            out = (
                subprocess.run(
                    [sys.executable, "-c", CHILD, tmp, str(n), str(args.patch_size)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
        row = json.loads(out)
        rows.append(row)
        print(f"{n:>8} {row['pixels']:>8} {row['seconds']:>8.1f} {row['peak_rss_mib']:>13.1f}")
    growth = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    ratio = rows[-1]["patches"] / rows[0]["patches"]
    print(f"patches x{ratio:.0f} -> peak RSS x{growth:.2f} (flat = streaming works)")


if __name__ == "__main__":
    main()
