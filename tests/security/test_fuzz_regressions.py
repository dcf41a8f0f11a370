"""Inputs that crashed a decoder under fuzzing, replayed through their target (they must stay fixed).

File names: ``<target>-<what>.bin``. Found by ``scripts/fuzz.sh`` (atheris):

- ``image-tiff-corrupt-second-ifd.bin``: a TIFF whose second page header lacks its dimensions; counting the pages
  (``n_frames``) raised TypeError. Now the first page is read (with a warning).
- ``dicom-unknown-vr.bin``: a DICOM whose PhotometricInterpretation element has an unknown VR; pydicom raised
  NotImplementedError on first access. Now every element is parsed in ``read_dataset``: a corrupt-DICOM error (422).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz import targets

from pneumoscan.data.io import read_image
from pneumoscan.errors import CorruptDicomError, http_status

CASES = sorted((Path(__file__).parent / "regressions").glob("*.bin"))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_fuzz_crash_stays_fixed(path: Path) -> None:
    targets.TARGETS[path.name.split("-", 1)[0]](path.read_bytes())


def test_unknown_vr_is_a_corrupt_dicom() -> None:
    with pytest.raises(CorruptDicomError, match="Unknown Value Representation") as info:
        read_image((Path(__file__).parent / "regressions" / "dicom-unknown-vr.bin").read_bytes(), name="x.dcm")
    assert http_status(info.value) == 422


def test_tiff_with_a_corrupt_later_page_gives_its_first_page() -> None:
    arr = read_image((Path(__file__).parent / "regressions" / "image-tiff-corrupt-second-ifd.bin").read_bytes())
    assert arr.ndim == 2 and arr.size > 0
