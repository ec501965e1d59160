"""What runs the upscaler's network on the CPU: torch, ONNX Runtime or ncnn, measured and chosen.

A runtime is a callable: a float32 (N, 3, H, W) tensor in, the network's (N, 3, H*s, W*s) out, the
same numbers as torch fp32 within :data:`TOLERANCE`. :class:`archive_restore.upscalers.Upscaler` pads
the input and calls one of these:

``torch``          the loaded PyTorch module, eager, fp32, NCHW (the reference; always on CUDA)
``channels-last``  the same module with its weights and input in channels-last memory order
``onnxruntime``    the module exported once with ``torch.onnx.export`` (dynamic N, H and W) and run by
                   ONNX Runtime; the ``.onnx`` is cached in :func:`cache_dir` by the weights' sha256
``ncnn``           the ncnn ``.param``/``.bin`` pair itself (ncnn files only), fp32 arithmetic and storage

and two in reduced precision, which match torch fp32 less closely:

``half``           the module in fp16, channels-last, its first convolution kept in fp32 (the picture is
                   not rounded), Real-ESRGAN's two layouts only. On this project's CPU (AMX-FP16) SRVGG ran
                   3.9 x faster than channels-last fp32 (480x352) and RRDB x4plus 5-6 x, up to 1.5e-3
                   (SRVGG) and 4.3e-3 (RRDB) from fp32 on real photos, about one 8-bit level at most.
``bf16``           the same in bf16: the CPUs with AVX-512-BF16 but no fast fp16 (AMD EPYC) run it about
                   2 x faster than fp32 (x4plus on a 128x128 tile: 52.9 dB from fp32).

``auto`` on the CPU: ``$ARCHIVE_RESTORE_UPSCALER_RUNTIME`` when set, else the fastest admissible runtime,
found by a short probe (:func:`probe`: all of them on the same picture, :func:`probe_picture`, a 64x64
photo shipped with the package, in turns, the fastest of two rounds each) and remembered per machine,
thread count, package versions, weights and precision in ``cache_dir()/choices.json``: the first load
on a machine measures, later loads read the answer. A fp32 runtime is admissible when it matches torch
within :data:`TOLERANCE`; a reduced one (precision ``auto`` only, never ``fp32``: ``--precision``,
``$ARCHIVE_RESTORE_PRECISION``) when its precision convolves at least :data:`MIN_SPEEDUP` x faster than
fp32 on this CPU, and then on the probe picture it runs at least :data:`MIN_SPEEDUP` x faster than the
fastest fp32 runtime, at least :data:`MIN_PSNR` dB from torch fp32 and never more than :data:`MAX_DIFF`
away (:func:`pick`). Every runtime takes its thread count from ``torch.get_num_threads()`` when it runs,
so the thread policy set for torch applies to all of them.

``torch.compile`` is not among them: ``archive-restore bench runtime`` measures it, but its compile
(31 s for SRVGG and 72 s for RRDB x4plus on this project's 2-core CPU, when inductor's on-disk cache
is cold, and a recompile when the input size changes) costs more than it saves on a job.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from tqdm import tqdm

from ..compute.cpu import cpu_name
from ..errors import CheckpointError, UsageError

AUTO = "auto"
RUNTIMES = ("torch", "channels-last", "onnxruntime", "ncnn")  # auto's candidates: they match torch fp32
HALF, BF16 = "half", "bf16"
REDUCED = {HALF: torch.float16, BF16: torch.bfloat16}  # the reduced-precision runtimes and what they compute in
OPT_IN = tuple(REDUCED)  # not within TOLERANCE of torch fp32: auto's only where `pick` admits them
CHOICES = (AUTO,) + RUNTIMES + OPT_IN
ENV_VAR = "ARCHIVE_RESTORE_UPSCALER_RUNTIME"  # the runtime `auto` uses, without a probe
PRECISIONS = ("auto", "fp32")  # --precision: reduced precision where it is admitted, or never
PRECISION_ENV = "ARCHIVE_RESTORE_PRECISION"
TOLERANCE = 1e-3       # max |difference| from torch fp32 on [0, 1] pictures, for a fp32 runtime
MIN_SPEEDUP = 1.5      # a reduced precision: at least this much faster than fp32 ...
MIN_PSNR = 45.0        # ... at least this many dB from torch fp32 on the probe picture ...
MAX_DIFF = 8 / 255     # ... and never further from it than this
PSNR_CAP = 100.0       # the PSNR of an output equal to the reference
PROBE_SIZE = 64        # the probe's input side (pixels)
PROBE_PICTURE = Path(__file__).with_name("probe.png")  # 64x64, from scikit-image's astronaut (NASA, public domain)
PROBE_RUNS = 2         # timed runs per runtime after one warm-up; the fastest counts
OPSET = 17
PACKAGES = {"onnxruntime": ("onnxruntime", "onnx"), "ncnn": ("ncnn",)}  # runtime -> modules it imports


class Runtime(Protocol):
    name: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


def cache_dir() -> Path:
    """Where exported ``.onnx`` files and the probe's choices live: beside the user's models cache."""
    return Path.home() / ".cache" / "archive-restore" / "runtimes"


# ------------------------------------------------------------------------------------ the runtimes


class TorchRuntime:
    """The PyTorch module as loaded: eager fp32, NCHW."""

    name = "torch"

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x)


class ChannelsLastRuntime:
    """The same module with channels-last weights and input (oneDNN's preferred order on CPUs); a
    copy, so the loaded module stays the NCHW reference."""

    name = "channels-last"

    def __init__(self, model: torch.nn.Module):
        import copy

        self.model = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x.contiguous(memory_format=torch.channels_last)).contiguous()


class _Fp32Entry(torch.nn.Module):
    """A network's first convolution kept in fp32 inside a fp16 or bf16 network: the picture itself is
    not rounded (that rounding alone was half of SRVGG's fp16 error)."""

    def __init__(self, conv: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.conv, self.dtype = conv, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float()).to(self.dtype)


class HalfRuntime:
    """The module in fp16 (``half``) or bf16 (``bf16``), channels-last, its first convolution in fp32; a
    copy, so the loaded module stays the fp32 reference. Not within TOLERANCE of torch fp32: ``auto``
    takes it only where ``pick`` admits it."""

    def __init__(self, model: torch.nn.Module, name: str = HALF):
        import copy

        from ..nets.realesrgan import entry_conv

        found = entry_conv(model)
        if found is None:
            raise UsageError(f"upscaler runtime {name}: it runs Real-ESRGAN's RRDBNet and SRVGGNetCompact "
                             f"layouts only, not {type(model).__name__}")
        self.name, dtype = name, REDUCED[name]
        entry = copy.deepcopy(found[0]).float().to(memory_format=torch.channels_last)
        self.model = copy.deepcopy(model).to(dtype).to(memory_format=torch.channels_last)
        found[1](self.model, _Fp32Entry(entry, dtype))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x.float().contiguous(memory_format=torch.channels_last)).float().contiguous()


def reduced_missing(name: str) -> str | None:
    """Why the reduced-precision runtime ``name`` would not pay on this CPU, or None when it would: its
    precision must convolve at least ``MIN_SPEEDUP`` x faster than fp32 here (``compute.cpu``'s probe)."""
    from ..compute.cpu import half_speedups

    if half_speedups().get(REDUCED[name], 0.0) >= MIN_SPEEDUP:
        return None
    if name == HALF:
        return ("this CPU has no fast fp16 convolution (AMX-FP16, Intel Xeon 6 and later): in fp16 the "
                "upscaler would not run faster than fp32 here")
    return ("this CPU has no fast bf16 convolution (AMX-BF16, or AVX-512-BF16 as on AMD EPYC): in bf16 the "
            "upscaler would not run faster than fp32 here")


class OnnxRuntime:
    """The module's ONNX export run by ONNX Runtime on the CPU, with torch's thread count (a new
    session when that count changes)."""

    name = "onnxruntime"

    def __init__(self, onnx_path: Path):
        self.path = onnx_path
        self._session, self._threads = None, 0

    def session(self):
        import onnxruntime as ort

        threads = torch.get_num_threads()
        if self._session is None or threads != self._threads:
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            # no memory arena: ONNX Runtime's keeps the largest pass's buffers for good (a 640x360 photo
            # through RRDB x4plus in tiles peaked at 2345 MB with it, 1855 MB without, at the same speed)
            options.enable_cpu_mem_arena = False
            options.log_severity_level = 3  # errors only
            # its threads do not spin after a run: spinning, they took the cores from whatever ran next (the
            # runtime probe's next runtime, the cleanup, the encoder), and bf16 timed 0.010-0.074 s by turns
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            try:
                self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # a truncated or foreign cache file
                raise CheckpointError(f"ONNX Runtime cannot load {self.path}: {type(exc).__name__}: {exc}; "
                                      "delete it and it is exported again") from exc
            self._threads = threads
        return self._session

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        session = self.session()
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)}
        return torch.from_numpy(session.run(None, feed)[0])


