"""Cells followed through generated movies whose true tracks are known (labsight/tracking.py):
drifting cells under shuffled labels, a division, a cell that jumps further than its size,
cells that appear and vanish, and fields of thousands of cells."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from labsight.tracking import link_frames

SHAPE = (200, 260)


def _movie(centres: dict[int, list[tuple[float, float] | None]], radius: float = 9.0,
           seed: int = 0) -> tuple[list[np.ndarray], list[dict[int, int]]]:
    """Disc masks of cells whose true id -> centre (row, col) per time point (None: absent),
    each time point's labels shuffled; and per time point the true id of each label."""
    rng = np.random.default_rng(seed)
    steps = len(next(iter(centres.values())))
    frames, truth = [], []
    for t in range(steps):
        present = [cell for cell, path in centres.items() if path[t] is not None]
        shuffled = rng.permutation(len(present)) + 1 + int(rng.integers(0, 50))
        mask = np.zeros(SHAPE, np.int32)
        for cell, label in zip(present, shuffled, strict=True):
            rows, cols = disk(centres[cell][t], radius, shape=SHAPE)  # type: ignore[arg-type]
            mask[rows, cols] = label
        frames.append(mask)
        truth.append({int(label): cell for cell, label in zip(present, shuffled, strict=True)})
    return frames, truth


def _true_ids(tracks, truth: list[dict[int, int]]) -> list[dict[int, int]]:
    """Per time point, the true cell id of each track id."""
    return [{int(track): truth[t][int(label)] for label, track in
             zip(tracks.labels[t], tracks.track_ids[t], strict=True)} for t in range(len(truth))]


