"""How long a job will take, said once it is known: after its first frames or photos, from the rate this
run has shown, and with the faster choices when it is hours of work on a CPU.

The progress bars show a running estimate too (tqdm's, from the same rate); this says it once, in words,
before the user has waited through hours of it, and a preview (``--preview N``) ends with the same
arithmetic for the whole job.
"""
from __future__ import annotations

from typing import Callable

LONG_S = 2 * 3600  # beyond this on a CPU, the estimate names the faster choices
SAY_AFTER_S = 20.0  # an estimate from less work than this is mostly start-up: wait for more ...
SAY_AFTER_UNITS = 8  # ... or for this many frames (photos: one is enough, see PhotoJob)


def duration(seconds: float) -> str:
    """``seconds`` in words: "about 2 h 40 min", "about 12 min", "about 40 s"."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"


def engine_terms(engine) -> tuple[str, str | None, int]:
    """What an estimate names of an engine (``pipeline.engine.Engine``): its device type, its upscaler (None for
    CondSR alone) and its output scale."""
    return engine.device.type, None if engine.upscaler is None else engine.upscaler.ref.name, engine.options.scale


COMPACT = ("restore_compact_x4", "realesr-general-x4v3", "realesr-animevideov3")  # upscalers a CPU runs fast


def faster_choices(upscaler_name: str | None, device_type: str, scale: int = 4) -> list[str]:
    """What would make a long job shorter: a lighter upscaler (unless a compact one or CondSR alone already), a
    smaller scale that runs the upscaler on fewer pixels, a GPU, more machines."""
    choices = []
    if upscaler_name is not None:
        if not any(name in upscaler_name for name in COMPACT):
            choices.append("--upscaler restore-compact-x4 (ours, shipped: about 40 x less a frame than x4plus, "
                           "softer)")
        if scale == 4:
            choices.append("--scale 2 --scale-method reduced (the upscaler on a quarter of the pixels)")
        choices.append("--upscaler condsr (our CondSR alone, the fastest)")
    if device_type == "cpu":
        choices += ["a GPU (--device cuda)", "--executor ray (several machines)"]
    return choices


def estimate_line(unit: str, done: int, seconds: float, left: int, device_type: str,
                  upscaler_name: str | None, scale: int = 4, whole: bool = False) -> str:
    """The estimate in one line: the time for ``left`` more ``unit``s at the rate ``done`` took ``seconds``,
    and the faster choices when that is over ``LONG_S`` on a CPU. ``whole``: ``left`` is the whole job (a
    preview's estimate) rather than what is left of it."""
    rate = seconds / max(done, 1)
    total = rate * left
    what = f"the whole job ({left} {unit}s)" if whole else f"the {left} {unit}s left"
    line = f"estimate: {duration(total)} for {what}, at {rate:.2f} s a {unit} as measured here on the {device_type}"
    if total > LONG_S and device_type == "cpu":
        line += "; that is long. Faster: " + "; ".join(faster_choices(upscaler_name, device_type, scale))
    return line


class Estimate:
    """Says the estimate once per run: when the run has done ``SAY_AFTER_UNITS`` units or worked
    ``SAY_AFTER_S`` seconds (or ``after`` units, for photos), and only when there is work left."""

    def __init__(self, notify: Callable[[str], None], unit: str, after: int = SAY_AFTER_UNITS):
        self.notify, self.unit, self.after = notify, unit, after
        self.said = False

    def update(self, done: int, seconds: float, left: int, device_type: str, upscaler_name: str | None,
               scale: int = 4) -> bool:
        """Say it now if it is time; True when said (now or before)."""
        if self.said or done <= 0 or left <= 0 or (done < self.after and seconds < SAY_AFTER_S):
            return self.said
        self.said = True
        self.notify(estimate_line(self.unit, done, seconds, left, device_type, upscaler_name, scale))
        return True
