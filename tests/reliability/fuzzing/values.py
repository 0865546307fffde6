"""Hostile scalar values, by the field they are aimed at and by protobuf type.

Each value is labelled with its input class (``"id:suffix-result"``, ``"number:nan"``),
so a finding says which kind of input caused it. Values that name the fuzz run's
own objects (ids of jobs and batches it created) come from :class:`World`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

Labelled = tuple[str, object]
HUGE = 20_000
"""Length of the 'huge' strings: larger than gRPC's 16 KiB status-details limit when echoed."""


@dataclass
class World:
    """Ids the fuzz run created, per tenant, so cases can aim at real and foreign objects."""

    tenants: tuple[str, str]
    job_ids: dict[str, list[str]] = field(default_factory=dict)
    batch_ids: dict[str, list[str]] = field(default_factory=dict)
    batch_stem: str = "plate"
    models: dict[str, list[str]] = field(default_factory=dict)
    """Model name → its public layer names (as ListModels answered)."""
    layer_paths: dict[str, list[str]] = field(default_factory=dict)
    """Model name → every module path a layer may name (ListModels with_layer_paths, once
    the model is loaded); each distinct one costs the features service an engine."""

    def own_and_foreign(self, tenant: str, kind: str) -> tuple[list[str], list[str]]:
        """This tenant's ids of ``kind`` ('job' or 'batch') and the other tenant's (only those
        this tenant does not have too: both tenants may own a batch of the same name)."""
        table = self.job_ids if kind == "job" else self.batch_ids
        other = next(t for t in self.tenants if t != tenant)
        own = table.get(tenant, [])
        return own, [i for i in table.get(other, []) if i not in own]


