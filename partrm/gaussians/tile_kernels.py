"""Compiled per-pixel compositing for the CPU tile rasterizer (numba: no C compiler needed).

The vectorised torch compositing evaluates every (tile, Gaussian, pixel) triple of a depth
slice in a handful of full-size passes (quadratic, exp, clamp, cumprod, weights, product),
padding short tiles, and gathers each Gaussian's values once per tile it touches (and
scatters their gradients back). Here one loop per pixel walks its tile's depth-sorted list
once, reads the Gaussian's own 2D mean, conic and opacity, keeps the transmittance in a
register and stops at the 3DGS cut: several times faster on two cores
(``benchmarks/bench_raster.py``).

Backward is 3DGS's: back to front from the last drawn Gaussian, recovering each
transmittance by division (alpha <= alpha_max < 1 keeps it stable) and carrying the sum of
what lies behind. Tiles are split into groups of about equal list length, dealt out to
threads (the kernels release the GIL); each thread adds its gradients into its own
per-Gaussian sums, which are added at the end, so no write is shared.

The per-pixel rule is the dense reference's: a Gaussian is skipped where its Mahalanobis
distance exceeds sigma_cutoff or alpha < alpha_min, alpha is clamped at alpha_max, and a
pixel stops before its transmittance would drop to or below t_min.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch
from torch import Tensor


@numba.njit(nogil=True, cache=True)
def _bin(means2d, extents, depth_order, image_ids, ts, tiles_x, tiles_y, num_tiles):
    """Every (tile, Gaussian) overlap of the boxes, listed by tile and front to back within a tile.

    A counting sort: count per tile, prefix sums, then fill visiting the Gaussians in depth
    order (``depth_order``: a stable argsort of the depths, so ties keep Gaussian order as in
    the dense reference). Returns the Gaussian of each list entry, and per tile its start and count.
    """
    V = means2d.shape[0]
    x0 = np.empty(V, np.int64)
    x1 = np.empty(V, np.int64)
    y0 = np.empty(V, np.int64)
    y1 = np.empty(V, np.int64)
    tile_count = np.zeros(num_tiles, np.int64)
    for g in range(V):
        x0[g] = min(max(int(math.floor((means2d[g, 0] - extents[g, 0]) / ts)), 0), tiles_x - 1)
        x1[g] = min(max(int(math.floor((means2d[g, 0] + extents[g, 0]) / ts)), 0), tiles_x - 1)
        y0[g] = min(max(int(math.floor((means2d[g, 1] - extents[g, 1]) / ts)), 0), tiles_y - 1)
        y1[g] = min(max(int(math.floor((means2d[g, 1] + extents[g, 1]) / ts)), 0), tiles_y - 1)
        base = image_ids[g] * tiles_x * tiles_y
        for ty in range(y0[g], y1[g] + 1):
            for tx in range(x0[g], x1[g] + 1):
                tile_count[base + ty * tiles_x + tx] += 1
    tile_start = np.zeros(num_tiles, np.int64)
    total = 0
    for t in range(num_tiles):
        tile_start[t] = total
        total += tile_count[t]
    fill = tile_start.copy()
    isect_gauss = np.empty(total, np.int64)
    for i in range(V):
        g = depth_order[i]
        base = image_ids[g] * tiles_x * tiles_y
        for ty in range(y0[g], y1[g] + 1):
            for tx in range(x0[g], x1[g] + 1):
                t = base + ty * tiles_x + tx
                isect_gauss[fill[t]] = g
                fill[t] += 1
    return isect_gauss, tile_start, tile_count


@numba.njit(nogil=True, cache=True)
def _forward(means2d, conics, log_o, gauss_feats, isect_gauss, tiles, tile_start, tile_count, ts, tiles_x, per_image, width,
             height, cut2, alpha_min, alpha_max, t_min, rows, feats, out, t_final, n_end):
    """Composites ``tiles``; first copies each list entry's Gaussian (mean x, y, conic a, b, c,
    ln o) and features to ``rows`` / ``feats`` in list order, so the pixel loops read them
    sequentially (and backward reuses them)."""
    F = feats.shape[1]
    half = rows.dtype.type(0.5)
    for i in range(tiles.shape[0]):
        tile = tiles[i]
        start = tile_start[tile]
        count = tile_count[tile]
        for r in range(start, start + count):
            gi = isect_gauss[r]
            rows[r, 0] = means2d[gi, 0]
            rows[r, 1] = means2d[gi, 1]
            rows[r, 2] = conics[gi, 0]
            rows[r, 3] = conics[gi, 1]
            rows[r, 4] = conics[gi, 2]
            rows[r, 5] = log_o[gi]
            for f in range(F):
                feats[r, f] = gauss_feats[gi, f]
        t_in = tile % per_image
        x0 = (t_in % tiles_x) * ts
        y0 = (t_in // tiles_x) * ts
        for p in range(ts * ts):
            col = x0 + p % ts
            row = y0 + p // ts
            if col >= width or row >= height:
                continue  # outside the image: zero transmittance, nothing drawn
            px = rows.dtype.type(col) + half
            py = rows.dtype.type(row) + half
            T = 1.0
            last = 0
            for k in range(count):
                r = start + k
                dx = px - rows[r, 0]
                dy = py - rows[r, 1]
                m = rows[r, 2] * dx * dx + 2 * rows[r, 3] * dx * dy + rows[r, 4] * dy * dy
                if m > cut2:
                    continue
                alpha = math.exp(rows[r, 5] - half * m)
                if alpha < alpha_min:
                    continue
                if alpha > alpha_max:
                    alpha = alpha_max
                T_next = T * (1.0 - alpha)
                if T_next <= t_min:
                    break
                w = alpha * T
                for f in range(F):
                    out[tile, p, f] += w * feats[r, f]
                T = T_next
                last = k + 1
            t_final[tile, p] = T
            n_end[tile, p] = last


@numba.njit(nogil=True, cache=True)
def _backward(rows, feats, isect_gauss, tiles, tile_start, ts, tiles_x, per_image, cut2, alpha_min, alpha_max,
              t_final, n_end, dout, d_gauss, d_feats):
    """Adds to d_gauss[g] d(loss)/d(mean x, y, conic a, b, c, ln o) of Gaussian g, to d_feats[g] d(loss)/d(features)."""
    F = feats.shape[1]
    half = rows.dtype.type(0.5)
    for i in range(tiles.shape[0]):
        tile = tiles[i]
        start = tile_start[tile]
        t_in = tile % per_image
        x0 = (t_in % tiles_x) * ts
        y0 = (t_in // tiles_x) * ts
        for p in range(ts * ts):
            last = n_end[tile, p]
            if last == 0:
                continue
            px = rows.dtype.type(x0 + p % ts) + half
            py = rows.dtype.type(y0 + p // ts) + half
            T = t_final[tile, p]
            behind = 0.0  # sum over the drawn Gaussians behind this one of (f_j . g) w_j
            for k in range(last - 1, -1, -1):
                r = start + k
                gi = isect_gauss[r]
                dx = px - rows[r, 0]
                dy = py - rows[r, 1]
                a, b, c = rows[r, 2], rows[r, 3], rows[r, 4]
                m = a * dx * dx + 2 * b * dx * dy + c * dy * dy
                if m > cut2:
                    continue
                raw = math.exp(rows[r, 5] - half * m)
                if raw < alpha_min:
                    continue
                alpha = alpha_max if raw > alpha_max else raw
                T = T / (1.0 - alpha)  # transmittance in front of this Gaussian
                w = alpha * T
                dw = 0.0
                for f in range(F):
                    g = dout[tile, p, f]
                    dw += feats[r, f] * g
                    d_feats[gi, f] += w * g
                dalpha = dw * T - behind / (1.0 - alpha)
                behind += dw * w
                if raw > alpha_max:
                    continue  # clamped: alpha does not depend on the Gaussian here
                dG = dalpha * alpha  # G = ln o - m / 2, alpha = exp(G)
                d_gauss[gi, 0] += dG * (a * dx + b * dy)
                d_gauss[gi, 1] += dG * (b * dx + c * dy)
                d_gauss[gi, 2] -= 0.5 * dG * dx * dx
                d_gauss[gi, 3] -= dG * dx * dy
                d_gauss[gi, 4] -= 0.5 * dG * dy * dy
                d_gauss[gi, 5] += dG


def _split(tile_count: np.ndarray, parts: int) -> list[np.ndarray]:
    """The non-empty tiles in ``parts`` contiguous groups of about equal work (intersections)."""
    tiles = np.nonzero(tile_count)[0]
    if parts <= 1 or tiles.shape[0] < 2 * parts:
        return [tiles]
    work = np.cumsum(tile_count[tiles])
    cuts = np.searchsorted(work, work[-1] * np.arange(1, parts) / parts)
    return [t for t in np.split(tiles, cuts) if t.shape[0]]


GROUPS_PER_THREAD = 8
"""Tile groups per thread, dealt out in turn: the work per tile depends on where pixels
saturate, which the split by list length cannot see."""


def _workers(groups: list[np.ndarray]) -> list[np.ndarray]:
    """The tiles of each worker thread (torch's number of threads)."""
    threads = max(1, min(torch.get_num_threads(), len(groups)))
    return [np.concatenate(groups[w::threads]) for w in range(threads)]


def _on_threads(jobs: list) -> None:
    """Run ``(kernel, args)`` jobs, each on its own thread when there are several (the kernels release the GIL)."""
    if len(jobs) == 1:
        kernel, args = jobs[0]
        kernel(*args)
        return
    with ThreadPoolExecutor(len(jobs)) as pool:
        for job in [pool.submit(kernel, *args) for kernel, args in jobs]:
            job.result()


class Bins:
    """The intersections of Gaussian boxes and tiles, listed by tile then depth, and the image's tiling."""

    def __init__(self, means2d: Tensor, extents: Tensor, depths: Tensor, image_ids: Tensor, num_tiles: int, tile_size: int,
                 tiles_x: int, tiles_y: int, width: int, height: int):
        order = torch.sort(depths, stable=True).indices
        self.isect_gauss, self.tile_start, self.tile_count = _bin(
            means2d.detach().contiguous().numpy(), extents.contiguous().numpy(), order.numpy(), image_ids.numpy(),
            tile_size, tiles_x, tiles_y, num_tiles)
        self.geometry = (tile_size, tiles_x, tiles_x * tiles_y)
        self.size = (width, height)
        self.workers = _workers(_split(self.tile_count, GROUPS_PER_THREAD * max(1, torch.get_num_threads())))

    @property
    def pixels(self) -> int:
        return self.geometry[0] ** 2


class CompositeFunction(torch.autograd.Function):
    """Front-to-back compositing of screen-space Gaussians: [V, 2], [V, 3], [V], [V, F] -> [num_tiles, P, F]."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, feats, bins: Bins, config):
        m2 = means2d.detach().contiguous().numpy()
        f = feats.detach().contiguous().numpy()
        M, F = bins.isect_gauss.shape[0], f.shape[1]
        rows, row_feats = np.empty((M, 6), dtype=m2.dtype), np.empty((M, F), dtype=f.dtype)
        out = np.zeros((bins.tile_count.shape[0], bins.pixels, F), dtype=f.dtype)
        t_final = np.zeros(out.shape[:2], dtype=np.float64)
        n_end = np.zeros(out.shape[:2], dtype=np.int64)
        gauss = (m2, conics.detach().contiguous().numpy(), torch.log(opacities.detach()).contiguous().numpy(), f, bins.isect_gauss)
        consts = (config.sigma_cutoff**2, config.alpha_min, config.alpha_max, config.transmittance_min)
        _on_threads([(_forward, (*gauss, tiles, bins.tile_start, bins.tile_count, *bins.geometry, *bins.size, *consts,
                                 rows, row_feats, out, t_final, n_end)) for tiles in bins.workers])
        ctx.bins, ctx.config, ctx.arrays = bins, config, (rows, row_feats, t_final, n_end, m2.shape[0])
        ctx.save_for_backward(opacities)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, dout):
        (opacities,) = ctx.saved_tensors
        bins, config = ctx.bins, ctx.config
        rows, row_feats, t_final, n_end, V = ctx.arrays
        g = dout.detach().contiguous().numpy()
        sums = [(np.zeros((V, 6)), np.zeros((V, row_feats.shape[1]))) for _ in bins.workers]  # one pair per thread
        _on_threads([(_backward, (rows, row_feats, bins.isect_gauss, tiles, bins.tile_start, *bins.geometry, config.sigma_cutoff**2,
                                  config.alpha_min, config.alpha_max, t_final, n_end, g, *sums[w]))
                     for w, tiles in enumerate(bins.workers)])
        d = torch.from_numpy(np.sum([s[0] for s in sums], axis=0)).to(dout.dtype)
        d_feats = torch.from_numpy(np.sum([s[1] for s in sums], axis=0)).to(dout.dtype)
        return d[:, 0:2], d[:, 2:5], d[:, 5] / opacities.detach(), d_feats, None, None
