"""``partdrag4d view``: a dataset browser in the web browser, built on viser.

Pick category -> object -> sequence, move the stage slider and the textured mesh is
re-posed by the state's link poses (``state.json``, canonical frame: posed = pose @
rest, so each link's scene node carries its pose and the rest mesh never changes).
Toggles: part-id colours, the state's surface samples, the 12 ring cameras as frustums
showing their rendered views, and the drags of a chosen pair (``drags.h5``) as arrows
coloured by how many views see them (or whether a chosen view sees them).

Everything is loaded lazily: opening reads ``manifest.jsonl`` and the first state
only; an object's mesh is read when it is first shown, a state's files when its stage
is picked. A missing, half-rendered or drag-less dataset opens with a message in the
page saying what is missing, and shows what is there.

viser is imported only inside this module's functions (and ``partrm.viewer``): it pulls
in a web-server stack that the rest of the package and its CLI do not need.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import h5py
import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

from partdrag4d import cameras as cam, store
from partdrag4d.meshio import MeshPiece, read_obj_links

THUMBNAIL = 192
"""Frustum images are downsampled to at most this many pixels on a side."""
POINTS_SHOWN = 8192
"""At most this many surface samples are sent to the browser."""
PALETTE = np.array([
    (160, 160, 160), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
], dtype=np.uint8)
"""Part-id colours (index = part id modulo its length; 0 is background)."""


def part_colour(part_id: int) -> tuple[int, int, int]:
    c = PALETTE[1 + (int(part_id) - 1) % (len(PALETTE) - 1)] if part_id > 0 else PALETTE[0]
    return tuple(int(x) for x in c)


# --------------------------------------------------------------------------- index


@dataclass
class DatasetIndex:
    """What ``manifest.jsonl`` says is in a dataset, and what is missing at the top level."""

    root: Path
    states: dict[str, dict] = field(default_factory=dict)  # state id -> manifest record
    tree: dict[str, dict[str, dict[str, list[str]]]] = field(default_factory=dict)  # category -> object -> sequence -> states by stage
    errors: list[str] = field(default_factory=list)  # failed objects / skipped joints, one line each
    problems: list[str] = field(default_factory=list)  # dataset-level messages for the page
    has_drags: bool = False
    cameras: list = field(default_factory=list)  # the dataset's ring cameras (full size)

    @property
    def drag_file(self) -> Path:
        return store.drag_file(self.root)

    def sequence_states(self, sequence_id: str) -> list[str]:
        for objects in self.tree.values():
            for seqs in objects.values():
                if sequence_id in seqs:
                    return seqs[sequence_id]
        raise KeyError(sequence_id)


def index_dataset(root: Path) -> DatasetIndex:
    """Read only the manifest (one JSON line per state) and check the top-level files."""
    root = Path(root)
    idx = DatasetIndex(root)
    if not root.exists():
        idx.problems.append(f"{root} does not exist: make one with `partdrag4d make-dataset --out {root}`")
        return idx
    if not root.is_dir():
        idx.problems.append(f"{root} is not a folder")
        return idx
    manifest = root / store.MANIFEST
    if not manifest.is_file():
        idx.problems.append(f"{root}: no {store.MANIFEST} (run `partdrag4d articulate SOURCE --out {root}`)")
        return idx
    with open(manifest, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as exc:
                idx.problems.append(f"{manifest} line {number}: not JSON ({exc.msg})")
                continue
            if r.get("status") != "ok" or "state_id" not in r:
                idx.errors.append(str(r.get("error") or f"{r.get('object_id', '?')}: {r.get('status', 'no status')}"))
                continue
            idx.states[r["state_id"]] = r
            seq = idx.tree.setdefault(r["category"], {}).setdefault(r["object_id"], {}).setdefault(r["sequence_id"], [])
            seq.append(r["state_id"])
    for objects in idx.tree.values():
        for seqs in objects.values():
            for sid, states in seqs.items():
                states.sort(key=lambda s: idx.states[s]["stage"])
    if not idx.states:
        idx.problems.append(f"{manifest}: no articulated states ({len(idx.errors)} objects failed)")
    try:
        idx.cameras = store.read_dataset_cameras(root)
    except (OSError, KeyError, ValueError):
        idx.cameras = cam.ring_cameras()
        idx.problems.append(f"{root}: no readable cameras.json (showing the default camera ring)")
    idx.has_drags = idx.drag_file.is_file()
    if idx.states and not idx.has_drags:
        idx.problems.append(f"{root}: no drags.h5 (run `partdrag4d drags {root}`): the drag toggle has nothing to show")
    if idx.errors:
        idx.problems.append(f"{len(idx.errors)} objects or joints failed or were skipped at articulation (first: {idx.errors[0]})")
    return idx


def rendered_views(root: Path, state_id: str) -> list[int]:
    """Views of a state whose PNG exists (empty when the state has no complete render)."""
    folder = store.render_dir(root, state_id)
    if not (folder / store.RENDER_CAMERAS).is_file():
        return []
    return [v for v in range(cam.NUM_VIEWS) if (folder / store.view_png_name(v)).is_file()]


# --------------------------------------------------------------------------- meshes


def link_glb(pieces: list[MeshPiece]) -> bytes:
    """A GLB of one link's pieces with their colours and image textures."""
    import trimesh  # lazy: partrm.viewer imports this module on the model side, where (GPU machine) trimesh is absent

    scene = trimesh.Scene()
    for k, p in enumerate(pieces):
        rgba = [int(round(255 * c)) for c in p.colour] + [255]
        if p.texture is not None and p.texture.is_file():
            with Image.open(p.texture) as im:
                image = im.convert("RGB")
            material = trimesh.visual.material.PBRMaterial(baseColorTexture=image, baseColorFactor=rgba, metallicFactor=0.0, roughnessFactor=0.8,
                                                                 doubleSided=True)
            visual = trimesh.visual.TextureVisuals(uv=p.uv, material=material)
        else:
            material = trimesh.visual.material.PBRMaterial(baseColorFactor=rgba, metallicFactor=0.0, roughnessFactor=0.8,
                                                                 doubleSided=True)
            visual = trimesh.visual.TextureVisuals(material=material)
        scene.add_geometry(trimesh.Trimesh(p.vertices, p.faces, visual=visual, process=False), geom_name=f"piece_{k}")
    return scene.export(file_type="glb")


