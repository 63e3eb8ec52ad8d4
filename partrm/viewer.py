"""``partrm view``: drag a part of a dataset state in the browser and watch PartRM move it.

The dataset browser of ``partdrag4d view`` (pick category -> object -> sequence ->
stage) with a PartRM checkpoint behind it. A left-button drag on the object (the
textured mesh) becomes a pixel drag in the input view (ring view 0, the first of the
model's input views, as ``partrm infer --drag`` takes it): the grab point on the mesh
and the pointer's point on the drag plane are projected into view 0. It is propagated
over the part under the grab point (the rendered part-id mask of view 0) and PartRM
predicts the moved state. Beside the input mesh, three Gaussian slots: the *static*
Gaussians (the model without drags), the *predicted* ones, and the *ground truth*
(the model's reconstruction of the dataset state of this sequence whose motion best
matches the drag), side by side or one at a time. The joint extracted from static ->
predicted (``partrm.joints.from_gaussians``) is drawn as an axis arrow with its
type and amount. Buttons write the predicted 3DGS PLY and the URDF (and send them to
the browser as downloads).

viser is imported only inside the viewer modules: it pulls in a web-server stack that
the rest of the package and its CLI do not need.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy.spatial.transform import Rotation

from partdrag4d import store
from partdrag4d.viewer import DatasetViewer, wxyz_from_matrix
from partrm.gaussians import gaussians_from_lgm, layout, write_ply
from partrm.infer import InputError, dataset_views, predict
from partrm.joints import MIN_OPACITY, NoMotionError, from_gaussians, write_urdf
from partrm.models.lgm import CheckpointError
from partrm.models.lgm import LGM
from partrm.data import DEFAULT_INPUT_VIEWS
from partrm.predict import input_size, load_model, mode_of

SLOT_SPACING = 1.8
"""Distance between the input mesh and each Gaussian slot along -Y (screen right from the front)."""
SLOTS = ("static", "predicted", "ground truth")


def load_checkpoint(path: Path):
    """PartRM (either mode) from a checkpoint, or CheckpointError with one line naming the file and the reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return load_model(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except CheckpointError:
        raise
    except Exception as exc:  # anything else the loader raises also means "not loadable"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot load PartRM checkpoint ({type(exc).__name__}: {reason})") from None


def splat_arrays(g: torch.Tensor) -> dict[str, np.ndarray]:
    """[N, 14] activated Gaussians -> viser's centers, covariances, rgbs, opacities."""
    x = g.detach().cpu().double().numpy()
    q = x[:, layout.ROTATION]
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    R = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()
    s2 = x[:, layout.SCALE] ** 2
    cov = np.einsum("nij,nj,nkj->nik", R, s2, R)
    return {
        "centers": x[:, layout.XYZ].astype(np.float32),
        "covariances": cov.astype(np.float32),
        "rgbs": np.clip(x[:, layout.RGB], 0, 1).astype(np.float32),
        "opacities": np.clip(x[:, layout.OPACITY], 0, 1).astype(np.float32),
    }


@dataclass
class DragResult:
    """What one drag produced (kept for the page, the exports and the tests)."""

    state_id: str
    drag_px: np.ndarray  # [4] x0, y0, x1, y1 in the input view's pixels
    used_px: np.ndarray  # [M, 4] propagated drags given to the model
    part_id: int  # part under the grab point
    gaussians: torch.Tensor  # [N, 14] predicted
    target_stage: Optional[int]
    estimate: Any = None  # ArticulationEstimate or None
    joint_note: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


class PartRMViewer(DatasetViewer):
    """The dataset browser plus PartRM: drag the mesh, see the predicted Gaussians."""

    show_cameras = False

    def __init__(self, checkpoint: Path, root: Path, host: str = "127.0.0.1", port: int = 8080, out: Path = Path("runs/view"),
                 num_drags: int = 10, model=None):
        self.model = model if model is not None else load_checkpoint(checkpoint)
        self.checkpoint = Path(checkpoint)
        self.size = input_size(self.model)
        self.rgbd = mode_of(self.model) == "rgbd"
        self.out = Path(out)
        self.num_drags = num_drags
        self.results: list[DragResult] = []
        self.drag_events: list[tuple[str, tuple, tuple]] = []
        self._views_cache: dict[str, Any] = {}
        self._static_cache: dict[str, torch.Tensor] = {}
        self._part_ids: dict[str, np.ndarray] = {}  # input view's part ids per state
        self.splats: dict[str, Any] = {}
        self.joint_arrow = None
        self._busy = threading.Lock()
        super().__init__(root, host, port, title="PartRM")

    # ------------------------------------------------------------------ GUI

    def _build_gui(self) -> None:
        super()._build_gui()
        gui = self.server.gui
        with gui.add_folder("PartRM"):
            kind = "RGB-D" if self.rgbd else self.model.config.lgm.name
            gui.add_markdown(f"checkpoint `{self.checkpoint.name}` ({kind}, {self.size} px input). "
                             "Drag the object with the left button: the drag is taken in the input view (view 0).")
            self.layout_dd = gui.add_dropdown("Gaussians", ("side by side",) + SLOTS, initial_value="predicted")
            self.input_view_btn = gui.add_button("Look from the input view")
            self.result_md = gui.add_markdown("no drag yet")
            self.input_image = gui.add_image(np.full((64, 64, 3), 255, np.uint8), label="input view + drags")
            self.ply_btn = gui.add_button("Export predicted PLY", disabled=True)
            self.urdf_btn = gui.add_button("Export URDF", disabled=True)
            self.export_md = gui.add_markdown("")
        self.layout_dd.on_update(lambda _: self._guarded(self._update_layout))
        self.input_view_btn.on_click(lambda ev: self._guarded(lambda: self.look_from_input_view(ev.client)))
        self.ply_btn.on_click(lambda ev: self._guarded(lambda: self.export_ply(ev.client), self.export_md))
        self.urdf_btn.on_click(lambda ev: self._guarded(lambda: self.export_urdf(ev.client), self.export_md))

    def frame(self) -> tuple[np.ndarray, float]:
        """The input mesh and the predicted Gaussians beside it (the page opens on that layout)."""
        return np.array([0.0, -SLOT_SPACING / 2, 0.0]), 1.0 + SLOT_SPACING / 2

    def look_from_input_view(self, client) -> None:
        c = self.index.cameras[0]
        client.camera.fov = float(2.0 * np.arctan(c.height / (2.0 * c.K[1, 1])))
        client.camera.wxyz = wxyz_from_matrix(c.c2w[:3, :3])
        client.camera.position = c.c2w[:3, 3]

    # ------------------------------------------------------------------ state

    def show_state(self, state_id: str) -> None:
        with self._lock:
            super().show_state(state_id)
            self.result = None
            self.ply_btn.disabled = self.urdf_btn.disabled = True
            if not self.views or 0 not in self.views:
                self.result_md.content = "this state has no rendered input views: pick a rendered state"
                for h in self.splats.values():
                    h.visible = False
                return
            static = self._static(state_id)
            self._show_splats({"static": static, "predicted": static, "ground truth": static})
            self.result_md.content = "no drag yet: the predicted slot shows the static Gaussians"
            self.input_image.image = self._input_image(None)

    def _on_link_mesh(self, link: str, handle) -> None:
        handle.on_drag(self._on_mesh_drag)

    def _input_views(self, state_id: str):
        if state_id not in self._views_cache:
            self._views_cache[state_id] = dataset_views(self.root, state_id, self.size, depth=self.rgbd,
                                                        splat_size=self.model.config.splat_size if self.rgbd else 128)
        return self._views_cache[state_id]

    def _static(self, state_id: str) -> torch.Tensor:
        if state_id not in self._static_cache:
            mv = self._input_views(state_id)
            if self.rgbd:  # the geometric reconstruction the RGB-D model starts from
                g = LGM.gaussians(mv.static[None])
            else:
                with torch.inference_mode():
                    g = self.model.reconstruct(mv.rgb[None], (mv.K[None], mv.c2w[None]))
            self._static_cache[state_id] = g[0].float().cpu()
        return self._static_cache[state_id]

    def _slot_offset(self, slot: str) -> np.ndarray:
        if self.layout_dd.value == "side by side":
            k = SLOTS.index(slot) + 1
        else:
            k = 1
        return np.array([0.0, -SLOT_SPACING * k, 0.0])

    def _show_splats(self, gaussians: dict[str, torch.Tensor]) -> None:
        scene = self.server.scene
        for slot, g in gaussians.items():
            name = "/gaussians/" + slot.replace(" ", "_")
            self.splats[slot] = scene.add_gaussian_splats(name, **splat_arrays(g), position=self._slot_offset(slot))
            scene.add_label(name + "/label", slot, position=(0.0, 0.0, 1.05))
        self._update_layout()

    def _update_layout(self) -> None:
        mode = self.layout_dd.value
        for slot, h in self.splats.items():
            h.visible = mode == "side by side" or mode == slot
            h.position = self._slot_offset(slot)
        if self.joint_arrow is not None:
            self.joint_arrow.position = self._slot_offset("predicted")
            self.joint_arrow.visible = mode in ("side by side", "predicted")

    # ------------------------------------------------------------------ drags

    def input_camera(self):
        """View 0 at the size of the input image the drags are given in."""
        mv = self._input_views(self.state_id)
        h, w = mv.first_rgba.shape[:2]
        return self.index.cameras[0].resized(w, h)

    def _on_mesh_drag(self, event) -> None:
        self.drag_events.append((event.phase, tuple(event.start_position), tuple(event.end_position)))
        if event.phase == "update":
            self.server.scene.add_arrows("/drag_preview", np.array([[event.start_position, event.end_position]], np.float32),
                                         (255, 60, 0), shaft_radius=0.006, head_radius=0.02, head_length=0.04)
        if event.phase != "end":
            return
        c = self.input_camera()
        uv, _ = c.project(np.array([event.start_position, event.end_position], np.float64))
        self._guarded(lambda: self.drag(np.concatenate([uv[0], uv[1]])), self.result_md)

    def drag(self, drag_px: np.ndarray) -> DragResult:
        """Predict from one pixel drag (x0, y0, x1, y1) in the input view of the current state."""
        t0 = time.perf_counter()
        with self._lock:
            state_id = self.state_id
            mv = self._input_views(state_id)
            drag_px = np.asarray(drag_px, np.float64)
            h, w = mv.first_rgba.shape[:2]
            x, y = int(np.clip(drag_px[0], 0, w - 1)), int(np.clip(drag_px[1], 0, h - 1))
            if state_id not in self._part_ids:  # the part ids of the input views
                self._part_ids[state_id] = store.read_render(store.render_dir(self.root, state_id))[1][list(DEFAULT_INPUT_VIEWS)]
            part_ids = self._part_ids[state_id]
            part_id = int(part_ids[0, y, x])
            if part_id == 0:
                raise InputError(f"the drag starts on the background of the input view at pixel ({x}, {y})")
            views = replace(mv, mask=part_ids[0] == part_id, masks=part_ids == part_id if self.rgbd else None)
            t1 = time.perf_counter()
            g, used = predict(self.model, views, drag_px[None], self.num_drags, "mask")
            t2 = time.perf_counter()
            estimate, note = self._joint(self._static(state_id), g)
            self._show_splats({"predicted": g})
            self._show_joint(estimate)
            self.server.scene.add_arrows("/drag_preview", np.zeros((0, 2, 3), np.float32), (255, 60, 0))
            self.input_image.image = self._input_image(used, drag_px)
            t3 = time.perf_counter()
            seconds = {"setup": t1 - t0, "predict": t2 - t1, "joint_and_scene": t3 - t2, "total": t3 - t0}
            result = DragResult(state_id, drag_px, used, part_id, g, None, estimate, note, seconds)
            self.result = result
            self.results.append(result)
            self.ply_btn.disabled = False
            self.urdf_btn.disabled = estimate is None
            summary = (f"drag ({drag_px[0]:.0f}, {drag_px[1]:.0f}) -> ({drag_px[2]:.0f}, {drag_px[3]:.0f}) px on part {part_id}, "
                       f"{len(used)} propagated drags  \n**joint**: {note}  \n"
                       f"answered in {1000 * seconds['total']:.0f} ms (model {1000 * seconds['predict']:.0f} ms)")
            self.result_md.content = summary + "  \nground truth: computing..."
            # after the answer: the ground-truth slot (a reconstruction of another state, once per state)
            target = self._target_stage(state_id, drag_px)
            gt = self._static(self.index.sequence_states(self.sequence_id)[target]) if target is not None else None
            if gt is not None:
                self._show_splats({"ground truth": gt})
            result.target_stage = target
            seconds["ground_truth"] = time.perf_counter() - t3
            gt_note = f"stage {target} (the dataset state nearest to the drag)" if target is not None else "n/a"
            self.result_md.content = summary + f"  \nground truth: {gt_note}"
            return result

    def _joint(self, static: torch.Tensor, predicted: torch.Tensor):
        try:
            est = from_gaussians(static, predicted, correspondence=True)
        except (NoMotionError, ValueError) as exc:
            return None, f"none extracted ({exc})"
        amount = f"{math.degrees(est.amount):.1f} deg" if est.joint_type == "revolute" else f"{est.amount:.3f} units"
        axis = ", ".join(f"{a:+.2f}" for a in est.axis)
        return est, f"{est.joint_type}, amount {amount}, axis ({axis}), {est.num_moving} moving Gaussians"

    def _show_joint(self, est) -> None:
        if est is None:
            if self.joint_arrow is not None:
                self.joint_arrow.visible = False
            return
        a = np.asarray(est.axis, np.float64)
        p = np.asarray(est.pivot, np.float64)
        self.joint_arrow = self.server.scene.add_arrows("/joint_axis", np.array([[p - 0.35 * a, p + 0.35 * a]], np.float32), (230, 0, 160),
                                                        shaft_radius=0.012, head_radius=0.035, head_length=0.07,
                                                        position=self._slot_offset("predicted"))
        self._update_layout()

    def _target_stage(self, state_id: str, drag_px: np.ndarray) -> Optional[int]:
        """The stage of this sequence whose motion of the grabbed material point best matches
        the drag (the surface sample of the moving part nearest the grab pixel, seen in view 0)."""
        states = self.index.sequence_states(self.sequence_id)
        here = store.read_state_points(self.root, state_id)
        moving = store.read_state_moving(self.root, state_id)
        if not moving.any() or len(states) < 2:
            return None
        c = self.input_camera()
        uv, z = c.project(here[moving])
        d = np.linalg.norm(uv - drag_px[:2], axis=1)
        near = d <= d.min() + 2.0
        k = np.flatnonzero(moving)[np.flatnonzero(near)[np.argmin(z[near])]]  # the front-most of the nearest
        best, best_d = None, np.inf
        for stage, sid in enumerate(states):
            if sid == state_id:
                continue
            p = store.read_state_points(self.root, sid)[k]
            e, _ = c.project(p[None])
            dist = float(np.linalg.norm(e[0] - drag_px[2:]))
            if dist < best_d:
                best, best_d = stage, dist
        return best

    def _input_image(self, used: Optional[np.ndarray], drag_px: Optional[np.ndarray] = None) -> np.ndarray:
        mv = self._input_views(self.state_id)
        first = Image.fromarray(mv.first_rgba).convert("RGBA")
        canvas = Image.new("RGB", first.size, (255, 255, 255))
        canvas.paste(first, mask=first.getchannel("A"))
        scale = 256 / max(canvas.size)
        canvas = canvas.resize((round(canvas.size[0] * scale), round(canvas.size[1] * scale)), Image.LANCZOS)
        draw = ImageDraw.Draw(canvas)
        for x0, y0, x1, y1 in (used if used is not None else []):
            draw.line([(x0 * scale, y0 * scale), (x1 * scale, y1 * scale)], fill=(255, 150, 0), width=1)
        if drag_px is not None:
            x0, y0, x1, y1 = drag_px * scale
            draw.line([(x0, y0), (x1, y1)], fill=(230, 20, 0), width=3)
            draw.ellipse([x0 - 4, y0 - 4, x0 + 4, y0 + 4], fill=(0, 170, 0))
        return np.asarray(canvas)

    # ------------------------------------------------------------------ exports

    def export_ply(self, client=None) -> Path:
        if self.result is None:
            raise RuntimeError("no prediction to export yet: drag the object first")
        path = self.out / f"{self.result.state_id}_prediction.ply"
        g = gaussians_from_lgm(self.result.gaussians)
        with store.atomic_path(path) as tmp:
            write_ply(tmp, g.means, g.quats, g.scales, g.opacities, g.colors)
        self.export_md.content = f"wrote `{path}`"
        if client is not None:
            client.send_file_download(path.name, path.read_bytes())
        return path

    def export_urdf(self, client=None) -> Path:
        if self.result is None or self.result.estimate is None:
            raise RuntimeError("no joint to export yet: drag a part so that it moves")
        static = self._static(self.result.state_id).double().numpy()
        opaque = static[:, 3] > MIN_OPACITY
        est = replace(self.result.estimate, moving_mask=self.result.estimate.moving_mask[opaque])
        path = write_urdf(est, self.out / f"{self.result.state_id}_articulation.urdf", points=static[opaque, :3], name=self.result.state_id)
        self.export_md.content = f"wrote `{path}`"
        if client is not None:
            client.send_file_download(path.name, path.read_bytes())
        return path
