"""Search every file under a folder for planted PHI strings, in the places text can hide.

* text files (CSV, TSV, JSON, HTML, TXT, YAML, logs, ...): the whole file;
* NIfTI (``.nii``, ``.nii.gz``): the header's text fields (``descrip``, ``aux_file``,
  ``intent_name``, ``db_name``), every header extension and every byte before the voxel data;
  voxel data are numbers, and searching them for short strings would only find chance byte
  patterns;
* PNG: the text chunks (``tEXt``, ``zTXt``, ``iTXt``) and ``eXIf``;
* HTML: the text without its base64 ``data:`` URIs, plus the text chunks of the PNGs they hold
  (base64 is random letters: a short string turns up in it by chance);
* other binary files (``.npz``, ``.pkl``, ...): refused, so that a new output kind gets a rule.

Matching is case-sensitive on the strings given (planted values are distinctive, e.g.
``PHI-PID-73519``), or case-insensitive with ``ignore_case`` (realistic names such as
``Doe^Jane`` may come back as ``DOE^JANE``).
"""

from __future__ import annotations

import base64
import gzip
import re
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib

TEXT_SUFFIXES = {
    ".csv", ".tsv", ".json", ".html", ".txt", ".yaml", ".yml", ".log", ".md", ".bval", ".bvec",
    ".svg", ".css", ".js", ".bidsignore", "",
}  # fmt: skip
_PNG_TEXT = {b"tEXt", b"zTXt", b"iTXt", b"eXIf"}


_DATA_URI = re.compile(r"data:([\w/+.-]+);base64,([A-Za-z0-9+/=\s]+)")


def _html_text(text: str) -> str:
    images = [base64.b64decode(m.group(2)) for m in _DATA_URI.finditer(text)
              if m.group(1) == "image/png"]  # fmt: skip
    return "\n".join([_DATA_URI.sub("data:", text), *map(_png_chunks, images)])


def _png_text(path: Path) -> str:
    return _png_chunks(path.read_bytes())


def _png_chunks(data: bytes) -> str:
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind in _PNG_TEXT:
            if kind == b"zTXt":
                key, _, rest = body.partition(b"\0")
                body = key + b" " + zlib.decompress(rest[1:])
            elif kind == b"iTXt":
                key, _, rest = body.partition(b"\0")
                flag = rest[0]
                text = rest[2:].split(b"\0", 2)[-1]
                body = key + b" " + (zlib.decompress(text) if flag else text)
            out.append(body.decode("latin-1"))
        pos += 12 + length
    return "\n".join(out)


def _nifti_text(path: Path) -> str:
    header = nib.load(str(path)).header
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:  # header, extensions and padding: all before the voxels
        parts = [fh.read(int(header.get_data_offset()) or 352).decode("latin-1")]
    for field in ("descrip", "aux_file", "intent_name", "db_name"):
        if field in header:
            parts.append(bytes(header[field]).decode("latin-1"))
    parts += [ext.get_content().decode("latin-1") if isinstance(ext.get_content(), bytes)
              else str(ext.get_content()) for ext in header.extensions]  # fmt: skip
    return "\n".join(parts)


def searchable_text(path: Path) -> str:
    """The text of ``path`` that could carry PHI (module description)."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _nifti_text(path)
    if name == ".snakemake_timestamp":
        return ""  # empty marker files
    if name.endswith(".png"):
        return _png_text(path)
    if path.suffix.lower() in TEXT_SUFFIXES or name.endswith((".tsv.gz", ".txt.gz")):
        raw = path.read_bytes()
        if name.endswith(".gz"):
            raw = zlib.decompress(raw, 16 + zlib.MAX_WBITS)
        text = raw.decode("utf-8", errors="replace")
        return _html_text(text) if name.endswith(".html") else text
    raise AssertionError(f"{path}: no PHI search rule for this kind of file")


def find_phi_in(
    files: Iterable[Path], strings: Iterable[str], *, ignore_case: bool = False
) -> list[str]:
    """``"<file>: <string>"`` for each planted string found in ``files``."""
    strings = tuple(strings)
    found = []
    for path in files:
        text = searchable_text(path)
        if ignore_case:
            text = text.lower()
        found += [f"{path}: {s}" for s in strings if (s.lower() if ignore_case else s) in text]
    return found


def find_phi(
    root: Path, strings: Iterable[str], *, skip: Iterable[str] = (), ignore_case: bool = False
) -> list[str]:
    """``"<file>: <string>"`` for each planted string found under ``root`` (hidden folders
    such as ``.snakemake`` included; ``skip`` lists path parts to leave out)."""
    skip = set(skip)
    files = [p for p in sorted(root.rglob("*")) if p.is_file()
             and not skip & set(p.relative_to(root).parts)]  # fmt: skip
    return find_phi_in(files, strings, ignore_case=ignore_case)
