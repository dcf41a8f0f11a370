"""The 200-instance burst of benchmarks/dicom_burst.py (slow: run with -m slow)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dicomnode.orthanc import orthanc_missing


@pytest.mark.slow
def test_burst_200_at_concurrency_4_no_loss_no_duplicate(capsys: pytest.CaptureFixture[str]) -> None:
    reason = orthanc_missing()
    if reason:
        pytest.skip(reason)
    from benchmarks import dicom_burst

    rc = dicom_burst.main(["--instances", "200", "--concurrency", "4", "--orthanc", "--json"])
    out: Any = capsys.readouterr().out
    assert rc == 0, out
