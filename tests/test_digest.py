"""pipeline/digest.py: the project's one SHA-256 helper for files and JSON values."""

import hashlib

from pipeline.digest import file_sha256, json_sha256


def test_a_file_digest_is_the_sha256_of_its_bytes(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00\x01" * 3_000_000)  # more than one read block
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_json_digest_ignores_key_order_and_spells_other_objects_by_their_str():
    assert json_sha256({"b": 1, "a": [1, 2]}) == json_sha256({"a": [1, 2], "b": 1})
    assert json_sha256({"path": __file__}) != json_sha256({"path": "elsewhere"})
    assert json_sha256(b"x") == hashlib.sha256(b"\"b'x'\"").hexdigest()
