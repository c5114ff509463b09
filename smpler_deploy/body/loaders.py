"""Read the user's SMPL body model (pkl / npz / checkpoint) into `BodyModelData`, without executing pickled code.

SMPL pickles are untrusted input: they are read with a restricted unpickler that resolves only numpy array
reconstruction, scipy.sparse matrices (rebuilt from their raw state) and chumpy objects (mapped to an inert
placeholder that keeps the wrapped array). Anything else is refused before it can run.
"""

from __future__ import annotations

import codecs
import pickle
import zipfile
from pathlib import Path

import numpy as np

from ..errors import OptionError, SmplerError, opt
from ..fileio import atomic_path
from .data import NUM_VERTS, BodyModelData

_TORCH_SUFFIXES = {".pt", ".pth", ".tar", ".ckpt", ".bin"}
_SMPL_PREFIX = "smpl_handler.smpl."
_CKPT_KEYS = {  # dataclass field -> checkpoint buffer name (smplx 0.1.28)
    "v_template": _SMPL_PREFIX + "v_template",
    "shapedirs": _SMPL_PREFIX + "shapedirs",
    "posedirs": _SMPL_PREFIX + "posedirs",
    "J_regressor": _SMPL_PREFIX + "J_regressor",
    "lbs_weights": _SMPL_PREFIX + "lbs_weights",
    "faces": _SMPL_PREFIX + "faces_tensor",
    "parents": _SMPL_PREFIX + "parents",
}
_CKPT_H36M = "smpl_handler.J_regressor_h36m_correct"


# ----------------------------------------------------------------------------------------------------------------
# Restricted unpickling
# ----------------------------------------------------------------------------------------------------------------

class _Inert:
    """Stands in for a pickled chumpy / scipy.sparse object: records its state, runs nothing."""

    _orig = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["_state"] = None
        return obj

    def __init__(self, *args, **kwargs):  # REDUCE-style construction: keep nothing, run nothing
        pass

    def __setstate__(self, state):
        self.__dict__["_state"] = state


class _ChumpyPlaceholder(_Inert):
    pass


class _SparsePlaceholder(_Inert):
    pass


_placeholder_cache: dict[tuple[str, str], type] = {}


def _placeholder(base: type, module: str, name: str) -> type:
    key = (module, name)
    if key not in _placeholder_cache:
        _placeholder_cache[key] = type(name, (base,), {"_orig": f"{module}.{name}"})
    return _placeholder_cache[key]


def _safe_reconstructor(cls, base, state):
    # copyreg._reconstructor (protocol 0/1 pickles) only for our placeholders: never calls a real constructor.
    if not (isinstance(cls, type) and issubclass(cls, _Inert)):
        raise pickle.UnpicklingError(f"copyreg._reconstructor of {cls!r}")
    return cls.__new__(cls)


def _safe_encode(obj, encoding="utf-8", errors="strict"):
    # py3 protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1'); allow only plain text codecs.
    if codecs.lookup(encoding).name not in ("latin-1", "iso8859-1", "utf-8", "ascii"):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r}")
    return codecs.encode(obj, encoding, errors)


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


_MA = _numpy_multiarray()
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _MA._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _MA._reconstruct,
    ("numpy.core.multiarray", "scalar"): _MA.scalar,
    ("numpy._core.multiarray", "scalar"): _MA.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("copy_reg", "_reconstructor"): _safe_reconstructor,
    ("copyreg", "_reconstructor"): _safe_reconstructor,
    ("_codecs", "encode"): _safe_encode,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("__builtin__", "set"): set,
    ("builtins", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("builtins", "frozenset"): frozenset,
}
_SPARSE_NAMES = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"}


class _RefusedGlobal(Exception):
    def __init__(self, qualname: str):
        super().__init__(qualname)
        self.qualname = qualname


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        scalar_type = getattr(np, name, None) if module == "numpy" else None
        if isinstance(scalar_type, type) and issubclass(scalar_type, np.generic):
            return scalar_type  # numpy scalar types used by some pickles; inert
        if module.split(".")[0] == "chumpy":
            return _placeholder(_ChumpyPlaceholder, module, name)
        if module.startswith("scipy.sparse") and name in _SPARSE_NAMES:
            return _placeholder(_SparsePlaceholder, module, name)
        raise _RefusedGlobal(f"{module}.{name}")


def _restricted_load(path: Path) -> object:
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="latin1").load()
    except _RefusedGlobal as e:
        raise SmplerError(
            f"{path}: refusing to unpickle '{e.qualname}' (pickles can run code); expected a SMPL model pickle"
        ) from None
    except OSError as e:
        raise SmplerError(f"{path}: cannot read file ({e.strerror or e})") from None
    except Exception as e:  # truncated / not a pickle / unexpected opcode payloads
        raise SmplerError(f"{path}: not a readable SMPL model pickle ({type(e).__name__}: {e})") from None


