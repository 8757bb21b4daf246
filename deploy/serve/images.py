"""Image uploads for /classify: JPEG or PNG, 8 bits per channel, checked from the header before decoding.

Memory is bounded by the operator's pixel limit (the decoded image) and the model's input size (the resize works on
the crop's source region only, so no intermediate grows with the aspect ratio). Runs in the worker processes."""
from __future__ import annotations

import io

import numpy as np

from .protocol import LimitExceeded, ProtocolError

ACCEPTED_FORMATS = ("JPEG", "PNG")
# 16-bit grey PNGs open in these modes; convert("RGB") would clip them to 255, so they are refused
HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def center_crop_box(width: int, height: int, resize: int, crop: int) -> tuple[float, float, float, float]:
    """The source region that becomes the centre ``crop``×``crop`` after scaling the shorter side to ``resize``."""
    scale = resize / min(width, height)
    scaled_w, scaled_h = max(crop, round(width * scale)), max(crop, round(height * scale))
    left, top = (scaled_w - crop) // 2, (scaled_h - crop) // 2
    sx, sy = width / scaled_w, height / scaled_h
    return left * sx, top * sy, (left + crop) * sx, (top + crop) * sy


def image_to_input(data: bytes, preprocess: dict, crop: int, max_pixels: int, dtype: str) -> np.ndarray:
    """Decode, resize the shorter side, centre-crop and normalise as recorded at export: (1, 3, crop, crop)."""
    from PIL import Image, UnidentifiedImageError
    Image.MAX_IMAGE_PIXELS = None  # the limit below is checked from the header, before any pixel is decoded
    if not data:
        raise ProtocolError("empty upload: send a JPEG or PNG")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ProtocolError(f"the upload is not a readable image ({' or '.join(ACCEPTED_FORMATS)}): {e}") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ProtocolError(f"image of {width}×{height} pixels is empty")
    if width * height > max_pixels:
        raise LimitExceeded(f"image of {width}×{height} = {width * height} pixels exceeds the limit of {max_pixels} "
                            f"pixels (--max-image-pixels)")
    if image.mode in HIGH_BIT_MODES:
        raise ProtocolError(f"{image.format} image mode '{image.mode}' (16-bit or float samples) is not supported: "
                            f"send 8 bits per channel")
    try:
        image.load()
        image = image.convert(preprocess.get("color", "RGB"))
    except Exception as e:  # noqa: BLE001 - any decoder failure on untrusted bytes is the upload's fault
        raise ProtocolError(f"the {image.format} image could not be decoded: {type(e).__name__}: {e}") from None
    resize = round(preprocess["resize"] * crop / preprocess["input_size"])
    box = center_crop_box(width, height, resize, crop)
    pixels = np.asarray(image.resize((crop, crop), Image.BILINEAR, box=box), dtype=np.float32)
    pixels = (pixels - np.array(preprocess["mean"], np.float32)) / np.array(preprocess["std"], np.float32)
    return pixels.transpose(2, 0, 1)[None].astype(dtype)
