"""Label maps of automatic spine segmenters converted to the contract's labels (section 2).

Running the segmenters is the user's job (their weights are downloaded at run time); this module
turns their output into ``dseg.nii.gz`` + ``dseg.tsv`` on the baseline reference grid with the
contract's names (:mod:`qmri.labels`). Neither tool delineates the GTV: draw it on the reference
(or convert it from the plan's RTSTRUCT) and pass it as ``tumor=`` to :func:`convert_segmentation`.

Formats, as documented by the tools
-----------------------------------
**TotalSegmentator** (github.com/wasserth/TotalSegmentator, ``totalsegmentator/map_to_binary.py``
``class_map``): ``total_mr`` has *one* class for all vertebrae (19 ``vertebrae``; 18 ``sacrum``,
20 ``intervertebral_discs``, 21 ``spinal_cord``, 23 ``aorta``); the levels come from task
``vertebrae_mr`` (1 ``sacrum``, 2 ``vertebrae_L5`` .. 25 ``vertebrae_C1``); CT ``total`` names
``vertebrae_S1`` .. ``vertebrae_C1``. No task has a spinal canal, so no ``csf`` comes from it.
Output: a folder of binary ``<class>.nii.gz`` masks, or with ``--ml`` one multilabel NIfTI whose
class table is a header extension (CaretExtension XML ``<Label Key="i">name</Label>``,
``totalsegmentator/nifti_ext_header.py``); without it, ``task`` selects :data:`TOTALSEG_TASKS`.

**SPINEPS** (github.com/Hendrik-code/spineps ``README.md``, ``docs/modules/phases.md``; enums
``Vertebra_Instance``, ``Location`` in github.com/Hendrik-code/TPTBox
``TPTBox/core/vert_constants.py``): instance mask ``*_seg-vert_msk`` (:data:`SPINEPS_LEVELS`;
``100 + X`` the disc below vertebra X, ``200 + X`` its endplate) and semantic mask
``*_seg-spine_msk`` (:data:`SPINEPS_SEMANTIC`: 41 arcus, 42 spinous process, 43-48 costal and
articular processes L/R, 49 corpus border, 50 corpus, 60 cord, 61 canal, 62 endplate, 100 disc).

Conversion rules (world RAS+ mm from each affine: +x the patient's right, +z superior)
-------------------------------------------------------------------------------------
* ``cord_<L>``: cord between the mid-points of the S-centroids of adjacent vertebral bodies; the
  end levels reach half the distance to their neighbour (one level: its body's S-range); a voxel
  on a boundary goes to the lower level; the rest is dropped (:attr:`ConversionReport.dropped`).
* Midline of a level: x-centroid of the cord and canal within the vertebra's S-range (else the
  vertebra's). Posterior elements left of it are ``pel``, the others ``per`` (on it: right).
* **SPINEPS**: corpus and corpus border -> ``vb``; arcus, costal and articular processes ->
  ``pel``/``per`` by the midline (the tool's left/right names are not used: their convention is
  not documented); spinous process -> ``pe``; cord -> ``cord``; canal (without cord) -> ``csf``.
  Endplates, discs, the sacrum (one label, no body) and the coccyx are unmapped. T13, L6 and S6
  have no contract level: an error (the clinical numbering is the user's decision).
* **TotalSegmentator**: ``vertebrae_<L>`` is the *whole* vertebra; as ``vb`` it would put the
  posterior elements into the CTV and the marrow ROIs (:func:`qmri.rois.derive_rois`), so it is
  split. On the midline band (half an x-step either side) bone runs along y (joined across gaps
  <= :data:`RUN_GAP_MM`): the most anterior run is the body, and every vertebra voxel not
  posterior to its posterior end (the posterior vertebral body line) is ``vb``; of the rest,
  voxels behind the canal's posterior wall (the next run's anterior end) within
  :data:`SPINOUS_HALF_WIDTH_MM` of the midline are ``pe``, the others ``pel``/``per``. Limits:
  pedicle bases anterior to the body line go to ``vb``, the laminae's midline junction to
  ``pe``, the lateral rim of a concave posterior body wall to ``pel``/``per`` (overlaps measured
  in ``tests/test_segmenters.py``). ``spinal_cord`` -> ``cord``, ``aorta`` -> ``aorta``.
"""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from qmri.errors import QMRIInputError
from qmri.io import atomic_output, load_nifti, save_nifti
from qmri.labels import LEVEL_INDEX, LEVELS, label_table
from qmri.registration import pull_back_labels