def _sparse_from_state(obj: _SparsePlaceholder, where: str) -> np.ndarray:
    """Rebuild a scipy.sparse matrix from its pickled __dict__ as a dense array (no scipy code is unpickled)."""
    st = obj._state
    if isinstance(st, tuple) and len(st) == 2 and isinstance(st[1], dict):  # (None, slotstate) form
        st = st[1]
    if not isinstance(st, dict):
        raise SmplerError(f"{where}: unexpected {obj._orig} state; expected a scipy.sparse matrix")
    shape = tuple(int(s) for s in st.get("_shape", st.get("shape", ())))
    data = np.asarray(st.get("data"))
    kind = type(obj).__name__[:3]
    try:
        out = np.zeros(shape, dtype=np.float64)
        if kind in ("csc", "csr"):
            indices, indptr = np.asarray(st["indices"]), np.asarray(st["indptr"])
            major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            rows, cols = (indices, major) if kind == "csc" else (major, indices)
        else:  # coo (scipy >= 1.13 stores 'coords')
            rows, cols = st["coords"] if "coords" in st else (st["row"], st["col"])
        np.add.at(out, (np.asarray(rows), np.asarray(cols)), data)
    except Exception as e:
        raise SmplerError(f"{where}: malformed {obj._orig} in pickle ({e})") from None
    return out


def _as_array(value, key: str, where: str) -> np.ndarray:
    if isinstance(value, _SparsePlaceholder):
        return _sparse_from_state(value, where)
    if isinstance(value, _ChumpyPlaceholder):
        st = value._state
        if isinstance(st, dict) and "x" in st and not isinstance(st["x"], _Inert):
            return np.asarray(st["x"])
        raise SmplerError(
            f"{where}: '{key}' is a chumpy expression ({value._orig}), expected a plain array; "
            "convert the pickle to .npz with chumpy installed"
        )
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except Exception:
        raise SmplerError(f"{where}: '{key}' is a {type(value).__name__}, expected an array") from None


# ----------------------------------------------------------------------------------------------------------------
# Layout conversion
# ----------------------------------------------------------------------------------------------------------------

def posedirs_to_smplx(posedirs: np.ndarray) -> np.ndarray:
    """pkl layout [6890,3,207] -> smplx layout [207,20670] (what the checkpoint buffer holds)."""
    return np.ascontiguousarray(posedirs.reshape(-1, posedirs.shape[-1]).T)


def posedirs_to_pkl(posedirs: np.ndarray) -> np.ndarray:
    """smplx layout [207,20670] -> pkl layout [6890,3,207]."""
    return np.ascontiguousarray(posedirs.T.reshape(-1, 3, posedirs.shape[0]))


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def _from_mapping(d: dict, where: str, source: str) -> BodyModelData:
    """Build BodyModelData from either smplx-layout keys or SMPL-pkl key names."""
    get = d.__getitem__
    has = d.__contains__

    def need(*names):
        for n in names:
            if has(n):
                return _as_array(get(n), n, where)
        raise SmplerError(f"{where}: missing '{names[0]}', expected a SMPL body model (keys v_template, shapedirs, "
                          "posedirs, J_regressor, weights/lbs_weights, f/faces, kintree_table/parents)")

    v_template = need("v_template")
    shapedirs = need("shapedirs")
    if shapedirs.ndim == 3 and shapedirs.shape[2] > 10:
        shapedirs = shapedirs[:, :, :10]  # SMPL 1.1 ships 300 betas; SMPLer uses the first 10
    posedirs = need("posedirs")
    if posedirs.ndim == 3:
        posedirs = posedirs_to_smplx(posedirs)
    J_regressor = need("J_regressor")
    lbs_weights = need("lbs_weights", "weights")
    faces = need("faces", "f")
    if has("parents"):
        parents = need("parents").astype(np.int64).reshape(-1)
    else:
        kt = need("kintree_table")
        if kt.ndim != 2 or kt.shape[0] != 2:
            raise SmplerError(f"{where}: kintree_table has shape {list(kt.shape)}, expected [2,24]")
        parents = kt[0].astype(np.int64)  # root is stored as uint32 max; smplx sets it to -1
        parents[0] = -1
    h36m = None
    for k in ("J_regressor_h36m", "J_regressor_h36m_correct"):
        if has(k):
            h36m = _f32(need(k))
    standin = bool(np.asarray(_as_array(get("standin"), "standin", where)).item()) if has("standin") else False
    if has("source"):
        source = str(np.asarray(get("source")).item()) or source
    data = BodyModelData(
        v_template=_f32(v_template), shapedirs=_f32(shapedirs), posedirs=_f32(posedirs),
        J_regressor=_f32(J_regressor), lbs_weights=_f32(lbs_weights),
        faces=np.ascontiguousarray(np.asarray(faces).astype(np.int64)), parents=parents,
        J_regressor_h36m=h36m, standin=standin, source=source,
    )
    return data.validate(where=where)


# ----------------------------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------------------------

