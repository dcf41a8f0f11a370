"""Property-based fuzzing (hypothesis) of every decoder entry point, bounded for the default suite.

Each test feeds generated input to one target of :mod:`fuzz.targets`, whose contract is: a valid result or a
:class:`~pneumoscan.errors.PneumoError`; anything else fails the test. Inputs are mutations of small valid seeds
(truncation, byte flips, insertions, deletions, splices of two seeds) and free-form bytes/text. The examples are few
(``max_examples``) and derandomized, so the suite stays fast and a failure reproduces; ``scripts/fuzz.sh`` runs the
coverage-guided harness for longer.
"""

from __future__ import annotations

import string
from collections.abc import Iterator

import pytest
import yaml
from fastapi.testclient import TestClient
from fuzz import targets
from fuzz.seeds import synthetic_seeds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pneumoscan.serving.app import create_app
from pneumoscan.serving.settings import ServeSettings
from tests.serving.support import TinyModel, tiny_model

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return synthetic_seeds(tmp_path_factory.mktemp("seeds"))


def _seed_names(prefixes: tuple[str, ...]) -> list[str]:
    # names known without building the files (synthetic_seeds keeps them fixed)
    names = ["grey.png", "grey16.png", "grey.jpg", "rgb.jpg", "grey.tif", "grey.bmp", "plain.dcm", "u12-mono1.dcm",
             "u16-rescale-window.dcm", "rgb.dcm", "rle.dcm", "jpeg.dcm", "raw.dcm"]
    return [n for n in names if n.endswith(prefixes)]


@st.composite
def mutated(draw: st.DrawFn, pool: dict[str, bytes], names: list[str]) -> bytes:
    """A seed with 1–4 random edits: truncate, overwrite bytes, insert bytes, delete a range, splice another seed."""
    data = bytearray(pool[draw(st.sampled_from(names))])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "overwrite", "insert", "delete", "splice", "int"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "truncate":
            del data[pos:]
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[pos:pos + len(chunk)] = chunk
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 256))]
        elif op == "splice":
            other = pool[draw(st.sampled_from(names))]
            data[pos:] = other[draw(st.integers(0, max(len(other) - 1, 0))):]
        else:  # an interesting integer where a length or a size usually sits
            value = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            data[pos:pos + 4] = value.to_bytes(4, draw(st.sampled_from(["little", "big"])))
    return bytes(data)


IMAGE_NAMES = _seed_names((".png", ".jpg", ".tif", ".bmp"))
DICOM_NAMES = _seed_names((".dcm",))


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::RuntimeWarning")
def test_fuzz_image_bytes(seeds: dict[str, bytes]) -> None:
    @FUZZ
    @given(st.one_of(mutated(seeds, IMAGE_NAMES), st.binary(max_size=512),
                     st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM",
                                      b"RIFF\0\0\0\0WEBP"]).flatmap(lambda m: st.binary(max_size=256).map(
                                          lambda rest: m + rest))))
    def run(data: bytes) -> None:
        targets.image(data)

    run()


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::RuntimeWarning")
def test_fuzz_dicom_bytes(seeds: dict[str, bytes]) -> None:
    @FUZZ
    @given(st.one_of(mutated(seeds, DICOM_NAMES), st.binary(max_size=512)))
    def run(data: bytes) -> None:
        targets.dicom(data)

    run()


_CELL = st.text(alphabet=string.printable + "é\u2028\x00\ufeff", max_size=12)


@st.composite
def manifests(draw: st.DrawFn) -> bytes:
    cols = draw(st.lists(st.sampled_from(["path", "label", "split", "patient_id", "subtype", "source", "", "x",
                                          "path"]), min_size=0, max_size=7))
    rows = draw(st.lists(st.lists(st.one_of(_CELL, st.sampled_from(["NORMAL", "pneumonia", "1", "train", "test",
                                                                     "val", "/abs/a.png", "../up.png", '"q,uoted"'])),
                                  max_size=8), max_size=6))
    text = "\n".join([",".join(cols), *(",".join(r) for r in rows)])
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace")


