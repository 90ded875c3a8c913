"""Generate the published register tables (docs/modbus-registers.md and .csv) from the map files.

The tables are rendered from `mappings/modbus/` only, so the published documentation cannot drift
from what the server serves: a test compares the committed files with `render_markdown()` and
`render_csv()`, and `bms-gateway modbus-docs` rewrites them.

Never performs I/O besides what its caller asks (`write_docs`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from pathlib import Path

from mappings.modbus import (
    NativeBlock,
    NativeMap,
    SunSpecMap,
    SunSpecModel,
    load_native_map,
    load_sunspec_map,
    load_sunspec_models,
)
from protocol.modbus.image import TYPES, PointDef, PointType

CSV_COLUMNS = (
    "map",
    "block",
    "address",
    "offset",
    "name",
    "type",
    "registers",
    "scale",
    "units",
    "access",
    "range",
    "not_implemented",
    "description",
)

# What the gateway puts in each SunSpec point that it does not fill from the model (documented).
SUNSPEC_NOTES: Mapping[str, str] = {
    "802.AHRtg": "sum of the packs' nominal (else full) capacities",
    "802.WHRtg": "AHRtg x cells x nominal_cell_voltage_v",
    "802.WChaRteMax": "packs x rated_current_a x nominal pack voltage",
    "802.WDisChaRteMax": "packs x rated_current_a x nominal pack voltage",
    "802.AChaMax": "the charge policy's charge current limit (CCL), when the policy runs",
    "802.ADisChaMax": "the charge policy's discharge current limit (DCL), when the policy runs",
    "802.Hb": "seconds since start (mod 65535), updated with every model update",
    "802.AlmRst": "write 1: alarm reset request to the charge policy; reads 0",
    "802.SetOp": "write 1 connect / 2 disconnect (the policy blocks both directions)",
    "802.SoCRsvMin": "write: EMS cap soc_reserve_min_pct (reverts, see docs/modbus.md)",
    "802.SocRsvMax": "write: EMS cap soc_reserve_max_pct (reverts)",
    "802.CtrlHb": "any value, echoed back",
    "802.LocRemCtl": "0 REMOTE when [modbus] writes = true, else 1 LOCAL",
    "802.State": "3 CONNECTED; 99 FAULT with a fault flag; 1 DISCONNECTED after SetOp 2",
    "802.Evt1": "from the packs' flag meanings (mappings/flags); bit 0 when a pack is not online",
    "124.WChaMax": "charge power cap; default WChaRteMax",
    "124.StorCtl_Mod": "bit 0 applies InWRte, bit 1 applies OutWRte",
    "124.OutWRte": "% of WDisChaRteMax when StorCtl_Mod bit 1; negative counts as 0",
    "124.InWRte": "% of WChaMax when StorCtl_Mod bit 0; negative counts as 0",
    "124.InOutWRte_RvrtTms": "revert time of every SunSpec cap, s (0: [modbus] cap_timeout_s)",
}


def _sentinel(point: PointDef) -> str:
    if point.type is PointType.STRING:
        return "all NUL"
    sentinel = TYPES[point.type].sentinel
    if sentinel is None:
        return ""
    return f"0x{sentinel:0{4 * point.size}X}"


def _scale_text(point: PointDef, scale: Mapping[str, int] | None = None) -> str:
    if isinstance(point.sf, int):
        return "" if point.sf == 0 else f"10^{point.sf}"
    if isinstance(point.sf, str):
        value = (scale or {}).get(point.sf)
        return f"{point.sf} ({value})" if value is not None else f"{point.sf} (not implemented)"
    return ""


def _native_rows(nmap: NativeMap) -> Iterator[dict[str, str]]:
    blocks: list[tuple[str, NativeBlock, int]] = [
        ("bank", nmap.bank, nmap.bank.start),
        ("control", nmap.control, nmap.control.start),
        ("pack n", nmap.pack, nmap.pack.start),
    ]
    for label, nb, start in blocks:
        for p in nb.block.points:
            rng = nb.ranges.get(p.name)
            address = str(start + p.offset)
            if label == "pack n":
                address = f"{start + p.offset} + (n-1) x {nmap.pack_stride}"
            yield {
                "map": "native",
                "block": label,
                "address": address,
                "offset": str(p.offset),
                "name": p.name,
                "type": p.type.value,
                "registers": str(p.size),
                "scale": _scale_text(p),
                "units": p.units,
                "access": "RW" if p.writable else "R",
                "range": "" if rng is None else f"{rng.minimum:g}..{rng.maximum:g}",
                "not_implemented": _sentinel(p),
                "description": p.label,
            }


def _sunspec_rows(models: Mapping[int, SunSpecModel], smap: SunSpecMap) -> Iterator[dict[str, str]]:
    ids = []
    for item in smap.bank_chain:
        mid = int(item.rstrip("*"))
        if mid not in ids:
            ids.append(mid)
    for mid in ids:
        model = models[mid]
        scale = smap.scale.get(mid, {})
        writable = smap.writable.get(mid, {})
        groups = [("", model.fixed.points, 0)]
        if model.group is not None:
            groups.append((model.group.name, model.group.block.points, model.fixed.length))
        for gname, points, base in groups:
            for p in points:
                rng = writable.get(p.name)
                served_sf = scale.get(p.name) if p.type is PointType.SUNSSF else None
                note = SUNSPEC_NOTES.get(f"{mid}.{p.name}", "")
                desc = p.label + (f" [{note}]" if note else "")
                if served_sf is not None:
                    desc = f"scale factor, served as {served_sf}"
                yield {
                    "map": "sunspec",
                    "block": str(mid) + (f" {gname}[i]" if gname else ""),
                    "address": "",
                    "offset": str(base + p.offset),
                    "name": p.name,
                    "type": p.type.value,
                    "registers": str(p.size),
                    "scale": _scale_text(p, scale),
                    "units": p.units,
                    "access": "RW" if rng is not None else "R",
                    "range": "" if rng is None else f"{rng.minimum:g}..{rng.maximum:g}",
                    "not_implemented": _sentinel(p),
                    "description": desc,
                }


def _load() -> tuple[Mapping[int, SunSpecModel], SunSpecMap, NativeMap]:
    models = load_sunspec_models()
    return models, load_sunspec_map(models), load_native_map()


def render_csv() -> str:
    models, smap, nmap = _load()
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in (*_native_rows(nmap), *_sunspec_rows(models, smap)):
        writer.writerow(row)
    return out.getvalue()


def _md_table(rows: list[dict[str, str]], columns: tuple[str, ...]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        cells = [r[c].replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_markdown() -> str:
    models, smap, nmap = _load()
    lines = [
        "# Modbus register tables",
        "",
        "Generated by `bms-gateway modbus-docs` from `mappings/modbus/` — do not edit by hand (a test",
        "compares this file with the generator). The same rows are in `modbus-registers.csv`. How the",
        "server behaves (unit ids, function codes, writes, sign convention) is in `modbus.md`.",
        "",
        "Addresses are PDU addresses (0-based, as on the wire). Scaled values: engineering value =",
        "raw x 10^scale. Current and power are positive while charging, negative while discharging.",
        "",
        f"## Native map (version {nmap.version})",
        "",
        f"Unit `[modbus] native_unit` (default 2), FC 3 and 4. Bank block at {nmap.bank.start}, control",
        f"block at {nmap.control.start}, pack n (1-based, packs in (bus, address) order) at",
        f"{nmap.pack.start} + (n-1) x {nmap.pack_stride}, up to {nmap.max_packs} packs. Addresses outside",
        "these blocks (and blocks of packs that are not configured) answer exception 0x02.",
        "",
    ]
    native = list(_native_rows(nmap))
    cols = ("address", "name", "type", "scale", "units", "access", "range", "not_implemented", "description")
    for label, title in (("bank", "Bank block"), ("control", "Control block"), ("pack n", "Pack block")):
        lines += [f"### {title}", ""]
        lines += _md_table([r for r in native if r["block"] == label], cols)
        lines.append("")
    lines += ["### Enumerations and bit fields", ""]
    for name, values in {**nmap.enums, **nmap.bitfields}.items():
        kind = "bits" if name in nmap.bitfields else "values"
        items = ", ".join(f"{v} = {k}" for k, v in sorted(values.items(), key=lambda kv: kv[1]))
        lines.append(f"- `{name}` ({kind}): {items}")
    lines += [
        "",
        "## SunSpec",
        "",
        f"The bank unit (`[modbus] sunspec_unit`, default 1; 0 and 255 answer the same) has `SunS` at "
        f"{smap.base_address}, then the models "
        + ", ".join(smap.bank_chain).replace("*", " (one per pack)")
        + ", then the end marker (0xFFFF, 0). A per-pack unit (`per_pack_unit_base` + address) has "
        + ", ".join(smap.pack_chain)
        + ". A model starts at the register after the previous one ends; model lengths:",
        "",
    ]
    for mid in (1, 802, 803, 804, 805, 124):
        m = models[mid]
        extra = ""
        if m.group is not None:
            extra = f" + {m.group.block.length} per `{m.group.name}` instance"
        lines.append(f"- {mid} `{m.name}`: L = {m.fixed_length}{extra}")
    lines += [
        "",
        "Offsets below count from the model's ID register; inside a repeating group, instance i",
        "(0-based) adds i x the group length. RW marks the points the gateway accepts writes to.",
        "",
    ]
    sun = list(_sunspec_rows(models, smap))
    cols = ("offset", "name", "type", "scale", "units", "access", "range", "not_implemented", "description")
    for mid in (1, 802, 803, 804, 805, 124):
        lines += [f"### Model {mid} — {models[mid].label}", ""]
        lines += _md_table([r for r in sun if r["block"].split(" ")[0] == str(mid)], cols)
        lines.append("")
    return "\n".join(lines)


def write_docs(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    md = directory / "modbus-registers.md"
    csv_path = directory / "modbus-registers.csv"
    md.write_text(render_markdown(), encoding="utf-8")
    csv_path.write_text(render_csv(), encoding="utf-8")
    return [md, csv_path]