def hostile_strings(rng: np.random.Generator) -> list[Labelled]:
    """Strings any text field should survive."""
    return [
        ("string:empty", ""),
        ("string:space", " "),
        ("string:huge", "x" * HUGE),
        ("string:huge-unicode", "\u00e9\u6f22\U0001f9ea" * (HUGE // 3)),
        ("string:unicode", "\u30b8\u30e7\u30d6-\u0661\u0662\u0663-\U0001f52c"),
        ("string:nul", "a\x00b"),
        ("string:newlines", "a\r\nb\n"),
        ("string:glob", "*?[a-z]\\"),
        ("string:path", "../../etc/passwd"),
        ("string:format", "%s%n{0}{}"),
        ("string:redis-separator", "a:b:c"),
        ("string:rtl-control", "\u202eabc\u200b"),
        ("string:random", rng.bytes(24).hex()),
    ]


def hostile_ids(rng: np.random.Generator, world: World, tenant: str, kind: str) -> list[Labelled]:
    """Job or batch ids: the tenant's own, another tenant's, with Redis key suffixes, odd text."""
    own, foreign = world.own_and_foreign(tenant, kind)
    values: list[Labelled] = [(f"id:own-{kind}", i) for i in own[:2]]
    values += [(f"id:other-tenant-{kind}", i) for i in foreign[:2]]
    bases = own[:1] + [world.batch_stem]
    for base in bases:
        for suffix in (":result", ":jobs", ":input", ":counts", ":events", ":*", ":"):
            values.append((f"id:suffix-{suffix.strip(':') or 'colon'}", base + suffix))
        values.append(("id:prefix-colon", ":" + base))
    values += [
        ("id:missing", "does-not-exist-" + rng.bytes(4).hex()),
        ("id:uuid-like", "00000000-0000-0000-0000-000000000000"),
        ("id:huge", "j" * HUGE),
    ]
    values += [(label.replace("string:", "id:"), value) for label, value in hostile_strings(rng)]
    return values


def numbers_as_text() -> list[Labelled]:
    """Numeric text: overflowing, non-finite, negative, locale digits, underscores."""
    return [
        ("number:huge-int", "99999999999999999999"),
        ("number:uint64-overflow", "18446744073709551616"),
        ("number:int64-min", "-9223372036854775808"),
        ("number:4301-digits", "9" * 4301),
        ("number:negative", "-1"),
        ("number:zero", "0"),
        ("number:float", "1.5"),
        ("number:1e30", "1e30"),
        ("number:1e309", "1e309"),
        ("number:nan", "nan"),
        ("number:inf", "inf"),
        ("number:-inf", "-inf"),
        ("number:arabic-digits", "\u0661\u0662"),
        ("number:underscore", "1_0"),
        ("number:padded", " 7 "),
        ("number:hex", "0x10"),
    ]


def box_sizes_text() -> list[Labelled]:
    """box_sizes parameter values: ranges with absurd bounds, malformed lists."""
    return [
        ("box_sizes:valid-range", "3-9"),
        ("box_sizes:valid-list", "3,5,7"),
        ("box_sizes:range-10000001", "3-10000001"),
        ("box_sizes:range-20-digits", "3-99999999999999999999"),
        ("box_sizes:range-4301-digits", "3-" + "9" * 4301),
        ("box_sizes:reversed", "41-3"),
        ("box_sizes:negative", "-3-5"),
        ("box_sizes:double-dash", "3--5"),
        ("box_sizes:open", "3-"),
        ("box_sizes:dash", "-"),
        ("box_sizes:even", "4,6"),
        ("box_sizes:repeat", "3,3"),
        ("box_sizes:one", "1"),
        ("box_sizes:image-size", "3-31"),
        ("box_sizes:larger-than-image", "3-301"),
        ("box_sizes:many", ",".join(str(r) for r in range(3, 20001, 2))),
        ("box_sizes:mixed", "3-9,11"),
        ("box_sizes:float", "3.0,5.0"),
        ("box_sizes:unicode-digits", "\u0663-\u0669"),
        ("box_sizes:empty-items", ",,,"),
    ]


def floats_as_text() -> list[Labelled]:
    """Float parameter values such as spot_diameter."""
    return [
        ("float:valid", "8"),
        ("float:nan", "nan"),
        ("float:inf", "inf"),
        ("float:-inf", "-inf"),
        ("float:1e30", "1e30"),
        ("float:1e309", "1e309"),
        ("float:negative", "-5"),
        ("float:zero", "0"),
        ("float:tiny", "1e-300"),
        ("float:huge-image-side", "100000"),
        ("float:text", "eighty"),
    ]


def floats() -> list[Labelled]:
    """float/double field values."""
    return [
        ("float:nan", float("nan")),
        ("float:inf", float("inf")),
        ("float:-inf", float("-inf")),
        ("float:1e30", 1e30),
        ("float:negative", -8.0),
        ("float:zero", 0.0),
        ("float:denormal", 1e-45),
        ("float:float32-max", 3.4e38),
        ("float:valid", 8.0),
    ]


def integers(bits: int, signed: bool) -> list[Labelled]:
    """Integer field values at and around the type's limits."""
    top = 2 ** (bits - 1 if signed else bits) - 1
    values: list[Labelled] = [("int:zero", 0), ("int:one", 1), ("int:three", 3), ("int:max", top),
                              ("int:large", 100_000)]
    if signed:
        values += [("int:negative", -1), ("int:min", -top - 1)]
    return values


def booleans_as_text() -> list[Labelled]:
    """Boolean parameter values."""
    return [("bool:true", "true"), ("bool:false", "false"), ("bool:yes", "YES"), ("bool:one", "1"),
            ("bool:empty", ""), ("bool:maybe", "maybe"), ("bool:huge", "t" * HUGE)]


def by_type(descriptor: FieldDescriptor, rng: np.random.Generator) -> list[Labelled]:
    """Values for any scalar field of this protobuf type."""
    kind = descriptor.type
    if kind == FieldDescriptor.TYPE_STRING:
        return hostile_strings(rng)
    if kind == FieldDescriptor.TYPE_BYTES:
        return [("bytes:empty", b""), ("bytes:random", rng.bytes(int(rng.integers(1, 4096)))),
                ("bytes:huge", rng.bytes(300_000))]
    if kind == FieldDescriptor.TYPE_BOOL:
        return [("bool:true", True), ("bool:false", False)]
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return floats()
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [("enum:known", v.number) for v in descriptor.enum_type.values]
        return [*known, ("enum:unknown", 99), ("enum:negative", -1), ("enum:int32-max", 2**31 - 1)]
    if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return integers(64, True)
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return integers(64, False)
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return integers(32, False)
    return integers(32, True)


IMAGE_PARAMETERS = ("channels", "plane", "z_project", "intensity", "series")
"""Job parameters that say how every pipeline reads its image."""
NamedPool = Callable[[np.random.Generator], list[Labelled]]
PARAMETER_POOLS: dict[str, NamedPool] = {
    "box_sizes": lambda rng: box_sizes_text(),
    "percolation": lambda rng: booleans_as_text(),
    "probabilities": lambda rng: booleans_as_text(),
    "blank_other_cells": lambda rng: booleans_as_text(),
    "spot_diameter": lambda rng: floats_as_text(),
    "spot_ids": lambda rng: [("spot_ids:few", "a,b"), ("spot_ids:many", ",".join(["s"] * 5000)),
                             *hostile_strings(rng)],
    "pooling": lambda rng: [("pooling:avg", "average"), ("pooling:max", "max"),
                            ("pooling:none", "none"), *hostile_strings(rng)],
    "page_token": lambda rng: [*numbers_as_text(), *hostile_strings(rng)],
    "channels": lambda rng: [
        ("channels:valid", "0"), ("channels:pair", "0,2"), ("channels:names", "DAPI,GFP"),
        ("channels:out-of-range", "99"), ("channels:negative", "-1"),
        ("channels:repeated", "0,0,0,0"), ("channels:many", ",".join(map(str, range(2000)))),
        *numbers_as_text(), *hostile_strings(rng)],
    "plane": lambda rng: [
        ("plane:valid", "0"), ("plane:axes", "z=3,t=0"), ("plane:huge", "z=99999999999999999999"),
        ("plane:negative", "t=-5"), ("plane:axis-twice", "z=1,z=2"), ("plane:unknown-axis", "q=1"),
        *numbers_as_text(), *hostile_strings(rng)],
    "blob": lambda rng: [("blob:unknown-reference", "0" * 64 + "." + "0" * 32),
                         ("blob:traversal", "../" * 8 + "etc/passwd"), *hostile_strings(rng)],
    "z_project": lambda rng: [("z_project:max", "max"), ("z_project:upper", "MEAN"),
                              ("z_project:unknown", "median"), *hostile_strings(rng)],
    "intensity": lambda rng: [
        ("intensity:full", "full-range"), ("intensity:minmax", "minmax"),
        ("intensity:bit-depth", "bit-depth:12"), ("intensity:bit-depth-0", "bit-depth:0"),
        ("intensity:bit-depth-huge", "bit-depth:99999999999999999999"),
        ("intensity:percentile", "percentile:0.1-99.9"),
        ("intensity:percentile-nan", "percentile:nan-inf"),
        ("intensity:percentile-reversed", "percentile:99-1"),
        ("intensity:percentile-overflow", "percentile:1e309-1e310"), *hostile_strings(rng)],
    "nucleus_channel": lambda rng: [
        ("nucleus_channel:first", "0"), ("nucleus_channel:name", "DAPI"),
        ("nucleus_channel:out-of-range", "7"), ("nucleus_channel:several", "0,1"),
        *numbers_as_text(), *hostile_strings(rng)],
    "cytoplasm_channels": lambda rng: [
        ("cytoplasm_channels:second", "1"), ("cytoplasm_channels:three", "0,1,1"),
        ("cytoplasm_channels:names", "CellMask,WGA"), *numbers_as_text(), *hostile_strings(rng)],
    "expand_um": lambda rng: floats_as_text(),
    "method": lambda rng: [("method:classical", "classical"), ("method:flows", "flows"),
                           ("method:hpa", "hpa"), ("method:unknown", "magic"), *hostile_strings(rng)],
    "pixel_size_um": lambda rng: floats_as_text(),
    "objects": lambda rng: [("objects:nuclei", "nuclei"), ("objects:cells", "cells"),
                            ("objects:unknown", "spots"), *hostile_strings(rng)],
    "min_iou": lambda rng: floats_as_text(),
    "max_distance_um": lambda rng: floats_as_text(),
    "series": lambda rng: [("series:first", "0"), ("series:second", "1"),
                           ("series:huge", "99999999999999999999"), ("series:negative", "-1"),
                           *numbers_as_text(), *hostile_strings(rng)],
}
"""Pools for text fields whose name says what they hold: job parameters, page tokens and
how to read an image (ImageReadOptions, whose fields are also job parameters)."""
