"""Unit and property tests of ``dataset_kit.core.naming``: key layout and quoting."""

from __future__ import annotations

import re
import string
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_kit.core import naming
from dataset_kit.exceptions import DatasetKitError, InvalidInputError, InvalidUUIDError

_UUID_CHARS = string.ascii_letters + string.digits + "_+-"
_SETTINGS = settings(max_examples=200, deadline=None)

texts = st.text(max_size=40)
valid_uuids = st.text(alphabet=_UUID_CHARS, min_size=1, max_size=30)


# --------------------------------------------------------------------------- quoting
@_SETTINGS
@given(texts)
def test_quote_round_trip(text: str) -> None:
    quoted = naming.quote_component(text)
    assert naming.unquote_component(quoted) == text


@_SETTINGS
@given(texts)
def test_quoted_component_is_key_safe(text: str) -> None:
    quoted = naming.quote_component(text)
    # no separators that would change the key structure, only URL-safe ASCII
    assert "/" not in quoted
    assert "=" not in quoted
    assert re.fullmatch(r"[A-Za-z0-9_.~%-]*", quoted), quoted


@_SETTINGS
@given(texts.filter(lambda t: "/" not in t))
def test_quote_equals_kartothek_quote_without_slash(text: str) -> None:
    # kartothek uses urllib.parse.quote(value) (safe="/"); identical whenever no "/" occurs
    assert naming.quote_component(text) == urllib.parse.quote(text)


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("é ü", "%C3%A9%20%C3%BC"),
        ("FR/x y=1%", "FR%2Fx%20y%3D1%25"),
        ("2024-01-01 10:00:00", "2024-01-01%2010%3A00%3A00"),
        ("", ""),
        ("plain_text-1.0~", "plain_text-1.0~"),
    ],
)
def test_quote_known_values(text: str, quoted: str) -> None:
    assert naming.quote_component(text) == quoted
    assert naming.unquote_component(quoted) == text


@_SETTINGS
@given(st.binary(max_size=40))
def test_quote_bytes_round_trip(value: bytes) -> None:
    quoted = naming.quote_bytes(value)
    assert "/" not in quoted
    assert naming.unquote_bytes(quoted) == value


def test_unquote_component_is_strict_utf8() -> None:
    with pytest.raises(UnicodeDecodeError):
        naming.unquote_component("%FF")


# --------------------------------------------------------------------------- labels
label_pairs = st.lists(st.tuples(texts, texts), max_size=5)
blob_names = st.text(alphabet="0123456789abcdef", min_size=1, max_size=32)


@_SETTINGS
@given(label_pairs, blob_names)
def test_make_label_decode_label_round_trip(pairs: list[tuple[str, str]], name: str) -> None:
    encoded = [(col, naming.quote_component(value)) for col, value in pairs]
    label = naming.make_label(encoded, name)
    assert label.count("/") == len(pairs)
    decoded, decoded_name = naming.decode_label(label)
    assert decoded_name == name
    assert decoded == encoded
    assert [naming.unquote_component(v) for _, v in decoded] == [v for _, v in pairs]


def test_make_label_known_value() -> None:
    label = naming.make_label([("date", "2024-01-01"), ("a b", "x%2Fy")], "abc")
    assert label == "date=2024-01-01/a%20b=x%2Fy/abc"
    assert naming.decode_label(label) == ([("date", "2024-01-01"), ("a b", "x%2Fy")], "abc")


def test_decode_label_without_partitions() -> None:
    assert naming.decode_label("abc") == ([], "abc")


@pytest.mark.parametrize("label", ["nocolumn/abc", "a=1=2/abc", "a=1/b/abc"])
def test_decode_label_rejects_malformed_components(label: str) -> None:
    with pytest.raises(ValueError, match="not col=value"):
        naming.decode_label(label)


@_SETTINGS
@given(valid_uuids, st.sampled_from(["table", "t_2", "core-data"]), label_pairs, blob_names)
def test_data_key_round_trip(
    uuid: str, table: str, pairs: list[tuple[str, str]], name: str
) -> None:
    label = naming.make_label([(c, naming.quote_component(v)) for c, v in pairs], name)
    key = naming.data_key(uuid, table, label)
    assert key.startswith(naming.table_prefix(uuid, table))
    assert key.startswith(naming.dataset_prefix(uuid))
    assert key.endswith(".parquet")
    assert naming.label_from_data_key(uuid, table, key) == label
    assert naming.label_from_data_key(uuid, table + "x", key) is None
    assert naming.label_from_data_key(uuid, table, key[: -len(".parquet")]) is None


# --------------------------------------------------------------------------- uuids
@_SETTINGS
@given(valid_uuids)
def test_validate_uuid_accepts_legal(uuid: str) -> None:
    assert naming.validate_uuid(uuid) == uuid


@pytest.mark.parametrize("name", ["0\n", "sales\n", "sales\r\n"])
def test_a_trailing_newline_is_not_a_legal_name(name: str) -> None:
    """Regex "$" matches before a final newline: found by the property test below."""
    with pytest.raises(InvalidUUIDError):
        naming.validate_uuid(name)
    with pytest.raises(InvalidInputError):
        naming.validate_table(name)
    assert naming.parse_snapshot_key("d", "d/_versions/" + "0" * 20 + ".json\n") is None