def test_drifting_cells_keep_their_tracks_whatever_their_labels() -> None:
    rng = np.random.default_rng(3)
    starts = [(30 + 50 * (i // 4), 30 + 60 * (i % 4)) for i in range(12)]
    steps = rng.normal(0, 2.0, (12, 6, 2)).cumsum(axis=1)
    centres = {i + 1: [(starts[i][0] + steps[i, t, 0], starts[i][1] + steps[i, t, 1])
                       for t in range(6)] for i in range(12)}
    frames, truth = _movie(centres)
    tracks = link_frames(frames, pixel_size_um=0.5)
    mapping = _true_ids(tracks, truth)
    assert all(m == mapping[0] for m in mapping)  # one track per true cell, all the way
    assert len(tracks.lineage) == 12
    assert tracks.lineage[:, 1].tolist() == [0] * 12 and tracks.lineage[:, 2].tolist() == [5] * 12
    assert not tracks.lineage[:, 3].any() and tracks.divisions() == 0
    relabelled = tracks.relabelled(3, frames[3])
    for label, track in zip(tracks.labels[3], tracks.track_ids[3], strict=True):
        assert np.array_equal(relabelled == track, frames[3] == label)


def test_a_division_ends_the_mother_and_begins_two_daughters() -> None:
    mother = [(100.0, 100.0), (100.0, 101.0), None, None]
    first = [None, None, (100.0, 94.0), (100.0, 91.0)]
    second = [None, None, (100.0, 108.0), (100.0, 111.0)]
    bystander = [(40.0, 200.0), (41.0, 200.0), (42.0, 201.0), (43.0, 201.0)]
    frames, truth = _movie({1: mother, 2: first, 3: second, 4: bystander}, radius=8.0)
    # the mother is big, the daughters lie mostly inside where she was
    rows, cols = disk((100, 100), 14, shape=SHAPE)
    for t in (0, 1):
        label = next(label for label, cell in truth[t].items() if cell == 1)
        frames[t][rows, cols] = label
    tracks = link_frames(frames, pixel_size_um=0.5)
    mapping = _true_ids(tracks, truth)
    mother_track = next(track for track, cell in mapping[0].items() if cell == 1)
    daughters = sorted(track for track, cell in mapping[2].items() if cell in (2, 3))
    assert len(daughters) == 2 and mother_track not in daughters
    lineage = {int(row[0]): row[1:].tolist() for row in tracks.lineage}
    assert lineage[mother_track] == [0, 1, 0]  # ends at the time point before the division
    assert [lineage[d] for d in daughters] == [[2, 3, mother_track]] * 2
    assert mapping[3] == mapping[2] and tracks.divisions() == 1
    bystander_track = next(track for track, cell in mapping[0].items() if cell == 4)
    assert lineage[bystander_track] == [0, 3, 0]


def test_a_newcomer_touching_where_a_cell_was_is_no_daughter() -> None:
    resident = [(100.0, 100.0)] * 3
    newcomer = [None, (100.0, 116.0), (100.0, 117.0)]  # 16 px away: 4% of it over the resident
    frames, _ = _movie({1: resident, 2: newcomer}, radius=9.0)
    tracks = link_frames(frames, pixel_size_um=0.5, max_distance_um=0.0)
    assert tracks.divisions() == 0
    assert sorted(tracks.lineage[:, 1:].tolist()) == [[0, 2, 0], [1, 2, 0]]


def test_a_jump_within_the_distance_is_followed_and_beyond_it_begins_a_track() -> None:
    # 30 px between time points: no overlap with discs of radius 9, 15 µm at 0.5 µm a pixel
    jumper = [(100.0, 40.0), (100.0, 70.0), (100.0, 100.0)]
    frames, truth = _movie({1: jumper})
    followed = link_frames(frames, pixel_size_um=0.5, max_distance_um=20.0)
    assert [ids.tolist() for ids in followed.track_ids] == [[1], [1], [1]]
    lost = link_frames(frames, pixel_size_um=0.5, max_distance_um=10.0)
    assert [ids.tolist() for ids in lost.track_ids] == [[1], [2], [3]]
    assert lost.lineage.tolist() == [[1, 0, 0, 0], [2, 1, 1, 0], [3, 2, 2, 0]]
    assert link_frames(frames, pixel_size_um=0.5, max_distance_um=0.0).lineage.shape == (3, 4)


def test_cells_that_appear_and_vanish_begin_and_end_tracks() -> None:
    stays = [(50.0, 50.0)] * 4
    leaves = [(150.0, 50.0), (150.0, 52.0), None, None]
    arrives = [None, (50.0, 200.0), (51.0, 200.0), (52.0, 201.0)]
    frames, truth = _movie({1: stays, 2: leaves, 3: arrives})
    frames.insert(2, np.zeros(SHAPE, np.int32))  # an empty time point between
    truth.insert(2, {})
    tracks = link_frames(frames, pixel_size_um=0.5, max_distance_um=0.0)
    spans = sorted(row[1:3].tolist() for row in tracks.lineage)
    assert spans == [[0, 1], [0, 1], [1, 1], [3, 4], [3, 4]]  # the empty frame breaks every track


def test_thousands_of_cells_link_by_groups() -> None:
    side = 1200
    rows, cols = np.mgrid[6:side:12, 6:side:12]
    centres = np.column_stack([rows.ravel(), cols.ravel()]).astype(float)
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(2):
        mask = np.zeros((side, side), np.int32)
        for label, (r, c) in enumerate(centres, start=1):
            mask[int(r) - 4:int(r) + 4, int(c) - 4:int(c) + 4] = label
        frames.append(mask)
        centres = centres + rng.integers(-1, 2, centres.shape)
    tracks = link_frames(frames, pixel_size_um=1.0)
    assert len(tracks.labels[0]) == 10_000
    assert np.array_equal(tracks.track_ids[0], tracks.track_ids[1])  # label k stays track k


@pytest.mark.parametrize(("frames", "kwargs", "message"), [
    ([], {}, "frames: give at least one"),
    ([np.zeros((4, 4), np.float32)], {}, "frames[0]: expected a 2-D integer label mask"),
    ([np.zeros((4, 4), np.int32), np.zeros((4, 5), np.int32)], {}, "frames[1]: shape [4, 5]"),
    ([np.zeros((4, 4), np.int32)], {"pixel_size_um": 0.0}, "pixel_size_um: must be > 0"),
    ([np.zeros((4, 4), np.int32)], {"min_iou": 0.0}, "min_iou: must be in (0, 1]"),
    ([np.zeros((4, 4), np.int32)], {"max_distance_um": -1.0}, "max_distance_um: must be >= 0"),
])
def test_bad_input_is_refused_naming_it(frames: list[np.ndarray], kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        link_frames(frames, **{"pixel_size_um": 1.0, **kwargs})
    assert message in str(error.value)
