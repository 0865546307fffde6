"""Tensor data on the wire without protobuf's copies.

Python protobuf (upb) copies a ``bytes`` field when it parses a message and again
on every read of the field: a 32 MiB ``Tensor.data`` costs two 32 MiB copies
beyond the one gRPC makes when it hands the request over, and building a request
costs two more (``tobytes`` and the assignment) before ``SerializeToString``
copies it a third time. This module removes those copies on both sides, using
nothing but protobuf's documented wire format:

Receiving (model services, and clients of their big answers)
    :class:`DetachingParser` parses a message without its big tensor data:
    each ``Tensor.data`` of at least :data:`DETACH_MIN_BYTES` is cut out of the
    wire bytes and replaced by a short random token, the rest is parsed as
    usual, and the data stays where gRPC put it, as a memoryview.
    :func:`labsight.tensors.from_tensor` resolves the token
    (:func:`resolve_detached`), so servicers read tensors as before and get a
    numpy view of the received bytes. Tokens resolve only while the request
    that carried them is alive (:class:`DetachedMessage` holds them), they
    are unguessable, and a token nobody issued is ordinary data. A parser made
    with ``encoded_images`` detaches each big ``EncodedImage.data`` (a file's
    bytes) too: :func:`resolve_detached` gives it as a view of the received
    bytes, which :mod:`labsight.images` reads as a file in place
    (:class:`labsight.buffer_file.BufferFile`) however often it opens the
    image, where every read of the parsed field would copy it whole.

Sending (clients of the model services, and their answers)
    :func:`serialize_with_arrays` writes a message whose tensors' data are
    numpy arrays: the message is serialized without the data, and each array
    is appended as a further occurrence of its field path holding only
    ``data``. Protobuf merges repeated occurrences of a message field, so any
    protobuf parser reads the same request as if the data had been set in
    place; the arrays are copied once, into the message bytes. A servicer
    answers such bytes as an :class:`EncodedMessage`.
"""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from labsight.v1 import tensor_pb2
from labsight.wire import varint

DETACH_MIN_BYTES = 256 * 1024
"""Tensor data of at least this many bytes is left out of the parsed message; smaller
data (and every request smaller than this) is parsed as usual."""

TOKEN_MAGIC = b"\x00LSdtch\x00"
TOKEN_BYTES = len(TOKEN_MAGIC) + 16
"""A token: the magic, then 16 random bytes."""

_TENSOR = tensor_pb2.Tensor.DESCRIPTOR
_DATA_FIELD = _TENSOR.fields_by_name["data"].number
_ENCODED_IMAGE = tensor_pb2.EncodedImage.DESCRIPTOR
_ENCODED_DATA_FIELD = _ENCODED_IMAGE.fields_by_name["data"].number
_WIRE_VARINT, _WIRE_FIXED64, _WIRE_LENGTH, _WIRE_FIXED32 = 0, 1, 2, 5


class _Held:
    """A detached piece of a request: weakly registered under its token, held by its request."""

    __slots__ = ("data", "__weakref__")

    def __init__(self, data: memoryview) -> None:
        self.data = data


_REGISTRY: weakref.WeakValueDictionary[bytes, _Held] = weakref.WeakValueDictionary()


def resolve_detached(data: bytes) -> bytes | memoryview:
    """The tensor data a token stands for, or ``data`` itself when it is no live token."""
    held = _held(data)
    return data if held is None else held.data


def _held(data: bytes) -> _Held | None:
    if len(data) != TOKEN_BYTES or not data.startswith(TOKEN_MAGIC):
        return None
    return _REGISTRY.get(data)


@dataclass
class DetachedMessage:
    """A parsed message and the tensor data detached from it.

    The tokens in ``message`` resolve while this object is referenced: the
    server keeps it for the duration of the call, a client while it reads
    the answer's tensors.
    """

    message: Message
    held: list[_Held] = field(default_factory=list)

    @property
    def detached_bytes(self) -> int:
        """Bytes of tensor data left out of ``message``."""
        return sum(piece.data.nbytes for piece in self.held)


