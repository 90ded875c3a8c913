"""`goodwe`: GoodWe LV (ES/EM/BP, "LX U5.4-L" battery) — the Pylon frame set with 0x35E "GOODWE".

GoodWe reads the module count in 0x359 byte 4 as the number of 5.4 kWh modules selected in the
inverter: set `module_count` to that number (0 = packs online).
"""

from __future__ import annotations

from typing import ClassVar

from protocol.inverter.can.base import OptionValue
from protocol.inverter.can.pylon import Pylon


class GoodWe(Pylon):
    name = "goodwe"
    title = "GoodWe LV CAN (Pylon frames, module count)"
    option_defaults: ClassVar[dict[str, OptionValue]] = {"name": "GOODWE", "module_count": 0}


PROTOCOL = GoodWe
