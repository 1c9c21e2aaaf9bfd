"""Manifest rows (DESIGN.md "Manifest columns"): each rule fails alone, naming its field; empty means default."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from ltx_batch.io.rows import RowError, validate_row

DEFAULTS = {"width": 192, "height": 128, "num_frames": 17}
GOOD = {"id": "row-1", "prompt": "a cat walks"}


def _row(base_uri=None, **columns):
    return validate_row({**GOOD, **columns}, defaults=DEFAULTS, frame_rate=25.0, base_uri=base_uri)


def _field(**columns) -> str:
    with pytest.raises(RowError) as info:
        _row(**columns)
    assert str(info.value).startswith(info.value.field)  # the message names the field too
    return info.value.field


def _formula_seed(row_id: str) -> int:
    return int.from_bytes(hashlib.sha256(row_id.encode()).digest()[:8], "big") & (2**63 - 1)


def test_good_row_with_defaults():
    row = _row()
    assert (row.id, row.prompt, row.negative_prompt) == ("row-1", "a cat walks", "")
    assert (row.width, row.height, row.num_frames, row.frame_rate) == (192, 128, 17, 25.0)
    assert row.seed == _formula_seed("row-1") and row.conditions == () and row.extra == {}


# -- id -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_id",
    [".", "..", "../x", "a/b", "/abs", "a\\b", "x" * 129, "", "a b", "caf\u00e9", "abc\n", "\nabc", None, 7, math.nan],
)
def test_bad_id(bad_id):
    assert _field(id=bad_id) == "id"


@pytest.mark.parametrize("good_id", ["x" * 128, "a.b-c_D9", "...", ".hidden", "-", "0"])
def test_good_id(good_id):
    assert _row(id=good_id).id == good_id


# -- prompt ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["", "   ", None, 5, math.nan])
def test_bad_prompt(prompt):
    assert _field(prompt=prompt) == "prompt"


def test_bad_negative_prompt():
    assert _field(negative_prompt=3) == "negative_prompt"
    assert _row(negative_prompt="blurry").negative_prompt == "blurry"


# -- sizes ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["width", "height"])
@pytest.mark.parametrize("value", [100, 0, -32, 33, 31.0, 512.5, "512", True])
def test_bad_size(name, value):
    assert _field(**{name: value}) == name


@pytest.mark.parametrize("value", [16, 0, -7, 18, 120, 17.5])
def test_bad_num_frames(value):
    assert _field(num_frames=value) == "num_frames"


def test_good_sizes_and_numpy_scalars():
    row = _row(width=np.int64(768), height=512.0, num_frames=np.int32(121), frame_rate=np.float32(24.0))
    assert (row.width, row.height, row.num_frames, row.frame_rate) == (768, 512, 121, 24.0)
    assert type(row.width) is int and type(row.height) is int and type(row.num_frames) is int
    assert _row(num_frames=1).num_frames == 1


@pytest.mark.parametrize("value", [0, -25.0, math.inf, "fast"])
def test_bad_frame_rate(value):
    assert _field(frame_rate=value) == "frame_rate"


# -- seed -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64, 1.5, "7", math.inf, 1e30, True])
def test_bad_seed(seed):
    assert _field(seed=seed) == "seed"


@pytest.mark.parametrize("seed, want", [(0, 0), (2**63 - 1, 2**63 - 1), (42.0, 42), (np.float64(7.0), 7),
                                        (np.int64(9), 9), (np.float32(3.0), 3)])  # fmt: skip
def test_good_seed(seed, want):
    got = _row(seed=seed).seed
    assert got == want and type(got) is int


def test_derived_seed_is_the_design_formula():
    for row_id in ("row-1", "a", "x" * 128, "clip_000042.v2"):
        assert _row(id=row_id).seed == _formula_seed(row_id)
    # a known value, so a change of formula cannot go unnoticed even if the helper above were changed with it
    assert _formula_seed("row-1") == int.from_bytes(hashlib.sha256(b"row-1").digest()[:8], "big") % 2**63


# -- missing values -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("empty", [None, math.nan, float("nan"), np.float64("nan"), np.float32("nan")])
def test_empty_means_default(empty):
    row = _row(negative_prompt=empty, width=empty, height=empty, num_frames=empty, frame_rate=empty, seed=empty,
               conditions=empty)  # fmt: skip
    assert (row.width, row.height, row.num_frames, row.frame_rate) == (192, 128, 17, 25.0)
    assert row.negative_prompt == "" and row.seed == _formula_seed("row-1") and row.conditions == ()


def test_pandas_na_means_default():
    pd = pytest.importorskip("pandas")
    row = _row(width=pd.NA, seed=pd.NA, negative_prompt=pd.NA)
    assert row.width == 192 and row.seed == _formula_seed("row-1") and row.negative_prompt == ""


def test_pandas_nullable_columns_round_trip():
    """What pandas hands over for a frame with nullable ints written as floats, and all-null columns."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"id": ["a", "b"], "prompt": ["p", "q"], "seed": [5, None], "width": [None, None],
                          "negative_prompt": [None, None], "label": ["cat", "dog"]})  # fmt: skip
    assert frame["seed"].dtype == np.float64
    a, b = (validate_row(r, defaults=DEFAULTS, frame_rate=25.0) for r in frame.to_dict("records"))
    assert a.seed == 5 and b.seed == _formula_seed("b") and a.width == b.width == 192
    assert a.extra == {"label": "cat"} and b.extra == {"label": "dog"}


# -- conditions -----------------------------------------------------------------------------------------------


def _cond(**kw):
    return [{"uri": "/media/a.png", "frame_index": 0, "strength": 1.0, **kw}]