@dataclass
class ObjectAssets:
    """An object's rest mesh by link (canonical frame), links and samples; read once."""

    object_id: str
    info: dict  # object.json
    pieces: dict[str, list[MeshPiece]]
    part_ids: dict[str, int]  # link name -> part id
    sample_part_id: Optional[np.ndarray]


def load_object(root: Path, object_id: str) -> ObjectAssets:
    folder = store.object_dir(root, object_id)
    info = store.read_object(root, object_id)
    pieces = read_obj_links(folder / store.REST_MESH)
    part_ids = {link["name"]: int(link["part_id"]) for link in info["links"]}
    sample_part_id = None
    if (folder / store.OBJECT_POINTS).is_file():
        sample_part_id = store.read_object_points(root, object_id)["part_id"].astype(np.int64)
    return ObjectAssets(object_id, info, pieces, part_ids, sample_part_id)


# --------------------------------------------------------------------------- small helpers


def wxyz_from_matrix(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix."""
    x, y, z, w = Rotation.from_matrix(np.asarray(R, np.float64)[:3, :3]).as_quat()
    return np.array([w, x, y, z])


def matrix_from_pose(wxyz, position) -> np.ndarray:
    w, x, y, z = np.asarray(wxyz, np.float64)
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat([x, y, z, w]).as_matrix()
    T[:3, 3] = position
    return T


def read_thumbnail(path: Path, size: int = THUMBNAIL) -> np.ndarray:
    """A rendered view on white as [h, w, 3] uint8, at most ``size`` pixels on a side."""
    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    if max(rgba.size) > size:
        rgba = rgba.resize((size, size), Image.BILINEAR)
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return np.asarray(canvas)


def count_colours(n_views: np.ndarray, num_views: int = cam.NUM_VIEWS) -> np.ndarray:
    """Arrow colours by how many views see a drag: pale blue (1 view) to deep red (all)."""
    t = np.clip((np.asarray(n_views, np.float64) - 1) / max(1, num_views - 1), 0, 1)[:, None]
    lo, hi = np.array([120, 180, 255.0]), np.array([200, 20, 30.0])
    return (lo + t * (hi - lo)).astype(np.uint8)


@dataclass
class PairDrags:
    """The drags of one pair, one arrow per material point (deduplicated over views)."""

    start: np.ndarray  # [M, 3]
    end: np.ndarray  # [M, 3]
    views: np.ndarray  # [M, V] bool: the view keeps this drag
    point_index: np.ndarray  # [M]


def read_pair_drags(drag_file: Path, sequence_id: str, source: int, target: int) -> Optional[PairDrags]:
    """None when the file has no such sequence or pair."""
    with h5py.File(drag_file, "r") as f:
        if "sequences" not in f or sequence_id not in f["sequences"]:
            return None
        g = f["sequences"][sequence_id]
        pairs = [tuple(int(x) for x in p) for p in g["pairs"][:]]
        if (source, target) not in pairs:
            return None
        k = pairs.index((source, target))
        index = g["point_index"][k]  # [V, K]
        s3, e3 = g["start_3d"][k], g["end_3d"][k]
    valid = index >= 0
    ids = np.unique(index[valid])
    n_views = index.shape[0]
    start, end = np.zeros((len(ids), 3)), np.zeros((len(ids), 3))
    views = np.zeros((len(ids), n_views), bool)
    pos = {int(p): i for i, p in enumerate(ids)}
    for v in range(n_views):
        for j in np.flatnonzero(valid[v]):
            i = pos[int(index[v, j])]
            start[i], end[i] = s3[v, j], e3[v, j]
            views[i, v] = True
    return PairDrags(start, end, views, ids)


# --------------------------------------------------------------------------- the viewer


class DatasetViewer:
    """The dataset browser on a viser server. ``DatasetViewer(root).serve_forever()``; tests
    use ``port=0`` (a free port), ``url`` and ``stop()``.

    Scene nodes: ``/object/<k>/<link>`` (a frame carrying the link pose; ``k`` counts the
    objects shown so far) with children ``textured`` (GLB, added by a background thread)
    and ``parts`` (part-id colour, shown until the textures are there); ``/samples``;
    ``/cameras/view_XX``; ``/drags``.

    Each shown object gets node names never used before: viser 1.1.1's page keeps the pose
    of a removed node for a later node of the same name, and a fresh handle does not send
    a pose equal to its default (identity). Reusing ``/object/<link>`` made the next
    object's links inherit the previous object's poses (a closed drawer drawn where the
    laptop's lid had been turned to).
    """

    show_cameras = False
    """Whether the ring cameras are shown when the page opens (off: they would cover the
    object; one toggle, "Ring cameras", shows them)."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 8080, server: Any = None, title: str = "PartDrag-4D"):
        t0 = time.perf_counter()
        import viser  # lazy: the web server's 1.5 s import is paid only when a viewer opens

        self.root = Path(root)
        self.server = server if server is not None else viser.ViserServer(host=host, port=port, verbose=False, label=title)
        self.server.scene.set_up_direction("+z")
        # shadow maps cost the most in software WebGL (headless browsers, remote desktops)
        self.server.scene.configure_default_lights(cast_shadow=False)
        self._lock = threading.RLock()
        self._objects: dict[str, ObjectAssets] = {}
        self._shown_objects = 0  # the k of /object/<k>/<link>: fresh node names per shown object
        self._stopped = False
        self._glb: dict[tuple[str, str], bytes] = {}
        self.object_id: Optional[str] = None
        self.state_id: Optional[str] = None
        self.link_frames: dict[str, Any] = {}
        self.link_meshes: dict[str, Any] = {}  # link -> textured GLB node
        self.link_parts: dict[str, Any] = {}  # link -> part-colour mesh node
        self._textures_ready = threading.Event()
        self.frustums: dict[int, Any] = {}
        self.samples = None
        self.arrows = None
        self.pair_drags: Optional[PairDrags] = None
        self.last_error: Optional[str] = None
        self.index = index_dataset(self.root)
        self._build_gui()
        self.server.on_client_connect(self.frame_client)
        self.open_seconds: Optional[float] = None
        self._pending_thread: Optional[threading.Thread] = None
        first = self._first_sequence()
        if first is not None:
            self.select_sequence(*first)
        self.open_seconds = time.perf_counter() - t0
        if self._pending_thread is not None:
            self._pending_thread.start()

    # ------------------------------------------------------------------ framing

    def frame(self) -> tuple[np.ndarray, float]:
        """The centre and radius of what a page opens on: the object (the canonical frame fits
        it in a sphere of about radius 1 at the origin, what every ring view frames)."""
        return np.zeros(3), 1.0

    def frame_client(self, client) -> None:
        """Point a newly opened page at ``frame()`` from the input view's direction (view 0,
        where drags are taken), close enough that it fills most of the view."""
        c = self.index.cameras[0] if self.index.cameras else cam.ring_cameras()[0]
        fov = float(2.0 * np.arctan(c.height / (2.0 * c.K[1, 1])))
        center, radius = self.frame()
        direction = c.c2w[:3, 3] / np.linalg.norm(c.c2w[:3, 3])
        client.camera.up_direction = (0.0, 0.0, 1.0)
        client.camera.fov = fov
        client.camera.position = center + direction * radius * cam.CAMERA_DISTANCE
        client.camera.look_at = center

    # ------------------------------------------------------------------ GUI

    def _build_gui(self) -> None:
        gui = self.server.gui
        gui.main_panel.dock_right()
        gui.main_panel.set_width(340)
        self.problems_md = gui.add_markdown(self._problems_text())
        cats = sorted(self.index.tree) or ["(none)"]
        with gui.add_folder("Dataset"):
            self.category_dd = gui.add_dropdown("Category", tuple(cats), initial_value=cats[0])
            self.object_dd = gui.add_dropdown("Object", ("(none)",))
            self.sequence_dd = gui.add_dropdown("Sequence", ("(none)",))
            self.stage_slider = gui.add_slider("Stage", min=0, max=5, step=1, initial_value=0)
            self.state_md = gui.add_markdown("")
        with gui.add_folder("Show"):
            self.parts_cb = gui.add_checkbox("Part-id colours", False)
            self.samples_cb = gui.add_checkbox("Surface samples", False)
            self.cameras_cb = gui.add_checkbox("Ring cameras", self.show_cameras)
            self.drags_cb = gui.add_checkbox("Drags of a pair", False)
            self.target_dd = gui.add_dropdown("Drag target stage", ("1",), initial_value="1")
            self.drag_view_dd = gui.add_dropdown("Drags seen from", ("any view",) + tuple(f"view {v}" for v in range(cam.NUM_VIEWS)),
                                                 initial_value="any view")
            self.drags_md = gui.add_markdown("")

        self.category_dd.on_update(lambda _: self._guarded(self._on_category))
        self.object_dd.on_update(lambda _: self._guarded(self._on_object))
        self.sequence_dd.on_update(lambda _: self._guarded(self._on_sequence))
        self.stage_slider.on_update(lambda _: self._guarded(self._on_stage))
        self.parts_cb.on_update(lambda _: self._guarded(self._update_colours))
        self.samples_cb.on_update(lambda _: self._guarded(self._update_samples))
        self.cameras_cb.on_update(lambda _: self._guarded(self._update_cameras))
        for h in (self.drags_cb, self.target_dd, self.drag_view_dd):
            h.on_update(lambda _: self._guarded(self._update_drags))

    def _problems_text(self) -> str:
        if not self.index.problems:
            return f"**{self.root}**: {len(self.index.states)} states"
        lines = "\n".join(f"- {p}" for p in self.index.problems)
        return f"**{self.root}**: {len(self.index.states)} states\n\n**Problems**\n\n{lines}"

    def _guarded(self, fn, message=None) -> None:
        """GUI callbacks run in viser's thread pool: serialise them, and show an error in
        the page (one line, in ``message`` or the state panel) instead of losing it in a thread."""
        with self._lock:
            try:
                fn()
            except Exception as exc:  # a broken file must not kill the viewer
                (message or self.state_md).content = f"**Error:** {type(exc).__name__}: {exc}"
                self.last_error = f"{type(exc).__name__}: {exc}"

    def _first_sequence(self) -> Optional[tuple[str, str, str]]:
        for c in sorted(self.index.tree):
            for o in sorted(self.index.tree[c]):
                for s in sorted(self.index.tree[c][o]):
                    return c, o, s
        return None

    def _on_category(self) -> None:
        objects = sorted(self.index.tree.get(self.category_dd.value, {}))
        if objects:
            seqs = sorted(self.index.tree[self.category_dd.value][objects[0]])
            self.select_sequence(self.category_dd.value, objects[0], seqs[0])

    def _on_object(self) -> None:
        seqs = sorted(self.index.tree.get(self.category_dd.value, {}).get(self.object_dd.value, {}))
        if seqs:
            self.select_sequence(self.category_dd.value, self.object_dd.value, seqs[0])

    def _on_sequence(self) -> None:
        if self.sequence_dd.value in self.index.tree.get(self.category_dd.value, {}).get(self.object_dd.value, {}):
            self.select_sequence(self.category_dd.value, self.object_dd.value, self.sequence_dd.value)

    def _on_stage(self) -> None:
        states = self.index.sequence_states(self.sequence_id)
        stage = int(self.stage_slider.value)
        if 0 <= stage < len(states) and states[stage] != self.state_id:
            self.show_state(states[stage])

    # ------------------------------------------------------------------ selection

    def select_sequence(self, category: str, object_id: str, sequence_id: str, stage: int = 0) -> None:
        with self._lock:
            self.sequence_id = sequence_id
            objects = tuple(sorted(self.index.tree[category]))
            seqs = tuple(sorted(self.index.tree[category][object_id]))
            states = self.index.sequence_states(sequence_id)
            # setting values from here fires the callbacks; they see the same selection and do nothing
            if self.category_dd.value != category:
                self.category_dd.value = category
            self.object_dd.options = objects
            self.object_dd.value = object_id
            self.sequence_dd.options = seqs
            self.sequence_dd.value = sequence_id
            self.stage_slider.max = max(1, len(states) - 1)
            stage = min(stage, len(states) - 1)
            self.stage_slider.value = stage
            self.show_state(states[stage])

    def select_stage(self, stage: int) -> None:
        """What moving the slider does (for scripts and tests)."""
        with self._lock:
            self.stage_slider.value = stage
            states = self.index.sequence_states(self.sequence_id)
            self.show_state(states[stage])

    def show_state(self, state_id: str) -> None:
        with self._lock:
            record = self.index.states[state_id]
            if record["object_id"] != self.object_id:
                self._show_object(record["object_id"])
            self.state_id = state_id
            self.state = store.read_state(self.root, state_id)
            for link, frame in self.link_frames.items():
                T = np.asarray(self.state["link_poses"].get(link, np.eye(4)), np.float64)
                frame.wxyz, frame.position = wxyz_from_matrix(T[:3, :3]), T[:3, 3]
            stages = self.index.sequence_states(self.sequence_id)
            others = [str(k) for k in range(len(stages)) if k != record["stage"]]
            if others:
                old = self.target_dd.value
                self.target_dd.options = tuple(others)
                self.target_dd.value = old if old in others else others[-1]
            self.views = rendered_views(self.root, state_id)
            q = ", ".join(f"{k} = {v:.4g}" for k, v in record["qpos"].items())
            render_note = f"{len(self.views)}/{cam.NUM_VIEWS} views rendered" if self.views else "**not rendered** (run `partdrag4d render`)"
            self.state_md.content = (f"`{state_id}`  \n{record['joint_type']} joint `{record['joint']}`, stage {record['stage']}"
                                     f"/{record['num_stages'] - 1}: {q}  \nsplit {record['split']}, {render_note}")
            self._update_colours()
            self._update_samples()
            self._update_cameras()
            self._update_drags()

    def _show_object(self, object_id: str) -> None:
        """Per link: a frame carrying the pose, the part-colour mesh at once, and the textured
        GLB from a background thread (trimesh's import and the GLB encoding are most of the
        cost of opening; the page shows flat colours until the textures arrive)."""
        scene = self.server.scene
        for frame in self.link_frames.values():
            frame.remove()
        self.link_frames, self.link_meshes, self.link_parts = {}, {}, {}
        if object_id not in self._objects:
            self._objects[object_id] = load_object(self.root, object_id)
        obj = self._objects[object_id]
        self.object_id = object_id
        prefix = f"/object/{self._shown_objects}"
        self._shown_objects += 1
        for link, pieces in obj.pieces.items():
            self.link_frames[link] = scene.add_frame(f"{prefix}/{link}", show_axes=False)
            V = np.concatenate([p.vertices for p in pieces])
            offsets = np.cumsum([0] + [len(p.vertices) for p in pieces[:-1]])
            F = np.concatenate([p.faces + o for p, o in zip(pieces, offsets)])
            self.link_parts[link] = scene.add_mesh_simple(f"{prefix}/{link}/parts", V, F, color=part_colour(obj.part_ids.get(link, 0)),
                                                          flat_shading=True, side="double")
            self._on_link_mesh(link, self.link_parts[link])
        self._textures_ready = threading.Event()
        thread = threading.Thread(target=self._add_textures, args=(object_id, self._textures_ready), daemon=True, name="viewer-textures")
        if self.open_seconds is None:
            self._pending_thread = thread  # started once the page is open: its imports would slow the opening
        else:
            thread.start()

    def _add_textures(self, object_id: str, done: threading.Event) -> None:
        try:
            obj = self._objects[object_id]
            for link, pieces in obj.pieces.items():
                if (object_id, link) not in self._glb:
                    self._glb[(object_id, link)] = link_glb(pieces)
            with self._lock:
                if self.object_id != object_id or self._stopped:
                    return  # another object was picked meanwhile, or the server is gone
                for link in obj.pieces:
                    textured = self.server.scene.add_glb(self.link_frames[link].name + "/textured", self._glb[(object_id, link)],
                                                         visible=not self.parts_cb.value)
                    self.link_meshes[link] = textured
                    self._on_link_mesh(link, textured)
                self._update_colours()
        except Exception as exc:  # textures are a nicety: the part-colour meshes stay
            self.last_error = f"textures of {object_id}: {type(exc).__name__}: {exc}"
            self.state_md.content = f"**Error:** {self.last_error}"
        finally:
            done.set()

    def _on_link_mesh(self, link: str, handle) -> None:
        """Hook for subclasses: a mesh node of ``link`` was added (PartRM's viewer makes it draggable)."""

    def wait_for_textures(self, timeout: float = 60.0) -> bool:
        return self._textures_ready.wait(timeout)

    # ------------------------------------------------------------------ toggles

    def _update_colours(self) -> None:
        textured = len(self.link_meshes) == len(self.link_parts) and not self.parts_cb.value
        for link, parts in self.link_parts.items():
            parts.visible = not textured
            if link in self.link_meshes:
                self.link_meshes[link].visible = textured

    def _update_samples(self) -> None:
        if not self.samples_cb.value:
            if self.samples is not None:
                self.samples.visible = False
            return
        points = store.read_state_points(self.root, self.state_id)
        pid = self._objects[self.object_id].sample_part_id
        colours = np.array([part_colour(p) for p in range(int(pid.max()) + 1)], np.uint8)[pid] if pid is not None else np.full((len(points), 3), 90, np.uint8)
        step = max(1, len(points) // POINTS_SHOWN)
        self.samples = self.server.scene.add_point_cloud("/samples", points[::step].astype(np.float32), colours[::step], point_size=0.008)

    def _update_cameras(self) -> None:
        scene = self.server.scene
        shown = bool(self.cameras_cb.value)
        cams = self._state_cameras()
        for v in range(cam.NUM_VIEWS):
            image = None
            if shown and v in self.views:
                image = read_thumbnail(store.render_dir(self.root, self.state_id) / store.view_png_name(v))
            c = cams[v]
            fov = 2.0 * np.arctan(c.height / (2.0 * c.K[1, 1]))
            if v not in self.frustums:
                self.frustums[v] = scene.add_camera_frustum(f"/cameras/view_{v:02d}", fov=float(fov), aspect=c.width / c.height, scale=0.25,
                                                            image=image, wxyz=wxyz_from_matrix(c.c2w[:3, :3]), position=c.c2w[:3, 3],
                                                            color=(40, 40, 40), visible=shown)
            else:
                f = self.frustums[v]
                f.visible = shown
                if shown:
                    f.image = image
            # a view that is not rendered is drawn red and empty
            self.frustums[v].color = (40, 40, 40) if v in self.views else (220, 30, 30)

    def _state_cameras(self) -> list:
        try:
            _, _, cams = store.read_render(store.render_dir(self.root, self.state_id)) if self.views else (None, None, None)
        except (OSError, KeyError, ValueError):
            cams = None
        return cams or self.index.cameras

    def _update_drags(self) -> None:
        if not self.drags_cb.value:
            if self.arrows is not None:
                self.arrows.visible = False
            self.drags_md.content = ""
            return
        if not self.index.has_drags:
            self.drags_md.content = f"no drags.h5 in {self.root}"
            return
        source = self.index.states[self.state_id]["stage"]
        target = int(self.target_dd.value)
        drags = read_pair_drags(self.index.drag_file, self.sequence_id, source, target)
        self.pair_drags = drags
        if drags is None or not len(drags.start):
            self.drags_md.content = f"no drags for pair ({source} -> {target}) of `{self.sequence_id}`"
            if self.arrows is not None:
                self.arrows.visible = False
            return
        seen = self.drag_view_dd.value
        if seen == "any view":
            colours = count_colours(drags.views.sum(1))
            note = "colour: views that see the drag (pale blue 1 ... red 12)"
        else:
            v = int(seen.split()[1])
            colours = np.where(drags.views[:, v:v + 1], np.array([255, 120, 0], np.uint8), np.array([150, 150, 150], np.uint8)).astype(np.uint8)
            note = f"orange: seen from view {v} ({int(drags.views[:, v].sum())}), grey: other views only"
        points = np.stack([drags.start, drags.end], axis=1).astype(np.float32)
        self.arrows = self.server.scene.add_arrows("/drags", points, colours, shaft_radius=0.004, head_radius=0.012, head_length=0.03)
        self.drags_md.content = f"{len(drags.start)} drags, stage {source} -> {target}; {note}"

    # ------------------------------------------------------------------ serving

    @property
    def url(self) -> str:
        return f"http://{self.server.get_host()}:{self.server.get_port()}"

    def stop(self) -> None:
        with self._lock:
            self._stopped = True  # a texture thread still encoding GLBs then sends nothing
        self.server.stop()

    def serve_forever(self) -> None:  # pragma: no cover - interactive
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
