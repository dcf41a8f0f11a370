"""Coverage-guided fuzzing (atheris / libFuzzer) of one decoder entry point of :mod:`fuzz.targets`.

Usage (from the repository root; ``scripts/fuzz.sh MINUTES`` runs every target)::

    python -m fuzz.harness TARGET --seconds 120 [--workdir runs/fuzz]

TARGET is one of image, dicom, manifest, config, upload, multipart. The corpus starts from the seeds of
:mod:`fuzz.seeds` (small synthetic files of every decoder path, plus the real Kermany JPEGs and DICOMs of
``../shared/data`` when present) and grows under ``WORKDIR/TARGET/corpus``; a crashing input is written to
``WORKDIR/TARGET/crash-*`` and libFuzzer stops there (replay it with ``python -m fuzz.harness TARGET --replay FILE``).
pneumoscan, Pillow's Python side, pydicom, PyYAML, csv and the multipart parser are instrumented for coverage;
Pillow's C decoders are exercised but not instrumented.

The contract: a result or a :class:`~pneumoscan.errors.PneumoError`; anything else is a crash (a bug to fix).
libFuzzer's ``-rss_limit_mb`` and ``-timeout`` turn memory blow-ups and hangs into crashes too.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from pathlib import Path

import atheris

#: Modules to instrument for coverage, imported eagerly inside ``instrument_imports`` (the targets import them
#: lazily, which would be too late to instrument them).
INSTRUMENTED = ["PIL.Image", "PIL.PngImagePlugin", "PIL.JpegImagePlugin", "PIL.TiffImagePlugin", "PIL.BmpImagePlugin",
                "pydicom", "pydicom.pixels", "yaml", "pneumoscan.data.io", "pneumoscan.data.dicom",
                "pneumoscan.data.records", "pneumoscan.data.sources._common", "pneumoscan.training.config"]
SERVING = ["python_multipart", "starlette.formparsers", "pneumoscan.serving.app"]

with atheris.instrument_imports(include=["pneumoscan", "PIL", "pydicom", "yaml", "csv", "multipart",
                                         "python_multipart", "starlette", "fuzz"]):
    for _module in INSTRUMENTED + (SERVING if any(t in sys.argv for t in ("upload", "multipart")) else []):
        importlib.import_module(_module)
    from fuzz import targets
    from fuzz.seeds import real_seeds, synthetic_seeds

ROOT = Path(__file__).resolve().parents[1]


def seed_corpus(target: str, folder: Path) -> int:
    """Write the starting corpus for ``target`` into ``folder``; returns the number of seeds."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, bytes] = {}
    if target in ("image", "dicom", "upload"):
        pool = {**synthetic_seeds(folder.parent / "seed-build"), **real_seeds()}
        keep = (lambda n: n.endswith(".dcm")) if target == "dicom" else (lambda n: True)
        seeds = {n: d for n, d in pool.items() if keep(n)}
        if target == "upload":  # keep uploads small: the multipart framing is what matters, plus the decoders
            seeds = {n: d for n, d in seeds.items() if len(d) < 200_000}
    elif target == "manifest":
        shared = ROOT.parent / "shared" / "data"
        for path in sorted(shared.glob("*/manifest.csv")):
            seeds[path.parent.name + ".csv"] = b"\n".join(path.read_bytes().splitlines()[:20]) + b"\n"
        seeds["minimal.csv"] = b"path,label,split,patient_id\nNORMAL/a.png,NORMAL,train,p1\nb.png,1,test,p2\n"
    elif target == "config":
        for path in sorted([*ROOT.glob("configs/*.yaml"), *ROOT.glob("benchmarks/configs/*.yaml")]):
            seeds[path.name] = path.read_bytes()
        seeds["small.yaml"] = b"model: cnn\nimage_size: 64\nepochs: 2\naugment:\n  rotation: 5\ndata: [a, b]\n"
    elif target == "multipart":
        png = synthetic_seeds(folder.parent / "seed-build")["grey.png"]
        seeds["one.txt"] = (b"--fuzzb\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n"
                            b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--fuzzb--\r\n")
    for i, (name, data) in enumerate(sorted(seeds.items())):
        (folder / f"seed-{i:03d}-{Path(name).name}").write_bytes(data)
    return len(seeds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=sorted(targets.TARGETS))
    parser.add_argument("--seconds", type=int, default=60, help="libFuzzer -max_total_time")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "fuzz")
    parser.add_argument("--rss-limit-mb", type=int, default=3072)
    parser.add_argument("--timeout", type=int, default=30, help="seconds per input before it counts as a hang")
    parser.add_argument("--replay", type=Path, help="run the target once on this file (e.g. a crash-*) and exit")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # decoder warnings on garbage are expected; keep libFuzzer's output readable
    warnings.simplefilter("ignore")
    fn = targets.TARGETS[args.target]
    if args.replay:
        fn(args.replay.read_bytes())
        print(f"{args.replay}: no bug (result or PneumoError)")
        return 0
    work = args.workdir / args.target
    corpus = work / "corpus"
    n = seed_corpus(args.target, corpus)
    print(f"fuzzing {args.target} for {args.seconds} s from {n} seeds (corpus {corpus})", flush=True)

    if args.target in ("upload", "multipart"):
        targets.start_client()  # trains/loads the tiny model now, not inside the first input's -timeout

    def one_input(data: bytes) -> None:
        fn(data)

    libfuzzer = [sys.argv[0], str(corpus), f"-max_total_time={args.seconds}", f"-rss_limit_mb={args.rss_limit_mb}",
                 f"-timeout={args.timeout}", f"-artifact_prefix={work}/", "-print_final_stats=1",
                 "-max_len=1048576" if args.target in ("image", "dicom") else "-max_len=262144"]
    atheris.Setup(libfuzzer, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
