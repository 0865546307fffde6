"""Which channel of a lab's image is the nuclear stain, and which show the cytoplasm: the ``cells``
pipeline's ``nucleus_channel`` and ``cytoplasm_channels``, by index or by the names the file
gives its channels (OME ``Channel Name``, ImageJ labels), resolved against the channels as
the job reads them."""

from __future__ import annotations

from labsight.errors import InvalidArgument, echo
from labsight.image_reader import parse_channels
from labsight.images import series_layout
from labsight.v1 import tensor_pb2

ChannelChoice = int | str
"""A channel by its index among the channels as read, or by its name."""

MAX_CYTOPLASM_CHOICES = 2
"""Cytoplasm channels a job may name (the cell methods take two, HPA's red and yellow; the
segmentation service's services.segmentation.roles.MAX_CYTOPLASM_CHANNELS, which a test pins it
to)."""


def parse_channel_choice(text: str) -> ChannelChoice | None:
    """'2' or 'DAPI' to 2 or 'DAPI'; '' to None (not given); ValueError for several."""
    choices = parse_channels(text)
    if len(choices) > 1:
        raise ValueError(f"expected one channel (an index like 0 or a name like DAPI), got "
                         f"{echo(text)}")
    return choices[0] if choices else None


def parse_cytoplasm_choices(text: str) -> tuple[ChannelChoice, ...]:
    """'1' or 'WGA,Tubulin' to up to two channel choices; ValueError for more."""
    choices = parse_channels(text)
    if len(choices) > MAX_CYTOPLASM_CHOICES:
        raise ValueError(f"expected at most {MAX_CYTOPLASM_CHOICES} channels, got {len(choices)} in "
                         f"{echo(text)}")
    return choices


def channel_names_as_read(image: tensor_pb2.Image, field: str, count: int) -> tuple[str, ...]:
    """The names of the ``count`` channels an image gives as read with its ``read`` options.

    The file's channel names (for the series chosen), in the order ``read.channels`` picks
    them: a channel picked by name is that name, one picked by index the file's name for it.
    Where the file names none (a PNG, a tensor, a TIFF without metadata) or not every channel
    read, a channel is ``ch<i>``, ``i`` its index in the file. Reads headers only.
    """
    layout = series_layout(image, field, image.read.series)
    # names are per channel of the C axis; samples of a pixel (RGB) have none
    file_names = layout.channel_names if layout.size("S") == 1 else ()
    picks = parse_channels(image.read.channels) or tuple(range(count))
    names = []
    for pick in picks:
        if isinstance(pick, str):
            names.append(pick)
        elif pick < len(file_names):
            names.append(file_names[pick])
        else:
            names.append(f"ch{pick}")
    return tuple(names) if len(names) == count else tuple(f"ch{i}" for i in range(count))


def resolve_channel(choice: ChannelChoice, names: tuple[str, ...], param: str) -> int:
    """The index among the channels as read of a choice: an index is checked against their
    count; a name is found among ``names`` (exactly, else ignoring case).

    Raises
    ------
    InvalidArgument
        Naming ``param``: an index beyond the channels, a name none has (listing theirs).
    """
    count = len(names)
    if isinstance(choice, int):
        if choice >= count:
            raise InvalidArgument(f"{param}: channel {choice}, but the image has {count} "
                                  f"channel(s) as read, 0 to {count - 1} ({', '.join(names)})")
        return choice
    if choice in names:
        return names.index(choice)
    folded = [name.casefold() for name in names]
    if folded.count(choice.casefold()) == 1:
        return folded.index(choice.casefold())
    raise InvalidArgument(f"{param}: no channel named {echo(choice)}; the image's channels as "
                          f"read are {', '.join(f'{i} {name}' for i, name in enumerate(names))} "
                          "(give a name or an index)")
