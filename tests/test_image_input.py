import cv2
import numpy as np
import pytest

from pokedge.capture.image import decode_image, header_size, read_image
from pokedge.errors import InputError


def _jpeg(width, height):
    frame = np.full((height, width, 3), 128, np.uint8)
    cv2.putText(frame, "card", (5, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 1, (0, 0, 255), 2)
    return cv2.imencode(".jpg", frame)[1].tobytes()


def test_reads_a_good_jpeg(tmp_path):
    path = tmp_path / "ok.jpg"
    path.write_bytes(_jpeg(320, 240))
    frame = read_image(path)
    assert frame.shape == (240, 320, 3)
    assert frame.dtype == np.uint8


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_image(tmp_path / "nope.jpg")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_image(path)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n" * 20)
    with pytest.raises(InputError, match="not a readable image"):
        read_image(path)


def test_truncated_jpeg(tmp_path):
    data = _jpeg(640, 480)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_image(path)


def test_truncated_png(tmp_path):
    data = cv2.imencode(".png", np.zeros((100, 100, 3), np.uint8))[1].tobytes()
    with pytest.raises(InputError, match="truncated"):
        decode_image(data[:-20], "cut.png")


def test_one_pixel_image(tmp_path):
    path = tmp_path / "dot.png"
    path.write_bytes(cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes())
    with pytest.raises(InputError, match="1x1 px, too small"):
        read_image(path)


def test_huge_image_refused_from_header(tmp_path):
    path = tmp_path / "huge.jpg"
    path.write_bytes(_jpeg(12000, 9000))
    assert header_size(path.read_bytes()) == (12000, 9000)
    with pytest.raises(InputError, match="12000x9000 px"):
        read_image(path)


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(InputError, match="folder"):
        read_image(tmp_path)


def test_error_names_the_file(tmp_path):
    path = tmp_path / "named_photo.jpg"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="named_photo.jpg"):
        read_image(path)
