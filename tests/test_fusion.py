import numpy as np
import pytest

from ctpet_srgan.fusion import fuse_rgb, window


def test_window_maps_centre_and_edges():
    g = window(np.array([-160.0, 40.0, 240.0, 1000.0]), 40.0, 400.0)
    np.testing.assert_allclose(g, [0.0, 0.5, 1.0, 1.0])


def test_cold_pet_shows_the_ct_and_hot_pet_shows_colour():
    ct = np.full((4, 4), 40.0)  # mid-grey in the default soft-tissue window
    pet = np.zeros((4, 4))
    pet[0, 0] = 5.0  # half of suv_max: the 'hot' map is red-orange there (white only at the top)
    rgb = fuse_rgb(ct, pet, suv_max=10.0)
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 4, 3)
    np.testing.assert_array_equal(rgb[1, 1], [128, 128, 128])  # no uptake: pure grey CT
    r, g, b = rgb[0, 0].astype(int)
    assert r > 150 and r > g + 40 and g > b  # red dominates where there is uptake


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="on one grid"):
        fuse_rgb(np.zeros((4, 4)), np.zeros((8, 8)))


def test_orientation_labels_of_axial_and_rotated_grids():
    from ctpet_srgan.fusion import orientation_labels

    # DICOM axial: columns go to the patient's left (+x), rows to posterior (+y): R on the viewer's left
    assert orientation_labels(np.eye(3)) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    coronal = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float).T  # i: +x, j: -z (head at the top)
    assert orientation_labels(coronal) == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    c, s = np.cos(np.radians(40)), np.sin(np.radians(40))
    oblique = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]], float).T
    assert orientation_labels(oblique)["right"] == "LP"


@pytest.mark.parametrize("width,bar", [(400.0, 50.0), (128.0, 20.0), (60.0, 10.0), (4.0, 0.5)])
def test_scale_bar_is_round_and_about_a_fifth(width, bar):
    from ctpet_srgan.fusion import scale_bar_mm

    assert scale_bar_mm(width) == bar