class NcnnRuntime:
    """An ncnn ``.param``/``.bin`` pair run by ncnn on the CPU in fp32 (no fp16/bf16 storage or
    arithmetic, no int8, no Vulkan), one picture at a time, with torch's thread count."""

    name = "ncnn"

    def __init__(self, param: Path):
        import ncnn

        self.net = ncnn.Net()
        opt = self.net.opt
        opt.use_vulkan_compute = False
        for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage",
                     "use_bf16_packed", "use_int8_inference", "use_int8_storage", "use_int8_arithmetic"):
            if hasattr(opt, flag):
                setattr(opt, flag, False)
        opt.num_threads = torch.get_num_threads()
        weights = param.with_suffix(".bin")
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(weights)) != 0:
            raise CheckpointError(f"ncnn cannot load {param} with {weights}")
        self.input, self.output = self.net.input_names()[0], self.net.output_names()[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import ncnn

        self.net.opt.num_threads = torch.get_num_threads()
        pictures = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        outs = []
        for picture in pictures:  # the Mat reads `picture`'s memory: keep it referenced until extracted
            extractor = self.net.create_extractor()
            extractor.input(self.input, ncnn.Mat(picture))
            status, out = extractor.extract(self.output)
            if status != 0:
                height, width = picture.shape[1:]
                raise CheckpointError(f"ncnn failed on a {width}x{height} picture (status {status})")
            outs.append(np.array(out))
        return torch.from_numpy(np.stack(outs))


# ------------------------------------------------------------------------------------ building one


@dataclass(frozen=True)
class Weights:
    """What a runtime needs besides the module: the file and its sha256 (for ncnn: of the .bin)."""

    path: Path
    sha256: str


def missing(name: str, weights: Weights) -> str | None:
    """Why runtime ``name`` cannot run these weights here, or None when it can."""
    for module in PACKAGES.get(name, ()):
        if importlib.util.find_spec(module) is None:
            return f"the {module} package is not installed (`pip install {module}`)"
    if name == "ncnn" and weights.path.suffix != ".param":
        return f"ncnn runs ncnn .param/.bin files only; {weights.path.name} is not one"
    return None


def build(name: str, model: torch.nn.Module, weights: Weights, recorded: bool = False) -> Runtime:
    """Runtime ``name`` for ``model`` (loaded from ``weights``); a UsageError when it cannot run here.
    ``recorded``: a job's own runtime, chosen on this kind of machine when the job first ran: a reduced
    precision is not timed again (under a passing load the timing can say "not faster" and the job would then
    compute in another precision than its earlier items); only what cannot run at all is refused."""
    if name not in RUNTIMES + OPT_IN:
        raise UsageError(f"unknown upscaler runtime {name!r}; choose one of {', '.join(CHOICES)}")
    why = None if recorded and name in REDUCED else unavailable(name, weights)
    if why:
        raise UsageError(f"upscaler runtime {name}: {why}")
    if name == "torch":
        return TorchRuntime(model)
    if name == "channels-last":
        return ChannelsLastRuntime(model)
    if name in REDUCED:
        return HalfRuntime(model, name)
    if name == "onnxruntime":
        return OnnxRuntime(onnx_file(model, weights.sha256))
    return NcnnRuntime(weights.path)


def onnx_file(model: torch.nn.Module, sha256: str) -> Path:
    """The cached ONNX export of ``model`` (whose weights have ``sha256``), exported on first use."""
    path = cache_dir() / f"{sha256}-opset{OPSET}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial")
    x = torch.rand(1, 3, 16, 16)
    axes = {0: "batch", 2: "height", 3: "width"}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(partial), input_names=["lq"], output_names=["sr"], opset_version=OPSET,
                              dynamic_axes={"lq": axes, "sr": axes}, dynamo=False)
        os.replace(partial, path)  # never a half-written file under the final name
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise CheckpointError(f"cannot export the upscaler to ONNX: {type(exc).__name__}: {exc}") from exc
    return path