@dataclass(frozen=True)
class _Plan:
    """Where in a message type detachable data can sit: the ``data`` field number (for Tensor
    itself, or EncodedImage) and the message fields, by number, whose types hold such data."""

    data_field: int | None
    children: dict[int, _Plan]


def _plan(descriptor: Descriptor, seen: dict[str, _Plan | None], encoded_images: bool) -> _Plan | None:
    """The plan of ``descriptor``, or None when no tensor (nor, with ``encoded_images``, any
    EncodedImage) can sit in it."""
    name = descriptor.full_name
    if name in seen:
        return seen[name]
    seen[name] = None  # a recursive type refers to itself only through the plan being built
    if name == _TENSOR.full_name:
        plan = _Plan(_DATA_FIELD, {})
    elif encoded_images and name == _ENCODED_IMAGE.full_name:
        plan = _Plan(_ENCODED_DATA_FIELD, {})
    else:
        children: dict[int, _Plan] = {}
        for child in descriptor.fields:
            if child.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            sub = _plan(child.message_type, seen, encoded_images)
            if sub is not None:
                children[child.number] = sub
        plan = _Plan(None, children) if children else None
    seen[name] = plan
    return plan


class _Malformed(Exception):
    """The bytes are not a well-formed message of the expected type (protobuf will say why)."""