@_SETTINGS
@given(st.text(max_size=20).filter(lambda t: not re.fullmatch(r"[A-Za-z0-9_+\-]+", t)))
def test_validate_uuid_rejects_illegal_text(uuid: str) -> None:
    with pytest.raises(InvalidUUIDError):
        naming.validate_uuid(uuid)


@pytest.mark.parametrize(
    "uuid", ["../x", "a/b", "a.b", "", "x y", "a\nb", "é", ".", "..", 5, None, b"abc", ["a"]]
)
def test_validate_uuid_rejects(uuid: object) -> None:
    with pytest.raises(InvalidUUIDError) as info:
        naming.validate_uuid(uuid)
    assert isinstance(info.value, InvalidInputError)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, DatasetKitError)
    assert repr(uuid) in str(info.value)


@pytest.mark.parametrize("table", ["", "a/b", "a.b", "indices", 3, "x y"])
def test_validate_table_rejects(table: object) -> None:
    with pytest.raises(InvalidUUIDError):
        naming.validate_table(table)


def test_validate_table_accepts_default() -> None:
    assert naming.validate_table(naming.DEFAULT_TABLE) == "table"


# --------------------------------------------------------------------------- keys
@_SETTINGS
@given(valid_uuids, st.integers(min_value=0, max_value=10**20 - 1))
def test_snapshot_key_round_trip(uuid: str, version: int) -> None:
    key = naming.snapshot_key(uuid, version)
    assert key.startswith(naming.snapshot_prefix(uuid))
    assert naming.parse_snapshot_key(uuid, key) == version
    # another dataset never claims it, even one whose uuid is a prefix of this one
    assert naming.parse_snapshot_key(uuid + "x", key) is None


@_SETTINGS
@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=2, max_size=20, unique=True))
def test_snapshot_keys_sort_like_versions(versions: list[int]) -> None:
    keys = [naming.snapshot_key("ds", v) for v in versions]
    assert [naming.parse_snapshot_key("ds", k) for k in sorted(keys)] == sorted(versions)


def test_snapshot_key_layout_and_negative_version() -> None:
    assert naming.snapshot_key("sales", 3) == "sales/_versions/00000000000000000003.json"
    with pytest.raises(ValueError):
        naming.snapshot_key("sales", -1)


@pytest.mark.parametrize(
    "key",
    [
        "ds/_versions/3.json",
        "ds/_versions/00000000000000000003.json.tmp",
        "ds/_versions/0000000000000000000x.json",
        "ds/table/00000000000000000003.json",
        "ds/_versions/sub/00000000000000000003.json",
    ],
)
def test_parse_snapshot_key_rejects_other_keys(key: str) -> None:
    assert naming.parse_snapshot_key("ds", key) is None


@_SETTINGS
@given(valid_uuids)
def test_pointer_keys_round_trip(uuid: str) -> None:
    assert naming.pointer_key(uuid) == uuid + ".by-dataset-metadata.json"
    assert naming.uuid_from_pointer_key(naming.pointer_key(uuid)) == uuid
    assert naming.uuid_from_pointer_key(naming.pointer_msgpack_key(uuid)) == uuid
    assert naming.uuid_from_pointer_key("x/" + naming.pointer_key(uuid)) is None


@pytest.mark.parametrize(
    "key", ["ds.json", "a.b.by-dataset-metadata.json", ".by-dataset-metadata.json", "ds"]
)
def test_uuid_from_pointer_key_rejects(key: str) -> None:
    assert naming.uuid_from_pointer_key(key) is None


def test_common_metadata_and_index_keys() -> None:
    assert naming.common_metadata_key("ds", "table") == "ds/table/_common_metadata"
    key = naming.index_key("ds", "a b/c", "2024-01-01T00:00:00+00:00")
    assert key == "ds/indices/a%20b%2Fc/2024-01-01T00%3A00%3A00%2B00%3A00.by-dataset-index.parquet"
    assert key.startswith(naming.index_prefix("ds", "a b/c"))
    assert key.startswith(naming.index_prefix("ds"))


def test_new_blob_names_are_unique_hex() -> None:
    names = {naming.new_blob_name() for _ in range(1000)}
    assert len(names) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", n) for n in names)


@pytest.mark.parametrize("table", ["_staging", "_versions", "indices"])
def test_directories_of_the_layout_are_no_table_names(table: str) -> None:
    """A table there would mix its blobs with snapshots, shuffle shards or indices."""
    with pytest.raises(InvalidUUIDError):
        naming.validate_table(table)


def test_staging_keys() -> None:
    assert naming.staging_key("d", "00ff00ff", 3) == "d/_staging/00ff00ff/000003.arrows"
    assert naming.staging_key("d", "00ff00ff", 3).startswith(naming.dataset_prefix("d"))
    for bad in ("", "../x", "ABCDEF12", "0123"):
        with pytest.raises(ValueError):
            naming.staging_prefix("d", bad)
