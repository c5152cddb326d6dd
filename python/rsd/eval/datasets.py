"""Evaluation data sets: prompts and references for translation, summarization and instructions.

Three formats, read the way their public releases ship them:

=========  =========================================================  ==============  =========
name       record                                                     task            metric
=========  =========================================================  ==============  =========
``wmt``    ``{"translation": {"de": .., "en": ..}}`` or ``{"de", "en"}``  translation     BLEU
``xsum``   ``{"document", "summary", "id"}``                          summarization   ROUGE-L
``dolly``  ``{"instruction", "context", "response", "category"}``     instruction     ROUGE-L
=========  =========================================================  ==============  =========

Sources, chosen by :func:`load_eval_set`'s spec string:

* ``"wmt"``, ``"xsum"``, ``"dolly"``: the built-in sets written for this project
  (``python/rsd/data/*.jsonl``, 30 items each). The default, and what CI uses.
* ``"xsum:/path/file.jsonl"``: a local file, JSON Lines (one record per line, e.g.
  ``databricks-dolly-15k.jsonl`` or ``Dataset.to_json`` output) or JSON (a list of records,
  or an object holding it under ``"data"`` or ``"rows"``; rows of the form
  ``{"row": {...}}``, as the Hugging Face dataset viewer exports them, are unwrapped).
* ``"xsum:hub"``: the public release via ``datasets.load_dataset`` (``wmt16``/``de-en``
  test, ``EdinburghNLP/xsum`` test, ``databricks/databricks-dolly-15k`` train). Needs the
  optional ``datasets`` package and network access; raises ``RuntimeError`` saying which
  is missing. Never used by the tests.

Each item carries the task prompt as plain text (the user's message); applying a chat
template is the caller's job.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
BUILTIN_FILES = {"wmt": "wmt_de_en.jsonl", "xsum": "xsum.jsonl", "dolly": "dolly.jsonl"}
TASKS = {"wmt": "translation", "xsum": "summarization", "dolly": "instruction"}
METRICS = {"wmt": "bleu", "xsum": "rougeL", "dolly": "rougeL"}
HUB_SOURCES = {  # name -> (load_dataset path, config name, split)
    "wmt": ("wmt16", "de-en", "test"),
    "xsum": ("EdinburghNLP/xsum", None, "test"),
    "dolly": ("databricks/databricks-dolly-15k", None, "train"),
}
LANGUAGE_NAMES = {"de": "German", "en": "English", "fr": "French", "cs": "Czech", "ro": "Romanian",
                  "ru": "Russian", "fi": "Finnish", "tr": "Turkish"}


@dataclass(frozen=True)
class EvalItem:
    """One prompt: ``prompt`` is the user message, ``reference`` the gold output."""
    id: str
    prompt: str
    reference: str


@dataclass(frozen=True)
class EvalSet:
    """A data set ready to evaluate: ``metric`` is ``"bleu"`` or ``"rougeL"``."""
    name: str
    task: str
    metric: str
    source: str
    items: tuple

    def __len__(self):
        return len(self.items)


# ---------------------------------------------------------------- prompts (one per task)

def translation_prompt(text: str, source_lang: str = "de", target_lang: str = "en") -> str:
    src = LANGUAGE_NAMES.get(source_lang, source_lang)
    tgt = LANGUAGE_NAMES.get(target_lang, target_lang)
    return f"Translate the following {src} sentence into {tgt}. Answer with the translation only.\n\n{src}: {text}"


def summarization_prompt(document: str) -> str:
    return f"Summarize the following news article in one sentence.\n\n{document}"


def instruction_prompt(instruction: str, context: str = "") -> str:
    context = (context or "").strip()
    return f"{instruction}\n\nContext: {context}" if context else instruction


# ---------------------------------------------------------------- reading files

def read_records(path: str) -> list[dict]:
    """Records of a JSON Lines or JSON file (see the module docstring for the shapes accepted)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    stripped = text.lstrip()
    records = None
    if stripped.startswith("[") or (stripped.startswith("{") and path.endswith(".json")):
        try:
            records = _unwrap(json.loads(text), path)
        except json.JSONDecodeError:
            records = None  # a .json file that is really JSON Lines: read it line by line below
    if records is None:
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not a JSON record ({exc.msg})") from None
    for n, r in enumerate(records, 1):
        if not isinstance(r, dict):
            raise ValueError(f"{path}: record {n} is a {type(r).__name__}, expected a JSON object")
    return records


def _unwrap(obj, path):
    if isinstance(obj, dict):
        for key in ("data", "rows"):
            if isinstance(obj.get(key), list):
                obj = obj[key]
                break
        else:
            return [obj]  # a single record
    if not isinstance(obj, list):
        raise ValueError(f"{path}: expected a list of records, got {type(obj).__name__}")
    return [r["row"] if isinstance(r, dict) and set(r) >= {"row"} and isinstance(r["row"], dict) else r for r in obj]


def _field(record, key, where):
    if key not in record:
        raise ValueError(f"{where}: missing field {key!r} (fields: {sorted(record)})")
    value = record[key]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _limit(records, limit):
    if limit is None:
        return records
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    return records[:limit]


