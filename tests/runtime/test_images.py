"""Every sensor_msgs/Image encoding and CompressedImage format decodes to the same RGB picture."""
import cv2
import numpy as np
import pytest

from hkmr_ros.images import ImageDecodeError, decode_compressed, decode_image, encode_image


@pytest.fixture(scope="module")
def rgb():
    rng = np.random.default_rng(0)
    img = np.zeros((30, 40, 3), np.uint8)
    img[:, :20] = (200, 30, 10)          # red left half, so channel order errors show
    img[:, 20:] = (10, 40, 220)
    img[10:20, 5:35] = rng.integers(0, 255, (10, 30, 3), dtype=np.uint8)
    return img


def _gray(rgb):
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


@pytest.mark.parametrize("enc", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_exact(rgb, enc):
    w, h, step, data, be = encode_image(rgb, enc)
    out = decode_image(enc, w, h, step, data, be)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, rgb)


def test_mono8_replicated(rgb):
    w, h, step, data, be = encode_image(rgb, "mono8")
    out = decode_image("mono8", w, h, step, data, be)
    np.testing.assert_array_equal(out[..., 0], _gray(rgb))
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize("big", [0, 1])
def test_mono16_both_endians(rgb, big):
    g = _gray(rgb).astype(np.uint16)
    g16 = g * 256 + (255 - g)            # high byte = grey, low byte differs from it
    data = g16.astype(">u2" if big else "<u2").tobytes()
    out = decode_image("mono16", 40, 30, 80, data, big)
    np.testing.assert_array_equal(out[..., 1], _gray(rgb))
    # the other byte order gives a different picture, so is_bigendian is really honoured
    wrong = decode_image("mono16", 40, 30, 80, data, 1 - big)
    np.testing.assert_array_equal(wrong[..., 1], 255 - _gray(rgb))


def test_rgb16_big_endian(rgb):
    data = (rgb.astype(np.uint16) * 257).astype(">u2").tobytes()
    np.testing.assert_array_equal(decode_image("rgb16", 40, 30, 240, data, 1), rgb)


def _bt601_studio(rgb):
    """RGB -> limited-range BT.601 Y, U, V (what YUV 4:2:2 cameras send)."""
    r, g, b = [rgb[..., i].astype(np.float64) / 255.0 for i in range(3)]
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return [np.clip(np.rint(c), 0, 255).astype(np.int32) for c in (y, u, v)]


@pytest.mark.parametrize("enc", ["yuv422", "uyvy", "yuv422_yuy2", "yuyv"])
def test_yuv422_packings(rgb, enc):
    y, u, v = _bt601_studio(rgb)
    u2 = ((u[:, 0::2] + u[:, 1::2]) // 2).astype(np.uint8)
    v2 = ((v[:, 0::2] + v[:, 1::2]) // 2).astype(np.uint8)
    y = y.astype(np.uint8)
    packed = np.empty((30, 40, 2), np.uint8)
    if enc in ("yuv422", "uyvy"):   # U Y0 V Y1
        packed[:, 0::2, 0], packed[:, 1::2, 0] = u2, v2
        packed[..., 1] = y
    else:                           # Y0 U Y1 V
        packed[..., 0] = y
        packed[:, 0::2, 1], packed[:, 1::2, 1] = u2, v2
    out = decode_image(enc, 40, 30, 80, packed.tobytes(), 0)
    # chroma is subsampled and BT.601 integer maths differs slightly: compare loosely, but the
    # red/blue halves must come out in the right place
    flat = np.r_[0:10, 20:30]   # rows without the random band (chroma is shared by 2 pixels)
    assert np.abs(out[flat].astype(int) - rgb[flat]).max() <= 4
    assert out[0, 2, 0] > 150 and out[0, 30, 2] > 150


def test_step_padding_is_skipped(rgb):
    pad = 7
    rows = np.zeros((30, 40 * 3 + pad), np.uint8)
    rows[:, :120] = rgb.reshape(30, 120)
    rows[:, 120:] = 255
    out = decode_image("rgb8", 40, 30, 127, rows.tobytes(), 0)
    np.testing.assert_array_equal(out, rgb)


def test_numpy_data_accepted(rgb):
    out = decode_image("rgb8", 40, 30, 120, rgb.reshape(-1), 0)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("kwargs,match", [
    (dict(encoding="bayer_rggb8"), "unknown image encoding 'bayer_rggb8'"),
    (dict(step=100), "step 100 is smaller than one row"),
    (dict(data=b"\0" * 100), "expected 3600 data bytes, got 100"),
    (dict(data=b"\0" * 3601), "expected 3600 data bytes, got 3601"),
    (dict(width=0), "must be positive"),
    (dict(width=10**6, height=10**6), "exceeds the limit"),
    (dict(encoding="yuv422", width=41, step=82), "even width"),
])
def test_bad_images_name_the_problem(kwargs, match):
    args = dict(encoding="rgb8", width=40, height=30, step=120, data=b"\0" * 3600, is_bigendian=0)
    args.update(kwargs)
    with pytest.raises(ImageDecodeError, match=match):
        decode_image(**args)


def test_decode_error_is_value_error():
    assert issubclass(ImageDecodeError, ValueError)


@pytest.mark.parametrize("fmt,ext", [("jpeg", ".jpg"), ("png", ".png"),
                                     ("bgr8; jpeg compressed bgr8", ".jpg"), ("", ".png")])
def test_compressed(rgb, fmt, ext):
    ok, enc = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
    assert ok
    out = decode_compressed(fmt, enc.tobytes())
    assert out.shape == rgb.shape
    flat = np.r_[0:8, 22:30]   # JPEG smears the random band; the flat halves must survive
    err = np.abs(out[flat].astype(int) - rgb[flat]).mean()
    assert err == 0 if ext == ".png" else err < 10
    assert out[5, 5, 0] > 150 and out[5, 35, 2] > 150   # RGB, not BGR


def test_compressed_errors(rgb):
    ok, png = cv2.imencode(".png", rgb)
    with pytest.raises(ImageDecodeError, match="unknown compressed image format 'tiff'"):
        decode_compressed("tiff", png.tobytes())
    with pytest.raises(ImageDecodeError, match="says 'jpeg' but the data is PNG"):
        decode_compressed("jpeg", png.tobytes())
    with pytest.raises(ImageDecodeError, match="compressed depth"):
        decode_compressed("16UC1; compressedDepth png", png.tobytes())
    with pytest.raises(ImageDecodeError, match="no data"):
        decode_compressed("png", b"")
    with pytest.raises(ImageDecodeError, match="signature"):
        decode_compressed("png", b"hello world")
    with pytest.raises(ImageDecodeError, match="could not be decoded"):
        decode_compressed("png", png.tobytes()[:40])