def test_fuzz_manifest_csv() -> None:
    @FUZZ
    @given(st.one_of(manifests(), st.binary(max_size=300)))
    def run(data: bytes) -> None:
        targets.manifest(data)

    run()


_YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10)
_KEYS = st.sampled_from(["model", "image_size", "epochs", "batch_size", "lr", "augment", "data", "data_options",
                         "pretrained", "weights", "mean", "max_train_images", "precise_bn", "threshold_rule",
                         "target_sensitivity", "seed", "unknown_option"])


@st.composite
def configs(draw: st.DrawFn) -> bytes:
    doc = draw(st.dictionaries(_KEYS, _YAML_VALUES, max_size=6))
    if "augment" in doc and draw(st.booleans()):
        doc["augment"] = draw(st.dictionaries(st.sampled_from(["rotation", "hflip", "zoom", "bogus"]),
                                              _YAML_VALUES, max_size=3))
    return yaml.safe_dump(doc).encode("utf-8")


def test_fuzz_yaml_config() -> None:
    @FUZZ
    @given(st.one_of(configs(), st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
    def run(data: bytes) -> None:
        targets.config(data)

    run()


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tiny: TinyModel = tiny_model(tmp_path_factory.getbasetemp())
    settings_ = ServeSettings(checkpoint=tiny.onnx, backend="onnx", max_pixels=targets.FUZZ_MAX_PIXELS, max_files=4,
                              max_upload_mb=1)
    with TestClient(create_app(settings_), raise_server_exceptions=False) as client:
        targets.use_client(client)
        yield client
    targets.use_client(None)


@st.composite
def multipart_bodies(draw: st.DrawFn, pool: dict[str, bytes]) -> bytes:
    """Multipart bodies whose framing, headers, file names and contents are all fair game."""
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.sampled_from(["files", "files", "heatmap", "preview", "other", ""]))
        filename = draw(st.one_of(st.none(), st.text(max_size=20), st.sampled_from(
            ["../../etc/passwd", "<script>.png", "a\\b.dcm", "\x00.png", "é.jpg"])))
        disposition = f'form-data; name="{name}"' + ("" if filename is None else f'; filename="{filename}"')
        content = draw(st.one_of(mutated(pool, IMAGE_NAMES + DICOM_NAMES), st.binary(max_size=64),
                                 st.sampled_from([b"true", b"false", b"maybe"])))
        head = f"Content-Disposition: {disposition}\r\n"
        if draw(st.booleans()):
            head += "Content-Type: " + draw(st.sampled_from(["image/png", "application/dicom", "text/plain", "",
                                                             "x" * 100])) + "\r\n"
        parts.append(b"--fuzzb\r\n" + head.encode("utf-8", "replace") + b"\r\n" + content + b"\r\n")
    tail = draw(st.sampled_from([b"--fuzzb--\r\n", b"--fuzzb--", b"", b"--fuzzb\r\n", b"--wrong--\r\n"]))
    body = b"".join(parts) + tail
    if draw(st.integers(0, 9)) == 0:  # sometimes cut anywhere
        body = body[: draw(st.integers(0, len(body)))]
    return body


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::RuntimeWarning")
def test_fuzz_multipart_uploads(fuzz_client: TestClient, seeds: dict[str, bytes]) -> None:
    content_types = st.sampled_from(["multipart/form-data; boundary=fuzzb", "multipart/form-data",
                                     "multipart/form-data; boundary=", "application/x-www-form-urlencoded",
                                     "multipart/form-data; boundary=fuzzb; charset=utf-16", "text/plain"])

    @FUZZ
    @given(multipart_bodies(seeds), content_types)
    def run(body: bytes, content_type: str) -> None:
        targets.upload_body(body, content_type)

    run()
    assert fuzz_client.get("/healthz").status_code == 200