__all__ = [
    "RUN_GAP_MM", "SOURCES", "SPINEPS_LEVELS", "SPINEPS_SEMANTIC", "SPINOUS_HALF_WIDTH_MM",
    "TOTALSEG_TASKS", "ConversionReport", "convert_segmentation", "from_spineps",
    "from_totalsegmentator",
]  # fmt: skip

#: Accepted ``source`` values of :func:`convert_segmentation`.
SOURCES: tuple[str, ...] = ("totalsegmentator", "spineps")

#: Gaps (mm) along the midline up to which bone is one run (the spinal canal is >= 10 mm deep).
RUN_GAP_MM = 5.0
#: Half-width (mm) of the spinous process about the midline (TotalSegmentator split).
SPINOUS_HALF_WIDTH_MM = 5.0

_TOTAL_MR_NAMES = (
    "spleen kidney_right kidney_left gallbladder liver stomach pancreas adrenal_gland_right "
    "adrenal_gland_left lung_left lung_right esophagus small_bowel duodenum colon urinary_bladder "
    "prostate sacrum vertebrae intervertebral_discs spinal_cord heart aorta inferior_vena_cava "
    "portal_vein_and_splenic_vein iliac_artery_left iliac_artery_right iliac_vena_left "
    "iliac_vena_right humerus_left humerus_right scapula_left scapula_right clavicula_left "
    "clavicula_right femur_left femur_right hip_left hip_right gluteus_maximus_left "
    "gluteus_maximus_right gluteus_medius_left gluteus_medius_right gluteus_minimus_left "
    "gluteus_minimus_right autochthon_left autochthon_right iliopsoas_left iliopsoas_right brain"
)

#: TotalSegmentator class maps (index -> class name) of the tasks whose multilabel output is read
#: without its header extension (``class_map`` of ``totalsegmentator/map_to_binary.py``).
TOTALSEG_TASKS: dict[str, dict[int, str]] = {
    "total_mr": dict(enumerate(_TOTAL_MR_NAMES.split(), start=1)),
    "vertebrae_mr": dict(enumerate(["sacrum", *(f"vertebrae_{v}" for v in LEVELS[23::-1])], 1)),
}

#: SPINEPS vertebra instance label -> level name (``Vertebra_Instance`` of TPTBox).
SPINEPS_LEVELS: dict[int, str] = {
    **{i: f"C{i}" for i in range(1, 8)}, **{7 + i: f"T{i}" for i in range(1, 13)}, 28: "T13",
    **{19 + i: f"L{i}" for i in range(1, 7)}, 26: "S1", 27: "Cocc",
    **{27 + i: f"S{i}" for i in range(2, 7)},
}  # fmt: skip

#: SPINEPS semantic label -> structure name (``Location`` of TPTBox).
SPINEPS_SEMANTIC: dict[int, str] = {
    26: "Sacrum", 41: "Arcus_Vertebrae", 42: "Spinosus_Process", 43: "Costal_Process_Left",
    44: "Costal_Process_Right", 45: "Superior_Articular_Left", 46: "Superior_Articular_Right",
    47: "Inferior_Articular_Left", 48: "Inferior_Articular_Right", 49: "Vertebra_Corpus_border",
    50: "Vertebra_Corpus", 51: "Dens_axis", 60: "Spinal_Cord", 61: "Spinal_Canal",
    62: "Endplate", 70: "Sacrum_Sacral_Ala_Left", 71: "Sacrum_Sacral_Ala_Right",
    72: "Sacrum_Posterior_Sacral_Elements", 73: "Sacrum_Body", 74: "Sacrum_Endplate",
    80: "Metal", 100: "Vertebra_Disc",
}  # fmt: skip

_SP_BODY = (49, 50)
_SP_ARCH = (41, 43, 44, 45, 46, 47, 48)
_SP_SPINOUS = 42
_SP_MAPPED = frozenset((*_SP_BODY, *_SP_ARCH, _SP_SPINOUS, 60, 61))
_PARTS = ("vb", "pel", "per", "pe", "cord")
_VERTEBRA_RE = re.compile(r"^vertebrae_([A-Za-z]+[0-9]+)$")

#: (labels, affine, index -> contract name, unmapped class names)
Converted = tuple[np.ndarray, np.ndarray, dict[int, str], list[str]]


