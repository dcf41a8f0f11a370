"""DICOM conformance facts of the node, in one place so that the SCP, the tests and docs/DICOM.md agree.

Accepted storage SOP classes are those a chest X-ray arrives as (PS3.4 B.5): Computed Radiography, Digital X-Ray
(for presentation and for processing) and Secondary Capture, because de-identified and exported radiographs very
often travel as Secondary Capture with Modality CR or DX (the SIIM-ACR challenge images do). A Secondary Capture, or
any accepted instance, whose Modality is not CR/DX is out of scope and gets an SR saying so
(:func:`pneumoscan.dicomnode.scoring.scope_problem`). Everything else (CT, MR, US, SR, ...) is refused at association
negotiation, which is the clean DICOM way of saying "not for me": the sender sees the presentation context rejected
and never transfers the data.

Accepted transfer syntaxes are those pydicom can decode *on this installation* (checked at start-up), so the node
never accepts an image it then cannot read for lack of a codec.
"""

from __future__ import annotations

import re

VERIFICATION = "1.2.840.10008.1.1"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

#: Storage SOP classes the node accepts (UID → name used in logs and docs).
ACCEPTED_SOP_CLASSES: dict[str, str] = {
    CR_IMAGE_STORAGE: "Computed Radiography Image Storage",
    DX_FOR_PRESENTATION: "Digital X-Ray Image Storage - For Presentation",
    DX_FOR_PROCESSING: "Digital X-Ray Image Storage - For Processing",
    SECONDARY_CAPTURE: "Secondary Capture Image Storage (Modality CR or DX only)",
}
#: Modalities the DICOMweb poller asks QIDO-RS for.
CHEST_MODALITIES = ("CR", "DX")

#: Transfer syntaxes offered to the SCP, in order of preference; filtered by decoder availability at start-up.
CANDIDATE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian (the DICOM default, always accepted)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless Only
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)
#: What the node sends its results in (the SR and Secondary Capture are written uncompressed).
SEND_TRANSFER_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def is_uid(value: object) -> bool:
    """True for a syntactically valid DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters.

    The node names files after SOP Instance UIDs received from the network, so anything else (``../x``) is refused.
    """
    text = str(value or "")
    return 0 < len(text) <= 64 and bool(_UID.match(text))


def decodable_transfer_syntaxes() -> list[str]:
    """The candidate transfer syntaxes that pydicom can decode here (uncompressed ones always)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    out = []
    for ts in CANDIDATE_TRANSFER_SYNTAXES:
        try:
            if get_decoder(UID(ts)).is_available:
                out.append(ts)
        except NotImplementedError:
            continue
    return out