# ---------------------------------------------------------------- record -> item

def wmt_items(records, source="records", source_lang="de", target_lang="en") -> tuple:
    """Items from WMT records: ``{"translation": {src: .., tgt: ..}}`` or ``{src: .., tgt: ..}``."""
    items = []
    for n, r in enumerate(records):
        where = f"{source}: record {n + 1}"
        pair = r.get("translation", r)
        if not isinstance(pair, dict):
            raise ValueError(f"{where}: field 'translation' must be an object, got {type(pair).__name__}")
        src, ref = _field(pair, source_lang, where), _field(pair, target_lang, where)
        items.append(EvalItem(str(r.get("id", n)), translation_prompt(src, source_lang, target_lang), ref))
    return tuple(items)


def xsum_items(records, source="records") -> tuple:
    """Items from XSum records ``{"document", "summary", "id"}``."""
    items = []
    for n, r in enumerate(records):
        where = f"{source}: record {n + 1}"
        doc, ref = _field(r, "document", where), _field(r, "summary", where)
        items.append(EvalItem(str(r.get("id", n)), summarization_prompt(doc.strip()), ref.strip()))
    return tuple(items)


def dolly_items(records, source="records") -> tuple:
    """Items from Dolly records ``{"instruction", "context", "response", "category"}``
    (``context`` may be empty or absent)."""
    items = []
    for n, r in enumerate(records):
        where = f"{source}: record {n + 1}"
        ins, ref = _field(r, "instruction", where), _field(r, "response", where)
        ctx = _field(r, "context", where) if "context" in r else ""
        items.append(EvalItem(str(r.get("id", n)), instruction_prompt(ins.strip(), ctx), ref.strip()))
    return tuple(items)


_ITEMS = {"wmt": wmt_items, "xsum": xsum_items, "dolly": dolly_items}


def _make(name, records, source, limit, **kw):
    items = _ITEMS[name](_limit(list(records), limit), source=source, **kw)
    if not items:
        raise ValueError(f"{source}: no records")
    return EvalSet(name, TASKS[name], METRICS[name], source, items)


def load_wmt(path: str | None = None, *, source_lang: str = "de", target_lang: str = "en",
             limit: int | None = None) -> EvalSet:
    """WMT translation pairs from ``path`` (JSON Lines / JSON), or the built-in set when ``None``."""
    path = path or os.path.join(DATA_DIR, BUILTIN_FILES["wmt"])
    return _make("wmt", read_records(path), path, limit, source_lang=source_lang, target_lang=target_lang)


def load_xsum(path: str | None = None, *, limit: int | None = None) -> EvalSet:
    """XSum document/summary pairs from ``path``, or the built-in set when ``None``."""
    path = path or os.path.join(DATA_DIR, BUILTIN_FILES["xsum"])
    return _make("xsum", read_records(path), path, limit)


def load_dolly(path: str | None = None, *, limit: int | None = None) -> EvalSet:
    """Dolly instruction/context/response records from ``path``, or the built-in set when ``None``."""
    path = path or os.path.join(DATA_DIR, BUILTIN_FILES["dolly"])
    return _make("dolly", read_records(path), path, limit)


def load_from_hub(name: str, *, limit: int | None = None, split: str | None = None) -> EvalSet:
    """The public release of ``name`` through ``datasets.load_dataset`` (optional dependency).

    Raises ``RuntimeError`` when ``datasets`` is not installed or the hub cannot be reached.
    """
    if name not in HUB_SOURCES:
        raise ValueError(f"name must be one of {sorted(HUB_SOURCES)}, got {name!r}")
    try:
        import datasets  # noqa: F401  (optional)
    except ImportError:
        raise RuntimeError(f"loading {name!r} from the hub needs the optional package `datasets` "
                           "(pip install datasets); use a local file or the built-in set instead") from None
    hub_path, config, default_split = HUB_SOURCES[name]
    split = split or default_split
    if limit is not None:
        _limit([], limit)  # validate
        split = f"{split}[:{limit}]"
    try:
        ds = datasets.load_dataset(hub_path, config, split=split)
    except Exception as exc:  # network, auth, or a renamed data set: say which and stop
        raise RuntimeError(f"datasets.load_dataset({hub_path!r}, {config!r}, split={split!r}) failed: "
                           f"{type(exc).__name__}: {exc}") from exc
    return _make(name, (dict(r) for r in ds), f"hub:{hub_path}/{split}", None)


_LOADERS = {"wmt": load_wmt, "xsum": load_xsum, "dolly": load_dolly}


def load_eval_set(spec: str, *, limit: int | None = None) -> EvalSet:
    """``"wmt"`` | ``"xsum"`` | ``"dolly"`` (built-in), ``"NAME:PATH"`` (local file) or
    ``"NAME:hub"`` (``datasets.load_dataset``)."""
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str, got {type(spec).__name__}")
    name, _, where = spec.partition(":")
    if name not in _LOADERS:
        raise ValueError(f"data set spec must start with one of {sorted(_LOADERS)}, got {spec!r}")
    if where == "hub":
        return load_from_hub(name, limit=limit)
    return _LOADERS[name](where or None, limit=limit)
