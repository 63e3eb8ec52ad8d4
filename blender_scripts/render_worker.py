"""Blender-side render worker: one fresh Python process that imports bpy.

Run as ``python -m blender_scripts.render_worker --threads N``; the toolkit starts
it through ``partdrag4d.blender`` and never imports this module itself.

Protocol
    stdin: one render job per line (``partdrag4d.store.RenderJob``, JSON); EOF ends.
    stdout: one JSON line per event — ``ready`` once, ``state`` once per state of a
    job (``store.state_event``: a ``store.StateResult``, status ``rendered`` | ``skipped``
    | ``failed`` with ``error``), ``job`` when a job is finished. The job carries its
    render preset as a record (``partdrag4d.presets.Preset``): nothing is looked up here.
    Blender prints progress on file descriptor 1 from C code, so the worker moves the
    real stdout to a private descriptor before bpy is imported and points descriptor 1
    at /dev/null (or stderr with ``--verbose``): nothing Blender says can reach the
    result channel.

What is built when
    Once per worker: render settings, colour management, world and lights, the one
    camera, the view layer passes and the compositor (depth + object index through a
    File Output node into a 32-bit multilayer EXR; the Viewer node returns zeros in
    background mode). Once per job (object): the OBJ is imported (one Blender object
    per ``o`` group = link) and each link object gets ``pass_index`` = its part id; a
    job with the same header as the previous one (same object, cameras, preset, seed:
    the one-state jobs of ``partdrag4d.scheduler``) reuses the imported object. Per
    state: links are posed by setting ``matrix_world``; per view only the camera moves.
    Persistent data keeps Cycles' BVH between views.

Lighting (fixed in the world, so a surface point has the same colour in every view)
    A uniform white world of strength ``AMBIENT`` (unoccluded Lambertian surfaces show
    ``AMBIENT`` x albedo from every side) plus a soft key sun from high front-left (as
    the azimuth-0 camera sees it) and a weaker fill sun from low back-right; surfaces
    range from ~0.55x albedo (away from both suns) to ~1.0x albedo (facing the key), so
    shape reads while colours stay close to their albedo (measured: a sun of strength
    f*pi adds f x albedo, a world of strength W gives W x albedo). Lights fixed in the
    world rather than following the camera keep the views consistent with each other
    (what a multi-view reconstruction model assumes); no side is darker than 0.55x
    albedo, so views of the back still show colour. The film is transparent
    (the world lights the object but is not seen). Colour management: Standard view
    transform, no look, exposure 0, gamma 1, sRGB display; no dither.

Depth and part ids
    Cycles writes the depth and object-index passes from one camera sample, not an
    average over samples, and that sample goes through the pixel centre (measured in
    ``tests/partdrag4d/test_render.py``: on every pixel, silhouettes included, the ids equal a
    ray cast of the analytic scene through the pixel centre, and depth matches with
    relative error ~1e-5). So part ids are exact integers and depth is the planar
    camera z (not the ray length) of the surface seen through the pixel centre.
    Background: depth ``inf`` (Blender writes 1e10), part id 0. The RGBA image is the
    filtered (1.5 px Blackman-Harris), denoised render, so its alpha has soft edges
    where the id mask does not.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import OpenEXR

from partdrag4d import store
from partdrag4d.presets import Preset

AMBIENT = 0.55
"""World (environment) strength: the fraction of albedo an unlit-by-suns surface shows."""
KEY_LIGHT = {"azimuth_deg": -45.0, "elevation_deg": 55.0, "fraction": 0.45, "angle_deg": 8.0}
FILL_LIGHT = {"azimuth_deg": 135.0, "elevation_deg": 20.0, "fraction": 0.15, "angle_deg": 20.0}
"""Suns in the canonical frame (azimuth as in ``cameras.ring_position``: 0 is the
object's front, -X side; the light comes *from* that direction). ``fraction`` is the
share of albedo a surface facing the sun gains (sun strength = fraction * pi)."""

BACKGROUND_DEPTH = 1e9  # Blender writes 1e10 for rays that hit nothing
EXR_PREFIX = "data_"

bpy = None  # imported in main(), after stdout has been moved
mathutils = None


class JobError(Exception):
    """A problem with one job (object); the message is reported as its reason."""


# ------------------------------------------------------------------ stdout handling


def _take_stdout(verbose: bool):
    """Move the real stdout to a private descriptor; point fd 1 at /dev/null (or stderr)."""
    sys.stdout.flush()
    result_fd = os.dup(1)
    if verbose:
        os.dup2(2, 1)
    else:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    return os.fdopen(result_fd, "w", buffering=1, encoding="utf-8")


# ------------------------------------------------------------------ scene (once per worker)


def _sun(name: str, spec: dict):
    name = f"__pd4d_{name}"  # names no link will have (imported objects keep their OBJ group names)
    light = bpy.data.lights.new(name, type="SUN")
    light.energy = spec["fraction"] * math.pi  # white Lambertian facing it: +fraction x albedo
    light.angle = math.radians(spec["angle_deg"])
    obj = bpy.data.objects.new(name, light)
    a, e = math.radians(spec["azimuth_deg"]), math.radians(spec["elevation_deg"])
    toward_light = mathutils.Vector((-math.cos(a) * math.cos(e), -math.sin(a) * math.cos(e), math.sin(e)))
    obj.rotation_mode = "QUATERNION"
    obj.rotation_quaternion = toward_light.to_track_quat("Z", "Y")  # a sun shines along its -Z
    bpy.context.scene.collection.objects.link(obj)
    return obj


GPU_BACKENDS = ("OPTIX", "CUDA")
"""Cycles GPU backends tried for ``--device gpu``, in order (OptiX is the faster on NVIDIA RTX)."""


class Renderer:
    def __init__(self, threads: int, scratch: Path, device: str = "cpu"):
        self.threads = max(1, int(threads))
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.link_objects: dict[str, object] = {}
        self.job_cache: tuple[str, "JobContext"] | None = None  # the last job's header and context
        self._build_scene()
        self.device, self.device_note = self._setup_device(device)

    def _setup_device(self, wanted: str) -> tuple[str, str | None]:
        """Cycles on ``cpu``, or on the first OptiX/CUDA GPU for ``gpu`` (the CPU, with a note, when none).

        Returns the device label recorded in ``render.json`` and the one-line note for the
        user (None when the wish was met).
        """
        self.scene.cycles.device = "CPU"
        if wanted == "cpu":
            return "CPU", None
        if wanted != "gpu":
            raise ValueError(f"--device takes cpu or gpu, got {wanted!r}")
        try:
            prefs = bpy.context.preferences.addons["cycles"].preferences
        except KeyError:
            return "CPU", "no GPU: the Cycles add-on preferences are unavailable; Cycles renders on the CPU"
        for backend in GPU_BACKENDS:
            try:
                prefs.compute_device_type = backend
            except TypeError:  # this build lacks the backend
                continue
            prefs.refresh_devices()
            gpus = [d for d in prefs.devices if d.type == backend]
            if gpus:
                for d in prefs.devices:
                    d.use = d.type == backend
                self.scene.cycles.device = "GPU"
                return f"GPU {backend}: {', '.join(sorted({d.name for d in gpus}))}", None
        prefs.compute_device_type = "NONE"
        return "CPU", f"no {' or '.join(GPU_BACKENDS)} GPU found; Cycles renders on the CPU"

    def _build_scene(self) -> None:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        sc = bpy.context.scene
        self.scene = sc
        r = sc.render
        r.engine = "CYCLES"
        r.threads_mode = "FIXED"
        r.threads = self.threads
        r.use_persistent_data = True
        r.film_transparent = True
        r.dither_intensity = 0.0
        r.resolution_percentage = 100
        r.pixel_aspect_x = r.pixel_aspect_y = 1.0
        r.use_compositing = True
        r.use_sequencer = False
        r.image_settings.file_format = "PNG"
        r.image_settings.color_mode = "RGBA"
        r.image_settings.color_depth = "8"
        r.image_settings.compression = 15
        for name in dir(r):  # no date, time, host, render-time... metadata in the images
            if name.startswith("use_stamp"):
                setattr(r, name, False)
        sc.display_settings.display_device = "sRGB"
        sc.view_settings.view_transform = "Standard"
        sc.view_settings.look = "None"
        sc.view_settings.exposure = 0.0
        sc.view_settings.gamma = 1.0
        cy = sc.cycles
        cy.device = "CPU"
        cy.use_adaptive_sampling = False
        cy.use_animated_seed = False
        cy.use_light_tree = False  # three lights: uniform light picking is ~7% faster, same noise
        cy.caustics_reflective = False
        cy.caustics_refractive = False
        cy.denoising_use_gpu = False

        world = bpy.data.worlds.new("__pd4d_ambient")
        sc.world = world
        world.use_nodes = True
        bg = world.node_tree.nodes.get("Background")
        bg.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
        bg.inputs["Strength"].default_value = AMBIENT
        _sun("key", KEY_LIGHT)
        _sun("fill", FILL_LIGHT)

        cam_data = bpy.data.cameras.new("__pd4d_camera")
        cam_data.type = "PERSP"
        cam_data.sensor_fit = "HORIZONTAL"
        cam_data.sensor_width = 36.0
        cam_data.clip_start = 0.01
        cam_data.clip_end = 1000.0
        self.camera = bpy.data.objects.new("__pd4d_camera", cam_data)
        sc.collection.objects.link(self.camera)
        sc.camera = self.camera

        vl = sc.view_layers[0]
        vl.use_pass_z = True
        vl.use_pass_object_index = True

        sc.use_nodes = True
        nt = sc.node_tree
        for node in list(nt.nodes):
            nt.nodes.remove(node)
        # No Composite node: the PNG is then written from the render result directly (the same
        # pixels, measured identical) and the compositor only runs the File Output (~2% faster).
        layers = nt.nodes.new("CompositorNodeRLayers")
        out = nt.nodes.new("CompositorNodeOutputFile")
        out.format.file_format = "OPEN_EXR_MULTILAYER"
        out.format.color_depth = "32"
        out.format.exr_codec = "NONE"
        out.layer_slots.clear()
        out.layer_slots.new("depth")
        out.layer_slots.new("index")
        out.base_path = str(self.scratch / EXR_PREFIX)
        nt.links.new(layers.outputs["Depth"], out.inputs["depth"])
        nt.links.new(layers.outputs["IndexOB"], out.inputs["index"])
        self.file_output = out

    # -------------------------------------------------------------- per job

    def apply_preset(self, preset, seed: int) -> None:
        if preset.engine != "CYCLES":
            raise JobError(f"render worker supports Cycles presets only, got engine {preset.engine}")
        cy = self.scene.cycles
        cy.samples = preset.samples
        cy.seed = int(seed) % (2**31 - 1)
        cy.max_bounces = preset.max_bounces
        cy.diffuse_bounces = preset.diffuse_bounces
        cy.glossy_bounces = preset.glossy_bounces
        cy.transmission_bounces = preset.transmission_bounces
        cy.transparent_max_bounces = preset.transparent_bounces
        cy.volume_bounces = 0
        cy.filter_width = preset.filter_width
        cy.use_denoising = preset.denoiser is not None
        if preset.denoiser:
            cy.denoiser = preset.denoiser
            cy.denoising_input_passes = "RGB_ALBEDO_NORMAL"
            cy.denoising_prefilter = preset.denoise_prefilter
            cy.denoising_quality = preset.denoise_quality

    def set_intrinsics(self, cam) -> None:
        K = cam.K
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        if abs(K[0, 1]) > 1e-9 or abs(fx - fy) > 1e-6 * fx:
            raise JobError(f"only square pixels without skew are supported (K={K.tolist()})")
        r = self.scene.render
        r.resolution_x, r.resolution_y = cam.width, cam.height
        data = self.camera.data
        data.lens = fx * data.sensor_width / cam.width
        size = max(cam.width, cam.height)
        data.shift_x = (cam.width / 2.0 - cx) / size
        data.shift_y = (cy - cam.height / 2.0) / size

    def clear_object(self) -> None:
        for obj in list(self.link_objects.values()):
            bpy.data.objects.remove(obj, do_unlink=True)
        self.link_objects = {}
        bpy.data.orphans_purge(do_local_ids=True, do_linked_ids=True, do_recursive=True)

    def load_object(self, mesh_path: str, links: list[dict]) -> dict[str, object]:
        self.clear_object()
        path = Path(mesh_path)
        if not path.is_file():
            raise JobError(f"mesh not found: {path}")
        before = set(bpy.data.objects)
        bpy.ops.wm.obj_import(filepath=str(path), forward_axis="Y", up_axis="Z")
        new = [o for o in bpy.data.objects if o not in before]
        part_ids = {str(link["name"]): int(link["part_id"]) for link in links}
        objects = {}
        for obj in new:
            if obj.type != "MESH":
                bpy.data.objects.remove(obj, do_unlink=True)
                continue
            objects[obj.name] = obj
        self.link_objects = objects
        if not objects:
            raise JobError(f"no geometry imported from {path}")
        unknown = sorted(set(objects) - set(part_ids))
        if unknown:
            raise JobError(f"mesh groups not in the job's links: {unknown[:5]}")
        for name, obj in objects.items():
            if not (0 < part_ids[name] < 65536):
                raise JobError(f"part id of {name} must be in 1..65535, got {part_ids[name]}")
            obj.pass_index = part_ids[name]
            obj.matrix_world = mathutils.Matrix.Identity(4)
        for image in bpy.data.images:
            if image.source == "FILE" and not os.path.isfile(bpy.path.abspath(image.filepath)):
                raise JobError(f"texture not found: {bpy.path.abspath(image.filepath)} (referenced by {path.with_suffix('.mtl')})")
        return objects

    def pose(self, link_poses: dict, known_links: set[str]) -> None:
        unknown = sorted(set(link_poses) - known_links)
        if unknown:
            raise JobError(f"link_poses name links the job does not have: {unknown[:5]}")
        for name, obj in self.link_objects.items():
            matrix = link_poses.get(name)
            if matrix is None:
                obj.matrix_world = mathutils.Matrix.Identity(4)
            else:
                m = np.asarray(matrix, dtype=np.float64)
                if m.shape != (4, 4) or not np.all(np.isfinite(m)):
                    raise JobError(f"pose of {name} is not a finite 4x4 matrix")
                obj.matrix_world = mathutils.Matrix(m.tolist())

    # -------------------------------------------------------------- per view

    def render_view(self, c2w_blender: np.ndarray, png_path: Path) -> tuple[np.ndarray, np.ndarray, float]:
        self.camera.matrix_world = mathutils.Matrix(np.asarray(c2w_blender, dtype=np.float64).tolist())
        self.scene.render.filepath = str(png_path)
        exr = self.scratch / f"{EXR_PREFIX}{self.scene.frame_current:04d}.exr"
        if exr.exists():
            exr.unlink()
        t0 = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        seconds = time.perf_counter() - t0
        if not png_path.is_file():
            raise RuntimeError(f"Blender wrote no image to {png_path}")
        # Cycles still writes its render statistics (times) as PNG text: same pixels, new bytes
        store.strip_png_metadata(png_path)
        depth, index = read_data_exr(exr)
        exr.unlink()
        return depth, index, seconds


def read_data_exr(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Planar depth (float32, background inf) and part ids (uint16) from the pass EXR."""
    if not path.is_file():
        raise RuntimeError(f"the compositor wrote no pass file {path}")
    with OpenEXR.File(str(path)) as f:
        channels = {name.split(".")[0]: ch.pixels for name, ch in f.parts[0].channels.items()}
    depth = np.array(channels["depth"], dtype=np.float32)
    index_f = np.asarray(channels["index"], dtype=np.float32)
    index = np.rint(index_f)
    if np.abs(index_f - index).max(initial=0.0) > 1e-4 or index.min(initial=0) < 0 or index.max(initial=0) > 65535:
        raise RuntimeError("object-index pass is not integer-valued")
    depth[depth >= BACKGROUND_DEPTH] = np.inf
    return depth, index.astype(np.uint16)


# ------------------------------------------------------------------ jobs


def _azimuth_elevation(c2w: np.ndarray) -> tuple[float, float]:
    x, y, z = c2w[:3, 3]
    azimuth = math.degrees(math.atan2(-y, -x)) % 360.0
    elevation = math.degrees(math.atan2(z, math.hypot(x, y)))
    return round(azimuth, 6) % 360.0, round(elevation, 6)


def _remove_stale(out_dir: Path) -> None:
    parent = out_dir.parent
    if not parent.is_dir():
        return
    prefix = f".{out_dir.name}."
    for entry in parent.iterdir():
        if entry.name.startswith(prefix) and (entry.name.endswith(".tmp") or ".old-" in entry.name):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)


