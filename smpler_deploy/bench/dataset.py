"""Evaluation sets (Human3.6M protocol 2, 3DPW test) in one documented .npz format, and their protocols.

Format (`FILE.npz`, see docs/datasets.md for converting SPIN/METRO-style npz files and the 3DPW pickles):

| key        | shape / dtype        | meaning                                                                   |
|------------|----------------------|---------------------------------------------------------------------------|
| `dataset`  | scalar str           | `h36m` or `3dpw` (selects the protocol below)                             |
| `imgname`  | [N] str              | image paths relative to the images root (`images_root`)                   |
| `bbox`     | [N,4] float          | person box x, y, w, h in image pixels                                     |
| `joints3d` | [N,14,3] float       | GT H36M-14 joints (SMPLer's J14 order), metres; required for h36m         |
| `pose`     | [N,72] float         | GT SMPL axis-angle pose (camera frame); required for 3dpw                 |
| `betas`    | [N,10] float         | GT SMPL shape; required with `pose`                                       |
| `gender`   | [N] str, optional    | m/f/n; kept for reference — the official protocol uses the neutral model  |
| `box_margin` | scalar float, opt. | crop side = margin × longer box side; default 1.0 (boxes are the crop)   |

Protocols (as the official evaluation; errors in mm, `smpler_deploy.metrics`):
* h36m: MPJPE (hip-midpoint re-centred) and PA-MPJPE on the 14 joints.
* 3dpw: MPVE, MPJPE, PA-MPJPE. GT mesh = neutral body model forward of (pose, betas) through a caller-provided
  `body_fn(pose [B,72], betas [B,10]) -> (vertices [B,6890,3], joints14 [B,14,3])`; GT joints come from
  `joints3d` when present, else from body_fn. Both meshes are centred at a pelvis: the H36M-regressor pelvis (row 0)
  when `j_regressor_h36m` is given (official), else the hip midpoint of each side's 14 joints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..containment import contained
from ..errors import OptionError, SmplerError, opt
from ..fileio import atomic_path
from .. import metrics as M

PROTOCOLS = {"h36m": ("MPJPE", "PA-MPJPE"), "3dpw": ("MPVE", "MPJPE", "PA-MPJPE")}
REQUIRED = {"h36m": ("imgname", "bbox", "joints3d"), "3dpw": ("imgname", "bbox", "pose", "betas")}
J24_TO_J14 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18]  # SMPLer constants.py (SPIN's 24-joint order)


@dataclass
class EvalSet:
    name: str
    path: Path
    imgname: np.ndarray
    bbox: np.ndarray
    joints3d: np.ndarray | None = None
    pose: np.ndarray | None = None
    betas: np.ndarray | None = None
    gender: np.ndarray | None = None
    box_margin: float = 1.0

    def __len__(self) -> int:
        return len(self.imgname)

    @property
    def protocol(self) -> tuple[str, ...]:
        return PROTOCOLS[self.name]

    def image_paths(self, root) -> list[Path]:
        """Each image under `root`; an absolute name, a `..` or a link leading outside `root` is refused."""
        return [contained(root, str(n), what=f"{opt('dataset')} {self.path}: imgname[{i}]")
                for i, n in enumerate(self.imgname)]


def load_dataset(path, images_root=None) -> EvalSet:
    """Read and validate FILE.npz; with images_root, also check every image exists (count and first few)."""
    p = Path(path)
    if not p.is_file():
        raise OptionError("dataset", p, "file not found")
    try:
        z = np.load(p, allow_pickle=False)  # pickled object arrays are refused: the file is untrusted input
        d = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file
        raise OptionError("dataset", p, f"not a readable .npz without pickled objects ({e.__class__.__name__})")
    if "dataset" not in d:
        raise OptionError("dataset", p, f"missing key 'dataset' (one of {', '.join(PROTOCOLS)})")
    if d["dataset"].shape != () or d["dataset"].dtype.kind not in "US":
        raise OptionError("dataset", p, f"dataset is {_described(d['dataset'])}, expected one of "
                          f"{', '.join(PROTOCOLS)}")
    name = d["dataset"].item()
    name = (name.decode(errors="replace") if isinstance(name, bytes) else name).lower()
    if name not in PROTOCOLS:
        raise OptionError("dataset", p, f"dataset '{name}' unknown, expected one of {', '.join(PROTOCOLS)}")
    missing = [k for k in REQUIRED[name] if k not in d]
    if missing:
        raise OptionError("dataset", p, f"missing keys {', '.join(missing)} (required for {name})")
    for k in ("imgname", "gender"):
        if k in d:
            try:
                if d[k].ndim != 1 or d[k].dtype.kind not in "US":
                    raise ValueError
                d[k] = d[k].astype(str)  # bytes names decode as ASCII
            except (ValueError, UnicodeDecodeError):
                raise OptionError("dataset", p, f"{k} is {_described(d[k])}, expected a [N] array of (ASCII or "
                                  "unicode) strings") from None
    n = len(d["imgname"])
    if n == 0:
        raise OptionError("dataset", p, "no samples")
    if "gender" in d and len(d["gender"]) != n:
        raise OptionError("dataset", p, f"gender has {len(d['gender'])} entries, imgname {n}")
    shapes = {"bbox": (n, 4), "joints3d": (n, 14, 3), "pose": (n, 72), "betas": (n, 10)}
    for k, shp in shapes.items():
        if k not in d:
            continue
        if d[k].dtype.kind not in "iuf":
            raise OptionError("dataset", p, f"{k} is {_described(d[k])}, expected numbers")
        if tuple(d[k].shape) != shp:
            raise OptionError("dataset", p, f"{k} has shape {list(d[k].shape)}, expected {list(shp)}")
        bad = ~np.isfinite(d[k].reshape(n, -1)).all(1)
        if bad.any():  # a NaN box or ground truth would crop garbage or turn every metric into NaN
            first = ", ".join(map(str, np.flatnonzero(bad)[:3]))
            raise OptionError("dataset", p, f"{k} has NaN or Inf values in {int(bad.sum())} of {n} samples "
                              f"(first: {first}); expected finite numbers")
    if np.any(d["bbox"][:, 2:] <= 0):
        raise OptionError("dataset", p, f"{int(np.sum(np.any(d['bbox'][:, 2:] <= 0, 1)))} boxes with w or h <= 0")
    margin = d.get("box_margin", np.array(1.0))
    if margin.shape != () or margin.dtype.kind not in "iuf" or not np.isfinite(margin) or margin <= 0:
        raise OptionError("dataset", p, f"box_margin is {_described(margin)}, expected one positive number")
    ds = EvalSet(name=name, path=p, imgname=d["imgname"], bbox=d["bbox"].astype(np.float64),
                 joints3d=d.get("joints3d"), pose=d.get("pose"), betas=d.get("betas"), gender=d.get("gender"),
                 box_margin=float(margin))
    if images_root is not None:
        check_images(ds, images_root)
    return ds


def _described(a: np.ndarray) -> str:
    """An npz array as an error shows it: its shape and element type, or a scalar's value."""
    return f"{a.item()!r}" if a.shape == () and a.dtype.kind in "iufUS" else f"{list(a.shape)} of {a.dtype}"


