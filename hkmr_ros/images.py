"""sensor_msgs/Image and CompressedImage payloads -> HxWx3 uint8 RGB, without cv_bridge.

The pipeline wants one pixel format (RGB, 8 bit) whatever the camera driver publishes, and a
clear error instead of a garbled image when the message does not add up (wrong step, short
data, an encoding we do not know): every problem is an `ImageDecodeError` naming it.
"""
from __future__ import annotations

from typing import Dict, Tuple, Union

import cv2
import numpy as np

Buffer = Union[bytes, bytearray, memoryview, np.ndarray]

# Largest image we accept (pixels): bounds memory on a corrupt width/height.
MAX_PIXELS = 8192 * 8192


class ImageDecodeError(ValueError):
    """The message cannot be turned into an image; the text says why."""


# encoding -> (channels, bytes per channel, channel order handled by _to_rgb)
_RAW: Dict[str, Tuple[int, int]] = {
    "rgb8": (3, 1), "bgr8": (3, 1), "rgba8": (4, 1), "bgra8": (4, 1), "mono8": (1, 1),
    "rgb16": (3, 2), "bgr16": (3, 2), "rgba16": (4, 2), "bgra16": (4, 2), "mono16": (1, 2),
    "8uc1": (1, 1), "8uc3": (3, 1), "16uc1": (1, 2),
}
# packed 4:2:2 formats: two pixels in four bytes
_YUV422 = {
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,        # ROS name for UYVY
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,          # Jazzy alias
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,   # YUYV
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,          # Jazzy alias
}
RAW_ENCODINGS = tuple(sorted(set(_RAW) | set(_YUV422)))


def _as_bytes_view(data: Buffer) -> np.ndarray:
    """Any buffer -> flat uint8 view (no copy when possible)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            data = np.ascontiguousarray(data).view(np.uint8)
        return data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError as e:
        raise ImageDecodeError(f"image data must be bytes or a uint8 array, got {type(data).__name__}") from e


def _check_dims(width: int, height: int) -> Tuple[int, int]:
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError) as e:
        raise ImageDecodeError(f"image width/height must be integers, got {width!r}x{height!r}") from e
    if w <= 0 or h <= 0:
        raise ImageDecodeError(f"image size must be positive, got {w}x{h}")
    if w * h > MAX_PIXELS:
        raise ImageDecodeError(f"image size {w}x{h} exceeds the limit of {MAX_PIXELS} pixels")
    return w, h


def _rows(buf: np.ndarray, encoding: str, w: int, h: int, step: int, row_bytes: int) -> np.ndarray:
    """HxROW_BYTES view of the pixel rows, checking step and data length."""
    try:
        step = int(step)
    except (TypeError, ValueError) as e:
        raise ImageDecodeError(f"image step must be an integer, got {step!r}") from e
    if step < row_bytes:
        raise ImageDecodeError(
            f"{encoding} image {w}x{h}: step {step} is smaller than one row ({row_bytes} bytes)")
    if buf.size != step * h:
        raise ImageDecodeError(
            f"{encoding} image {w}x{h} with step {step}: expected {step * h} data bytes, got {buf.size}")
    return buf.reshape(h, step)[:, :row_bytes]


def decode_image(encoding: str, width: int, height: int, step: int, data: Buffer,
                 is_bigendian: int = 0) -> np.ndarray:
    """A sensor_msgs/Image's fields -> HxWx3 uint8 RGB (a new array).

    16-bit encodings are reduced to 8 bit by keeping the high byte; mono images are replicated
    to three channels; alpha is dropped. Raises ImageDecodeError on anything inconsistent.
    """
    enc = str(encoding).strip().lower()
    w, h = _check_dims(width, height)
    buf = _as_bytes_view(data)
    if enc in _YUV422:
        if w % 2:
            raise ImageDecodeError(f"{encoding} image needs an even width, got {w}")
        rows = _rows(buf, encoding, w, h, step, 2 * w)
        packed = np.ascontiguousarray(rows).reshape(h, w, 2)
        return cv2.cvtColor(packed, _YUV422[enc])
    if enc not in _RAW:
        raise ImageDecodeError(
            f"unknown image encoding {encoding!r}; supported: {', '.join(RAW_ENCODINGS)}")
    channels, depth = _RAW[enc]
    rows = _rows(buf, encoding, w, h, step, w * channels * depth)
    if depth == 2:
        dtype = np.dtype(">u2" if is_bigendian else "<u2")
        px = np.ascontiguousarray(rows).view(dtype).reshape(h, w, channels)
        px = (px >> 8).astype(np.uint8)
    else:
        px = rows.reshape(h, w, channels)
    return _to_rgb(px, enc)


def _to_rgb(px: np.ndarray, enc: str) -> np.ndarray:
    """HxWxC uint8 in `enc`'s channel order -> contiguous HxWx3 RGB."""
    c = px.shape[2]
    if c == 1:
        return np.ascontiguousarray(np.repeat(px, 3, axis=2))
    if enc.startswith("bgr") or enc == "8uc3":  # OpenCV's convention for 8UC3
        return np.ascontiguousarray(px[:, :, 2::-1])
    return np.ascontiguousarray(px[:, :, :3])


