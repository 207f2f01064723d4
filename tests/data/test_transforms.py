"""Per-image transforms: hand-checked outputs, torchvision references, reproducibility, config."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from cxrlt.config import AugmentConfig, deterministic_transforms, parse_config
from cxrlt.data.transforms import (
    Pipeline,
    build_pipeline,
    cutout_boxes,
    eval_pipeline,
    resize_to,
    warp_affine,
)
from cxrlt.errors import ConfigError
from cxrlt.registry import TRANSFORMS

# Parameters that make every transform run (p = 1) and actually change the image.
ALWAYS = {
    "resize": {"size": 48},
    "center_crop": {"size": 40},
    "random_crop": {"size": 40},
    "random_resized_crop": {"scale": [0.3, 0.9], "p": 1.0},
    "hflip": {"p": 1.0},
    "affine": {"degrees": 20, "translate": 0.1, "scale": [0.8, 1.2], "shear": 10, "p": 1.0},
    "rotate": {"degrees": 20, "p": 1.0},
    "scale": {"scale": [0.8, 1.2], "p": 1.0},
    "brightness_contrast": {"brightness": 0.2, "contrast": 0.3, "p": 1.0},
    "gamma": {"gamma": [0.5, 2.0], "p": 1.0},
    "gaussian_noise": {"std": [0.02, 0.05], "p": 1.0},
    "blur": {"radius": [0.5, 2.0], "p": 1.0},
    "cutout": {"holes": 2, "size": [0.2, 0.4], "p": 1.0},
}
DETERMINISTIC = {"resize", "center_crop"}  # no p, no draws


def make(name: str, **params):
    return TRANSFORMS.build(name, **params)


def noise_image(height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


def test_registry_lists_every_transform():
    assert TRANSFORMS.names() == sorted(ALWAYS)


@pytest.mark.parametrize("name", sorted(ALWAYS))
def test_uint8_out_and_reproducible_from_the_generator(name):
    transform = make(name, **ALWAYS[name])
    image = noise_image(64, 72)
    first = transform(image, np.random.default_rng(7))
    again = transform(image.copy(), np.random.default_rng(7))
    assert first.dtype == np.uint8 and first.ndim == 2
    np.testing.assert_array_equal(first, again)
    if name not in DETERMINISTIC | {"hflip"}:  # hflip with p = 1 always flips
        others = [transform(image, np.random.default_rng(seed)) for seed in range(8, 12)]
        assert any(other.shape != first.shape or not np.array_equal(other, first) for other in others)


@pytest.mark.parametrize("name", sorted(set(ALWAYS) - DETERMINISTIC))
def test_probability_zero_returns_the_input(name):
    image = noise_image()
    transform = make(name, **{**ALWAYS[name], "p": 0.0})
    assert transform(image, np.random.default_rng(0)) is image


def test_probability_is_the_rate_of_application():
    flip = make("hflip", p=0.3)
    image = noise_image(8, 8)
    flipped = sum(not np.array_equal(flip(image, np.random.default_rng(s)), image) for s in range(4000))
    # Binomial(4000, 0.3): sd = 29.
    assert abs(flipped - 1200) < 120


# ------------------------------------------------------------------ geometry
def test_hflip_is_fliplr():
    image = noise_image(30, 41)
    np.testing.assert_array_equal(make("hflip", p=1.0)(image, np.random.default_rng(0)), np.fliplr(image))


@pytest.mark.parametrize("size", [32, 33])
@pytest.mark.parametrize(("angle", "turns"), [(90, 1), (-90, -1), (180, 2)])
def test_rotation_by_right_angles_matches_rot90(size, angle, turns):
    image = noise_image(size, size)
    rotated = make("rotate", degrees=[angle, angle], p=1.0)(image, np.random.default_rng(0))
    # Bilinear sampling at (almost exactly) integer positions: at most one grey level off.
    difference = np.abs(rotated.astype(int) - np.rot90(image, turns).astype(int))
    assert difference.max() <= 1
    assert difference.mean() < 0.6


@pytest.mark.parametrize(
    ("angle", "translate", "scale", "shear"),
    [(17.0, (3.0, -2.0), 1.2, (0.0, 0.0)), (0.0, (0.0, 0.0), 1.0, (12.0, 0.0)),
     (0.0, (0.0, 0.0), 1.0, (0.0, 9.0)), (23.0, (4.0, 1.0), 0.8, (7.0, -5.0))],
)
def test_warp_affine_equals_torchvision_affine(angle, translate, scale, shear):
    image = noise_image(40, 50)
    ours = warp_affine(image, angle, translate, scale, shear, fill=3)
    # torchvision's affine angle turns clockwise; ours counter-clockwise like np.rot90.
    reference = TF.affine(Image.fromarray(image), angle=-angle, translate=list(translate), scale=scale,
                          shear=list(shear), interpolation=InterpolationMode.BILINEAR, fill=3)
    np.testing.assert_array_equal(ours, np.asarray(reference))


def test_integer_translation_shifts_and_fills():
    image = noise_image(20, 30)
    shifted = warp_affine(image, translate=(5, 3), fill=9)
    expected = np.full_like(image, 9)
    expected[3:, 5:] = image[:-3, :-5]
    np.testing.assert_array_equal(shifted, expected)


def test_zoom_out_by_half_shrinks_a_constant_image_to_the_central_half():
    image = np.full((40, 40), 200, dtype=np.uint8)
    out = make("scale", scale=[0.5, 0.5], p=1.0)(image, np.random.default_rng(0))
    assert (out[11:29, 11:29] == 200).all()
    assert (out[:9] == 0).all() and (out[31:] == 0).all() and (out[:, :9] == 0).all() and (out[:, 31:] == 0).all()


def test_affine_transform_passes_its_drawn_parameters_to_the_warp():
    image = noise_image(36, 40)
    out = make("affine", degrees=[30, 30], p=1.0)(image, np.random.default_rng(3))
    np.testing.assert_array_equal(out, warp_affine(image, 30.0))
    transform = make("affine", translate=[0.1, 0.1], scale=[1.5, 1.5], shear=[8, 8], shear_y=[-4, -4], p=1.0)
    expected = warp_affine(image, 0.0, (0.1 * 40, 0.1 * 36), 1.5, (8.0, -4.0))
    np.testing.assert_array_equal(transform(image, np.random.default_rng(3)), expected)
    # A single `shear` shears along x only, as in torchvision.
    assert make("affine", shear=5).shear_y == (0.0, 0.0)


def coded(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose pixel value is its row (first) or its column (second)."""
    rows, cols = np.indices((height, width))
    return rows.astype(np.uint8), cols.astype(np.uint8)


