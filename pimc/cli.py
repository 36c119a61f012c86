"""``pimc`` command line: make the synthetic data, download the real datasets.

pimc synth --root data/raw                 # both datasets in their real layouts
pimc download eurosat --root data/raw/EuroSAT
pimc download pastis --root data/raw/PASTIS
pimc models                                # registered versions, aliases, metrics
pimc predict --model pimc-pastis-classifier@champion --patch data/raw/PASTIS/DATA_S2/S2_1.npy \
    --out map.tif                          # + map.png preview
pimc predict --model pimc-eurosat-classifier@champion --image tile.tif
pimc predict --model pimc-pastis-classifier --scene my_scene/ --out map.tif  # per-date GeoTIFFs
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pimc import __version__
from pimc.core.errors import PimcError, UsageError


def _synth(args: argparse.Namespace) -> None:
    from pimc.core.config import load_params
    from pimc.data.synthetic import SyntheticSpec, write_synthetic

    cfg = load_params(args.params).data if Path(args.params).is_file() else None
    base = vars(cfg.synthetic) if cfg else {}
    seed = args.seed if args.seed is not None else (cfg.seed if cfg else 0)
    overrides = {
        k: v
        for k, v in {
            "pastis_patches": args.patches,
            "patch_size": args.patch_size,
            "eurosat_per_class": args.eurosat_per_class,
        }.items()
        if v is not None
    }
    spec = SyntheticSpec(seed=seed, **{**base, **overrides})
    stats = write_synthetic(Path(args.root), spec)
    print(json.dumps(stats, indent=2, default=str))


def _download(args: argparse.Namespace) -> None:
    from pimc.data import PASTIS, EuroSAT

    if args.dataset == "eurosat":
        ds = EuroSAT(args.root, download=True, url=args.url, md5=args.md5 or EuroSAT.md5)
        print(f"EuroSAT ready in {args.root}: {len(ds)} train tiles")
    else:
        ds = PASTIS(
            args.root,
            folds=PASTIS.all_folds,
            download=True,
            url=args.url,
            md5=args.md5 or PASTIS.md5,
        )
        print(f"PASTIS ready in {args.root}: {len(ds)} patches")


def _models(args: argparse.Namespace) -> None:
    import pandas as pd

    from pimc import tracking

    rows = tracking.registered_models()
    if not rows:
        print(f"no pimc models registered at {tracking.tracking_uri()}; run `make run` first")
        return
    table = pd.DataFrame(rows)
    table["created"] = pd.to_datetime(table["created"], unit="ms").dt.strftime("%Y-%m-%d %H:%M")
    print(table.drop(columns=["run_id"]).fillna("").to_string(index=False))


def _serve(args: argparse.Namespace) -> None:
    import os

    from pimc import tracking

    uri = tracking.raw_model_uri(args.model)
    tracking.model_metadata(uri)  # an unknown model fails here, in one line
    bin_dir = os.path.dirname(sys.executable)
    # mlflow starts uvicorn by name: the venv's bin must be on PATH even when not activated.
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.environ["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()
    cmd = [os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", uri, "--env-manager",
           "local", "--host", args.host, "--port", str(args.port)]  # fmt: skip
    print(f"serving {uri} on http://{args.host}:{args.port}/invocations", flush=True)
    os.execv(cmd[0], cmd)


def _predict(args: argparse.Namespace) -> None:
    from pimc import predict

    if sum(x is not None for x in (args.patch, args.image, args.scene)) != 1:
        raise UsageError(
            "give exactly one of --patch (PASTIS), --scene (your GeoTIFFs) or --image (EuroSAT)"
        )
    if args.scene is not None:  # open (and check) the scene before loading the model
        from pimc.scene import open_scene
        from pimc.scene_predict import predict_scene, provenance

        bands = args.bands.split(",") if args.bands else None
        scene = open_scene(args.scene, bands, args.mask_dir)
    model, meta = predict.load_deployed(args.model)
    if args.scene is not None:
        summary = predict_scene(
            model, meta, scene, args.out, window=args.window, batch_size=args.batch_size,
            progress=not args.quiet, tags=provenance(args.model), resume=args.resume,
        )  # fmt: skip
        print(summary)
        return
    if args.image is not None:
        probs = predict.classify_tile(model, meta, args.image)
        best = next(iter(probs))
        print(f"{args.image}: {best} ({probs[best]:.1%})")
        for name, p in probs.items():
            print(f"  {name:<22} {p:.4f}")
        return
    _predict_patches(args, model, meta)


def _predict_patches(args: argparse.Namespace, model, meta) -> None:
    """One patch -> ``--out``; several -> ``--out/S2_<ID>.tif`` each, with one model load
    (the start-up, ~5 s, is paid once, not per patch)."""
    from pimc import predict

    patches = [predict.read_patch(p, args.root, args.crs) for p in args.patch]  # check all first
    outs = [Path(args.out)]
    if len(patches) > 1:
        folder = Path(args.out)
        if folder.suffix.lower() in (".tif", ".tiff"):
            raise UsageError(f"--out {folder}: with several --patch, name a folder for the maps")
        folder.mkdir(parents=True, exist_ok=True)
        outs = [folder / f"S2_{p.patch_id}.tif" for p in patches]
    for patch, out in zip(patches, outs, strict=True):
        pred = predict.predict_patch(model, meta, patch, args.batch_size, progress=not args.quiet)
        print(predict.save_prediction(pred, meta, patch, out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pimc", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pimc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write the embedded synthetic PASTIS + EuroSAT")
    synth.add_argument("--root", default="data/raw", help="output folder (default: %(default)s)")
    synth.add_argument("--params", default="params.yaml", help="read data.synthetic from here")
    synth.add_argument("--seed", type=int)
    synth.add_argument("--patches", type=int, help="PASTIS patches")
    synth.add_argument("--patch-size", type=int, help="PASTIS patch side in pixels")
    synth.add_argument("--eurosat-per-class", type=int)
    synth.set_defaults(func=_synth)

    download = sub.add_parser("download", help="download + verify + extract a real dataset")
    download.add_argument("dataset", choices=["eurosat", "pastis"])
    download.add_argument("--root", required=True, help="dataset folder (EuroSAT/ or PASTIS/)")
    download.add_argument("--url", help="mirror URL (default: the pinned one)")
    download.add_argument("--md5", help="md5 of the archive at that mirror")
    download.set_defaults(func=_download)

    models = sub.add_parser("models", help="registered models: versions, aliases, metrics")
    models.set_defaults(func=_models)

    serve = sub.add_parser(
        "serve", help="REST: raw observations (pixel, date, 10 bands) -> answers, via mlflow"
    )
    serve.add_argument(
        "--model", required=True,
        help="a task model NAME@ALIAS (its NAME-raw twin is served) or a NAME-raw model",
    )  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    serve.add_argument("--port", type=int, default=5001, help="default: %(default)s")
    serve.set_defaults(func=_serve)

    pred = sub.add_parser("predict", help="predict with a registered model -> GeoTIFF / class")
    pred.add_argument(
        "--model",
        required=True,
        help="registered model: NAME@ALIAS, NAME/VERSION or models:/... (bare NAME = @champion)",
    )
    pred.add_argument(
        "--patch", nargs="+",
        help="PASTIS DATA_S2/S2_<ID>.npy, or an ID_PATCH with --root; several: --out is a folder",
    )  # fmt: skip
    pred.add_argument("--root", help="PASTIS folder with metadata.geojson (default: from --patch)")
    pred.add_argument("--image", help="a EuroSAT-MS GeoTIFF tile (13 bands)")
    pred.add_argument(
        "--scene",
        help="your Sentinel-2 scene: a folder of per-date GeoTIFFs (date in each name) or one "
        "stack with bands described <band>_<date>; writes a tiled COG",
    )
    pred.add_argument("--bands", help="--scene: the files' band order, e.g. B02,B03,...,B12")
    pred.add_argument(
        "--mask-dir",
        help="--scene: per-date cloud masks (1 = cloudy; one band on the scene's grid, the date "
        "in each name): cloudy observations are treated as missing, as in training",
    )
    pred.add_argument("--window", type=int, default=256, help="--scene: window side (px)")
    pred.add_argument(
        "--resume", action="store_true", help="--scene: keep an interrupted run's windows"
    )
    pred.add_argument("--out", default="prediction.tif", help="GeoTIFF (default: %(default)s)")
    pred.add_argument("--crs", help="override metadata.geojson's CRS, e.g. EPSG:2154")
    pred.add_argument("--batch-size", type=int, default=2048, help="pixels per forward pass")
    pred.add_argument("--quiet", action="store_true", help="no progress bar")
    pred.set_defaults(func=_predict)
    return parser


def _subparser_usage(parser: argparse.ArgumentParser, command: str) -> str:
    """The usage line of ``pimc <command>``."""
    for action in parser._subparsers._group_actions:  # argparse keeps subparsers here
        if command in getattr(action, "choices", {}):
            return action.choices[command].format_usage()
    return parser.format_usage()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except UsageError as err:  # a wrong command line: usage + the reason, argparse's exit 2
        print(_subparser_usage(parser, args.command), file=sys.stderr, end="")
        print(f"pimc {args.command}: error: {err}", file=sys.stderr)
        return 2
    except PimcError as err:  # expected failures: one clear line, no traceback
        print(f"pimc {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
