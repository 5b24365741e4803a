"""Per-channel centring (codec.centring): the offsets found, the decision, the checks."""

from __future__ import annotations

import numpy as np
import pytest

from slicer_compile.codec import SlicerConfig, decode, encode
from slicer_compile.codec.centring import Centre, centred, channel_offsets, choose_centre, restored
from slicer_compile.errors import ArtifactError

RNG = np.random.default_rng(3)


def test_the_channel_axis_is_found_not_assumed():
    nchw = RNG.standard_normal((4, 6, 5, 5)).astype(np.float32) + np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1)
    found = channel_offsets(nchw)
    assert found.axis == 1 and np.allclose(found.offset, np.arange(6), atol=0.3)
    hidden = RNG.standard_normal((2, 16, 8)).astype(np.float32) + np.linspace(-3, 3, 8, dtype=np.float32)
    found = channel_offsets(hidden)
    assert found.axis == 2 and np.allclose(found.offset, np.linspace(-3, 3, 8), atol=0.3)


def test_no_centre_where_the_means_carry_little_energy():
    assert channel_offsets(RNG.standard_normal((4, 8, 6, 6))) is None
    assert channel_offsets(np.zeros((2, 3, 4), np.float32)) is None


def test_centred_and_restored_are_inverse_and_keep_the_dtype():
    centre = Centre(1, np.array([1.5, -2.0, 0.25], np.float32))
    x = RNG.standard_normal((2, 3, 4)).astype(np.float16)
    residual = centred(x, centre)
    assert residual.dtype == np.float16
    np.testing.assert_allclose(restored(residual.astype(np.float32), centre), x, atol=2e-3)
    assert centred(x, None) is x and restored(x, None) is x


def _codec(samples):
    def round_trip(i, centre, sparsity):
        return restored(decode(encode(centred(samples[i], centre), SlicerConfig(sparsity=sparsity))), centre)
    return round_trip


def test_a_centre_is_kept_only_for_a_clear_gain():
    samples = [RNG.standard_normal((2, 4, 8, 8)).astype(np.float32) + 3.0]
    found = choose_centre(samples, _codec(samples), [0.5, 0.9])  # top-k zeroes values sitting at 3
    assert found is not None and np.allclose(found.offset, 3.0, atol=0.2)
    # A coder that centring cannot help (it ignores the centre): the plain choice stays.
    assert choose_centre(samples, lambda i, c, s: _codec(samples)(i, None, s), [0.5, 0.9]) is None


def test_a_relu_map_stays_plain():
    relu = [np.maximum(RNG.standard_normal((2, 4, 16, 16)).astype(np.float32), 0)]
    round_trip, offsets = _codec(relu), channel_offsets(relu[0])

    def error(c, s):
        return float(np.square(round_trip(0, c, s) - relu[0]).sum())

    # At s = 0.5 plain is near lossless (half a ReLU map is zeros), though at 0.9 the
    # centred residual has the lower error: its zeros are not tried.
    assert error(None, 0.5) < 0.01 * error(offsets, 0.5) and error(offsets, 0.9) < error(None, 0.9)
    assert choose_centre(relu, round_trip, [0.9]) is None


def test_a_centre_must_win_at_every_sparsity_checked():
    samples = [RNG.standard_normal((2, 4, 8, 8)).astype(np.float32) + 3.0]
    exact = samples[0]

    def wins_only_at_09(i, centre, sparsity):  # error 1 plain; centred: 0.5 at s = 0.9, 2 at s = 0.5
        scale = 1.0 if centre is None else (0.5 if sparsity == 0.9 else 2.0)
        return exact + np.sqrt(scale / exact.size)

    assert choose_centre(samples, wins_only_at_09, [0.9]) is not None
    assert choose_centre(samples, wins_only_at_09, [0.5, 0.9]) is None


@pytest.mark.parametrize("data, message", [
    ("nope", "must be an object"),
    ({"axis": 0, "offset": [1.0, 2.0]}, "axis must be one of 1..2"),
    ({"axis": True, "offset": [1.0, 2.0, 3.0]}, "axis must be"),
    ({"axis": 1, "offset": [1.0, 2.0]}, "must be 3 numbers"),
    ({"axis": 1, "offset": [1.0, "x", 2.0]}, "must be 3 numbers"),
    ({"axis": 1, "offset": [1.0, float("nan"), 2.0]}, "finite"),
])
def test_a_manifest_centre_is_checked_against_the_tensor(data, message):
    with pytest.raises(ArtifactError, match=message):
        Centre.from_dict(data, (1, 3, 4), "crossing tensor 'x'")


def test_a_centre_survives_the_manifest_exactly():
    centre = Centre(2, RNG.standard_normal(4).astype(np.float32))
    back = Centre.from_dict(centre.as_dict(), (1, 3, 4), "t")
    assert back.axis == 2 and back.offset.dtype == np.float32 and np.array_equal(back.offset, centre.offset)