@dataclass
class ConversionReport:
    """What :func:`convert_segmentation` wrote.

    Attributes
    ----------
    source : str
        ``"totalsegmentator"`` or ``"spineps"``.
    inputs : list of Path
        The segmenter's files or folders.
    dseg, table : Path
        The written label image and its lookup table.
    labels : dict of str to int
        Label name -> voxel count, in index order.
    unmapped : list of str
        Segmenter classes present in the input that have no contract label.
    dropped : dict of str to int
        Voxels of mapped classes that could not be placed, by reason.
    resampled : bool
        True when an input's grid differed from the reference grid (nearest neighbour).
    """

    source: str
    inputs: list[Path]
    dseg: Path
    table: Path
    labels: dict[str, int]
    unmapped: list[str]
    dropped: dict[str, int] = field(default_factory=dict)
    resampled: bool = False

    def lines(self) -> list[str]:
        """Return a short human-readable summary, one line per item."""
        out = [f"{self.dseg}: {len(self.labels)} labels from {self.source}"]
        out += [f"  {name}: {n} voxels" for name, n in self.labels.items()]
        if self.unmapped:
            out.append("  unmapped classes: " + ", ".join(self.unmapped))
        out += [f"  dropped: {n} voxels ({why})" for why, n in self.dropped.items() if n]
        return out


@dataclass
class _Grid:
    """Target grid and the parts painted on it (flat voxel indices per contract name)."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    unmapped: set[str] = field(default_factory=set)
    dropped: dict[str, int] = field(default_factory=dict)
    resampled: bool = False

    def world(self, flat: np.ndarray) -> np.ndarray:
        """World RAS+ coordinates (mm), shape ``(n, 3)``, of flat voxel indices."""
        ijk = np.stack(np.unravel_index(flat, self.shape), axis=-1).astype(np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def add(self, name: str, flat: np.ndarray) -> None:
        if flat.size:
            old = self.parts.get(name)
            self.parts[name] = flat if old is None else np.union1d(old, flat)

    def drop(self, reason: str, n: int) -> None:
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(n)


def _read_labels(path: Path) -> nib.Nifti1Image:
    """Load a 3D label image (a 4D one with one volume is accepted); check whole numbers."""
    img = load_nifti(path, ndim=(3, 4))
    if img.ndim == 4 and img.shape[3] != 1:
        raise QMRIInputError(f"not a label map: 4D image of shape {img.shape}", path)
    data = np.asanyarray(img.dataobj).reshape(img.shape[:3])
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data) | (data != np.round(data))
        if bad.any():
            sample = ", ".join(f"{v:g}" for v in np.unique(data[bad])[:3])
            raise QMRIInputError(f"not a label map: non-integer values ({sample})", path)
    elif data.dtype.kind not in "iub":
        raise QMRIInputError(f"not a label map: data type {data.dtype}", path)
    if data.size and data.min() < 0:
        raise QMRIInputError(f"not a label map: negative value {data.min():g}", path)
    return nib.Nifti1Image(data.astype(np.int32), img.affine)


def _on_grid(img: nib.Nifti1Image, grid: _Grid) -> np.ndarray:
    """Label data on the target grid (nearest neighbour when the grids differ)."""
    data = np.asarray(img.dataobj)
    if data.shape == grid.shape and np.allclose(img.affine, grid.affine, atol=1e-4):
        return data
    grid.resampled = True
    return pull_back_labels(data, img.affine, grid.shape, grid.affine)


def _caret_table(img: nib.Nifti1Image, path: Path) -> dict[int, str] | None:
    """Class table of a TotalSegmentator multilabel file (header extension), or None."""
    for ext in img.header.extensions:
        content = ext.get_content()
        if not isinstance(content, bytes) or b"CaretExtension" not in content:
            continue
        try:
            root = ET.fromstring(content.decode("utf-8", "replace").strip())
        except ET.ParseError as exc:
            raise QMRIInputError(f"unreadable label table in the header ({exc})", path) from None
        return {int(e.get("Key", "0")): (e.text or "").strip() for e in root.iter("Label")}
    return None


def _reference_grid(reference: Path | None, first: nib.Nifti1Image) -> _Grid:
    if reference is None:
        return _Grid(tuple(first.shape[:3]), first.affine.copy())
    ref = load_nifti(reference, ndim=(3, 4))
    return _Grid(tuple(int(n) for n in ref.shape[:3]), ref.affine.copy())


def _totalseg_inputs(path: Path, task: str | None) -> list[tuple[nib.Nifti1Image, dict[int, str]]]:
    """(label image, index -> class name) pairs of a TotalSegmentator folder or multilabel file."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith((".nii.gz", ".nii")))
        if not files:
            raise QMRIInputError("no <class>.nii.gz masks in the TotalSegmentator folder", path)
        layers: list[tuple[np.ndarray, np.ndarray, dict[int, str]]] = []
        for p in files:  # masks on one grid that do not overlap share one multilabel layer
            img = _read_labels(p)
            mask = np.asarray(img.dataobj) > 0
            for data, affine, table in layers:  # noqa: B007 (data, table used after break)
                same = data.shape == mask.shape and np.allclose(affine, img.affine, atol=1e-4)
                if same and not data[mask].any():
                    break
            else:
                data, table = np.zeros(mask.shape, dtype=np.int32), {}
                layers.append((data, img.affine, table))
            table[len(table) + 1] = p.name.removesuffix(".gz").removesuffix(".nii")
            data[mask] = len(table)
        return [(nib.Nifti1Image(d, a), t) for d, a, t in layers]
    img = _read_labels(path)
    table = _caret_table(nib.load(str(path)), path)
    if table is None:
        if task not in TOTALSEG_TASKS:
            known = ", ".join(TOTALSEG_TASKS)
            problem = "no class table in the header" if task is None else f"task {task!r} unknown"
            raise QMRIInputError(f"{problem}: pass the TotalSegmentator task ({known})", path)
        table = TOTALSEG_TASKS[task]
    values = np.unique(np.asarray(img.dataobj))
    unknown = [int(v) for v in values if v and int(v) not in table]
    if unknown:
        raise QMRIInputError(f"label value(s) {unknown[:5]} are not in the class table", path)
    return [(img, table)]