def check_images(ds: EvalSet, root) -> None:
    r = Path(root)
    if not r.is_dir():
        raise OptionError("images", r, "directory not found")
    paths = ds.image_paths(r)
    absent = [str(n) for n, q in zip(ds.imgname, paths) if not q.is_file()]
    if absent:
        first = ", ".join(absent[:3])
        raise OptionError("images", r, f"{len(absent)} of {len(ds)} images missing (first: {first})")
    from ..preprocess import check_image_file

    for i, q in enumerate(paths):  # headers only: a bad image or a box outside it fails now, not after the baselines
        w, h = check_image_file(q)
        _box(ds, i, (h, w))


def evaluate(session, ds: EvalSet, images_root, batch: int = 8, body_fn=None, j_regressor_h36m=None,
             progress=None) -> dict:
    """Run `session` over the set and return the protocol's metrics (mean mm) plus `samples`.

    `progress`: optional callable(n_done) for a progress bar."""
    if ds.name == "3dpw" and body_fn is None:
        raise SmplerError(f"3dpw evaluation needs the neutral body model for the GT mesh (pass {opt('smpl_model')})")
    if ds.joints3d is None and j_regressor_h36m is None:
        raise OptionError("dataset", ds.path, "no joints3d, and the body model has no H36M joint regressor to "
                          "derive GT joints from the GT mesh (use a model file that carries one)")
    paths = ds.image_paths(images_root)
    per = {k: [] for k in ds.protocol}
    for s in range(0, len(ds), batch):
        idx = range(s, min(s + batch, len(ds)))
        x = np.stack([_sample_crop(ds, i, paths[i]) for i in idx])
        out = session.infer(x)
        pj, pv = np.asarray(out.joints, np.float64), np.asarray(out.vertices, np.float64)
        sl = slice(s, s + len(idx))
        gv = gj = None
        if ds.pose is not None and body_fn is not None:
            gv, gj = (np.asarray(a, np.float64) for a in body_fn(ds.pose[sl], ds.betas[sl]))
        if ds.joints3d is not None:
            gj = np.asarray(ds.joints3d[sl], np.float64)
        per["MPJPE"].append(M.mpjpe(pj, gj))
        per["PA-MPJPE"].append(M.pa_mpjpe(pj, gj))
        if "MPVE" in per:
            if j_regressor_h36m is not None:
                reg0 = np.asarray(j_regressor_h36m, np.float64)[0]
                pp, gp = pv.transpose(0, 2, 1) @ reg0, gv.transpose(0, 2, 1) @ reg0
            else:
                pp, gp = M.hip_center(pj)[:, 0], M.hip_center(gj)[:, 0]
            per["MPVE"].append(M.pve(pv, gv, pp, gp))
        if progress:
            progress(len(idx))
    res = M.summarize({k: np.concatenate(v) for k, v in per.items()})
    res["samples"] = len(ds)
    return res