@dataclass
class JobContext:
    """What a job's states share: validated settings, cameras and the imported object."""

    object_id: str
    mesh: str
    preset: Preset
    seed: int
    cameras: list
    camera_records: list[dict]
    known_links: set[str]
    width: int
    height: int
    import_seconds: float
    mesh_record: str = ""
    provenance_dir: str | None = None


def prepare_job(renderer: Renderer, job: dict) -> JobContext:
    """Validate a job, apply its preset and intrinsics, import its mesh (once per job)."""
    preset = Preset.from_dict(job["preset"])
    seed = int(job.get("seed", 0))
    cameras = [store.Camera.from_dict(c) for c in job["cameras"]]
    if not cameras:
        raise JobError("job has no cameras")
    width, height = cameras[0].width, cameras[0].height
    if any((c.width, c.height) != (width, height) or not np.allclose(c.K, cameras[0].K) for c in cameras):
        raise JobError("all cameras of a job must share the image size and K")
    links = list(job.get("links", []))
    renderer.apply_preset(preset, seed)
    renderer.set_intrinsics(cameras[0])
    t0 = time.perf_counter()
    renderer.load_object(job["mesh"], links)
    import_seconds = time.perf_counter() - t0
    records = []
    for c in cameras:
        azimuth, elevation = _azimuth_elevation(c.c2w)
        records.append({"K": c.K.tolist(), "c2w_opencv": c.c2w.tolist(), "c2w_blender": c.c2w_blender.tolist(),
                        "width": c.width, "height": c.height, "azimuth": azimuth, "elevation": elevation})
    mesh_record = str(job["mesh"])
    if job.get("root"):  # paths inside a dataset are recorded relative to its root
        mesh_record = os.path.relpath(job["mesh"], job["root"]).replace(os.sep, "/")
    return JobContext(str(job.get("object_id", "?")), str(job["mesh"]), preset, seed, cameras, records,
                      {str(link["name"]) for link in links}, width, height, import_seconds, mesh_record,
                      job.get("provenance_dir"))


