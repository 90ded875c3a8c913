"""`encode_block`'s per-block plan (issue 19 fast path) encodes exactly like `encode_value`.

The reference below composes the block point by point with `encode_value` (the general rules);
any value, scale and type from the shipped maps must give the same registers and the same
`EncodeError`s, including the sentinels for None, out-of-range, non-finite and wrong-typed values.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from mappings.modbus import load_native_map, load_sunspec_models
from protocol.errors import LocalProtocolError
from protocol.modbus.image import Block, EncodeError, RegisterImage, Value, encode_block, encode_value


def reference(
    block: Block, values: dict[str, Value], scale: dict[str, int]
) -> tuple[list[int], list[EncodeError]]:
    regs = [0] * block.length
    errors: list[EncodeError] = []
    for p in block.points:
        value = values.get(p.name)
        sf: int | None
        if isinstance(p.sf, int):
            sf = p.sf
        elif p.sf:
            sf = scale.get(p.sf)
            if sf is None and value is not None:
                errors.append(EncodeError(p.name, f"scale factor {p.sf} has no value"))
                value = None
        else:
            sf = None
        try:
            words = encode_value(p, value, sf)
        except LocalProtocolError as err:
            errors.append(EncodeError(p.name, str(err)))
            words = encode_value(p, None)
        regs[p.offset : p.offset + p.size] = words
    return regs, errors


def _blocks() -> list[Block]:
    blocks: list[Block] = []
    for model in load_sunspec_models().values():
        blocks.append(model.fixed)
        if model.group is not None:
            blocks.append(model.group.block)
    native = load_native_map()
    return [*blocks, native.bank.block, native.control.block, native.pack.block]


BLOCKS = _blocks()
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.5, -0.5, 65535, 65534, -32768, -32767, 32767, 2**31, -(2**31)]),
    st.text(max_size=40),
    st.frozensets(st.integers(0, 70), max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), index=st.integers(0, len(BLOCKS) - 1))
def test_plan_encodes_like_encode_value(data: st.DataObject, index: int) -> None:
    block = BLOCKS[index]
    values = {p.name: data.draw(VALUES) for p in block.points if data.draw(st.booleans())}
    scale = {
        p.sf: data.draw(st.integers(-4, 3))
        for p in block.points
        if isinstance(p.sf, str) and p.sf and data.draw(st.booleans())
    }
    errors: list[EncodeError] = []
    assert (encode_block(block, values, scale, errors), errors) == reference(block, values, scale)


def test_register_image_refuses_out_of_range_registers() -> None:
    image = RegisterImage([(10, [1, 2]), (12, [0xFFFF])])
    assert image.blocks == ((10, b"\x00\x01\x00\x02\xff\xff"),)
    for bad in (-1, 0x10000):
        try:
            RegisterImage([(0, [1, bad])])
        except LocalProtocolError as err:
            assert str(bad) in str(err)
        else:  # pragma: no cover - must raise
            raise AssertionError(f"{bad} accepted")
    assert math.isfinite(float(image.size))
