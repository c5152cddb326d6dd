"""Converted models, cached in the user cache folder (:mod:`rsd.engine.cachedir`).

Converting the embedded target (de-quantising its GGUF file and rebuilding its tokenizer) takes
~25 s on a 2-core CPU; loading the result back from safetensors and ``tokenizer.json`` takes well
under a second. :func:`load_converted` converts once and loads from the cache afterwards.

**Key.** An entry is ``cache_dir("models", NAME-KEY)`` with KEY a digest of the source file's
SHA-256, the versions of the libraries that produce the conversion (transformers: the GGUF reader,
the tokenizer rebuild; gguf: the de-quantisation; tokenizers: the ``tokenizer.json`` format) and
:data:`FORMAT` (this module's layout). A new source file or library version gives another KEY: a
stale entry is never looked at, and the line on stderr says a conversion is running.

Hashing the ~100 MB source on every start would cost ~0.3 s of a 4 s start-up, so the digest is
computed once per file state and remembered in ``models/sources.json`` under the file's real path,
size and modification time (ns). Any rewrite of the file (a reinstall, an edit, a copy) changes its
size or mtime, so the digest is recomputed; only a deliberate same-size rewrite that also restores
the old mtime would go unnoticed.

**Entry.** ``config.json``, ``generation_config.json``, ``model.safetensors`` (float32, exactly the
converted weights), the tokenizer files, and ``manifest.json`` listing every file's size, mtime and
SHA-256. An entry is written in a temporary folder beside it (manifest last) and renamed into place,
so an interrupted conversion never appears under the entry's name. Before an entry is trusted every
file must exist with its recorded size; a file whose mtime moved is hashed again and must match
(then the manifest is refreshed). A missing, partial, corrupt or unreadable entry is rebuilt, with
one line through ``log``; a cache folder that cannot be written costs only that line.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

from .cachedir import atomic_write, cache_dir

FORMAT = 1
MANIFEST = "manifest.json"
SOURCES = "sources.json"
LIBRARIES = ("transformers", "gguf", "tokenizers")
_STALE_TMP_S = 3600  # temporary folders older than this are left-overs of killed conversions


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path, obj):
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)


def source_digest(path: str) -> str:
    """SHA-256 of the file at ``path``, remembered per (real path, size, mtime) (see the module doc)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    index_path = os.path.join(cache_dir("models"), SOURCES)
    index = _read_json(index_path)
    index = index if isinstance(index, dict) else {}
    seen = index.get(real)
    if isinstance(seen, dict) and seen.get("size") == st.st_size and seen.get("mtime_ns") == st.st_mtime_ns \
            and isinstance(seen.get("sha256"), str):
        return seen["sha256"]
    digest = file_sha256(real)
    index[real] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    try:
        _write_json(index_path, index)
    except OSError:
        pass  # a read-only cache: hash again next time
    return digest


def entry_folder(name: str, source: str) -> tuple[str, dict]:
    """The cache folder of ``source``'s conversion and the identity it is keyed by."""
    ident = {"format": FORMAT, "name": name, "source_sha256": source_digest(source), "libraries": library_versions()}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache_dir("models"), f"{name}-{key}"), ident


def check_entry(folder: str, ident: dict) -> str | None:
    """``None`` if the entry at ``folder`` is complete and intact, else what is wrong with it."""
    if not os.path.isdir(folder):
        return "missing"
    man = _read_json(os.path.join(folder, MANIFEST))
    if not isinstance(man, dict) or not isinstance(man.get("files"), dict) or not man["files"]:
        return "incomplete (no manifest)"
    if man.get("identity") != ident:
        return "for another source or library version"
    moved = {}
    for fname, rec in man["files"].items():
        path = os.path.join(folder, fname)
        try:
            st = os.stat(path)
        except OSError:
            return f"incomplete ({fname} is missing)"
        if st.st_size != rec.get("size"):
            return f"corrupt ({fname} has {st.st_size} bytes, the manifest says {rec.get('size')})"
        if st.st_mtime_ns != rec.get("mtime_ns"):
            if file_sha256(path) != rec.get("sha256"):
                return f"corrupt ({fname} does not match its digest)"
            moved[fname] = st.st_mtime_ns
    if moved:  # copied or touched but intact: remember the new times so the next start is fast again
        for fname, mtime in moved.items():
            man["files"][fname]["mtime_ns"] = mtime
        try:
            _write_json(os.path.join(folder, MANIFEST), man)
        except OSError:
            pass
    return None


def _write_entry(folder: str, ident: dict, model, tokenizer) -> None:
    """Write the entry into a temporary folder (manifest last), then rename it to ``folder``."""
    import safetensors.torch

    parent = os.path.dirname(folder)
    _remove_stale_tmp(parent)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(folder) + "-", dir=parent)
    try:
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the weights are plain float tensors now
        config["dtype"] = "float32"
        _write_json(os.path.join(tmp, "config.json"), config)
        model.generation_config.save_pretrained(tmp)
        safetensors.torch.save_model(model, os.path.join(tmp, "model.safetensors"))  # tied weights stored once
        tokenizer.save_pretrained(tmp)
        files = {}
        for fname in sorted(os.listdir(tmp)):
            path = os.path.join(tmp, fname)
            st = os.stat(path)
            files[fname] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(path)}
        _write_json(os.path.join(tmp, MANIFEST), {"identity": ident, "files": files, "written": time.time()})
        if os.path.isdir(folder):  # a corrupt entry: move it aside, then drop it
            old = tempfile.mkdtemp(prefix=".tmp-old-", dir=parent)
            os.replace(folder, os.path.join(old, "entry"))
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process has just written it: keep theirs
            if not os.path.isdir(folder):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_tmp(parent: str) -> None:
    now = time.time()
    for entry in os.listdir(parent):
        path = os.path.join(parent, entry)
        if entry.startswith(".tmp-") and os.path.isdir(path):
            try:
                if now - os.stat(path).st_mtime > _STALE_TMP_S:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


def _load_entry(folder: str, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return model.eval(), tokenizer


def load_converted(source: str, name: str, convert, *, dtype=None, log=None):
    """``(model, tokenizer)`` of ``source`` converted by ``convert()``, through the cache.

    ``convert()`` returns a float32 ``transformers`` causal LM and its tokenizer (the slow path);
    its result is written to the cache entry of ``source`` (see the module docstring) and loaded
    from there on later calls. ``dtype``: the returned model's dtype (default float32; the entry
    always holds float32). ``log(line)`` receives the one line said when a conversion runs
    (default: stderr).
    """
    import torch

    log = _stderr if log is None else log
    dtype = torch.float32 if dtype is None else dtype
    folder, ident = entry_folder(name, source)
    why = check_entry(folder, ident)
    if why is None:
        try:
            return _load_entry(folder, dtype)
        except Exception as exc:  # an intact-looking entry that does not load is rebuilt, not trusted
            why = f"unreadable ({type(exc).__name__}: {exc})"
    if why == "missing":
        log(f"rsd: converting {name} from {source} once (~25 s on 2 cores); later runs load it from {folder}")
    else:
        log(f"rsd: the cached {name} at {folder} is {why}; converting it again")
    model, tokenizer = convert()
    try:
        _write_entry(folder, ident, model, tokenizer)
    except OSError as exc:
        log(f"rsd: could not write the model cache ({exc}); the next run converts again")
    return model.to(dtype).eval(), tokenizer