def _read_varint(buffer: bytes, position: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= end or shift > 63:
            raise _Malformed
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _strip(
    buffer: bytes, view: memoryview, start: int, end: int, plan: _Plan, held: list[_Held]
) -> list[bytes | memoryview] | None:
    """The pieces of ``buffer[start:end]`` with big tensor data replaced by tokens, or None
    when nothing in it was detached."""
    pieces: list[bytes | memoryview] = []
    copied_to = start
    position = start
    while position < end:
        tag, after_tag = _read_varint(buffer, position, end)
        number, wire = tag >> 3, tag & 7
        if wire == _WIRE_VARINT:
            position = _read_varint(buffer, after_tag, end)[1]
        elif wire == _WIRE_FIXED64:
            position = after_tag + 8
        elif wire == _WIRE_FIXED32:
            position = after_tag + 4
        elif wire == _WIRE_LENGTH:
            length, body = _read_varint(buffer, after_tag, end)
            position = body + length
            if position > end:
                raise _Malformed
            if length < DETACH_MIN_BYTES:
                continue
            if number == plan.data_field:
                piece = _Held(view[body:position])
                token = TOKEN_MAGIC + secrets.token_bytes(16)
                _REGISTRY[token] = piece
                held.append(piece)
                pieces += [view[copied_to:after_tag], varint(TOKEN_BYTES), token]
                copied_to = position
            elif number in plan.children:
                inner = _strip(buffer, view, body, position, plan.children[number], held)
                if inner is not None:
                    content = b"".join(inner)
                    pieces += [view[copied_to:after_tag], varint(len(content)), content]
                    copied_to = position
        else:
            raise _Malformed  # groups (wire types 3, 4) or no wire type at all
    if position != end:
        raise _Malformed
    if not pieces:
        return None
    pieces.append(view[copied_to:end])
    return pieces


class DetachingParser:
    """Parses messages of one type with their big tensor data left on the wire.

    ``parse(data)`` answers a :class:`DetachedMessage`; bytes that are not a
    well-formed message are handed to protobuf whole, so its error is the one
    raised. Model services parse their requests this way (the server's
    interceptor does it, with ``encoded_images``: the files' bytes of their
    EncodedImage messages stay on the wire too); a client parses a big answer
    this way when the response deserializer of its call is ``parse``. Only a
    process that reads the images with :mod:`labsight.images` and never copies
    an EncodedImage on may use ``encoded_images``: elsewhere the token would
    travel in place of the file.
    """

    def __init__(self, message_type: type[Message], encoded_images: bool = False) -> None:
        self.message_type = message_type
        self._plan = _plan(message_type.DESCRIPTOR, {}, encoded_images)

    @property
    def holds_tensors(self) -> bool:
        """Whether a Tensor (or, with ``encoded_images``, an EncodedImage) can sit anywhere in
        this message type."""
        return self._plan is not None

    def parse(self, data: bytes) -> DetachedMessage:
        """``data`` parsed; see the class docstring."""
        if self._plan is None or len(data) < DETACH_MIN_BYTES or not isinstance(data, bytes):
            return DetachedMessage(self.message_type.FromString(data))
        held: list[_Held] = []
        try:
            pieces = _strip(data, memoryview(data), 0, len(data), self._plan, held)
        except _Malformed:
            pieces = None
        if pieces is None:
            return DetachedMessage(self.message_type.FromString(data))
        return DetachedMessage(self.message_type.FromString(b"".join(pieces)), held)


@dataclass(frozen=True)
class EncodedMessage:
    """A message already serialized (by :func:`serialize_with_arrays`): a model service's
    servicer may answer one, and the server's interceptor sends ``data`` as it is; a
    client sends one as a request through :class:`labsight.runtime.encoded_channel.EncodedRequestChannel`."""

    data: bytes


def passing_encoded(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """``serializer``, sending the bytes of an :class:`EncodedMessage` as they are (for a
    gRPC server's responses or a channel's requests)."""
    if serializer is None:
        return None

    def serialize(message: Any) -> bytes:
        if isinstance(message, EncodedMessage):
            return message.data
        return serializer(message)

    return serialize


def _tensor_path(message: Message, path: str) -> tuple[Message, list[int]]:
    """The Tensor at dotted ``path`` of singular message fields in ``message`` and the
    field numbers leading to it; ValueError for a path that names no such Tensor."""
    target = message
    numbers = []
    for name in path.split("."):
        field_descriptor = target.DESCRIPTOR.fields_by_name.get(name)
        if (
            field_descriptor is None
            or field_descriptor.type != FieldDescriptor.TYPE_MESSAGE
            or field_descriptor.is_repeated
        ):
            raise ValueError(
                f"{path!r}: {target.DESCRIPTOR.full_name} has no singular message field {name!r}"
            )
        numbers.append(field_descriptor.number)
        target = getattr(target, name)
    if target.DESCRIPTOR.full_name != _TENSOR.full_name:
        raise ValueError(f"{path!r} is a {target.DESCRIPTOR.full_name}, not a Tensor")
    return target, numbers


def serialize_with_arrays(message: Message, arrays: Mapping[str, Any]) -> bytes:
    """``message`` serialized with each array of ``arrays`` as the Tensor at its dotted
    field path (``{"image.tensor": pixels}``), copying each array's bytes once.

    Sets each Tensor's dtype and shape in ``message`` (its data cleared) as
    :func:`labsight.tensors.write_tensor` would; the bytes parse, with any
    protobuf library, to the message that ``write_tensor`` would have built.

    Raises
    ------
    ValueError
        For a path that is not a chain of singular message fields ending at a Tensor.
    InvalidArgument
        For an array whose dtype has no DataType.
    """
    from labsight.tensors import describe_tensor  # tensors imports this module

    tails: list[bytes | memoryview] = []
    for path, array in arrays.items():
        tensor, numbers = _tensor_path(message, path)
        little = describe_tensor(tensor, array)
        data = memoryview(np.ascontiguousarray(little).reshape(-1).view(np.uint8))
        payload: list[bytes | memoryview] = [varint(_DATA_FIELD << 3 | _WIRE_LENGTH),
                                             varint(data.nbytes), data]
        size = len(payload[0]) + len(payload[1]) + data.nbytes
        for number in reversed(numbers):
            head = varint(number << 3 | _WIRE_LENGTH) + varint(size)
            payload.insert(0, head)
            size += len(head)
        tails += payload
    return b"".join([message.SerializeToString(), *tails])
