"""`labsight convert-hpa-weights` and `train-classifier` hand their arguments to the services' commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from labsight.cli import main


def test_without_arguments_the_converter_says_what_it_needs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["convert-hpa-weights"])
    assert exit_.value.code == 2
    assert "destination" in capsys.readouterr().err


def test_a_file_that_is_no_weight_file_fails_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "dpn_unet_nuclei_v1.pth"
    source.write_bytes(b"not a pickle")
    assert main(["convert-hpa-weights", str(source), str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "out" / "manifest.toml").exists()


def test_train_classifier_refuses_bad_numbers_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train-classifier", str(tmp_path / "model"), "--threads", "0"]) == 1
    assert "--threads" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()
