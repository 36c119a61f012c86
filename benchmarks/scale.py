"""Time, peak RSS and disk of each pipeline stage on a real-size synthetic PASTIS, extrapolated
to full PASTIS (2,433 patches of 128 x 128).

Each (size, stage) runs in a fresh subprocess, so its ru_maxrss (read with ``os.wait4``) is that
stage's own high-water mark, not one left behind by an earlier stage. Stages call the library
functions directly (no Prefect, no MLflow), with ``params.yaml`` plus ``-S`` overrides and
every output folder under a temp folder. Fine-tuning memory should not grow with the dataset:
the last lines say whether each task's peak RSS stays within 10 % from the smallest size to the
largest.

    python benchmarks/scale.py                            # 50 and 200 patches of 128 x 128
    python benchmarks/scale.py --patches 10 20 --stages pretrain pixel_cls
    python benchmarks/scale.py --pixels-per-patch null -S 'finetune.*.epochs=5' --json scale.json

``--stages`` also runs what the named stages read (pretrain needs data and prepare). The
``recurrence`` stage runs as in the pipeline: with ``recurrence.materialize: false`` it only
draws the gallery (pretraining and fine-tuning build their plots per batch).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pimc.core.config import Params, load_params
from pimc.core.errors import ConfigError
from pimc.core.paths import eurosat_root, pastis_root
from pimc.core.task_config import TASK_NAMES
from pimc.core.typed_config import add_set_argument, parse_overrides

REPO = Path(__file__).resolve().parents[1]
FULL_PASTIS = 2433  # patches of real PASTIS
REAL_EUROSAT_TILES = 27_000  # EuroSAT-MS: fixed, whatever the number of PASTIS patches
FLAT = 0.10  # peak RSS within 10 % from the smallest to the largest size counts as flat
STAGES = ("data", "prepare", "recurrence", "pretrain", *TASK_NAMES)
NEEDS = {"prepare": ("data",), "recurrence": ("prepare",), "pretrain": ("prepare",)}
NEEDS.update({task: ("pretrain",) for task in TASK_NAMES})
MIB = 2**20


def stage_dir(stage: str, params: Params, work: Path) -> Path:
    """The folder a stage writes (its disk column). Data: PASTIS only, the part that grows."""
    return {
        "data": pastis_root(params.data.root),
        "prepare": Path(params.prepare.out),
        "recurrence": Path(params.recurrence.out),
        "pretrain": Path(params.pretrain.out),
    }.get(stage, work / "models" / stage)  # what flows.finetune's task_dir(name) would be


def run_stage(stage: str, params: Params, work: Path) -> dict:
    """The stage's work, as its flow calls it; returns a small JSON-able summary."""
    from pimc.core.threads import set_threads

    set_threads(params.compute.torch_threads)  # as every flow does (flows.common.use_threads)
    if stage == "data":
        from pimc.stages.data import synthesize

        return synthesize(params.data, progress=False)
    if stage == "prepare":
        from pimc.stages.prepare import run_prepare

        return run_prepare(pastis_root(params.data.root), params.prepare, progress=False)
    if stage == "recurrence":
        from pimc.stages.recurrence import run_recurrence

        gallery = work / "plots" / "rp_gallery.png"
        return run_recurrence(params.prepare.out, params.recurrence, gallery, progress=False)
    if stage == "pretrain":
        from pimc.stages.pretrain import pretrain

        return pretrain(params, progress=False)
    from pimc.tasks.registry import get_task

    # pretrained=None is what flows.finetune passes for `pretrained: stage`: the task then
    # reads <pretrain.out>/best.pt itself (pimc.tasks.pretrained.resolve_pretrained).
    result = get_task(stage).run(
        params, pretrained=None, out_dir=stage_dir(stage, params, work), progress=False
    )
    return {k: result[k] for k in ("headline", "pretrained", "seconds", "methods")}


def child(args: argparse.Namespace) -> None:
    """``--child STAGE``: run one stage here and write its seconds and summary as JSON."""
    params = load_params(args.params, parse_overrides(args.overrides))
    t0 = time.perf_counter()  # the stage alone: interpreter start and imports excluded
    summary = run_stage(args.child, params, args.work)
    seconds = time.perf_counter() - t0
    text = json.dumps({"seconds": seconds, "summary": summary}, default=str)
    (args.work / f"{args.child}.json").write_text(text)