def _sniff(buf: np.ndarray) -> str:
    head = bytes(buf[:8])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    return ""


def decode_compressed(format: str, data: Buffer) -> np.ndarray:  # noqa: A002 - ROS field name
    """A sensor_msgs/CompressedImage's fields -> HxWx3 uint8 RGB.

    `format` is the ROS string ("jpeg", "png", "bgr8; jpeg compressed bgr8", ...); JPEG and PNG
    are supported, compressedDepth is not. An empty format is sniffed from the bytes.
    """
    fmt = str(format).strip().lower()
    if "compresseddepth" in fmt:
        raise ImageDecodeError(f"compressed depth images are not supported (format {format!r})")
    buf = _as_bytes_view(data)
    if buf.size == 0:
        raise ImageDecodeError(f"compressed image ({format!r}) has no data")
    kind = _sniff(buf)
    wanted = "jpeg" if ("jpeg" in fmt or "jpg" in fmt) else "png" if "png" in fmt else ""
    if fmt and not wanted:
        raise ImageDecodeError(f"unknown compressed image format {format!r}; supported: jpeg, png")
    if not kind:
        raise ImageDecodeError(
            f"compressed image ({format or 'no format'}) does not start with a JPEG or PNG signature")
    if wanted and kind != wanted:
        raise ImageDecodeError(f"compressed image says {format!r} but the data is {kind.upper()}")
    img = cv2.imdecode(np.ascontiguousarray(buf), cv2.IMREAD_COLOR)
    if img is None or img.ndim != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageDecodeError(f"{kind.upper()} data ({buf.size} bytes) could not be decoded (corrupt or truncated)")
    if img.shape[0] * img.shape[1] > MAX_PIXELS:
        raise ImageDecodeError(f"decoded image {img.shape[1]}x{img.shape[0]} exceeds {MAX_PIXELS} pixels")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def encode_image(rgb: np.ndarray, encoding: str = "rgb8") -> Tuple[int, int, int, bytes, int]:
    """HxWx3 uint8 RGB -> (width, height, step, data, is_bigendian) in `encoding` (tests, synth).

    Supports the 8-bit raw encodings and mono16; the inverse of `decode_image` up to the
    quantisation of mono and YUV.
    """
    enc = encoding.lower()
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    if enc in ("rgb8", "8uc3"):
        px = rgb if enc == "rgb8" else rgb[:, :, ::-1]
    elif enc == "bgr8":
        px = rgb[:, :, ::-1]
    elif enc == "rgba8":
        px = np.dstack([rgb, np.full((h, w), 255, np.uint8)])
    elif enc == "bgra8":
        px = np.dstack([rgb[:, :, ::-1], np.full((h, w), 255, np.uint8)])
    elif enc in ("mono8", "8uc1"):
        px = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    elif enc == "mono16":
        px = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype("<u2") * 257
    else:
        raise ImageDecodeError(f"encode_image does not write {encoding!r}")
    px = np.ascontiguousarray(px)
    return w, h, px.nbytes // h, px.tobytes(), 0
