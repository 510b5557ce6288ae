"""Check a model folder's files before anything is loaded from it.

`sdviz.load` reads a local folder only when it is a diffusers pipeline folder
(`model_index.json`) whose networks are stored as safetensors, each file intact:

- no pickle: `.bin`, `.ckpt`, `.pt`, `.pth` and `.pkl` weights are unpickled by torch,
  and unpickling can run arbitrary code, so a component that holds only those is refused
  with the conversion to safetensors;
- no truncated or corrupt safetensors: a download cut short or a damaged header would
  otherwise fail deep inside the loader, or load garbage. The header is checked against
  the file's size, which reads a few bytes only (a flipped bit inside the tensor data
  cannot be seen without a checksum).

`index_components` reads which components the folder holds. What the installed
libraries make of the files once they load is checked after loading, in `sdviz.weights`.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

# weights files that torch unpickles (a hub id never ends so: a path named like one)
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


def check_safetensors(path: str | os.PathLike) -> None:
    """Check a .safetensors file's header against its size (cheap: reads the header only).

    Catches truncated downloads and corrupt headers, naming the file; a flipped bit
    inside the tensor data cannot be detected without a checksum.
    """
    path = Path(path)
    size = path.stat().st_size
    hint = "Re-download or re-save it (pipe.save_pretrained(folder, safe_serialization=True))."
    with open(path, "rb") as f:
        if size < 8:
            raise OSError(f"Truncated weights file {path} ({size} bytes). {hint}")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            raise OSError(
                f"Corrupt or truncated weights file {path}: its header claims {n} bytes "
                f"but the file has {size}. {hint}"
            )
        try:
            header = json.loads(f.read(n).decode("utf-8"))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, IndexError):
            raise OSError(
                f"Corrupt weights file {path}: unreadable safetensors header. {hint}"
            ) from None
    data = size - 8 - n
    need = max(ends, default=0)
    if need > data:
        raise OSError(
            f"Truncated weights file {path}: tensors need {need} bytes of data, "
            f"the file holds {data}. {hint}"
        )
    if need != data:
        raise OSError(f"Corrupt weights file {path}: {data - need} unexpected bytes. {hint}")


def check_folder(folder: Path) -> None:
    """A diffusers pipeline folder with safetensors weights, each file intact."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise OSError(
            f"{folder} is not a diffusers pipeline folder: it has no model_index.json. "
            "Save one with pipe.save_pretrained(folder), or pass a hub id."
        )
    components = [k for k, v in json.loads(index.read_text()).items() if isinstance(v, list)]
    for name in components:
        sub = folder / name
        if not sub.is_dir():
            continue
        files = [p for p in sub.iterdir() if p.is_file()]
        weights = [p for p in files if p.suffix == ".safetensors"]
        pickles = [p for p in files if p.suffix in PICKLE_SUFFIXES]
        if pickles and not weights:
            raise OSError(
                f"{sub} holds only pickle weights ({pickles[0].name}); sdviz loads safetensors "
                "only, since unpickling can run arbitrary code. Convert them: load in diffusers "
                "and call save_pretrained(folder, safe_serialization=True)."
            )
        for p in weights:
            check_safetensors(p)


def index_components(folder: Path) -> dict[str, tuple[str, str]]:
    """model_index.json's components: name -> (library, class name), for present folders."""
    index = json.loads((folder / "model_index.json").read_text())
    return {
        name: (spec[0], spec[1])
        for name, spec in index.items()
        if isinstance(spec, list) and len(spec) == 2 and spec[0] and (folder / name).is_dir()
    }