def test_random_crop_takes_a_window_at_every_position_alike():
    rows, cols = coded(100, 90)
    crop = make("random_crop", size=60)
    tops = []
    for seed in range(3000):
        by_row = crop(rows, np.random.default_rng(seed))
        by_col = crop(cols, np.random.default_rng(seed))
        top, left = int(by_row[0, 0]), int(by_col[0, 0])
        if seed < 20:
            np.testing.assert_array_equal(by_row, rows[top:top + 60, left:left + 60])
            np.testing.assert_array_equal(by_col, cols[top:top + 60, left:left + 60])
        tops.append(top)
    counts = np.bincount(tops, minlength=41)
    assert len(counts) == 41 and counts.min() > 0
    # 41 equally likely positions: each about 73 of 3000 (sd 8.4).
    assert np.abs(counts - 3000 / 41).max() < 40


def test_center_crop_offsets_are_floored():
    rows, cols = coded(101, 90)
    crop = make("center_crop", size=60)
    out_rows, out_cols = crop(rows, None), crop(cols, None)
    assert out_rows.shape == (60, 60)
    assert out_rows[0, 0] == 20 and out_cols[0, 0] == 15


@pytest.mark.parametrize("name", ["random_crop", "center_crop"])
def test_crop_larger_than_the_image_is_a_config_error(name):
    with pytest.raises(ConfigError, match="store_size to at least 300"):
        make(name, size=300)(noise_image(256, 256), np.random.default_rng(0))