def _level_name(text: str, source: str | Path) -> str:
    level = text.upper()
    if level not in LEVEL_INDEX:
        problem = f"vertebra level {text!r} is outside the contract's levels C1..S5"
        raise QMRIInputError(f"{problem}: relabel it to the clinical numbering", source)
    return level


def _midline_x(vert_xyz: np.ndarray, canal_xyz: np.ndarray) -> float:
    """x (mm) of a level's midline: cord/canal x-centroid within the vertebra's S-range."""
    z = canal_xyz[:, 2]
    inside = (z >= vert_xyz[:, 2].min()) & (z <= vert_xyz[:, 2].max())
    return float((canal_xyz[inside] if inside.any() else vert_xyz)[:, 0].mean())


def _add_sides(grid: _Grid, level: str, flat: np.ndarray, x_mid: float) -> None:
    """Split posterior-element voxels into ``pel``/``per`` by the midline (RAS: +x = right)."""
    x = grid.world(flat)[:, 0]
    left = x < x_mid - 1e-6
    grid.add(f"pel_{level}", flat[left])
    grid.add(f"per_{level}", flat[~left])


def _add_cord(grid: _Grid, cord: np.ndarray) -> None:
    """Assign cord voxels to levels by windows between the bodies' S-centroids."""
    if not cord.size:
        return
    bodies = {n[3:]: grid.world(f)[:, 2] for n, f in grid.parts.items() if n.startswith("vb_")}
    if not bodies:
        grid.drop("cord without a labelled vertebral body", cord.size)
        return
    levels = sorted(bodies, key=lambda lv: -bodies[lv].mean())  # superior first
    centres = np.array([bodies[lv].mean() for lv in levels])
    if len(levels) == 1:
        edges = np.array([bodies[levels[0]].max(), bodies[levels[0]].min()], dtype=np.float64)
    else:
        inner = (centres[:-1] + centres[1:]) / 2
        top = centres[0] + (centres[0] - centres[1]) / 2
        bottom = centres[-1] - (centres[-2] - centres[-1]) / 2
        edges = np.concatenate([[top], inner, [bottom]])
    edges[0], edges[-1] = edges[0] + 1e-6, edges[-1] - 1e-6  # the end levels include their edge
    z = grid.world(cord)[:, 2]
    for k, level in enumerate(levels):  # (lower edge, upper edge]
        grid.add(f"cord_{level}", cord[(z <= edges[k]) & (z > edges[k + 1])])
    grid.drop("cord outside the labelled levels", int(((z > edges[0]) | (z <= edges[-1])).sum()))