def render_state(renderer: Renderer, ctx: JobContext, state: dict) -> tuple[str, dict | None]:
    """Render one state into its out_dir (staged, renamed when complete).

    Returns (``rendered`` or ``skipped``, timing). ``render.json`` holds only what the
    same job reproduces (settings, versions, relative paths); wall and CPU times,
    threads and host go to ``<provenance_dir>/<state_id>.json`` when the job names a
    provenance folder, and are returned either way."""
    t_state, c_state = time.perf_counter(), time.process_time()
    out_dir = Path(state["out_dir"])
    n = len(ctx.cameras)
    if store.is_render_complete(out_dir, n):
        return "skipped", None
    _remove_stale(out_dir)
    renderer.pose(state.get("link_poses") or {}, ctx.known_links)
    depth = np.empty((n, ctx.height, ctx.width), dtype=np.float32)
    part_id = np.empty((n, ctx.height, ctx.width), dtype=np.uint16)
    seconds = []
    preset = ctx.preset
    state_id = str(state.get("state_id"))
    with store.StagingDir(out_dir) as stage:
        for v, cam in enumerate(ctx.cameras):
            depth[v], part_id[v], sec = renderer.render_view(cam.c2w_blender, stage / store.view_png_name(v))
            seconds.append(sec)
        cameras = {
            "conventions": "partdrag4d.cameras: OpenCV c2w (x right, y down, z forward), pixel centres at +0.5, "
                           "c2w_blender = c2w_opencv @ diag(1,-1,-1,1)",
            "views": ctx.camera_records}
        store.write_render(stage, depth, part_id, cameras, {
            "object_id": ctx.object_id, "state_id": state_id, "mesh": ctx.mesh_record,
            "preset": preset.name, "engine": preset.engine, "samples": preset.samples,
            "denoiser": preset.denoiser, "denoise_quality": preset.denoise_quality,
            "denoise_prefilter": preset.denoise_prefilter, "filter_width": preset.filter_width,
            "bounces": {"max": preset.max_bounces, "diffuse": preset.diffuse_bounces, "glossy": preset.glossy_bounces},
            "seed": ctx.seed, "resolution": [ctx.width, ctx.height], "num_views": n,
            "bpy_version": bpy.app.version_string, "device": renderer.device,
            "view_transform": "Standard", "film_transparent": True,
            "lighting": {"world_strength": AMBIENT, "key_sun": KEY_LIGHT, "fill_sun": FILL_LIGHT},
            "depth": "planar camera z at pixel centres, background inf",
            "part_id": "object-index pass at pixel centres, 0 background, link k -> k+1",
        })
    timing = {
        "object_id": ctx.object_id, "state_id": state_id, "finished_utc": store.utc_now(), "threads": renderer.threads,
        "seconds_per_view": round(float(np.mean(seconds)), 4), "render_seconds": [round(s, 4) for s in seconds],
        "state_seconds": round(time.perf_counter() - t_state, 4),
        "state_cpu_seconds": round(time.process_time() - c_state, 4), "import_seconds": round(ctx.import_seconds, 4),
        **store.host_facts(),
    }
    if ctx.provenance_dir:
        store.atomic_write_json(Path(ctx.provenance_dir) / f"{state_id}.json", timing)
    return "rendered", timing


