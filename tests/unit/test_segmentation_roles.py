"""Nuclei and cells of images whose channels are named by role (services/segmentation/roles.py):
a nuclear stain alone grown by a distance, a cytoplasm channel as HPA's red and yellow, and
roles that do not fit the image."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.segmentation import expand_labels

from labsight.errors import InvalidArgument
from services.segmentation.cells import segment_cells, segment_nuclei
from services.segmentation.roles import ChannelRoles, segment_by_roles


def _field(seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint16: a protein, six round nuclei (10 µm at 0.5 µm) 70 px apart, and a
    cytoplasm stain of 40 px discs round them."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices((160, 240))
    centres = [(40 + 80 * (i // 3), 40 + 80 * (i % 3)) for i in range(6)]
    distance = np.min([np.hypot(rows - r, cols - c) for r, c in centres], axis=0)
    nuclei = ndimage.gaussian_filter((distance < 10) * 1.0, 1.5)
    cytoplasm = ndimage.gaussian_filter((distance < 30) * 0.7, 1.5)
    protein = rng.random(distance.shape) * 0.3
    image = np.stack([protein, nuclei, cytoplasm], axis=-1) + rng.normal(0, 0.02, (160, 240, 3))
    return (np.clip(image, 0, 1) * 65535).astype(np.uint16)


def test_a_nuclear_stain_alone_grows_each_nucleus_by_the_distance() -> None:
    image = _field()
    nuclei, cells = segment_by_roles(image, ChannelRoles(1, expand_um=4.0), pixel_size_um=0.5,
                                     method="classical")
    assert np.array_equal(nuclei, segment_nuclei(image[..., 1], pixel_size_um=0.5,
                                                 method="classical"))
    assert len(np.unique(nuclei[nuclei > 0])) == 6
    assert np.array_equal(cells, expand_labels(nuclei, distance=8.0))  # 4 µm = 8 px
    assert np.all(cells[nuclei > 0] == nuclei[nuclei > 0])
    _, same = segment_by_roles(image, ChannelRoles(1), pixel_size_um=0.5, method="classical")
    assert np.array_equal(same, nuclei)  # no distance: each cell is its nucleus


def test_one_cytoplasm_channel_stands_for_hpa_red_and_yellow() -> None:
    image = _field()
    nuclei, cells = segment_by_roles(image, ChannelRoles(1, (2,)), pixel_size_um=0.5,
                                     method="classical")
    expected = segment_cells(image[..., 2], image[..., 2], image[..., 1], pixel_size_um=0.5,
                             method="classical")
    assert np.array_equal(nuclei, expected[0]) and np.array_equal(cells, expected[1])
    assert len(np.unique(cells[cells > 0])) == 6
    assert (cells > 0).sum() > 4 * (nuclei > 0).sum()  # the cells follow the 30 px discs


@pytest.mark.parametrize(("roles", "message"), [
    (ChannelRoles(3), "roles.nucleus: channel 3, but the image has 3 channel(s), 0 to 2"),
    (ChannelRoles(0, (5,)), "roles.cytoplasm: channel 5"),
    (ChannelRoles(0, (1, 2, 2)), "roles.cytoplasm: 3 channels; give at most 2"),
    (ChannelRoles(0, expand_um=-1.0), "roles.expand_um: expected 0 to 100 µm, got -1"),
    (ChannelRoles(0, expand_um=float("nan")), "roles.expand_um: expected 0 to 100 µm"),
    (ChannelRoles(0, (1,), expand_um=2.0), "roles.expand_um: cells grow by a distance only"),
])
def test_roles_that_do_not_fit_the_image_are_refused_naming_the_role(
    roles: ChannelRoles, message: str
) -> None:
    with pytest.raises(InvalidArgument) as error:
        segment_by_roles(np.zeros((32, 32, 3), np.uint8), roles, pixel_size_um=0.5,
                         method="classical")
    assert message in str(error.value)
