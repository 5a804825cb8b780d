"""What scoring a pool costs besides the model: fetch + decode + resize + forward, per round.

N synthetic images are written as files and reached the two ways a project's images are: over
HTTP from a local server on 127.0.0.1 (Python's threaded http.server speaking HTTP/1.1, so the
fetcher keeps its connections alive; a separate process, like Label Studio) and as local files
(``LOCAL_FILES_DOCUMENT_ROOT``). Each is scored by the backend's own path
(``backend.rounds.score.score_pool`` with the fetcher ``backend.image_scoring.image_fetcher`` builds),
with an untrained network of the default config (its forward costs what a trained one does):

- first round, no array cache: empty cache, every image downloaded (or read) and decoded;
- first round, array cache: the same, and the arrays are made and kept;
- later round, no array cache: the bytes are cached, every image is decoded and resized again
  (what every round did before model-ready arrays were cached);
- later round, array cache: every image's array read from the cache;
- forward only: the same arrays, already in memory, through ``score_images`` (the model's floor).

A first round runs once; the later rounds and the forward pass run ``--repeats`` times,
interleaved, and the best run is reported (the machine may be shared). The two later rounds'
outputs are compared bit for bit.

    nice -n 19 python benchmarks/score_plumbing.py --sizes 1000,10000 --formats png64,jpeg256
Writes ``benchmarks/results/score-plumbing.md`` and ``score-plumbing.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from backend.images import FetchReport
from backend.ls_client import LabelStudioClient
from backend.rounds.configs import model_config_from
from backend.rounds.score import SCORE_CHUNK_IMAGES, score_pool

REPO_ROOT = Path(__file__).resolve().parents[1]
from backend.image_scoring import image_fetcher, score_images  # noqa: E402
from backend.settings import Settings  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
UPLOAD_PATH = "data/upload/1"  # where Label Studio serves uploaded files
FORMATS = {"png64": ("PNG", 64, "png"), "jpeg256": ("JPEG", 256, "jpg")}
FIRST_ROUNDS = (("first round, no array cache", False), ("first round, array cache", True))
LATER_ROUNDS = (("later round, no array cache", False), ("later round, array cache", True))
FORWARD_ONLY = "forward only (arrays in memory)"
ROUND_ORDER = [label for label, _ in FIRST_ROUNDS + LATER_ROUNDS] + [FORWARD_ONLY]


def synthetic_image(index: int, fmt: str) -> bytes:
    """A photo-like image: smooth random colour fields plus a little noise (pure noise would
    compress to far larger files than real images)."""
    kind, side, _ = FORMATS[fmt]
    rng = np.random.default_rng(index)
    coarse = Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((side, side), Image.Resampling.BICUBIC), dtype=np.int16)
    noisy = np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(noisy).save(out, format=kind, **({"quality": 90} if kind == "JPEG" else {}))
    return out.getvalue()


def write_images(directory: Path, n: int, fmt: str) -> list[str]:
    """``n`` files under ``directory``/UPLOAD_PATH; their names."""
    target = directory / UPLOAD_PATH
    target.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(n):
        name = f"{index}.{FORMATS[fmt][2]}"
        (target / name).write_bytes(synthetic_image(index, fmt))
        names.append(name)
    return names


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """Python's threaded file server on 127.0.0.1 in its own process; its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            str(directory),
            "--protocol",
            "HTTP/1.1",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError as exc:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the image server did not start") from exc
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def measure_source(
    source: str, base_url: str, names: list[str], image_dir: Path, work: Path, repeats: int
) -> tuple[list[dict], bool]:
    """Each first round once (a cache is empty only once), then the later rounds and the forward
    pass ``repeats`` times, interleaved so load from other work spreads over all of them; rows +
    whether the two later rounds gave identical outputs."""
    import torch

    from model.networks import build_network

    local_root = image_dir / UPLOAD_PATH
    if source == "http":
        items = [(i + 1, f"/{UPLOAD_PATH}/{name}") for i, name in enumerate(names)]
    else:
        items = [(i + 1, f"/data/local-files/?d={name}") for i, name in enumerate(names)]
    settings = Settings(
        label_studio_url=base_url, local_files_document_root=local_root if source == "local" else None
    )
    model_config = model_config_from(settings)
    torch.manual_seed(0)
    model = build_network(model_config, num_classes=4)
    side, channels = model_config.image_size, model_config.channels
    # one warm-up pass, so the first timed round does not pay the first forward's allocations
    score_images(
        model, [np.zeros((side, side, channels), np.uint8)] * 8, model_config, settings, settings.strategy
    )

    def one_round(cache_arrays: bool):
        cache_dir = work / f"cache-{source}-{'arrays' if cache_arrays else 'bytes'}"
        round_settings = Settings(**{**settings.__dict__, "image_cache_dir": cache_dir})
        fetcher = image_fetcher(round_settings, LabelStudioClient.from_settings(round_settings), side)
        fetcher.cache_arrays = cache_arrays
        fetch_arrays, in_fetch = fetcher.fetch_arrays, [0.0]

        def timed_fetch(*args, **kwargs):  # the pass's split: fetch + decode vs the rest
            started = time.perf_counter()
            try:
                return fetch_arrays(*args, **kwargs)
            finally:
                in_fetch[0] += time.perf_counter() - started

        fetcher.fetch_arrays = timed_fetch  # type: ignore[method-assign]  # instrumented for this pass
        report = FetchReport()
        started = time.perf_counter()
        ids, out = score_pool(
            model, model_config, fetcher, items, report, round_settings, on_progress=lambda *_: None
        )
        seconds = time.perf_counter() - started
        if report.failed or len(ids) != len(items):
            raise RuntimeError(f"{source}: {report.summary()}")
        fetcher.fetch_arrays = fetch_arrays  # type: ignore[method-assign]
        return (seconds, in_fetch[0]), out, fetcher

    def forward_only(arrays):
        started = time.perf_counter()
        for start in range(0, len(arrays), SCORE_CHUNK_IMAGES):
            score_images(
                model, arrays[start : start + SCORE_CHUNK_IMAGES], model_config, settings, settings.strategy
            )
        return time.perf_counter() - started, 0.0

    for prefix in ("bytes", "arrays"):
        shutil.rmtree(work / f"cache-{source}-{prefix}", ignore_errors=True)
    timings: dict[str, list[tuple[float, float]]] = {label: [] for label in ROUND_ORDER}
    for label, cache_arrays in FIRST_ROUNDS:
        timing, _, fetcher = one_round(cache_arrays)
        timings[label].append(timing)
    arrays = [a for _, a in fetcher.fetch_arrays(items, FetchReport(), image_size=side, channels=channels)]
    outputs = {}
    for _ in range(repeats):
        for label, cache_arrays in LATER_ROUNDS:
            timing, outputs[label], _ = one_round(cache_arrays)
            timings[label].append(timing)
        timings[FORWARD_ONLY].append(forward_only(arrays))
    rows = [row(source, len(items), label, timings[label]) for label in ROUND_ORDER]
    for r in rows:
        print(json.dumps(r), flush=True)
    before, after = (outputs[label] for label, _ in LATER_ROUNDS)
    identical = all(
        np.array_equal(getattr(before, name), getattr(after, name))
        for name in ("probs", "predicted_loss", "embedding")
    )
    return rows, identical