def _runs(values: np.ndarray, gap: float) -> list[tuple[float, float]]:
    """Runs (first, last) of values sorted anterior first, split at gaps > ``gap``."""
    ys = np.unique(np.round(values, 4))[::-1]
    runs, start = [], ys[0]
    for prev, cur in itertools.pairwise(ys):
        if prev - cur > gap:
            runs.append((start, prev))
            start = cur
    runs.append((start, ys[-1]))
    return runs


def _split_vertebra(grid: _Grid, level: str, flat: np.ndarray, cord_xyz: np.ndarray) -> None:
    """Split a whole vertebra into vb / pel / per / pe by the rule of the module docstring."""
    xyz = grid.world(flat)
    x_mid = _midline_x(xyz, cord_xyz)
    step = np.abs(grid.affine[:3, :3])
    band = np.abs(xyz[:, 0] - x_mid) <= step[0].max() / 2 + 1e-6
    if not band.any():
        band = np.abs(xyz[:, 0] - x_mid) <= np.abs(xyz[:, 0] - x_mid).min() + 1e-6
    runs = _runs(xyz[band, 1], max(RUN_GAP_MM, 1.5 * step[1].max()))
    body_line = runs[0][1]
    body = xyz[:, 1] >= body_line - 1e-6
    grid.add(f"vb_{level}", flat[body])
    rest = ~body
    if len(runs) > 1:
        canal_wall = runs[1][0]
        near = np.abs(xyz[:, 0] - x_mid) <= SPINOUS_HALF_WIDTH_MM + 1e-6
        spinous = rest & near & (xyz[:, 1] <= canal_wall + 1e-6)
        grid.add(f"pe_{level}", flat[spinous])
        rest &= ~spinous
    _add_sides(grid, level, flat[rest], x_mid)


def _totalseg(paths: Sequence[Path], reference: Path | None, task: str | None) -> _Grid:
    pairs = [(p, pair) for p in paths for pair in _totalseg_inputs(Path(p), task)]
    if not pairs:
        raise QMRIInputError("no TotalSegmentator input given", "inputs")
    grid = _reference_grid(reference, pairs[0][1][0])
    classes: dict[str, list[np.ndarray]] = {}
    for path, (img, table) in pairs:
        data = _on_grid(img, grid).ravel()
        for value in sorted(set(np.unique(data).tolist()) - {0}):
            name = table[int(value)]
            match = _VERTEBRA_RE.match(name)
            if match:
                name = f"vertebrae_{_level_name(match[1], path)}"
            classes.setdefault(name, []).append(np.flatnonzero(data == value))
    flat = {name: np.unique(np.concatenate(parts)) for name, parts in classes.items()}
    levels = {n.split("_", 1)[1]: f for n, f in flat.items() if _VERTEBRA_RE.match(n)}
    if not levels:
        raise QMRIInputError(
            "no vertebra with a level (vertebrae_<level>) in the input: total_mr labels all "
            "vertebrae as one class; add the output of TotalSegmentator --task vertebrae_mr",
            paths[0],
        )
    cord = flat.get("spinal_cord", np.zeros(0, dtype=np.int64))
    cord_xyz = grid.world(cord)
    for level in sorted(levels, key=LEVEL_INDEX.__getitem__):
        _split_vertebra(grid, level, levels[level], cord_xyz)
    _add_cord(grid, cord)
    if "aorta" in flat:
        grid.add("aorta", flat["aorta"])
    mapped = {"spinal_cord", "aorta"}
    grid.unmapped |= {n for n in flat if n not in mapped and not _VERTEBRA_RE.match(n)}
    return grid