def _zip_members(path: Path) -> list[str] | None:
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (OSError, zipfile.BadZipFile):
        return None


def _load_npz(path: Path) -> BodyModelData:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        raise SmplerError(f"{path}: npz holds pickled objects ({e}); expected plain arrays") from None
    except Exception as e:
        raise SmplerError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None
    return _from_mapping(arrays, str(path), source=path.name)


def _load_pkl(path: Path) -> BodyModelData:
    obj = _restricted_load(path)
    if not isinstance(obj, dict):
        raise SmplerError(f"{path}: pickle holds a {type(obj).__name__}, expected a SMPL model dict")
    return _from_mapping(obj, str(path), source=path.name)


def _load_checkpoint(path: Path) -> BodyModelData:
    from ..torch_weights import state_dict_in, torch_load_weights  # imports torch: only for checkpoints

    sd = state_dict_in(torch_load_weights(path, str(path)), wrappers=("model", "state_dict"))
    if not isinstance(sd, dict):
        raise SmplerError(f"{path}: checkpoint holds a {type(sd).__name__}, expected a state dict")
    missing = [name for name in _CKPT_KEYS.values() if name not in sd]
    if missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        raise SmplerError(f"{path}: checkpoint lacks SMPL buffers {', '.join(missing[:3])}{more}; "
                          f"expected a SMPLer checkpoint or pass {opt('smpl_model')}")
    arr = lambda name: sd[name].detach().cpu().numpy()  # noqa: E731
    mapping = {field: arr(name) for field, name in _CKPT_KEYS.items()}
    if _CKPT_H36M in sd:
        mapping["J_regressor_h36m"] = arr(_CKPT_H36M)
    return _from_mapping(mapping, str(path), source=f"checkpoint {path.name}")


def load_body_model(path) -> BodyModelData:
    """Load a SMPL model from a SMPL .pkl, an .npz (smplx or pkl key names) or a SMPLer checkpoint."""
    p = Path(path)
    if not p.is_file():
        raise SmplerError(f"{p}: no such file; expected a SMPL model (.pkl/.npz) or a SMPLer checkpoint")
    members = _zip_members(p)
    if members is not None:  # npz and modern torch.save files are both zip archives
        if any(m.endswith(".npy") for m in members):
            return _load_npz(p)
        if any(m.endswith("data.pkl") for m in members):
            return _load_checkpoint(p)
        raise SmplerError(f"{p}: zip archive is neither .npz nor a PyTorch checkpoint")
    if p.suffix.lower() in _TORCH_SUFFIXES:
        return _load_checkpoint(p)  # legacy (non-zip) torch.save
    if p.suffix.lower() == ".npz":
        return _load_npz(p)  # will raise a one-line error for a non-zip .npz
    return _load_pkl(p)


def load_h36m_regressor(path) -> np.ndarray:
    """Read the official J_regressor_h36m_correct.npy (or an .npz holding it) as float32 [17,6890]."""
    p = Path(path)
    if not p.is_file():
        raise OptionError("h36m_regressor", p, f"no such file; expected J_regressor_h36m_correct.npy [17,{NUM_VERTS}]")
    try:
        obj = np.load(p, allow_pickle=False)
        if isinstance(obj, np.lib.npyio.NpzFile):
            with obj:
                keys = [k for k in obj.files if "h36m" in k.lower()] or obj.files
                if len(keys) != 1:
                    raise OptionError("h36m_regressor", p, f"npz has keys {obj.files}, expected one H36M regressor")
                arr = obj[keys[0]]
        else:
            arr = obj
    except SmplerError:
        raise
    except Exception as e:
        raise OptionError("h36m_regressor", p, f"not a readable .npy/.npz ({type(e).__name__}: {e})") from None
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.shape[0] < 17 or arr.shape[1] != NUM_VERTS:
        raise OptionError("h36m_regressor", p, f"shape {list(arr.shape)}, expected [17,{NUM_VERTS}]")
    return _f32(arr)


def save_body_model_npz(data: BodyModelData, path) -> Path:
    """Write the smplx-layout arrays (+ standin flag, source) atomically; loadable with allow_pickle=False."""
    data.validate(where=str(path))
    arrays = {
        "v_template": data.v_template, "shapedirs": data.shapedirs, "posedirs": data.posedirs,
        "J_regressor": data.J_regressor, "lbs_weights": data.lbs_weights, "faces": data.faces,
        "parents": np.asarray(data.parents, dtype=np.int64), "standin": np.asarray(bool(data.standin)),
        "source": np.asarray(str(data.source)),
    }
    if data.J_regressor_h36m is not None:
        arrays["J_regressor_h36m"] = data.J_regressor_h36m
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:  # file handle: np.savez would otherwise append ".npz" to the temp name
            np.savez(f, **arrays)
    return Path(path)


__all__ = ["load_body_model", "load_h36m_regressor", "save_body_model_npz", "posedirs_to_smplx", "posedirs_to_pkl"]