def row(source: str, n: int, label: str, timings: list[tuple[float, float]]) -> dict:
    """``timings``: (seconds of the pass, seconds of it spent fetching + decoding) per run."""
    best, fetch_of_best = min(timings)
    fetch = sorted(f for _, f in timings)
    return {
        "source": source,
        "images": n,
        "round": label,
        "runs": len(timings),
        "best_s": round(best, 2),
        "median_s": round(float(np.median([t for t, _ in timings])), 2),
        "images_per_s": round(n / best) if best > 0 else None,
        "fetch_s_of_best": round(fetch_of_best, 2),
        "fetch_ms_per_image_best": round(fetch[0] * 1000 / n, 2),
        "fetch_ms_per_image_median": round(float(np.median(fetch)) * 1000 / n, 2),
    }


def markdown(results: list[dict], command: str, machine: str) -> str:
    lines = [
        "# Scoring plumbing: fetch + decode + resize + forward per round",
        "",
        f"Measured with `{command}` ({machine}). The backend's own path "
        "(`backend.rounds.score.score_pool`), an untrained `small_cnn` at the default "
        "`IMAGE_SIZE` 32. A first round runs once (empty caches); later rounds and the "
        "forward pass run several times, interleaved. Columns: best and median wall seconds "
        "of the whole pass; of the best run, the seconds spent fetching and decoding (in "
        "`ImageFetcher.fetch_arrays`; the rest is the forward pass); and the fetch + decode "
        "milliseconds per image, best and median over the runs (the figure least disturbed "
        "by other work on the machine).",
        "",
    ]
    for result in results:
        lines += [
            f"## {result['format']} ({result['file_kb']:.1f} KB per file on average), "
            f"{result['images']:,} images",
            "",
            "| source | round | runs | best s | median s | images/s | of it fetch + decode s "
            "| fetch + decode ms/image, best / median |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in result["rows"]:
            fetch = "" if r["round"] == FORWARD_ONLY else f"{r['fetch_s_of_best']} "
            per_image = (
                ""
                if r["round"] == FORWARD_ONLY
                else f"{r['fetch_ms_per_image_best']} / {r['fetch_ms_per_image_median']}"
            )
            lines.append(
                f"| {r['source']} | {r['round']} | {r['runs']} | {r['best_s']} | "
                f"{r['median_s']} | {r['images_per_s']:,} | {fetch.strip()} | "
                f"{per_image} |"
            )
        lines += [
            "",
            "Later round with and without the array cache, outputs bit-identical: "
            + ("yes" if all(result["identical"].values()) else f"NO ({result['identical']})"),
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="pool sizes (images), comma-separated")
    parser.add_argument(
        "--formats", default="png64,jpeg256", help=f"image files: {', '.join(FORMATS)} (comma-separated)"
    )
    parser.add_argument("--sources", default="http,local", help="http, local (comma-separated)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each later round and of the forward pass (best is reported)",
    )
    parser.add_argument("--out", default=str(RESULTS / "score-plumbing"), help="output path without suffix")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    work = Path(tempfile.mkdtemp(prefix="score-plumbing-"))
    try:
        for fmt in args.formats.split(","):
            image_dir = work / f"images-{fmt}"
            names = write_images(image_dir, max(sizes), fmt)
            sizes_kb = [(image_dir / UPLOAD_PATH / n).stat().st_size / 1024 for n in names]
            with http_server(image_dir) as base_url:
                for n in sizes:
                    result = {
                        "format": fmt,
                        "images": n,
                        "file_kb": float(np.mean(sizes_kb[:n])),
                        "rows": [],
                        "identical": {},
                    }
                    for source in args.sources.split(","):
                        rows, identical = measure_source(
                            source, base_url, names[:n], image_dir, work, args.repeats
                        )
                        result["rows"] += rows
                        result["identical"][source] = identical
                    results.append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import torch

    command = "nice -n 19 python benchmarks/score_plumbing.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    machine = (
        f"{os.cpu_count()} CPU cores shared with other work, torch "
        f"{torch.get_num_threads()} threads, load average "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps({"command": command.strip(), "machine": machine, "results": results}, indent=1) + "\n"
    )
    text = markdown(results, command.strip(), machine)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