def _spineps(instance: Path, semantic: Path, reference: Path | None) -> _Grid:
    inst_img, sem_img = _read_labels(instance), _read_labels(semantic)
    grid = _reference_grid(reference, inst_img)
    same = inst_img.shape == sem_img.shape and np.allclose(inst_img.affine, sem_img.affine)
    if reference is None and not same:
        raise QMRIInputError("grid differs from the instance mask's: give a reference", semantic)
    inst, sem = _on_grid(inst_img, grid).ravel(), _on_grid(sem_img, grid).ravel()
    for value in sorted(set(np.unique(inst).tolist()) - {0}):
        name = SPINEPS_LEVELS.get(value % 100) if value < 300 else None
        if name is None:
            raise QMRIInputError(f"instance label {value} is not a SPINEPS label", instance)
        if value >= 100:
            grid.unmapped.add(f"{name}_{'ivd' if value < 200 else 'endplate'}")
        elif name == "Cocc":
            grid.unmapped.add("Cocc")
        else:
            _level_name(name, instance)
    for value in np.unique(sem).tolist():
        if value and value not in _SP_MAPPED:
            grid.unmapped.add(SPINEPS_SEMANTIC.get(value, f"semantic label {value}"))
    bone = np.flatnonzero(np.isin(sem, (*_SP_BODY, *_SP_ARCH, _SP_SPINOUS)))
    owner = inst[bone]
    is_vert = (owner > 0) & (owner < 100) & (owner != 27)
    grid.drop("vertebra parts outside every vertebra instance", int((~is_vert).sum()))
    bone, owner = bone[is_vert], owner[is_vert]
    cord, canal = np.flatnonzero(sem == 60), np.flatnonzero(sem == 61)
    canal_xyz = grid.world(np.concatenate([cord, canal]))
    for value in sorted(set(owner.tolist()), key=lambda v: LEVEL_INDEX[SPINEPS_LEVELS[v]]):
        level = SPINEPS_LEVELS[value]
        flat = bone[owner == value]
        part = sem[flat]
        grid.add(f"vb_{level}", flat[np.isin(part, _SP_BODY)])
        grid.add(f"pe_{level}", flat[part == _SP_SPINOUS])
        x_mid = _midline_x(grid.world(flat), canal_xyz)
        _add_sides(grid, level, flat[np.isin(part, _SP_ARCH)], x_mid)
    _add_cord(grid, cord)
    grid.add("csf", canal)
    return grid


def _order(name: str) -> tuple[int, int, int]:
    """Index order of the written labels: per level vb, pel, per, pe, cord; then csf, aorta, tumor."""
    if "_" in name:
        structure, level = name.split("_", 1)
        return (0, LEVEL_INDEX[level], _PARTS.index(structure))
    return (1, ("csf", "aorta", "tumor").index(name), 0)