def measure(stage: str, args: argparse.Namespace, work: Path, sets: list[str]) -> dict:
    """Run ``stage`` in a fresh interpreter; its seconds, own peak RSS and summary."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--work", str(work)]
    cmd += ["--params", str(args.params), *[a for s in sets for a in ("-S", s)]]
    log = work / f"{stage}.log"
    with log.open("w") as out:  # to a file, not a pipe: nobody reads a pipe during wait4
        proc = subprocess.Popen(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT)
        # wait4, not getrusage(RUSAGE_CHILDREN): that is the max over every child reaped so far.
        # (Its max covers the stage's own reaped children too, e.g. DataLoader workers.)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait
    if proc.returncode:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise SystemExit(f"{stage} failed (exit {proc.returncode}); end of {log}:\n{tail}")
    # The log goes with the temp folder: keep its warnings, they may flag trouble at scale.
    for line in dict.fromkeys(ln.strip() for ln in log.read_text().splitlines() if "Warn" in ln):
        print(f"  [{stage}] {line[:240]}")
    row = json.loads((work / f"{stage}.json").read_text())
    # ru_maxrss: KiB on Linux, bytes on macOS
    row["peak_rss_mib"] = usage.ru_maxrss / (MIB if sys.platform == "darwin" else 1024)
    return row


def folder_mib(path: Path) -> float:
    """Apparent size of every file under ``path`` (0 if missing)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / MIB


def size_overrides(args: argparse.Namespace, n: int, work: Path) -> list[str]:
    """Every output into ``work``, the synthetic data at size ``n``, then the user's -S."""
    sets = [f"{key}={work / sub}" for key, sub in (
        ("data.root", "raw"), ("prepare.out", "prepared"), ("recurrence.out", "recurrence"),
        ("pretrain.out", "models/pretrain"), ("benchmark.out", "benchmark"),
    )]  # fmt: skip
    sets += [
        "data.source=synthetic",
        f"data.synthetic.patch_size={args.patch_size}",
        f"data.synthetic.pastis_patches={n}",
        f"prepare.pixels_per_patch={yaml_value(args.pixels_per_patch)}",
    ]
    for item in args.overrides:  # finetune.*.key: the same key for every task
        many = item.startswith("finetune.*.")
        sets += [item.replace("*", t, 1) for t in TASK_NAMES] if many else [item]
    return sets


def plan_stages(args: argparse.Namespace, params: Params) -> list[str]:
    """The stages to run, in pipeline order: the asked ones and what they read."""
    needs, materialize = dict(NEEDS), params.recurrence.materialize
    if materialize:  # pretrain.source auto then reads the RP shards
        needs["pretrain"] += ("recurrence",)
    todo, grow = set(), list(args.stages or STAGES)
    while grow:
        stage = grow.pop()
        todo.add(stage)
        grow += [s for s in needs.get(stage, ()) if s not in todo]
    return [s for s in STAGES if s in todo]