def test_random_resized_crop_window_area_ratio_and_content():
    rows, cols = coded(120, 120)
    crop = make("random_resized_crop", scale=[0.3, 0.8], ratio=[0.5, 2.0])
    for seed in range(200):
        by_row = crop(rows, np.random.default_rng(seed))
        by_col = crop(cols, np.random.default_rng(seed))
        h, w = by_row.shape
        top, left = int(by_row[0, 0]), int(by_col[0, 0])
        np.testing.assert_array_equal(by_row, rows[top:top + h, left:left + w])
        # Sides are rounded to whole pixels, hence the slack.
        assert 0.3 - 0.02 <= h * w / 120**2 <= 0.8 + 0.02
        assert 0.5 * 0.97 <= w / h <= 2.0 * 1.03


def test_random_resized_crop_falls_back_to_the_largest_centred_window():
    # A 2:1 to 3:1 window of the whole area never fits a square: centred 100 x 50 (ratio clipped to 2).
    rows, cols = coded(100, 100)
    crop = make("random_resized_crop", scale=[1.0, 1.0], ratio=[2.0, 3.0])
    out_rows = crop(rows, np.random.default_rng(0))
    assert out_rows.shape == (50, 100)
    assert out_rows[0, 0] == 25 and crop(cols, np.random.default_rng(0))[0, 0] == 0


# ----------------------------------------------------------------- intensity
def test_brightness_shifts_a_constant_image_by_a_fraction_of_255():
    image = np.full((10, 10), 100, dtype=np.uint8)
    transform = make("brightness_contrast", brightness=[0.2, 0.2], contrast=[0.5, 2.0], p=1.0)
    out = transform(image, np.random.default_rng(0))
    # Contrast stretches about the mean, which is every pixel here: 100 + 0.2 * 255 = 151.
    assert (out == 151).all()


def test_contrast_stretches_about_the_mean_then_clips():
    image = np.array([[50, 150], [150, 50]], dtype=np.uint8)  # mean 100
    transform = make("brightness_contrast", brightness=[-0.2, -0.2], contrast=[1.5, 1.5], p=1.0)
    out = transform(image, np.random.default_rng(0))
    # 100 +- 1.5 * 50 - 51 = 124 and -26 -> 0.
    np.testing.assert_array_equal(out, [[0, 124], [124, 0]])


def test_contrast_given_as_a_number_is_a_factor_range_about_one():
    transform = make("brightness_contrast", contrast=0.3, brightness=0.1)
    assert transform.contrast == pytest.approx((0.7, 1.3)) and transform.brightness == pytest.approx((-0.1, 0.1))


def test_gamma_lookup():
    image = np.array([[0, 64, 128, 255]], dtype=np.uint8)
    out = make("gamma", gamma=[2.0, 2.0], p=1.0)(image, np.random.default_rng(0))
    # 255 (x / 255) ** 2: 64 -> 16.06, 128 -> 64.25.
    np.testing.assert_array_equal(out, [[0, 16, 64, 255]])


def test_gaussian_noise_has_the_requested_spread():
    image = np.full((200, 200), 128, dtype=np.uint8)
    out = make("gaussian_noise", std=[0.05, 0.05], p=1.0)(image, np.random.default_rng(0))
    residual = out.astype(float) - 128
    assert residual.std() == pytest.approx(0.05 * 255, rel=0.02)
    assert abs(residual.mean()) < 0.2


