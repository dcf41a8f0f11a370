"""Synthetic test files for every test module: PNG / JPEG / DICOM writers, an X-ray-like image generator and a
Kaggle-layout data-set folder.

These are plain functions (not pytest fixtures) so that any test, conftest or benchmark can import them
(``from tests.fixtures import write_dicom``) and combine them with ``tmp_path``. Everything is deterministic for a
given seed / array and small, so that tests stay fast.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

ArrayOrShape = np.ndarray | Sequence[int]
ImageFormat = Literal["png", "jpeg", "dcm"]

_DEFAULT_SPLIT_COUNTS: dict[str, int] = {"train": 8, "val": 2, "test": 4}
_EXTENSIONS: dict[str, str] = {"png": ".png", "jpeg": ".jpeg", "dcm": ".dcm"}
IMAGES_PER_PATIENT = 2


def ramp(shape: Sequence[int], top: int = 255, dtype: type = np.uint8) -> np.ndarray:
    """A deterministic left-to-right ramp from 0 to ``top`` with the given shape (H, W[, C])."""
    h, w = int(shape[0]), int(shape[1])
    row = np.rint(np.linspace(0, top, w)).astype(dtype)
    arr = np.broadcast_to(row, (h, w)).copy()
    if len(shape) == 3:
        arr = np.repeat(arr[:, :, None], int(shape[2]), axis=2)
    return arr


def _as_array(array_or_shape: ArrayOrShape, bits: int) -> np.ndarray:
    """An array as given (cast to the bit depth), or a ramp covering the full range when a shape is given."""
    dtype = np.uint16 if bits == 16 else np.uint8
    if isinstance(array_or_shape, np.ndarray):
        arr = array_or_shape
        if arr.min() < 0 or arr.max() > np.iinfo(dtype).max:
            raise ValueError(f"values out of range for {bits}-bit: {arr.min()}..{arr.max()}")
        return arr.astype(dtype)
    return ramp(tuple(array_or_shape), top=np.iinfo(dtype).max, dtype=dtype)


def _to_mode(arr: np.ndarray, mode: str) -> Image.Image:
    """Build a Pillow image in ``mode`` from a grey (H, W) or colour (H, W, 3|4) uint8 array."""
    if mode == "L":
        if arr.ndim != 2:
            raise ValueError("mode L needs a 2-D array")
        return Image.fromarray(arr, mode="L")
    if mode == "LA":
        if arr.ndim == 2:
            arr = np.stack([arr, np.full_like(arr, 255)], axis=2)
        return Image.fromarray(arr, mode="LA")
    if mode in ("RGB", "RGBA", "P"):
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if mode == "RGBA" and arr.shape[2] == 3:
            arr = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255, dtype=arr.dtype)], axis=2)
        im = Image.fromarray(arr, mode="RGBA" if arr.shape[2] == 4 else "RGB")
        if mode == "P":
            return im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        return im
    raise ValueError(f"unsupported mode {mode!r}")


def write_png(path: str | Path, array_or_shape: ArrayOrShape, bits: int = 8, mode: str = "L") -> Path:
    """Write a PNG.

    Args:
        path: target file (parents are created). The extension is not checked: tests write PNGs named ``.dcm``.
        array_or_shape: the pixel values (uint8 range for 8 bits, uint16 range for 16 bits; (H, W) grey or
            (H, W, 3|4) colour), or a shape for a full-range ramp.
        bits: 8 or 16. 16-bit is grey only (Pillow writes it as a 16-bit greyscale "I;16" PNG).
        mode: "L", "LA" (grey + opaque alpha, or the given 2-channel array), "RGB", "RGBA" or "P" (palette).
    """
    if bits not in (8, 16):
        raise ValueError("bits must be 8 or 16")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = _as_array(array_or_shape, bits)
    if bits == 16:
        if mode != "L" or arr.ndim != 2:
            raise ValueError("16-bit PNGs are grey (mode L, 2-D array) only")
        im = Image.fromarray(arr)  # uint16 → "I;16"
    else:
        im = _to_mode(arr, mode)
    im.save(path, format="PNG")
    return path


def write_jpeg(path: str | Path, array_or_shape: ArrayOrShape, mode: str = "L", quality: int = 95) -> Path:
    """Write an 8-bit baseline JPEG (grey "L" or "RGB"); see :func:`write_png` for the arguments."""
    if mode not in ("L", "RGB"):
        raise ValueError("JPEG mode must be L or RGB")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _to_mode(_as_array(array_or_shape, 8), mode).save(path, format="JPEG", quality=quality)
    return path


def _dicom_pixels(array: np.ndarray | None, bits_stored: int, signed: bool, rgb: bool) -> np.ndarray:
    if array is None:
        base = make_xray_like(np.random.default_rng(0), 64, positive=False)
        if rgb:
            base = np.repeat(base[:, :, None], 3, axis=2)
        scale = (2**bits_stored - 1) // 255 if bits_stored > 8 else 1
        array = base.astype(np.int64) * scale
        if signed:
            array = array - 2 ** (bits_stored - 1)
    if bits_stored > 8:
        dtype = np.int16 if signed else np.uint16
    else:
        dtype = np.int8 if signed else np.uint8
    info = np.iinfo(dtype)
    if array.min() < info.min or array.max() > info.max:
        raise ValueError(f"values out of range for {np.dtype(dtype).name}: {array.min()}..{array.max()}")
    return np.asarray(array).astype(dtype)


def write_dicom(
    path: str | Path,
    array: np.ndarray | None = None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 8,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    voi_lut: tuple[int, Sequence[int]] | None = None,
    rgb: bool = False,
    no_pixels: bool = False,
    compressed: Literal["rle", "jpeg"] | None = None,
    patient_id: str = "ANON0001",
    modality: str = "CR",
    sop_class: Literal["CR", "SC"] = "CR",
    preamble: bool = True,
    signed: bool = False,
) -> Path:
    """Write a DICOM file with pydicom: proper file meta, CR or Secondary Capture SOP class, chest PA.

    Args:
        path: target file (parents are created).
        array: stored values, (H, W) grey, (F, H, W) multi-frame grey, (H, W, 3) colour or (F, H, W, 3);
            default: a 64×64 X-ray-like image scaled to the full ``bits_stored`` range.
        photometric: PhotometricInterpretation. MONOCHROME1/2, RGB and YBR_FULL (the RGB ``array`` is converted
            to YBR) are written consistently; any other value (e.g. "PALETTE COLOR") is written into the tag over
            grey/RGB pixel data, to test refusal.
        bits_stored: 8, 12 or 16 (12 and 16 are stored in 16 bits allocated).
        rescale: (RescaleSlope, RescaleIntercept).
        window: (WindowCenter, WindowWidth).
        voi_lut: (first mapped value, LUT entries) for a one-item VOI LUT Sequence; entries over 255 make a 16-bit
            LUT.
        rgb: colour image (3 samples per pixel); implies ``photometric="RGB"`` unless YBR_FULL is asked for.
        no_pixels: drop the Pixel Data element (keeping Rows/Columns), as in a header-only export.
        compressed: "rle" (RLE Lossless, pydicom's own encoder) or "jpeg" (JPEG Baseline via Pillow, 8-bit only;
            RGB is stored as YBR_FULL_422, as real JPEG DICOMs are).
        patient_id: PatientID (and PatientName).
        modality: Modality tag.
        sop_class: "CR" (Computed Radiography) or "SC" (Secondary Capture).
        preamble: False writes a bare data set (no preamble, no ``DICM``, no file meta; implicit VR little endian),
            as some old exporters do.
        signed: PixelRepresentation 1 (two's complement stored values).
    """
    from pydicom import dcmwrite, uid
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.pixels import convert_color_space

    if bits_stored not in (8, 12, 16):
        raise ValueError("bits_stored must be 8, 12 or 16")
    if rgb and photometric == "MONOCHROME2":
        photometric = "RGB"
    arr = _dicom_pixels(array, bits_stored, signed, rgb or photometric in ("RGB", "YBR_FULL"))
    colour = arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] == 3 and photometric in ("RGB", "YBR_FULL"))
    if photometric == "YBR_FULL":
        arr = convert_color_space(arr, "RGB", "YBR_FULL")
        written_pi = "YBR_FULL"
    elif photometric in ("MONOCHROME1", "MONOCHROME2", "RGB"):
        written_pi = photometric
    else:
        written_pi = "RGB" if colour else "MONOCHROME2"

    sop = uid.ComputedRadiographyImageStorage if sop_class == "CR" else uid.SecondaryCaptureImageStorage
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop
    ds.SOPClassUID = sop
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    ds.StudyInstanceUID = uid.generate_uid()
    ds.SeriesInstanceUID = uid.generate_uid()
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.set_pixel_data(arr, written_pi, bits_stored)  # sets Rows, Columns, Bits*, NumberOfFrames, SOPInstanceUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if written_pi != photometric:
        ds.PhotometricInterpretation = photometric
    if rescale is not None:
        ds.RescaleSlope = rescale[0]
        ds.RescaleIntercept = rescale[1]
    if window is not None:
        ds.WindowCenter = window[0]
        ds.WindowWidth = window[1]
    if voi_lut is not None:
        first, entries = voi_lut
        item = Dataset()
        # Both tags have ambiguous VRs (US/SS, US/OW); give them explicitly so that pydicom writes a list of US.
        item.add_new(0x00283002, "US", [len(entries), first, 16 if max(entries) > 255 else 8])  # LUTDescriptor
        item.add_new(0x00283006, "US", [int(v) for v in entries])  # LUTData
        ds.VOILUTSequence = [item]

    if compressed == "rle":
        ds.compress(uid.RLELossless, generate_instance_uid=False)
    elif compressed == "jpeg":
        if bits_stored != 8:
            raise ValueError("JPEG Baseline fixtures are 8-bit only")
        frames = arr if (arr.ndim == 4 or (arr.ndim == 3 and not colour)) else arr[None]
        if written_pi == "YBR_FULL":
            raise ValueError("write colour JPEG fixtures with photometric='RGB'")
        ds.PixelData = encapsulate([_jpeg_bytes(frame) for frame in frames])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = uid.JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
        if colour:
            ds.PhotometricInterpretation = "YBR_FULL_422"
    elif compressed is not None:
        raise ValueError("compressed must be None, 'rle' or 'jpeg'")
    if no_pixels:
        del ds.PixelData

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        if compressed is not None:
            raise ValueError("a bare data set (preamble=False) cannot carry a compressed transfer syntax")
        del ds.file_meta
        dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    return path


def _jpeg_bytes(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_xray_like(rng: np.random.Generator, size: int | tuple[int, int], positive: bool) -> np.ndarray:
    """Draw a synthetic "chest radiograph": a grey body, two dark lungs, a bright spine; uint8 (H, W).

    Positive images get a bright, soft blotch (an "opacity") inside one lung, so that a tiny model can learn the
    difference in a few epochs. Geometry, brightness and noise are jittered per image so that it has to learn the
    blotch and not memorise images.

    Args:
        rng: source of randomness (pass ``np.random.default_rng(seed)`` for reproducible images).
        size: side of a square image, or (height, width).
        positive: draw the pneumonia-like opacity.
    """
    h, w = (size, size) if isinstance(size, int) else size
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    img = np.full((h, w), 15.0 + rng.uniform(-5, 5))
    dx, dy = rng.uniform(-0.05, 0.05, size=2)
    body = ((xx - dx) / 0.85) ** 2 + ((yy - dy - 0.05) / 0.97) ** 2 <= 1
    img[body] = 150 + rng.uniform(-15, 15)
    lung_y, lung_rx, lung_ry = -0.05 + dy, 0.27 + rng.uniform(-0.03, 0.03), 0.55 + rng.uniform(-0.05, 0.05)
    for side in (-1, 1):
        cx = side * 0.38 + dx
        lung = ((xx - cx) / lung_rx) ** 2 + ((yy - lung_y) / lung_ry) ** 2 <= 1
        img[lung] = 60 + rng.uniform(-10, 10)
    img[body & (np.abs(xx - dx) < 0.07)] = 185
    if positive:
        side = rng.choice([-1, 1])
        cx = side * 0.38 + dx + rng.uniform(-0.08, 0.08)
        cy = lung_y + rng.uniform(-0.3, 0.3)
        sigma = rng.uniform(0.12, 0.18)
        img += 100 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    img += rng.normal(0, 6, size=(h, w))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_dataset_folder(
    root: str | Path,
    n_per_class_per_split: Mapping[str, int] | None = None,
    size: int = 32,
    seed: int = 0,
    fmt: ImageFormat = "png",
) -> Path:
    """Write a synthetic data set in the Kaggle layout ``root/{train,val,test}/{NORMAL,PNEUMONIA}/…``.

    File names follow Kermany: ``person12_bacteria_3.png`` (pneumonia; subtype alternates bacteria / virus by
    patient; the last number counts images) and ``IM-0012-0001.png`` (normal). Each patient has
    :data:`IMAGES_PER_PATIENT` images (the last one of a class may have fewer), and patient numbers are unique
    over the whole folder, so a patient never spans splits or classes.

    Args:
        root: folder to create (may exist).
        n_per_class_per_split: images per class per split, default ``{"train": 8, "val": 2, "test": 4}``; leave
            a split out to not create it.
        size: image side in pixels.
        seed: seed of the image generator (same seed, same files).
        fmt: "png", "jpeg" (``.jpeg``, like Kermany) or "dcm" (PatientID set to the patient).

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    counts = dict(_DEFAULT_SPLIT_COUNTS if n_per_class_per_split is None else n_per_class_per_split)
    if fmt not in _EXTENSIONS:
        raise ValueError(f"fmt must be one of {', '.join(_EXTENSIONS)}")
    ext = _EXTENSIONS[fmt]
    rng = np.random.default_rng(seed)
    patient = 0
    image_counter = 0
    for split, n in counts.items():
        for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                if i % IMAGES_PER_PATIENT == 0:
                    patient += 1
                image_counter += 1
                if label:
                    subtype = "bacteria" if patient % 2 else "virus"
                    pid, stem = f"person{patient}", f"person{patient}_{subtype}_{image_counter}"
                else:
                    pid, stem = f"IM-{patient:04d}", f"IM-{patient:04d}-{i % IMAGES_PER_PATIENT + 1:04d}"
                image = make_xray_like(rng, size, positive=bool(label))
                target = folder / f"{stem}{ext}"
                if fmt == "png":
                    write_png(target, image)
                elif fmt == "jpeg":
                    write_jpeg(target, image)
                else:
                    write_dicom(target, image, patient_id=pid)
    return root
