"""Parts of ``pneumoscan batch`` that need no Ray cluster: resource plan, inputs, the extra's install hint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pneumoscan.batch.inputs import load_inputs
from pneumoscan.batch.pipeline import plan_resources
from pneumoscan.errors import DataError


def test_resource_plan() -> None:
    two = plan_resources(2, 0)
    assert (two.actors, two.threads, two.device) == (1, 2, "cpu") and two.decode_cpus < two.actor_cpus
    sixteen = plan_resources(16, 0)
    assert (sixteen.actors, sixteen.threads) == (12, 1)
    gpus = plan_resources(16, 2)
    assert (gpus.actors, gpus.actor_gpus, gpus.device) == (2, 1.0, "cuda")
    assert plan_resources(8, 0, actors=3, threads=2).actors == 3


def test_folder_inputs_read_labels_patients_and_subtypes(tmp_path: Path) -> None:
    from tests.fixtures import make_dataset_folder

    root = make_dataset_folder(tmp_path / "d", {"test": 4}, size=16, fmt="png")
    (root / "test" / "PNEUMONIA" / "readme.txt").write_text("not an image: not listed")
    items = {Path(it.path).name: it for it in load_inputs(root).items}
    assert len(items) == 8
    pneumonia = next(it for name, it in items.items() if name.startswith("person"))
    assert pneumonia.true_label == 1 and pneumonia.group.startswith("person") and pneumonia.extra["subtype"]
    normal = next(it for name, it in items.items() if name.startswith("IM-"))
    assert normal.true_label == 0 and normal.group.startswith("IM-")


def test_bad_manifests_are_one_line_errors(tmp_path: Path) -> None:
    no_path = tmp_path / "a.csv"
    no_path.write_text("file,label\nx.png,NORMAL\n")
    with pytest.raises(DataError, match="needs a 'path' column"):
        load_inputs(no_path)
    bad_label = tmp_path / "b.csv"
    bad_label.write_text("path,label\nx.png,maybe\n")
    with pytest.raises(DataError, match=r"b.csv:2: unknown label 'maybe'"):
        load_inputs(bad_label)
    with pytest.raises(DataError, match="no such file"):
        load_inputs(tmp_path / "nothing")


def test_parquet_manifest(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install \"pneumoscan[batch]\")")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": ["a.png", "/abs/b.dcm"], "label": ["1", None], "group": ["g1", "g2"],
                             "age": [40, 51]}), tmp_path / "m.parquet")
    inputs = load_inputs(tmp_path / "m.parquet")
    assert [it.path for it in inputs.items] == [str(tmp_path / "a.png"), "/abs/b.dcm"]
    assert [it.true_label for it in inputs.items] == [1, None] and inputs.extra_columns == ("age",)
    assert inputs.items[1].extra == {"age": "51"} and inputs.items[0].group == "g1"


def test_missing_ray_names_the_extra(tmp_path: Path) -> None:
    blocker = ("import sys, importlib.abc\n"
               "class _No(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'ray':\n"
               "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
               "sys.meta_path.insert(0, _No())\n"
               "from pneumoscan.cli.main import main\nsys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", blocker, "batch", "--input", str(tmp_path), "--output",
                           str(tmp_path / "o.parquet")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "pip install \"pneumoscan[batch]\"" in done.stderr and len(done.stderr.strip().splitlines()) == 1