def test_blur_spreads_a_line_with_the_drawn_standard_deviation():
    line = np.zeros((64, 101), dtype=np.uint8)
    line[:, 50] = 255
    profile = make("blur", radius=[1.5, 1.5], p=1.0)(line, np.random.default_rng(0))[32].astype(float)
    offsets = np.arange(101) - 50
    assert np.sqrt((profile * offsets**2).sum() / profile.sum()) == pytest.approx(1.5, rel=0.02)
    flat = np.full((20, 20), 77, dtype=np.uint8)
    np.testing.assert_array_equal(make("blur", p=1.0)(flat, np.random.default_rng(0)), flat)


# ------------------------------------------------------------------ cutout
def test_cutout_zeroes_exactly_one_square_of_the_drawn_side():
    image = np.full((50, 50), 255, dtype=np.uint8)
    cutout = make("cutout", holes=1, size=[0.2, 0.2], p=1.0)
    inside = 0
    for seed in range(100):
        out = cutout(image, np.random.default_rng(seed))
        ys, xs = np.nonzero(out == 0)
        top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        assert (out[top:bottom, left:right] == 0).all() and len(ys) == (bottom - top) * (right - left)
        assert set(np.unique(out)) == {0, 255}
        assert bottom - top <= 10 and right - left <= 10
        if 0 < top and bottom < 50 and 0 < left and right < 50:
            inside += 1
            assert (bottom - top, right - left) == (10, 10)
    assert inside > 50


def test_cutout_fills_the_boxes_of_cutout_boxes():
    image = noise_image(60, 80)
    out = make("cutout", holes=3, size=[0.1, 0.3], fill=7, p=1.0)(image, np.random.default_rng(5))
    replay = np.random.default_rng(5)
    replay.random()  # the coin, drawn first
    expected = image.copy()
    for top, bottom, left, right in cutout_boxes(60, 80, replay, holes=3, size=(0.1, 0.3)):
        expected[top:bottom, left:right] = 7
    np.testing.assert_array_equal(out, expected)


# ------------------------------------------------------------------ pipeline
def test_seed_003_pipeline_crops_256_to_224_without_resampling():
    image = noise_image(256, 256)
    rows, cols = coded(256, 256)
    pipeline = Pipeline([make("random_crop", size=224), make("hflip", p=1.0)], size=224)
    out = pipeline(image, np.random.default_rng(1))
    top = int(pipeline(rows, np.random.default_rng(1))[0, 0])
    left = int(pipeline(cols, np.random.default_rng(1))[0, -1])
    np.testing.assert_array_equal(out, np.fliplr(image[top:top + 224, left:left + 224]))


def test_pipeline_resizes_a_non_square_crop_to_the_model_size():
    pipeline = Pipeline([make("random_resized_crop", scale=[0.2, 0.5])], size=32)
    out = pipeline(noise_image(100, 100), np.random.default_rng(0))
    assert out.shape == (32, 32) and out.dtype == np.uint8


@pytest.mark.parametrize("specs", [[], [("center_crop", {"size": 64})], [("resize", {"size": 32})]])
def test_pipeline_output_is_a_writable_copy_not_a_view_of_the_store(specs):
    stored = noise_image(64, 64)
    stored.flags.writeable = False  # as a memory-mapped cache would be
    out = Pipeline([make(name, **params) for name, params in specs], size=32 if specs else 64)(
        stored, np.random.default_rng(0))
    assert out.flags.writeable and out.flags.c_contiguous and not np.shares_memory(out, stored)


def test_pipeline_survives_pickling_for_spawned_workers():
    config = AugmentConfig.model_validate({"train": [{"name": name, **params} for name, params in ALWAYS.items()
                                                     if name not in DETERMINISTIC]})
    pipeline = build_pipeline(config.train, size=32)
    clone = pickle.loads(pickle.dumps(pipeline))
    image = noise_image(80, 80)
    np.testing.assert_array_equal(pipeline(image, np.random.default_rng(4)), clone(image, np.random.default_rng(4)))