def _compose(grid: _Grid) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Paint the parts (later wins: csf, bone parts, cord, aorta, tumor) and number them."""
    priority = {"csf": 0, "vb": 1, "pel": 1, "per": 1, "pe": 1, "cord": 2, "aorta": 3, "tumor": 4}
    names = sorted(grid.parts, key=_order)
    flat = np.zeros(int(np.prod(grid.shape)), dtype=np.int32)
    for k in sorted(range(len(names)), key=lambda i: priority[names[i].split("_")[0]]):
        flat[grid.parts[names[k]]] = k + 1
    counts = np.bincount(flat, minlength=len(names) + 1)
    kept = [k + 1 for k in range(len(names)) if counts[k + 1]]
    lut = np.zeros(len(names) + 1, dtype=np.int32)
    lut[kept] = np.arange(1, len(kept) + 1)
    table = {i + 1: names[k - 1] for i, k in enumerate(kept)}
    label_table(table)  # every name must follow the contract
    return lut[flat].reshape(grid.shape), grid.affine, table


def from_totalsegmentator(
    path_or_folder: Path | str | Sequence[Path | str],
    *,
    reference: Path | str | None = None,
    task: str | None = None,
) -> Converted:
    """Convert TotalSegmentator output to the contract's labels.

    Parameters
    ----------
    path_or_folder : Path or sequence of Path
        Multilabel NIfTI files (``--ml``) and/or folders of ``<class>.nii.gz`` masks, e.g. the
        outputs of ``--task total_mr`` and ``--task vertebrae_mr``; classes are merged by name.
    reference : Path, optional
        Image whose grid the labels are wanted on (nearest neighbour); None: the first input's.
    task : str, optional
        ``total_mr`` or ``vertebrae_mr``, for multilabel files without a header class table.

    Returns
    -------
    labels : ndarray of int32
        Label image (0 background).
    affine : (4, 4) ndarray
        Its voxel-to-world (RAS+, mm) matrix.
    names : dict of int to str
        Label index -> contract name.
    unmapped : list of str
        Classes present that have no contract label (e.g. ``vertebrae``, ``sacrum``).

    Raises
    ------
    QMRIInputError
        One line naming the file: not a label map, no class table, a level outside C1..S5, no
        levelled vertebra.
    """
    items = [path_or_folder] if isinstance(path_or_folder, str | Path) else path_or_folder
    ref = None if reference is None else Path(reference)
    grid = _totalseg([Path(p) for p in items], ref, task)
    return (*_compose(grid), sorted(grid.unmapped))


def from_spineps(
    instance_path: Path | str, semantic_path: Path | str, *, reference: Path | str | None = None
) -> Converted:
    """Convert a SPINEPS instance (``seg-vert``) + semantic (``seg-spine``) pair to contract labels.

    Parameters
    ----------
    instance_path, semantic_path : Path
        The vertebra instance mask and the semantic (subregion) mask.
    reference : Path, optional
        Image whose grid the labels are wanted on (nearest neighbour); None: the instance grid.

    Returns
    -------
    labels, affine, names, unmapped
        As :func:`from_totalsegmentator`.

    Raises
    ------
    QMRIInputError
        One line naming the file: not a label map, an instance label without a contract level
        (T13, L6, S6) or unknown to SPINEPS, masks on different grids without a reference.
    """
    ref = None if reference is None else Path(reference)
    grid = _spineps(Path(instance_path), Path(semantic_path), ref)
    return (*_compose(grid), sorted(grid.unmapped))


def convert_segmentation(
    source: str,
    inputs: Sequence[Path | str],
    reference: Path | str,
    out_dseg: Path | str,
    *,
    task: str | None = None,
    tumor: Path | str | None = None,
) -> ConversionReport:
    """Convert a segmenter's label maps and write ``dseg.nii.gz`` + ``dseg.tsv`` atomically.

    Parameters
    ----------
    source : {"totalsegmentator", "spineps"}
        The tool that wrote ``inputs``.
    inputs : sequence of Path
        TotalSegmentator: multilabel files and/or class folders. SPINEPS: the instance and the
        semantic mask (recognised by ``seg-vert`` / ``seg-spine`` in the name, else in that order).
    reference : Path
        The baseline reference image; the labels are written on its grid.
    out_dseg : Path
        Destination ``*_dseg.nii.gz``; the table goes beside it as ``*_dseg.tsv``.
    task : str, optional
        TotalSegmentator task of multilabel files without a header class table.
    tumor : Path, optional
        GTV mask (non-zero inside, any grid), written as label ``tumor`` over the converted
        labels: the segmenters do not delineate tumours.

    Returns
    -------
    ConversionReport
        Labels written with their voxel counts, unmapped classes, dropped voxels.

    Raises
    ------
    QMRIInputError
        For an unknown source, a wrong number of inputs, or bad input (one line naming the file).
    """
    if source not in SOURCES:
        raise QMRIInputError(f"unknown segmenter {source!r} (expected {' or '.join(SOURCES)})")
    out_dseg, name = Path(out_dseg), Path(out_dseg).name
    if not name.endswith((".nii.gz", ".nii")):
        raise QMRIInputError("output label image must end in .nii.gz or .nii", out_dseg)
    paths = [Path(p) for p in inputs]
    ref = Path(reference)
    if source == "spineps":
        if len(paths) != 2:
            raise QMRIInputError(f"spineps needs 2 inputs (seg-vert, seg-spine), got {len(paths)}")
        swap = "seg-spine" in paths[0].name and "seg-spine" not in paths[1].name
        grid = _spineps(*(paths[::-1] if swap else paths), ref)
    else:
        grid = _totalseg(paths, ref, task)
    if tumor is not None:
        mask = _on_grid(_read_labels(Path(tumor)), grid).ravel()
        if not mask.any():
            raise QMRIInputError("tumour mask is empty on the reference grid", tumor)
        grid.add("tumor", np.flatnonzero(mask))
    labels, _, table = _compose(grid)
    tsv = out_dseg.with_name(name.removesuffix(".gz").removesuffix(".nii") + ".tsv")
    dtype = np.int16 if len(table) < 2**15 else np.int32
    save_nifti(labels, grid.affine, out_dseg, dtype=dtype)
    with atomic_output(tsv) as tmp:
        rows = "".join(f"{i}\t{n}\n" for i, n in table.items())
        tmp.write_text("index\tname\n" + rows, encoding="utf-8")
    counts = np.bincount(labels.ravel(), minlength=len(table) + 1)
    return ConversionReport(
        source=source,
        inputs=paths,
        dseg=out_dseg,
        table=tsv,
        labels={n: int(counts[i]) for i, n in table.items()},
        unmapped=sorted(grid.unmapped),
        dropped=dict(grid.dropped),
        resampled=grid.resampled,
    )