def run_job(renderer: Renderer, job: dict, send) -> None:
    """Render every state of one job, sending one ``state`` event per state and a final ``job`` event."""
    object_id = str(job.get("object_id", "?"))
    states = list(job.get("states", []))

    def report(s: dict, status: str, seconds: float = 0.0, error: str | None = None) -> None:
        send(store.state_event(store.StateResult(object_id, str(s.get("state_id")), str(s.get("out_dir")), status,
                                                 round(seconds, 4), error)))

    t_job = time.perf_counter()
    try:
        ctx = _cached_context(renderer, job)
    except Exception as exc:  # the whole job fails: report every state with the reason
        reason = _reason(exc)
        for s in states:
            report(s, "failed", error=reason)
        send({"event": "job", "object_id": object_id, "status": "failed", "error": reason})
        return
    for state in states:
        t0 = time.perf_counter()
        try:
            status, _ = render_state(renderer, ctx, state)
            report(state, status, time.perf_counter() - t0)
        except Exception as exc:
            report(state, "failed", time.perf_counter() - t0, _reason(exc))
    send({"event": "job", "object_id": object_id, "status": "done", "seconds": round(time.perf_counter() - t_job, 3)})


def _job_key(job: dict) -> str:
    """What decides a job's context: everything but its states, and the mesh file's size and time."""
    header = {k: v for k, v in job.items() if k != "states"}
    try:
        st = os.stat(job["mesh"])
        header["_mesh_stat"] = [st.st_size, st.st_mtime_ns]
    except (OSError, KeyError, TypeError):
        header["_mesh_stat"] = None
    return json.dumps(header, sort_keys=True, default=str)


