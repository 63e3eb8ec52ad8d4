"""Render quality presets as plain data: the toolkit turns ``--quality`` into a :class:`Preset`
once (``get_preset``) and sends the record itself to the Blender worker in each render job
(``store.RenderJob``'s ``preset``), so the worker needs no table of its own.

Every preset renders with Cycles on the CPU, so every preset runs headless without
an OpenGL driver, and all presets give the same image in expectation (same lights,
materials, colour management); they differ only in noise. Depth and part ids do not
depend on the preset: Cycles writes them from one camera sample through the pixel
centre (measured; see ``blender_scripts/render_worker.py``), so they are exact point
samples at every quality.

Measured cost (``benchmarks/bench_render.py``: 512x512 RGBA, 12-view states of a
7,696-face textured cabinet, one worker with 2 Cycles threads on a 2-core machine
that other jobs shared (load average 0.9-2.3), bpy 4.5.15; wall seconds per view of
a whole state: render, compositor, PNG + EXR writes, npz; "bare" is the render call
alone; CPU is process CPU seconds per view, which the shared load inflates less)::

    preset     samples  denoiser (OIDN)              s/view  bare s/view  CPU s/view
    draft        4      quality FAST, no prefilter     0.57     0.53        1.09
    standard    16      BALANCED, prefilter FAST       1.76     1.68        3.44
    high        64      HIGH, prefilter ACCURATE       8.10     7.39       15.2

Over three benchmark runs a state cost 1.01-1.07x twelve bare renders for draft,
1.02-1.05x for standard and 0.99-1.10x for high (CPU-time ratio 1.00-1.06); an
earlier run while the machine's load average was 3-4 gave 1.36x for draft, because
bare views and states then ran under different loads. Blender
start, mesh import and warm-up add ~1 s per worker and object (draft end to end
through the local render scheduler: 21.1 s for 3 states).

Other draft candidates on the same scene: 4 spp without a denoiser 0.33 s (grainy),
8 spp without a denoiser ~0.6 s (still grainy), 2 spp + OIDN FAST ~0.45 s (blotchy
highlights); OIDN FAST costs about as much as 4 samples at this size. The light tree
is off (three lights; 7% faster, same noise).

Workbench (~0.34 s/view through Mesa's software GL over EGL) is not a preset: its
render layer offers only Image, Alpha and Depth (no object index; checked in bpy
4.5), so part ids would need a second render, and without an EGL driver it aborts
the process. The worker refuses any engine but Cycles; a GL preset added later needs
an out-of-process probe of the GL driver first (a process without one aborts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Preset:
    name: str
    engine: str
    samples: int
    denoiser: str | None  # "OPENIMAGEDENOISE" or None
    denoise_quality: str  # OIDN: "FAST" | "BALANCED" | "HIGH"
    denoise_prefilter: str  # OIDN: "NONE" | "FAST" | "ACCURATE"
    max_bounces: int
    diffuse_bounces: int
    glossy_bounces: int
    transmission_bounces: int
    transparent_bounces: int
    filter_width: float  # pixel filter width (Blackman-Harris), pixels
    seconds_per_view: float  # measured at 512x512, 2 threads (see module docstring)

    def to_dict(self) -> dict:
        """The record as a render job carries it (JSON-shaped)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> "Preset":
        """The preset a render job carries; ``ValueError`` (one line) unless it has exactly the fields."""
        if not isinstance(record, dict):
            raise ValueError(f"a render preset is a JSON object, got {type(record).__name__}")
        names = [f.name for f in fields(cls)]
        missing, extra = [n for n in names if n not in record], sorted(set(record) - set(names))
        if missing or extra:
            raise ValueError(f"render preset {record.get('name', '?')!r}: "
                             + "; ".join(([f"lacks {', '.join(missing)}"] if missing else [])
                                         + ([f"unknown {', '.join(extra)}"] if extra else [])))
        return cls(**record)


PRESETS: dict[str, Preset] = {
    "draft": Preset(
        name="draft",
        engine="CYCLES",
        samples=4,
        denoiser="OPENIMAGEDENOISE",
        denoise_quality="FAST",
        denoise_prefilter="NONE",
        max_bounces=2,
        diffuse_bounces=1,
        glossy_bounces=1,
        transmission_bounces=1,
        transparent_bounces=2,
        filter_width=1.5,
        seconds_per_view=0.57,
    ),
    "standard": Preset(
        name="standard",
        engine="CYCLES",
        samples=16,
        denoiser="OPENIMAGEDENOISE",
        denoise_quality="BALANCED",
        denoise_prefilter="FAST",
        max_bounces=4,
        diffuse_bounces=2,
        glossy_bounces=2,
        transmission_bounces=2,
        transparent_bounces=4,
        filter_width=1.5,
        seconds_per_view=1.76,
    ),
    "high": Preset(
        name="high",
        engine="CYCLES",
        samples=64,
        denoiser="OPENIMAGEDENOISE",
        denoise_quality="HIGH",
        denoise_prefilter="ACCURATE",
        max_bounces=8,
        diffuse_bounces=4,
        glossy_bounces=4,
        transmission_bounces=4,
        transparent_bounces=8,
        filter_width=1.5,
        seconds_per_view=8.10,
    ),
}

DEFAULT_PRESET = "standard"


def get_preset(quality: str | Preset) -> Preset:
    """The preset a ``--quality`` name stands for; a ``Preset`` is returned as it is (callers
    look the name up once, where it enters, and pass the record on)."""
    if isinstance(quality, Preset):
        return quality
    try:
        return PRESETS[quality]
    except KeyError:
        raise ValueError(f"unknown quality preset {quality!r}; choose one of {', '.join(PRESETS)}") from None