# ------------------------------------------------------------------------------------- choosing one


@dataclass(frozen=True)
class Measured:
    """One runtime on one input: seconds per forward (every timed run, and the one that counts), max
    |difference| from torch fp32 and PSNR against it (dB, ``PSNR_CAP`` when equal), the first call's
    seconds (a compile, an export's session start...)."""

    runtime: str
    seconds: float | None
    max_diff: float | None
    note: str = ""
    runs: tuple[float, ...] = ()
    first_call: float | None = None
    psnr: float | None = None

    @property
    def matches(self) -> bool:
        return self.max_diff is not None and self.max_diff <= TOLERANCE

    @property
    def close(self) -> bool:
        """Close enough to torch fp32 for a reduced precision: ``MIN_PSNR`` dB, ``MAX_DIFF`` at most."""
        return (self.max_diff is not None and self.psnr is not None and self.max_diff <= MAX_DIFF
                and self.psnr >= MIN_PSNR)


def psnr(out: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR of ``out`` against ``reference`` (both [0, 1]), ``PSNR_CAP`` when they are equal."""
    mse = float(((out.float().clamp(0, 1) - reference.float().clamp(0, 1)) ** 2).mean())
    return PSNR_CAP if mse <= 10 ** (-PSNR_CAP / 10) else round(-10 * float(np.log10(mse)), 2)


def race(runners: dict[str, Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor, reference: torch.Tensor,
         rounds: int, pick: Callable[[list[float]], float] = min, tick: Callable[[], None] = lambda: None
         ) -> list[Measured]:
    """Each runner on ``x``: one warm-up call each, then ``rounds`` rounds in which every runner runs
    once in turn, so that a load that comes and goes falls on all of them alike; ``pick`` of each
    one's timed runs counts. A runner that raises is a row that says so."""
    outs, first, failed = {}, {}, {}
    for name, run in runners.items():
        try:
            start = time.perf_counter()
            outs[name] = run(x)
            first[name] = time.perf_counter() - start
        except Exception as exc:  # a runtime that fails on this network: not a candidate
            failed[name] = f"failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
        tick()
    seconds: dict[str, list[float]] = {name: [] for name in outs}
    for _ in range(rounds):
        for name in outs:
            start = time.perf_counter()
            runners[name](x)
            seconds[name].append(time.perf_counter() - start)
        tick()
    rows = []
    for name in runners:
        if name in failed:
            rows.append(Measured(name, None, None, failed[name]))
            continue
        diff = float((outs[name].float() - reference).abs().max())
        rows.append(Measured(name, pick(seconds[name]) if seconds[name] else None, diff,
                             "" if diff <= TOLERANCE else f"differs from torch by {diff:.2e}",
                             tuple(seconds[name]), first[name], psnr(outs[name], reference)))
    return rows


def runners(model: torch.nn.Module, weights: Weights, reduced: bool = False
            ) -> tuple[dict[str, Runtime], list[Measured]]:
    """The runtimes that run these weights here (with ``reduced``, the reduced-precision ones too, where
    this CPU computes their precision fast), and a row for each one that does not."""
    built, absent = {}, []
    for name in RUNTIMES + (OPT_IN if reduced else ()):
        why = unavailable(name, weights)
        if why is None:
            try:
                built[name] = build(name, model, weights)
            except Exception as exc:  # an export that fails on this network
                why = f"failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
        if why is not None:
            absent.append(Measured(name, None, None, why))
    return built, absent


def probe_picture() -> torch.Tensor:
    """The probe's input: a 64x64 photo shipped with the package (a face, hair, a flag, fabric: the detail
    where a reduced precision shows first), as a (1, 3, 64, 64) float32 tensor in [0, 1]."""
    from PIL import Image

    with Image.open(PROBE_PICTURE) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous()


def fastest(rows: list[Measured]) -> str:
    """The fastest runtime that matches torch; torch itself when none does."""
    good = [row for row in rows if row.matches and row.seconds is not None]
    return min(good, key=lambda row: row.seconds).runtime if good else "torch"


def pick(rows: list[Measured]) -> str:
    """``auto``'s answer from a probe's rows: the fastest reduced-precision runtime that is close to torch
    fp32 (``Measured.close``) and at least ``MIN_SPEEDUP`` x faster than the fastest fp32 runtime that
    matches torch; else that fp32 runtime (``fastest``)."""
    best = fastest(rows)
    fp32 = next((row.seconds for row in rows if row.runtime == best and row.seconds is not None), None)
    admitted = [row for row in rows if row.runtime in REDUCED and row.seconds is not None and row.close
                and (fp32 is None or row.seconds * MIN_SPEEDUP <= fp32)]
    return min(admitted, key=lambda row: row.seconds).runtime if admitted else best


def probe(model: torch.nn.Module, weights: Weights, progress: bool = True, reduced: bool = False
          ) -> list[Measured]:
    """Every runtime (with ``reduced``, the reduced-precision ones too) on the probe picture, raced against
    each other (the fastest of PROBE_RUNS rounds counts), each compared with torch fp32 on it; in
    RUNTIMES + OPT_IN order."""
    x = probe_picture()
    reference = TorchRuntime(model)(x).float()
    built, absent = runners(model, weights, reduced)
    with tqdm(total=len(built) + PROBE_RUNS, desc="upscaler runtimes (measured once per machine)", leave=False,
              disable=not progress) as bar:
        rows = race(built, x, reference, PROBE_RUNS, tick=bar.update) + absent
    order = RUNTIMES + OPT_IN
    return sorted(rows, key=lambda row: order.index(row.runtime))


def machine_key(weights: Weights) -> str:
    """What a probe's answer depends on: the weights, the CPU, the thread count, the package versions."""
    versions = []
    for dist in ("torch", "onnxruntime", "ncnn"):
        try:
            versions.append(f"{dist}={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist}=none")
    return " ".join([weights.sha256, cpu_name(), f"cores={os.cpu_count()}", f"threads={torch.get_num_threads()}"]
                    + versions)


def _read_choices(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def precision_choice(precision: str = AUTO) -> str:
    """The precision asked for: ``$ARCHIVE_RESTORE_PRECISION`` when ``precision`` is ``auto`` and it is set,
    else ``precision`` itself (``auto`` or ``fp32``)."""
    chosen = precision if precision != AUTO else (os.environ.get(PRECISION_ENV, "").strip() or AUTO)
    if chosen not in PRECISIONS:
        raise UsageError(f"unknown precision {chosen!r}; choose one of {', '.join(PRECISIONS)}")
    return chosen


def choose(model: torch.nn.Module, weights: Weights, progress: bool = True, precision: str = AUTO) -> str:
    """``auto`` on the CPU: ``$ARCHIVE_RESTORE_UPSCALER_RUNTIME`` (torch when that one cannot run these
    weights here), else the remembered probe answer for this machine, these weights and this precision
    (``precision_choice``), else a probe (whose answer, ``pick``, is then remembered)."""
    chosen = os.environ.get(ENV_VAR, "").strip()
    if chosen and chosen != AUTO:
        if chosen not in RUNTIMES + OPT_IN:
            raise UsageError(f"${ENV_VAR}={chosen!r}: choose one of {', '.join(CHOICES)}")
        if chosen in REDUCED:  # asked for by name: `build` says why when it cannot run here
            return chosen
        return "torch" if missing(chosen, weights) else chosen
    reduced = precision_choice(precision) == AUTO
    path, key = cache_dir() / "choices.json", f"{machine_key(weights)} precision={'auto' if reduced else 'fp32'}"
    known = _read_choices(path).get(key)
    allowed = RUNTIMES + (OPT_IN if reduced else ())
    if known and known.get("runtime") in allowed and not unavailable(known["runtime"], weights):
        return known["runtime"]
    rows = probe(model, weights, progress, reduced)
    answer = pick(rows) if reduced else fastest(rows)
    choices = _read_choices(path)  # again: another process may have added its own meanwhile
    choices[key] = {"runtime": answer, "probe_size": PROBE_SIZE, "measured": [asdict(row) for row in rows],
                    "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    partial = path.with_name(f"choices.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(choices, indent=1))
        os.replace(partial, path)
    except OSError:  # a read-only or full home: the answer holds for this process, measured again next time
        partial.unlink(missing_ok=True)
    return answer


def unavailable(name: str, weights: Weights) -> str | None:
    """Why runtime ``name`` cannot (or, in reduced precision, would not pay to) run these weights here."""
    return reduced_missing(name) if name in REDUCED else missing(name, weights)


def select(runtime: str, model: torch.nn.Module, weights: Weights, device: torch.device,
           progress: bool = True, precision: str = AUTO, recorded: bool = False) -> Runtime:
    """The runtime ``runtime`` names (``auto`` or one of CHOICES) for ``model`` on ``device``: torch
    on CUDA whatever was asked; on the CPU the named one (a UsageError when it cannot run here), or for
    ``auto`` the one ``choose`` picks at ``precision``; ``recorded``: a job's own, see ``build``."""
    if runtime not in CHOICES:
        raise UsageError(f"unknown upscaler runtime {runtime!r}; choose one of {', '.join(CHOICES)}")
    if device.type != "cpu":
        return TorchRuntime(model)
    if runtime == AUTO:
        return build(choose(model, weights, progress, precision), model, weights)
    return build(runtime, model, weights, recorded)
