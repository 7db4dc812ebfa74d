"""TensorFlow Serving for the champion: keep its model folder current, and build requests.

    python -m tasks.serving [--params P] [--destination D] sync DEST [--every S] [--keep 2]
    python -m tasks.serving [--params P] [--destination D] request INPUT... [--size S]
        [--out request.json]

`sync` copies the champion's SavedModel (champion.json at publish.destination, a folder or
s3://) into DEST/<version>/, the layout TF Serving's `--model_base_path` watches; it
serves the highest version and loads a new one without a restart. The version is the
champion's promotion time in seconds (so versions only grow), each file is checked against
the sha256 champion.json records before it is placed (a mismatch is refused, DEST is left
as it was), and the folder appears whole (written beside, then renamed). The older
versions beyond `--keep` are removed. With `--every`, it checks again every SECONDS and a
failed check (no champion yet, the store down) is logged and retried, not fatal.

`request` writes the JSON body for TF Serving's REST predict API
(POST /v1/models/<name>:predict): {"signature_name": "serving_default", "instances":
[{"image": S x S x 3 uint8 nested lists}, ...]}, images decoded and resized as `prepare`
does (S: the champion's input side, which champion.json records, unless --size). The
response's "predictions" are the class probabilities, in champion.json's `classes` order.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

from tasks.common import UserError, atomic_dir, atomic_path, run_main, tree_digest
from tasks.images import decode, fit
from tasks.layout import CHAMPION
from tasks.params import DEFAULT_PARAMS, load_params
from tasks.predict import collect_inputs, resolve_pointer
from tasks.runtimes import SIGNATURE, SIGNATURE_INPUT

log = logging.getLogger(__name__)

CHAMPION_COPY = "assets.extra/champion.json"  # beside the SavedModel; TF Serving ignores it


# --- sync -----------------------------------------------------------------------------------


def sync(store, dest: Path, *, cache: Path, keep: int) -> Path:
    """The champion's SavedModel in dest/<version>/ (verified); returns that folder."""
    raw = store.get_bytes(CHAMPION)
    if raw is None:
        raise UserError(f"{store.uri}: no {CHAMPION} yet; publish a run first")
    pointer = json.loads(raw)
    model = resolve_pointer(store, pointer, "saved_model", where=CHAMPION, cache=cache)
    target = dest / str(version_of(pointer))
    if served_sha256(target) == tree_digest(model.path):
        return target  # already in place
    with atomic_dir(target) as tmp:
        shutil.copytree(model.path, tmp, dirs_exist_ok=True)
        (tmp / CHAMPION_COPY).parent.mkdir(exist_ok=True)
        (tmp / CHAMPION_COPY).write_text(json.dumps(pointer, indent=2))
    prune(dest, keep=keep)
    log.info("%s: champion %s is version %s", dest, pointer.get("run_id"), target.name)
    return target


def served_sha256(version: Path) -> str | None:
    """The SavedModel sha256 a version folder was placed with (None: not there)."""
    copy = version / CHAMPION_COPY
    if not copy.is_file():
        return None
    return (json.loads(copy.read_text()).get("exports") or {}).get("saved_model", {}).get("sha256")


def watch(store, dest: Path, *, cache: Path, keep: int, every: float, rounds: int | None) -> None:
    """sync() every `every` seconds; a failed round is logged, the next one tries again."""
    done = 0
    while rounds is None or done < rounds:
        try:
            sync(store, dest, cache=cache, keep=keep)
        except Exception as e:  # the store down, no champion yet: the server keeps serving
            log.warning("serving sync: %s", str(e).splitlines()[0] if str(e) else type(e).__name__)
        done += 1
        if rounds is None or done < rounds:
            time.sleep(every)


def version_of(pointer: dict) -> int:
    """TF Serving's version number: the promotion time, seconds since the epoch."""
    try:
        return int(datetime.fromisoformat(pointer["promoted_at"]).timestamp())
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{CHAMPION}: no valid promoted_at; republish the champion") from None


def prune(dest: Path, *, keep: int) -> None:
    versions = sorted((p for p in dest.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for old in versions[:-keep]:
        shutil.rmtree(old)


# --- request --------------------------------------------------------------------------------


def request_body(files: list[Path], *, size: int, resize: str) -> dict:
    """TF Serving's REST predict body (row format) for the SavedModel's one signature."""
    instances = [{SIGNATURE_INPUT: fit(decode(f), size, resize).tolist()} for f in files]
    return {"signature_name": SIGNATURE, "instances": instances}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    store = champion_store(params, args.destination)
    if args.command == "sync":
        cache, dest = Path(args.cache_dir).expanduser(), Path(args.dest)
        if args.every:
            watch(store, dest, cache=cache, keep=args.keep, every=args.every, rounds=None)
        else:
            print(f"{store.uri}/{CHAMPION} -> {sync(store, dest, cache=cache, keep=args.keep)}")
        return
    size = args.size or champion_side(store)
    with tempfile.TemporaryDirectory() as tmp:
        files = collect_inputs(args.inputs, tmp=Path(tmp), endpoint_url=params.data.s3_endpoint_url)
        try:
            body = request_body(files, size=size, resize=params.prepare.resize)
        except OSError as e:  # PIL's errors for unreadable images are OSErrors
            raise UserError(f"cannot read an input image: {e}") from None
    with atomic_path(Path(args.out)) as out:
        out.write_text(json.dumps(body, separators=(",", ":")))
    print(f"{len(files)} images ({size}x{size}) -> {args.out}")


def champion_store(params, destination: str | None):
    from tasks.storage import open_store  # boto3 only when a store is used

    cfg = params.publish
    return open_store(
        destination or cfg.destination, endpoint_url=cfg.endpoint_url, profile=cfg.profile
    )


def champion_side(store) -> int:
    """The input side of the champion's SavedModel, as champion.json records it."""
    raw = store.get_bytes(CHAMPION)
    saved = (json.loads(raw).get("exports") or {}).get("saved_model", {}) if raw else {}
    if not saved.get("input_size"):
        where = f"{store.uri}/{CHAMPION}"
        raise UserError(f"{where}: no champion SavedModel with its input size; give --size")
    return int(saved["input_size"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--params", default=str(DEFAULT_PARAMS), help="publish.destination etc.")
    p.add_argument("--destination", help="where champion.json is (default publish.destination)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sync", help="the champion's SavedModel -> DEST/<version>/")
    s.add_argument("dest", metavar="DEST", help="TF Serving's model base path")
    s.add_argument("--every", type=float, default=0, help="seconds between checks; 0 = once")
    s.add_argument("--keep", type=int, default=2, help="versions kept in DEST (>= 1)")
    s.add_argument(
        "--cache-dir",
        default=str(Path(tempfile.gettempdir()) / "resnet-retrain-serving"),
        help="verified downloads, by sha256",
    )
    r = sub.add_parser("request", help="the REST predict body for images")
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, globs, s3://")
    r.add_argument("--size", type=int, help="the model's input side (default: the champion's)")
    r.add_argument("--out", default="request.json")
    args = p.parse_args(argv)
    if args.command == "sync" and args.keep < 1:
        raise UserError("--keep must be >= 1")
    return args


if __name__ == "__main__":
    run_main(main)
