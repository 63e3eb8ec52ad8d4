"""The one place for frame and camera conventions. Every other module imports these.

Object frame (canonical, after normalisation; see ``articulate.Normalisation``)
    Z up, the object's front faces -X, the union of the bounding boxes of all of an
    object's states is centred at the origin and uniformly scaled as large as the
    camera ring allows: every corner of that box projects into every view with a
    margin of ``FRAME_MARGIN`` of the image size (so every state is fully inside every
    frame), and the box stays inside the cube [-1, 1]^3 that splatter-image xyz are
    clamped to (``fit_scale``).

Camera ring
    ``NUM_VIEWS`` (12) cameras at distance ``CAMERA_DISTANCE`` (2.4) from the origin
    and height ``CAMERA_HEIGHT`` (1.5) above it (elevation asin(1.5/2.4) = 38.68 deg),
    looking at the origin with world +Z as up. Azimuth 0 is in front of the object
    (camera on the -X side); azimuth grows counter-clockwise seen from above
    (azimuth 90 puts the camera on the -Y side), in 30 deg steps. Vertical field of
    view ``FOV_Y_DEG`` (49.1 deg, the value LGM is trained with), square pixels,
    principal point at the image centre.

Camera axes
    OpenCV (the convention of every array this project stores): camera x right,
    y down, z forward (looking direction). Blender / OpenGL: x right, y up, looking
    down -z. ``c2w_blender = c2w_opencv @ diag(1, -1, -1, 1)``.

Pixels
    x to the right, y down, (0, 0) is the top-left corner of the top-left pixel,
    so the centre of pixel (col, row) is (col + 0.5, row + 0.5). ``K @ X_cam``
    gives these coordinates directly.

Depth
    Stored depth is planar camera z (distance along the optical axis, not along
    the ray), in object-frame units; background pixels hold ``np.inf``.

Part ids
    Pixel part id 0 is background; link ``k`` (index in ``object.json``'s link list)
    has part id ``k + 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CAMERA_DISTANCE = 2.4
CAMERA_HEIGHT = 1.5
NUM_VIEWS = 12
IMAGE_SIZE = 512
FOV_Y_DEG = 49.1
FRAME_MARGIN = 0.05
ELEVATION_DEG = math.degrees(math.asin(CAMERA_HEIGHT / CAMERA_DISTANCE))
AZIMUTHS_DEG = tuple(30.0 * i for i in range(NUM_VIEWS))

OPENCV_TO_BLENDER = np.diag([1.0, -1.0, -1.0, 1.0])
"""Right-multiply an OpenCV camera-to-world matrix by this to get Blender's (and back)."""


def intrinsics(width: int, height: int, fov_y_deg: float = FOV_Y_DEG) -> np.ndarray:
    """Pinhole K for square pixels with the principal point at the image centre."""
    focal = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2.0)
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def look_at(eye: np.ndarray, target: np.ndarray = np.zeros(3), up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """OpenCV camera-to-world matrix of a camera at ``eye`` looking at ``target``."""
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, eye
    return c2w


def ring_position(azimuth_deg: float, distance: float = CAMERA_DISTANCE, height: float = CAMERA_HEIGHT) -> np.ndarray:
    """Camera centre on the ring; azimuth 0 is in front of the object (-X side)."""
    radius = math.sqrt(distance**2 - height**2)
    a = math.radians(azimuth_deg)
    return np.array([-radius * math.cos(a), -radius * math.sin(a), height])


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: ``K`` (3x3, pixels) and OpenCV ``c2w`` (4x4) for a width x height image."""

    K: np.ndarray
    c2w: np.ndarray
    width: int
    height: int

    @property
    def w2c(self) -> np.ndarray:
        return np.linalg.inv(self.c2w)

    @property
    def center(self) -> np.ndarray:
        return self.c2w[:3, 3].copy()

    @property
    def c2w_blender(self) -> np.ndarray:
        return self.c2w @ OPENCV_TO_BLENDER

    def resized(self, width: int, height: int) -> "Camera":
        """The same camera for another image size (K scales, the pose stays)."""
        K = self.K.copy()
        K[0] *= width / self.width
        K[1] *= height / self.height
        return Camera(K, self.c2w.copy(), width, height)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (N, 3) -> pixel coordinates (N, 2) and planar camera z (N,)."""
        return project(points, self.K, self.w2c)

    def to_dict(self) -> dict:
        return {"K": self.K.tolist(), "c2w": self.c2w.tolist(), "width": self.width, "height": self.height}

    @staticmethod
    def from_dict(d: dict) -> "Camera":
        return Camera(np.asarray(d["K"], dtype=np.float64), np.asarray(d["c2w"], dtype=np.float64), int(d["width"]), int(d["height"]))


def project(points: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole projection with the pixel convention above; z is planar camera depth."""
    points = np.asarray(points, dtype=np.float64)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (cam[:, :2] / z[:, None]) * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
    return uv, z


def ring_cameras(size: int = IMAGE_SIZE, num_views: int = NUM_VIEWS) -> list[Camera]:
    """The dataset's camera ring: ``num_views`` cameras evenly spaced in azimuth."""
    K = intrinsics(size, size)
    return [Camera(K, look_at(ring_position(360.0 * i / num_views)), size, size) for i in range(num_views)]


def fit_scale(half_extents: np.ndarray, margin: float = FRAME_MARGIN, max_half_extent: float = 1.0) -> float:
    """Largest scale s such that the origin-centred box with half extents ``s * half_extents``
    projects inside every ring view with ``margin`` (fraction of the image) to spare and
    lies within [-max_half_extent, max_half_extent]^3."""
    half_extents = np.asarray(half_extents, dtype=np.float64)
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half_extents
    views = ring_cameras(IMAGE_SIZE)
    lo_px, hi_px = margin * IMAGE_SIZE, (1.0 - margin) * IMAGE_SIZE

    def fits(s: float) -> bool:
        for cam in views:
            uv, z = cam.project(corners * s)
            if (z <= 0.05).any() or (uv < lo_px).any() or (uv > hi_px).any():
                return False
        return True

    lo, hi = 0.0, max_half_extent / float(half_extents.max())
    if fits(hi):
        return hi
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