def run_size(args: argparse.Namespace, n: int, stages: list[str]) -> list[dict]:
    """Every stage at ``n`` patches, in one temp folder (later stages read earlier outputs)."""
    side, k = args.patch_size, args.pixels_per_patch
    pixels = "every pixel" if k is None else f"{k} pixels per patch"
    print(f"\n{n} patches of {side} x {side} ({pixels})")
    print(f"{'stage':<11} {'seconds':>9} {'peak RSS MiB':>13} {'disk MiB':>10}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"pimc-scale-{n}-", dir=args.tmp) as tmp:
        work = Path(tmp)
        sets = size_overrides(args, n, work)
        params = load_params(args.params, parse_overrides(sets))
        for stage in stages:
            got = measure(stage, args, work, sets)
            row = {"patches": n, "stage": stage, "seconds": got["seconds"],
                   "peak_rss_mib": got["peak_rss_mib"],
                   "disk_mib": folder_mib(stage_dir(stage, params, work))}  # fmt: skip
            if stage == "data":  # EuroSAT apart: its real size does not follow PASTIS
                row["eurosat_tiles"] = got["summary"]["eurosat"]["tiles"]
                row["eurosat_disk_mib"] = folder_mib(eurosat_root(params.data.root))
            if stage == "prepare":
                row["pixels"] = got["summary"]["pixels"]
            rows.append(row)
            print(f"{stage:<11} {row['seconds']:>9.1f} {row['peak_rss_mib']:>13.1f} "
                  f"{row['disk_mib']:>10.1f}", flush=True)  # fmt: skip
    return rows


def fit(xs: list[int], ys: list[float], at: int) -> float:
    """Least-squares ``a + b * x`` at ``at``; with a single size, proportional to it."""
    if len(set(xs)) < 2:
        return sum(ys) / len(ys) * at / xs[0]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    b = cov / sum((x - mx) ** 2 for x in xs)
    # More data never costs less: a negative slope is timing noise (sizes too close), not a trend.
    return my + max(b, 0.0) * (at - mx)


def extrapolate(rows: list[dict], stages: list[str]) -> list[dict]:
    """Per stage: seconds and disk at full PASTIS, peak RSS at the largest size vs smallest."""
    out = []
    for stage in stages:
        mine = sorted((r for r in rows if r["stage"] == stage), key=lambda r: r["patches"])
        xs, small, big = [r["patches"] for r in mine], mine[0], mine[-1]
        ratio = big["peak_rss_mib"] / small["peak_rss_mib"]
        verdict = "flat" if abs(ratio - 1) <= FLAT else ("grows" if ratio > 1 else "falls")
        ext = {"stage": stage, "patches": FULL_PASTIS, "rss_at": big["patches"],
               "peak_rss_mib": big["peak_rss_mib"], "rss_ratio": ratio,
               "verdict": verdict if len(set(xs)) > 1 else "one size",
               "seconds": fit(xs, [r["seconds"] for r in mine], FULL_PASTIS),
               "disk_mib": fit(xs, [r["disk_mib"] for r in mine], FULL_PASTIS)}  # fmt: skip
        if stage == "eurosat":  # real EuroSAT does not grow with PASTIS: scale by tiles
            tiles = next(r["eurosat_tiles"] for r in rows if r["stage"] == "data")
            ext["seconds"] = big["seconds"] * REAL_EUROSAT_TILES / tiles
            ext["disk_mib"], ext["synthetic_tiles"] = big["disk_mib"], tiles
        elif len(set(xs)) > 1:  # what a growing stage would need on full PASTIS
            ext["rss_fit_mib"] = fit(xs, [r["peak_rss_mib"] for r in mine], FULL_PASTIS)
        out.append(ext)
    return out


def print_extrapolation(ext: list[dict], sizes: list[int]) -> None:
    one = "proportionally (an upper bound: fixed costs scale too)"
    how = "a + b * patches" if len(set(sizes)) > 1 else one
    print(f"\nextrapolated to {FULL_PASTIS:,} patches (full PASTIS): seconds and disk fitted "
          f"{how} over {', '.join(map(str, sizes))} patches")  # fmt: skip
    lo, hi = min(sizes), max(sizes)
    print(f"{'stage':<11} {'seconds':>10} {'hours':>6} {'disk MiB':>10} "
          f"{f'RSS MiB @{hi}':>13} {f'x vs @{lo}':>9}  verdict")  # fmt: skip
    for e in ext:
        grows = e["verdict"] == "grows" and "rss_fit_mib" in e
        fitted = f" (fit: ~{e['rss_fit_mib']:.0f} MiB at {FULL_PASTIS:,})" if grows else ""
        print(f"{e['stage']:<11} {e['seconds']:>10.0f} {e['seconds'] / 3600:>6.2f} "
              f"{e['disk_mib']:>10.0f} {e['peak_rss_mib']:>13.1f} {e['rss_ratio']:>9.2f}  "
              f"{e['verdict']}{fitted}")  # fmt: skip


def print_notes(
    args: argparse.Namespace, params: Params, rows: list[dict], ext: list[dict]
) -> dict:
    """EuroSAT, real-data disk, recurrence and the finetune verdicts; returns the disk plan."""
    from pimc.core.config import DataConfig
    from pimc.stages.data import DISK_GB, disk_plan

    data = next((r for r in rows if r["stage"] == "data"), None)
    if data and "eurosat" in [e["stage"] for e in ext]:
        cfg, tiles = params.finetune.eurosat, data["eurosat_tiles"]
        gib = REAL_EUROSAT_TILES * len(cfg.bands) * (cfg.resize or 64) ** 2 * 4 / 2**30
        print(f"eurosat: synthetic EuroSAT has {tiles} tiles at every size; real EuroSAT-MS has "
              f"{REAL_EUROSAT_TILES:,} whatever the PASTIS patches, so its seconds are scaled by "
              f"tiles (an upper bound: epoch_steps fixes the training steps). load_eurosat holds "
              f"every tile as float32: ~{gib:.1f} GiB of RSS on real data.")  # fmt: skip
        real = data["eurosat_disk_mib"] * REAL_EUROSAT_TILES / tiles
        print(
            f"eurosat data: {data['eurosat_disk_mib']:.0f} MiB synthetic, ~{real:.0f} MiB at "
            f"{REAL_EUROSAT_TILES:,} tiles (real: {DISK_GB['EuroSAT'][1]} GB extracted)"
        )
    root = Path(args.tmp or tempfile.gettempdir()) / "no-data"
    plan = disk_plan(DataConfig(root=str(root)), REPO / ".dvc")
    cache = "DVC links its cache" if plan["dvc_links"] else "plus DVC's cache copy"
    print(
        f"real data (pimc.stages.data.disk_plan): ~{plan['needed_gb']} GB at the peak "
        f"(PASTIS.zip {DISK_GB['PASTIS'][0]} GB + {DISK_GB['PASTIS'][1]} GB extracted, "
        f"EuroSAT; {cache}); {plan['free_gb']} GB free here"
    )
    if not params.recurrence.materialize:
        print(
            "recurrence: gallery only (recurrence.materialize is false: pretraining and "
            "fine-tuning build their plots per batch)"
        )
    tasks = [e for e in ext if e["stage"] in TASK_NAMES]
    if tasks and len({r["patches"] for r in rows}) > 1:
        lo, hi = min(r["patches"] for r in rows), max(r["patches"] for r in rows)
        parts = [f"{e['stage']} x{e['rss_ratio']:.2f} {e['verdict']}" for e in tasks]
        flat = all(e["verdict"] == "flat" for e in tasks)
        print(
            f"finetune peak RSS {lo} -> {hi} patches: {', '.join(parts)} "
            f"=> {'FLAT' if flat else 'NOT FLAT'} (within {FLAT:.0%})"
        )
    return plan


def _pixels(text: str) -> int | None:
    return None if text == "null" else int(text)


def yaml_value(value: int | None) -> str:
    return "null" if value is None else str(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--patch-size", type=int, default=128)
    pixels = "sampled pixels per patch; null: every pixel"
    parser.add_argument("--pixels-per-patch", type=_pixels, default=128, help=pixels)
    parser.add_argument("--stages", nargs="+", choices=STAGES, help="default: all")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--tmp", help="where the temp folders go (default: the system's)")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    add_set_argument(parser, "override a parameter (repeatable); finetune.*.key: every task")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        return child(args)
    sizes = sorted(args.patches)
    # Fail on a bad override before any stage runs; the folders are placeholders here.
    probe = Path(args.tmp or tempfile.gettempdir()) / "pimc-scale-probe"
    try:
        params = load_params(args.params, parse_overrides(size_overrides(args, sizes[0], probe)))
    except ConfigError as err:  # e.g. --patches 2: every size must be a valid data.synthetic
        raise SystemExit(f"scale.py: {err}") from None
    stages = plan_stages(args, params)
    t0, rows = time.perf_counter(), []
    for n in sizes:
        rows += run_size(args, n, stages)
    ext = extrapolate(rows, stages)
    print_extrapolation(ext, sizes)
    plan = print_notes(args, params, rows, ext)
    print(f"total wall time {time.perf_counter() - t0:.0f} s")
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k in ("patch_size", "overrides")}
        settings.update(patches=sizes, pixels_per_patch=args.pixels_per_patch, stages=stages)
        doc = {"settings": settings, "rows": rows, "extrapolation": ext, "disk_plan": plan}
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
