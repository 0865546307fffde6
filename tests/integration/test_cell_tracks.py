"""A time-lapse through real servers and Redis, then ``labsight track``: a DAPI movie of drifting
nuclei, one of which divides, submitted one time point per job and followed into a tracks table,
the Cell Tracking Challenge's files and a plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage
from skimage.draw import disk

from labsight.cli import main

from .conftest import InProcessStack

PIXEL_SIZE_UM = 0.5
STEPS = 4


def _nuclei_movie() -> tuple[np.ndarray, dict[int, list[tuple[float, float] | None]]]:
    """(T, Y, X) uint16 DAPI-like frames: five nuclei (radius 10 px) drifting 2 px a time point,
    and a sixth that divides between t=1 and t=2 into two pushed 13 px apart; the true centres
    (row, col) per cell, None where absent."""
    rng = np.random.default_rng(7)
    paths: dict[int, list[tuple[float, float] | None]] = {
        i + 1: [(40.0 + 70 * (i // 3) + 2 * t, 40.0 + 70 * (i % 3) + 2 * t) for t in range(STEPS)]
        for i in range(5)}
    paths[6] = [(150.0, 180.0), (150.0, 180.0), None, None]
    paths[7] = [None, None, (150.0, 167.0), (150.0, 166.0)]
    paths[8] = [None, None, (150.0, 193.0), (150.0, 194.0)]
    frames = []
    for t in range(STEPS):
        frame = np.zeros((220, 240))
        for cell, path in paths.items():
            if path[t] is not None:
                rows, cols = disk(path[t], 12 if cell == 6 else 9, shape=frame.shape)
                frame[rows, cols] = 1.0
        frame = ndimage.gaussian_filter(frame, 1.5) + rng.normal(0, 0.02, frame.shape)
        frames.append((np.clip(frame, 0, 1) * 60000).astype(np.uint16))
    return np.stack(frames), paths


CELL_PARAMS = ("--param", "nucleus_channel=0", "--param", "expand_um=2", "--param", "method=classical")
"""How the movie's time points are segmented: the nuclear stain, grown 2 µm into cells."""


def _submit_time_points(stack: InProcessStack, movie: np.ndarray, folder: Path, batch: str) -> Path:
    """The movie written as a calibrated ImageJ TIFF, its time points submitted as cells jobs of
    ``batch`` and waited for; the file's path."""
    stack.start_worker()
    path = folder / "movie.tif"
    tifffile.imwrite(path, movie, imagej=True, metadata={"axes": "TYX", "unit": "micron"},
                     resolution=(1 / PIXEL_SIZE_UM, 1 / PIXEL_SIZE_UM))
    assert main(["submit", "cells", str(path), "--each-plane", "t", *CELL_PARAMS, "--batch", batch,
                 "--wait", "--gateway", stack.gateway.address, "--token", ""]) == 0
    return path