# ------------------------------------------------------------- evaluation
def test_centre_crop_eval_pipeline_changes_the_model_input():
    image = noise_image(64, 64)
    cropped = eval_pipeline([{"name": "center_crop", "size": 48}], 32)(image)
    np.testing.assert_array_equal(cropped, resize_to(np.ascontiguousarray(image[8:56, 8:56]), 32))
    whole = eval_pipeline([], 32)(image)
    np.testing.assert_array_equal(whole, resize_to(image, 32))
    assert np.abs(cropped.astype(int) - whole.astype(int)).mean() > 10


def test_deterministic_transforms_are_the_ones_whose_output_ignores_the_generator():
    assert deterministic_transforms() == sorted(DETERMINISTIC)
    image = noise_image(64, 64)
    for name, params in {**ALWAYS, "hflip": {"p": 0.5}}.items():  # a mirror with p = 1 draws nothing that matters
        transform = make(name, **params)
        outputs = [transform(image, np.random.default_rng(seed)) for seed in range(8)]
        same = all(np.array_equal(outputs[0], out) for out in outputs)
        assert same == (name in DETERMINISTIC), name
        if name in DETERMINISTIC:
            np.testing.assert_array_equal(transform(image, None), outputs[0])


def test_eval_pipeline_follows_a_point_to_the_model_input():
    _, cols = coded(64, 64)
    crop = eval_pipeline([{"name": "center_crop", "size": 40}], 40)  # no final resize: pixel values are columns
    assert crop(cols)[0, 0] == 12 and crop.map_point(12.5, 30.0, 64, 64) == (0.5, 18.0)
    # 64 -> resize 32 (x 1/2) -> centre 16 (offset 8) -> input 48 (x 3)
    chain = eval_pipeline([{"name": "resize", "size": 32}, {"name": "center_crop", "size": 16}], 48)
    assert chain.map_point(32.0, 20.0, 64, 64) == (24.0, 6.0)


def test_eval_list_refuses_random_transforms_naming_the_key_and_the_allowed_ones():
    raw = {"data": {"sources": [{"name": "csv", "labels": "x.csv"}]},
           "augment": {"eval": [{"name": "center_crop", "size": 224}, {"name": "hflip", "p": 1.0}]}}
    with pytest.raises(ConfigError, match=r"augment\.eval: random transform hflip \(item 1\).*"
                                          r"choose from: center_crop, resize"):
        parse_config(raw)
    with pytest.raises(ConfigError, match=r"random transform random_crop \(item 0\)"):
        eval_pipeline([{"name": "random_crop", "size": 8}], 8)  # as read from a model.json
    config = AugmentConfig.model_validate({"eval": [{"name": "center_crop", "size": 224}]})
    assert eval_pipeline(config.eval, 224).specs == [{"name": "center_crop", "size": 224}]


# -------------------------------------------------------------------- config
def test_yaml_transform_list_validates_with_defaults():
    config = AugmentConfig.model_validate(
        {"train": [{"name": "random_crop", "size": 224}, "hflip", {"name": "rotate", "degrees": 15, "p": 0.3}]}
    )
    assert [spec.name for spec in config.train] == ["random_crop", "hflip", "rotate"]
    assert config.train[1].params == {"p": 0.5}
    assert config.train[2].params == {"degrees": 15.0, "fill": 0, "p": 0.3}


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("hflip", {"p": 1.5}, r"p: Input should be less than or equal to 1"),
        ("rotate", {"degrees": -5}, "must be >= 0"),
        ("rotate", {"degrees": [10, -10]}, "low <= high"),
        ("random_resized_crop", {"scale": [0.5, 1.5]}, "0 < low <= high <= 1"),
        ("gamma", {"gamma": [0, 2]}, "must be > 0"),
        ("cutout", {"holes": 0}, "holes"),
        ("random_crop", {}, "size: required key is missing"),
        ("hflip", {"prob": 0.5}, "prob: unknown key"),
    ],
)
def test_bad_parameters_are_config_errors_naming_the_key(name, params, message):
    with pytest.raises(ConfigError, match=message):
        TRANSFORMS.validate(name, params)