def _sample_crop(ds: EvalSet, i: int, path: Path) -> np.ndarray:
    from ..preprocess import crop, load_image, normalize

    img = load_image(path)
    return normalize(crop(img, _box(ds, i, img.shape[:2])))


def _box(ds: EvalSet, i: int, image_hw):
    """Sample i's crop transform (preprocess.box_transform, the one rule); a box its image cannot take is the
    dataset file's error, not an error of the demo's `bbox` option."""
    from ..preprocess import box_transform

    try:
        return box_transform(image_hw, ds.bbox[i], ds.box_margin)
    except SmplerError as e:  # "<the bbox option> x,y,w,h: why": the box and why, without the option's name
        if isinstance(e, OptionError):
            why = e.detail if e.value is None else f"{e.value}: {e.detail}"
        else:
            why = str(e).partition(" ")[2]
        raise OptionError("dataset", ds.path, f"bbox[{i}] ({ds.imgname[i]}) {why}") from None


def make_synthetic_dataset(out_dir, n: int = 4, dataset: str = "h36m", seed: int = 0) -> Path:
    """A small set in the same format for tests: scikit-image sample photos written as PNGs, seeded boxes and
    random GT (joints ~ a 1.7 m skeleton's extent; pose/betas small). Returns the .npz path; images under out_dir."""
    from PIL import Image
    from skimage import data

    if dataset not in PROTOCOLS:
        raise SmplerError(f"dataset '{dataset}' unknown, expected one of {', '.join(PROTOCOLS)}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    srcs = [data.astronaut(), data.coffee(), data.chelsea()]
    names, boxes = [], []
    for i in range(n):
        img = srcs[i % len(srcs)]
        h, w = img.shape[:2]
        name = f"images/{dataset}_{i:04d}.png"
        with atomic_path(out / name, suffix=".png") as tmp:
            Image.fromarray(img).save(tmp, format="PNG")
        bw, bh = rng.uniform(0.4, 0.8) * w, rng.uniform(0.5, 0.9) * h
        boxes.append([rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh])
        names.append(name)
    arrays = {"dataset": np.array(dataset), "imgname": np.array(names), "bbox": np.array(boxes, np.float32),
              "joints3d": (rng.normal(size=(n, 14, 3)) * [0.2, 0.5, 0.1]).astype(np.float32)}
    if dataset == "3dpw":
        arrays.update(pose=(rng.normal(size=(n, 72)) * 0.1).astype(np.float32),
                      betas=(rng.normal(size=(n, 10)) * 0.5).astype(np.float32), gender=np.array(["n"] * n))
    path = out / f"{dataset}_synthetic.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, **arrays)
    return path


def convert_spin_npz(src, dst, dataset: str) -> Path:
    """SPIN/METRO-style npz (imgname, center, scale, S [N,24,4] and/or pose/shape) -> this format.
    The box is SPIN's square crop: side 200·scale centred at `center`, so box_margin = 1."""
    z = np.load(src, allow_pickle=False)
    missing = [k for k in ("imgname", "center", "scale") if k not in z.files]
    if missing:
        raise SmplerError(f"{src}: missing keys {', '.join(missing)} (SPIN-style npz)")
    side = 200.0 * np.asarray(z["scale"], np.float64).reshape(-1)
    c = np.asarray(z["center"], np.float64)
    out = {"dataset": np.array(dataset), "imgname": z["imgname"].astype(str), "box_margin": np.array(1.0),
           "bbox": np.stack([c[:, 0] - side / 2, c[:, 1] - side / 2, side, side], 1).astype(np.float32)}
    if "S" in z.files:
        out["joints3d"] = z["S"][:, J24_TO_J14, :3].astype(np.float32)
    if "pose" in z.files and "shape" in z.files:
        out["pose"], out["betas"] = z["pose"].astype(np.float32), z["shape"].astype(np.float32)
    if "gender" in z.files:
        out["gender"] = z["gender"].astype(str)
    with atomic_path(dst) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, **out)
    return Path(dst)


def body_fn_from_model(data):
    """(body_fn, H36M regressor or None) from a `smpler_deploy.body.data.BodyModelData` (the neutral model)."""
    import torch

    from ..body.layer import SMPLHandler
    from ..body.lbs import axis_angle_to_rotmat

    handler = SMPLHandler()
    handler.set_body_model(data)

    @torch.no_grad()
    def body_fn(pose, betas):
        pose = torch.as_tensor(np.asarray(pose, np.float32)).reshape(-1, 24, 3)
        betas = torch.as_tensor(np.asarray(betas, np.float32))
        verts, j14, _, _ = handler(axis_angle_to_rotmat(pose), betas, torch.zeros(len(betas), 3))
        return verts.numpy(), j14.numpy()

    return body_fn, data.J_regressor_h36m