def test_a_movie_is_followed_into_tracks_ctc_files_and_a_plot(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    movie, paths = _nuclei_movie()
    gateway = ["--gateway", stack.gateway.address, "--token", ""]
    _submit_time_points(stack, movie, tmp_path, "mv")
    capsys.readouterr()
    table_path, ctc, figure = tmp_path / "tracks.csv", tmp_path / "ctc", tmp_path / "tracks.svg"
    assert main(["track", "--batch", "mv", "-o", str(table_path), "--ctc", str(ctc), "--plot",
                 str(figure), *gateway]) == 0
    err = capsys.readouterr().err
    assert "movie.tif: 4 time point(s), 8 track(s), 1 division(s)" in err

    table = pd.read_csv(table_path)
    assert list(table.columns[:5]) == ["movie", "t", "track_id", "parent_track_id", "label"]
    assert sorted(table["t"].unique()) == list(range(STEPS))
    # each true cell is one track: the track found nearest its true centre at every time point
    for cell, cell_path in paths.items():
        tracks = set()
        for t, centre in enumerate(cell_path):
            if centre is None:
                continue
            rows = table[table["t"] == t]
            distance = np.hypot(rows["centroid_y"] - centre[0], rows["centroid_x"] - centre[1])
            assert distance.min() < 2.0, (cell, t)
            tracks.add(int(rows["track_id"].iloc[int(np.argmin(distance))]))
        assert len(tracks) == 1, (cell, tracks)
    daughters = table[table["parent_track_id"] > 0]
    assert sorted(daughters["t"].unique()) == [2, 3] and daughters["track_id"].nunique() == 2
    mother = int(daughters["parent_track_id"].iloc[0])
    assert sorted(table.loc[table["track_id"] == mother, "t"]) == [0, 1]

    folder = ctc / "movie.tif"
    res_track = np.loadtxt(folder / "res_track.txt", dtype=np.int64, ndmin=2)
    assert len(res_track) == 8 and res_track[res_track[:, 0] == mother, 1:].tolist() == [[0, 1, 0]]
    assert sorted(res_track[res_track[:, 3] == mother, 1:3].tolist()) == [[2, 3], [2, 3]]
    for t in range(STEPS):
        mask = tifffile.imread(folder / f"mask{t:03d}.tif")
        assert mask.shape == movie.shape[1:]
        rows = table[table["t"] == t]
        assert sorted(np.unique(mask[mask > 0]).tolist()) == sorted(rows["track_id"].tolist())
        for _, row in rows.iterrows():  # each track's pixels have its cell's area
            assert (mask == row["track_id"]).sum() == row["area_px"]
    svg = figure.read_text()
    assert "movie.tif: 8 tracks, 1 division, 4 time points" in svg

    # the nuclei linked instead: the same tracks, masks of the nuclei
    nuclei_path, nuclei_ctc = tmp_path / "nuclei.parquet", tmp_path / "nuclei_ctc"
    assert main(["track", "--batch", "mv", "--objects", "nuclei", "-o", str(nuclei_path),
                 "--ctc", str(nuclei_ctc), *gateway]) == 0
    by_nuclei = pd.read_parquet(nuclei_path)
    linked = ["t", "label", "track_id", "parent_track_id"]
    assert np.array_equal(by_nuclei[linked].to_numpy(float), table[linked].to_numpy(float))
    sdk = stack.client.batch_tracks("mv", objects="nuclei")  # the Python SDK: the same rows
    assert np.array_equal(sdk[linked].to_numpy(float), table[linked].to_numpy(float))
    assert list(sdk.columns) == list(table.columns)
    with pytest.raises(ValueError, match="objects: expected one of"):
        stack.client.batch_tracks("mv", objects="spots")
    mask = tifffile.imread(nuclei_ctc / "movie.tif" / "mask000.tif")
    first = table[table["t"] == 0]
    assert [(mask == track).sum() for track in first["track_id"]] == first["nucleus_area_px"].tolist()


def test_track_says_what_it_needs(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = ["--gateway", stack.gateway.address, "--token", ""]
    with pytest.raises(SystemExit, match="give -o FILE, --ctc DIR or --plot FILE"):
        main(["track", "--batch", "none", *gateway])
    with pytest.raises(SystemExit, match="name a .csv, .tsv, .parquet file"):
        main(["track", "--batch", "none", "-o", "tracks.xlsx", *gateway])
    with pytest.raises(SystemExit, match="give a cell-tracks JOB_ID or --batch BATCH_ID"):
        main(["track", "-o", str(tmp_path / "t.csv"), *gateway])
    assert main(["track", "--batch", "none", "-o", str(tmp_path / "t.csv"), *gateway]) != 0
    assert "no batch 'none'" in capsys.readouterr().err
    stack.start_worker()
    image = tmp_path / "still.tif"
    tifffile.imwrite(image, np.zeros((24, 24), np.uint8))
    assert main(["submit", "fractal", str(image), "--param", "box_sizes=3", "--batch", "flat",
                 "--wait", *gateway]) == 0
    with pytest.raises(SystemExit, match="batch flat has no finished cells or hpa-cells jobs named "
                                         r"FILE\[t=N\] \(submit with --each-plane t\)"):
        main(["track", "--batch", "flat", "-o", str(tmp_path / "t.csv"), *gateway])


def test_a_cell_tracks_job_gives_what_the_batch_and_labsight_track_give(
    stack: InProcessStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    movie, _ = _nuclei_movie()
    gateway = ["--gateway", stack.gateway.address, "--token", ""]
    path = _submit_time_points(stack, movie, tmp_path, "frames")
    assert main(["submit", "cell-tracks", str(path), *CELL_PARAMS, "--wait", "--json", *gateway]) == 0
    job_id = json.loads(capsys.readouterr().out.splitlines()[-1])["job_id"]
    batch = stack.client.batch_tracks("frames")
    result = stack.client.result(job_id)
    tracks = result.to_pandas("tracks")
    linked = ["t", "label", "track_id", "parent_track_id", "area_px", "mean_ch0"]
    assert np.array_equal(tracks[linked].to_numpy(float), batch[linked].to_numpy(float))
    assert result.scalars == {"track_count": 8.0, "division_count": 1.0, "time_points": 4.0}
    lineage = result.to_pandas("lineage")
    assert list(lineage.columns) == ["first_t", "last_t", "parent_track_id"]
    assert (lineage["parent_track_id"] > 0).sum() == 2
    labels = result.tensor("track_labels")
    assert labels.shape == movie.shape and labels.dtype == np.uint16
    for t in range(STEPS):
        rows = tracks[tracks["t"] == t]
        assert [(labels[t] == track).sum() for track in rows["track_id"]] == rows["area_px"].tolist()
    assert result.provenance["pixel_size_source"] == "file: ImageJ calibration"
    assert result.provenance["time_points"] == "4" and result.provenance["linked_objects"] == "cells"

    # labsight track JOB_ID writes what labsight track --batch writes for the time points
    for source, folder in (([job_id], "job"), (["--batch", "frames"], "batch")):
        assert main(["track", *source, "-o", str(tmp_path / f"{folder}.csv"), "--ctc",
                     str(tmp_path / folder), "--plot", str(tmp_path / f"{folder}.svg"),
                     *gateway]) == 0
    job_rows, batch_rows = pd.read_csv(tmp_path / "job.csv"), pd.read_csv(tmp_path / "batch.csv")
    assert list(job_rows.columns) == list(batch_rows.columns)
    assert np.allclose(job_rows.drop(columns="movie").to_numpy(float),
                       batch_rows.drop(columns="movie").to_numpy(float), equal_nan=True)
    for name in ("res_track.txt", *(f"mask{t:03d}.tif" for t in range(STEPS))):
        made = [tmp_path / folder / "movie.tif" / name for folder in ("job", "batch")]
        if name.endswith(".txt"):
            assert made[0].read_text() == made[1].read_text()
        else:
            assert np.array_equal(tifffile.imread(made[0]), tifffile.imread(made[1]))
    assert "8 tracks, 1 division" in (tmp_path / "job.svg").read_text()
    capsys.readouterr()
    assert main(["plot", job_id, "-o", str(tmp_path / "plot.svg"), *gateway]) == 0
    assert "tracks plot of 1 result" in capsys.readouterr().err
    assert "movie.tif: 8 tracks, 1 division, 4 time points" in (tmp_path / "plot.svg").read_text()
    with pytest.raises(SystemExit, match="ran cells; give a cell-tracks job"):
        main(["track", stack.client.list_jobs("frames")[0].job_id, "-o", str(tmp_path / "x.csv"),
              *gateway])


def test_cell_tracks_refuses_what_is_no_movie_naming_it(
    stack: InProcessStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import grpc

    from labsight.images import image_from_array
    from labsight.v1 import tensor_pb2

    def encoded(array: np.ndarray, axes: str) -> tensor_pb2.Image:
        path = tmp_path / f"{axes}.tif"
        tifffile.imwrite(path, array, imagej=True, metadata={"axes": axes})
        return tensor_pb2.Image(encoded=tensor_pb2.EncodedImage(data=path.read_bytes()))

    movie = encoded(np.zeros((3, 2, 32, 32), np.uint8), "TZYX")
    still = encoded(np.zeros((32, 32), np.uint8), "YX")
    cases = [
        (still, {"nucleus_channel": "0"}, "input.image: no time axis (T) in its axes YX"),
        (movie, {"nucleus_channel": "0", "plane": "t=1"}, "params.plane: the time axis is the movie's"),
        (movie, {"nucleus_channel": "0"}, "a stack"),  # z neither chosen nor projected
        (image_from_array(np.zeros((32, 32), np.uint8)), {"nucleus_channel": "0"},
         "input.image: a time-lapse file (a TIFF with a T axis) is needed"),
        (movie, {"nucleus_channel": "0", "plane": "z=1", "objects": "spots"},
         "params.objects: expected one of ['cells', 'nuclei']"),
        (movie, {"nucleus_channel": "0", "plane": "z=1", "min_iou": "0"},
         "params.min_iou: expected a number in (0, 1]"),
    ]
    for image, params, message in cases:
        with pytest.raises(grpc.RpcError) as error:
            stack.client.submit("cell-tracks", image, params)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, params
        assert message in error.value.details(), error.value.details()
    job = stack.client.submit("cell-tracks", movie, {"nucleus_channel": "0", "plane": "z=1"})
    assert job.params["plane"] == "z=1,t=0"  # read at its first time point when checked
    # 3 time points of 32x32 need 12,288 bytes of track labels: over a room of 10,000
    from labsight.config import MESSAGE_RESERVE_BYTES

    monkeypatch.setenv("LABSIGHT_MAX_MESSAGE_BYTES", str(MESSAGE_RESERVE_BYTES + 10_000))
    with pytest.raises(grpc.RpcError) as error:
        stack.client.submit("cell-tracks", movie, {"nucleus_channel": "0", "plane": "z=1"})
    assert "3 time points of 32x32 give track labels of 12288 bytes" in error.value.details()
    assert "labsight submit cells FILE --each-plane t" in error.value.details()
