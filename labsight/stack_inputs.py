"""Many small image files as few jobs: same-size files packed into the stack tensor of a
pipeline that takes one (fractal's ``tiles``, deep-features' ``patches``), each image named
by its file so the result's rows carry the file names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labsight.errors import LabSightError
from labsight.image_messages import image_from_file
from labsight.images import decode_image, image_info
from labsight.inputs import InputError, InputFile
from labsight.v1 import gateway_pb2 as pb
from labsight.v1 import tensor_pb2

__all__ = ["STACK_MAX_BYTES", "STACK_ROLES", "StackFiles", "stack_files", "stack_pixels", "stack_request"]

STACK_ROLES = {"fractal": "tiles", "deep-features": "patches"}
"""The stack tensor of each pipeline that takes one, by pipeline."""

STACK_MAX_BYTES = 16 * 1024 * 1024
"""Most decoded bytes of one packed stack: a stack of larger images holds fewer of them, so a
job stays well inside a message (LABSIGHT_MAX_MESSAGE_BYTES, 64 MiB by default)."""


@dataclass(frozen=True)
class StackFiles:
    """Same-size image files (one shape and dtype) that go as one job's stack."""

    files: tuple[InputFile, ...]

    @property
    def path(self) -> Path:
        """The first file, standing for the stack in messages."""
        return self.files[0].path

    @property
    def name(self) -> str:
        """The job's name: the first file's, and how many more the stack holds."""
        more = len(self.files) - 1
        return f"{self.files[0].name} (+{more} more)" if more else self.files[0].name

    @property
    def names(self) -> list[str]:
        """Each image's name (its file's), in stack order."""
        return [file.name for file in self.files]


def stack_files(files: Sequence[InputFile], per_stack: int) -> list[StackFiles]:
    """The files in stacks of up to ``per_stack`` images of one shape and dtype (read from
    each file's header), in the order their first file came, each stack's files in their
    order; a stack of large images holds fewer, at most STACK_MAX_BYTES decoded.

    Raises
    ------
    ValueError
        If ``per_stack`` is below 1.
    InputError
        Naming a file whose header cannot be read.
    """
    if per_stack < 1:
        raise ValueError(f"per_stack must be >= 1, got {per_stack}")
    groups: dict[tuple[tuple[int, ...], str], list[InputFile]] = {}
    for file in files:
        try:
            info = image_info(image_from_file(file.path), str(file.path))
        except (OSError, LabSightError) as error:
            raise InputError(f"{file.path}: {error}") from None
        groups.setdefault((tuple(info.shape), info.dtype.str), []).append(file)
    stacks = []
    for (shape, dtype), members in groups.items():
        image_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        size = max(1, min(per_stack, STACK_MAX_BYTES // max(image_bytes, 1)))
        stacks += [StackFiles(tuple(members[start : start + size]))
                   for start in range(0, len(members), size)]
    return stacks


def stack_pixels(stack: StackFiles) -> np.ndarray:
    """The stack's (N, H, W[, C]) pixels, each file decoded as the services decode it."""
    return np.stack([decode_image(image_from_file(file.path), str(file.path)) for file in stack.files])


def stack_request(pipeline: str, stack: StackFiles, params: Mapping[str, object] | None = None,
                  **options: Any) -> pb.SubmitJobRequest:
    """The SubmitJobRequest of one stack: its pixels as the pipeline's stack tensor
    (STACK_ROLES), each image named by its file, the job by the stack; ``options`` those of
    :func:`labsight.client.build_request` (``tensors`` and ``images`` go beside the stack).

    Raises
    ------
    KeyError
        For a pipeline that takes no stack.
    """
    from labsight.client import build_request

    role = STACK_ROLES[pipeline]
    tensors = {**(options.pop("tensors", None) or {}), role: stack_pixels(stack)}
    return build_request(pipeline, tensor_pb2.Image(name=stack.name), params, tensors=tensors,
                         tensor_names={role: stack.names}, **options)
