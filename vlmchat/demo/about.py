"""What the embedded demo model can do, stated once: the first screen shows `NOTE` under the status line.

The size range is measured, not assumed: `benchmarks/demo_range.py` (240 held-out-style pictures per
size, on the build of 2026-12-03 11:00) found the caption right 99.6-100% of the time for shapes 35-90% of the
picture's shorter side, 92.1% at 30%, 60.0% at 20% and 27.5% at 10%.
"""

from __future__ import annotations

SIZE_RANGE = (0.35, 0.90)  # shape size as a share of the picture's shorter side, where captions are >= 95% right

NOTE = (f"Demo model: one red, green, blue or yellow circle, square or triangle on white or a light background, "
        f"{SIZE_RANGE[0]:.0%}-"
        f"{SIZE_RANGE[1]:.0%} of the picture's shorter side, in pictures no wider or taller than 2:1; it answers "
        "in English, or in Spanish, French, Italian, Portuguese or German when asked, and always in Spanish with the "
        "demo-es adapter. For more, "
        "load a real model in the Model tab.")