@pytest.mark.parametrize(
    "conditions, field",
    [
        (_cond(frame_index=17), "conditions[0].frame_index"),  # num_frames is 17: the last index is 16
        (_cond(frame_index=-1), "conditions[0].frame_index"),
        (_cond(frame_index=1.5), "conditions[0].frame_index"),
        (_cond(strength=1.5), "conditions[0].strength"),
        (_cond(strength=-0.1), "conditions[0].strength"),
        (_cond(strength="full"), "conditions[0].strength"),
        (_cond(uri="/media/a.txt"), "conditions[0].uri"),
        (_cond(uri="/media/noext"), "conditions[0].uri"),
        (_cond(uri=""), "conditions[0].uri"),
        (_cond(uri=None), "conditions[0].uri"),
        (_cond() + _cond(frame_index=99), "conditions[1].frame_index"),
        ([{"uri": "/a.png", "frame_index": 0, "strenght": 1.0}], "conditions[0]"),
        (["/a.png"], "conditions[0]"),
        ({"uri": "/a.png"}, "conditions"),
        ("/a.png", "conditions"),
    ],
)
def test_bad_condition(conditions, field):
    assert _field(conditions=conditions) == field


def test_good_conditions():
    row = _row(num_frames=17, conditions=[
        {"uri": "/media/a.png", "frame_index": 0, "strength": 1.0},
        {"uri": "s3://bucket/clip.MP4", "frame_index": 16.0, "strength": np.float32(0.5)},
        {"uri": "/media/b.jpg", "frame_index": None, "strength": None},
    ])  # fmt: skip
    a, b, c = row.conditions
    assert (a.uri, a.frame_index, a.strength, a.kind) == ("/media/a.png", 0, 1.0, "image")
    assert (b.uri, b.frame_index, b.strength, b.kind) == ("s3://bucket/clip.MP4", 16, 0.5, "video")
    assert (c.frame_index, c.strength) == (0, 1.0)  # empty struct fields: the first frame, full strength
    # a numpy object array of structs, as pandas holds a list column
    arr = np.empty(1, dtype=object)
    arr[0] = {"uri": "/media/a.png", "frame_index": 0, "strength": 1.0}
    assert _row(conditions=arr).conditions == (a,)


@pytest.mark.parametrize(
    "base, uri, want",
    [
        ("/data/manifests", "media/cat.png", "/data/manifests/media/cat.png"),
        ("/data/manifests", "../media/cat.png", "/data/media/cat.png"),
        ("/data/manifests/", "./cat.png", "/data/manifests/cat.png"),
        ("s3://bucket/prompts", "media/cat.png", "s3://bucket/prompts/media/cat.png"),
        ("s3://bucket/prompts/v2", "../media/clip.mp4", "s3://bucket/prompts/media/clip.mp4"),
        ("s3://bucket/prompts", "s3://other/cat.png", "s3://other/cat.png"),  # absolute URIs stay
        ("s3://bucket/prompts", "/local/cat.png", "/local/cat.png"),
        ("file:///data/m", "cat.png", "file:///data/m/cat.png"),
        (None, "media/cat.png", "media/cat.png"),  # render requests: relative to the current folder
    ],
)
def test_relative_condition_uri_resolves_against_manifest_folder(base, uri, want):
    row = _row(base_uri=base, conditions=[{"uri": uri, "frame_index": 0, "strength": 1.0}])
    assert row.conditions[0].uri == want


def test_relative_uri_above_the_bucket_is_an_error():
    with pytest.raises(RowError) as info:
        _row(base_uri="s3://bucket", conditions=[{"uri": "../../x.png", "frame_index": 0, "strength": 1.0}])
    assert info.value.field == "conditions[0].uri"


# -- pass-through ---------------------------------------------------------------------------------------------


def test_pass_through_columns_land_in_extra():
    row = _row(label="cat", split="train", score=0.5, tags=["a", "b"], seed=3, width=256)
    assert row.extra == {"label": "cat", "split": "train", "score": 0.5, "tags": ["a", "b"]}
    assert row.as_dict()["width"] == 256 and "label" not in row.as_dict()


def test_one_rule_at_a_time():
    """A row with one bad field and everything else good fails on that field alone (not on its neighbours)."""
    good = dict(negative_prompt="x", width=256, height=256, num_frames=9, frame_rate=30, seed=1,
                conditions=[{"uri": "/a.png", "frame_index": 8, "strength": 0.5}])  # fmt: skip
    assert _row(**good).conditions[0].frame_index == 8
    for name, bad in [("width", 250), ("height", 250), ("num_frames", 10), ("frame_rate", -1), ("seed", -1)]:
        assert _field(**{**good, name: bad}) == name


def test_job_defaults_fill_negative_prompt_and_seed_a_row_leaves_empty():
    from ltx_batch import load_job

    job = load_job({"model": {"preset": "ltxv-debug"},
                    "defaults": {"width": 256, "negative_prompt": "blurry", "seed": 11}})  # fmt: skip
    defaults = job.defaults.as_dict()
    filled = validate_row({"id": "a", "prompt": "p"}, defaults=defaults, frame_rate=25.0)
    assert (filled.width, filled.negative_prompt, filled.seed) == (256, "blurry", 11)
    own = validate_row({"id": "b", "prompt": "p", "negative_prompt": "dark", "seed": 5, "width": 96},
                       defaults=defaults, frame_rate=25.0)  # fmt: skip
    assert (own.width, own.negative_prompt, own.seed) == (96, "dark", 5)  # the row's own values win
    unset = validate_row({"id": "c", "prompt": "p"}, defaults=load_job({"model": {"preset": "ltxv-debug"}})
                         .defaults.as_dict(), frame_rate=25.0)  # fmt: skip
    assert unset.negative_prompt == "" and unset.seed == _formula_seed("c")
