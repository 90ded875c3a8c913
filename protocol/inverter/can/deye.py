"""`deye`: Deye / SunSynk LV CAN — byte-identical to Pylon V1.2 with 0x35E "DEYE".

Deye rules from the reference: stop is CVL at the present voltage with 0 A (CVL 0.1 V raised W31),
and Deye sometimes delays its 0x305 by 3-5 s, so the keepalive timeout must stay >= 5 s.
"""

from __future__ import annotations

from typing import ClassVar

from protocol.inverter.can.base import OptionValue
from protocol.inverter.can.pylon import Pylon


class Deye(Pylon):
    name = "deye"
    title = "Deye / SunSynk LV CAN (Pylon V1.2 frames)"
    option_defaults: ClassVar[dict[str, OptionValue]] = {"name": "DEYE", "module_count": 0}


PROTOCOL = Deye
