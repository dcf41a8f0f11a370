"""Header checks that decide whether an accepted instance is a frontal chest radiograph the model is for."""

from __future__ import annotations

import pytest

from pneumoscan.dicomnode import conformance as conf
from pneumoscan.dicomnode.scoring import scope_problem
from tests.dicomnode.support import make_dx


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({}, None),
    ({"sop_class": conf.CR_IMAGE_STORAGE, "modality": "CR"}, None),
    ({"sop_class": conf.SECONDARY_CAPTURE, "modality": "CR"}, None),
    ({"body_part": "", "view": ""}, None),
    ({"view": "AP"}, None),
    ({"sop_class": conf.SECONDARY_CAPTURE, "modality": "OT"}, "Secondary Capture with modality OT"),
    ({"sop_class": conf.DX_FOR_PROCESSING}, "for processing"),
    ({"modality": "MG"}, "modality MG"),
    ({"body_part": "KNEE"}, "body part KNEE"),
    ({"view": "LATERAL"}, "view position LATERAL"),
    ({"sop_class": "1.2.840.10008.5.1.4.1.1.2", "modality": "CT"}, "not a projection radiograph"),
])
def test_scope_problem(kwargs: dict[str, str], problem: str | None) -> None:
    found = scope_problem(make_dx(**kwargs))
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_uid_check_refuses_path_tricks() -> None:
    assert conf.is_uid("1.2.840.10008.1.1")
    for bad in ("", "../etc/passwd", "1.2.a", "1" * 65, None):
        assert not conf.is_uid(bad)


def test_accepted_transfer_syntaxes_include_uncompressed_and_jpeg() -> None:
    syntaxes = conf.decodable_transfer_syntaxes()
    assert "1.2.840.10008.1.2" in syntaxes and "1.2.840.10008.1.2.1" in syntaxes
    assert "1.2.840.10008.1.2.4.50" in syntaxes  # JPEG Baseline: pylibjpeg-libjpeg is a core dependency