def _cached_context(renderer: Renderer, job: dict) -> JobContext:
    """The job's context, reused when the previous job had the same header (same object, cameras,
    preset and seed): a scheduler sending one state per job (partdrag4d.scheduler) then imports an
    object's mesh once per worker, as a job with all its states does."""
    key = _job_key(job)
    if renderer.job_cache is not None and renderer.job_cache[0] == key:
        return renderer.job_cache[1]
    renderer.job_cache = None
    ctx = prepare_job(renderer, job)
    renderer.job_cache = (key, ctx)
    return ctx


def _reason(exc: BaseException) -> str:
    if isinstance(exc, JobError):
        return str(exc)
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {str(exc).strip()}{where}"


def _die_with_parent(parent_pid: int | None) -> None:
    """Ask Linux to kill this worker when the process that started it dies (``kill -9`` of
    a run must not leave Blender rendering into the dataset behind the next run)."""
    if not parent_pid:
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the worker still ends at EOF on stdin
        return
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--parent-pid", type=int, default=None, help="die with this process (Linux)")
    parser.add_argument("--scratch", type=Path, default=None, help="folder for the per-view pass EXRs")
    parser.add_argument("--verbose", action="store_true", help="let Blender's output through to stderr")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="Cycles on the CPU, or on an OptiX/CUDA GPU (the CPU, with a note, when none is found)")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent_pid)

    results = _take_stdout(args.verbose)
    global bpy, mathutils
    import bpy as _bpy  # lazy: only after stdout has been moved (Blender prints on fd 1 from C)
    import mathutils as _mathutils

    bpy, mathutils = _bpy, _mathutils

    def send(message: dict) -> None:
        results.write(json.dumps(message) + "\n")
        results.flush()

    own_scratch = args.scratch is None
    scratch = Path(tempfile.mkdtemp(prefix="pd4d-render-")) if own_scratch else args.scratch
    try:
        renderer = Renderer(args.threads, scratch, args.device)
        send({"event": "ready", "pid": os.getpid(), "threads": renderer.threads, "bpy_version": bpy.app.version_string,
              "device": renderer.device, "device_note": renderer.device_note})
        while True:
            line = sys.stdin.readline()
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            try:
                job = store.read_render_job(line)
            except ValueError as exc:  # not JSON, or a job without what a worker needs
                send({"event": "job", "object_id": "?", "status": "failed", "error": f"bad job line: {exc}"})
                continue
            run_job(renderer, job, send)
    finally:
        if own_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
