"""The converted-model cache (rsd.engine.model_cache): convert once, load afterwards; the key follows
the source file and the library versions; a corrupt, partial or unreadable entry is rebuilt with one
line, never trusted; an interrupted write never leaves an entry under its final name. The fast tests
use a tiny model and a byte tokenizer; the slow one the embedded target itself (warm == cold)."""
import os

import pytest
import torch

from eval_tiny_pair import byte_tokenizer, tiny_llama
from rsd.engine import model_cache as mc


class Converter:
    """A stand-in for the GGUF conversion: a tiny Llama (tied embeddings) and a byte tokenizer."""

    def __init__(self, seed=0):
        self.calls, self.seed = 0, seed

    def __call__(self):
        self.calls += 1
        model = tiny_llama(2, self.seed)
        model.config.tie_word_embeddings = True
        model.tie_weights()
        return model, byte_tokenizer()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("RSD_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "model.gguf"
    src.write_bytes(b"pretend GGUF bytes " * 1000)
    lines = []
    return str(src), Converter(), lines


def load(env, **kw):
    src, conv, lines = env
    return mc.load_converted(src, "tiny", conv, log=lines.append, **kw)


def entry(env):
    return mc.entry_folder("tiny", env[0])[0]


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_convert_once_then_load(env):
    src, conv, lines = env
    m1, t1 = load(env)
    assert conv.calls == 1 and len(lines) == 1 and lines[0].startswith("rsd: converting tiny from")
    assert os.path.isfile(os.path.join(entry(env), mc.MANIFEST))
    m2, t2 = load(env)
    assert conv.calls == 1 and len(lines) == 1  # warm: no conversion, nothing said
    assert same_weights(m1, m2) and m2.lm_head.weight.data_ptr() == m2.model.embed_tokens.weight.data_ptr()
    assert t2("héllo wörld")["input_ids"] == t1("héllo wörld")["input_ids"]
    ids = torch.tensor([[1, 2, 3, 250]])
    assert torch.equal(m1(ids).logits, m2(ids).logits)
    m3, _ = load(env, dtype=torch.bfloat16)
    assert m3.dtype == torch.bfloat16 and conv.calls == 1


def test_key_follows_source_and_library_versions(env, monkeypatch):
    src, conv, lines = env
    load(env)
    first = entry(env)
    with open(src, "ab") as f:  # another source file: another entry, converted again
        f.write(b"!")
    assert entry(env) != first
    load(env)
    assert conv.calls == 2
    versions = mc.library_versions()
    monkeypatch.setattr(mc, "library_versions", lambda: dict(versions, transformers="0.0-other"))
    assert entry(env) not in (first,)
    load(env)
    assert conv.calls == 3
    monkeypatch.setattr(mc, "FORMAT", mc.FORMAT + 1)
    load(env)
    assert conv.calls == 4 and all(ln.startswith("rsd: converting tiny") for ln in lines)


def test_source_digest_remembered_until_the_file_changes(env, monkeypatch):
    src = env[0]
    mc.source_digest(src)
    hashed = []
    real = mc.file_sha256
    monkeypatch.setattr(mc, "file_sha256", lambda p: hashed.append(p) or real(p))
    d1 = mc.source_digest(src)
    assert hashed == []  # remembered: no hashing on a warm start
    st = os.stat(src)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))  # touched: hashed again
    assert mc.source_digest(src) == d1 and len(hashed) == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "no-manifest", "missing-file"])
def test_corrupt_entry_is_rebuilt_with_one_line(env, damage):
    src, conv, lines = env
    good, _ = load(env)
    folder = entry(env)
    weights = os.path.join(folder, "model.safetensors")
    if damage == "flip":  # same size, new mtime: the digest catches it
        data = bytearray(open(weights, "rb").read())
        data[-5] ^= 0xFF
        open(weights, "wb").write(bytes(data))
    elif damage == "truncate":
        os.truncate(os.path.join(folder, "tokenizer.json"), 100)
    elif damage == "no-manifest":
        os.remove(os.path.join(folder, mc.MANIFEST))
    else:
        os.remove(weights)
    del lines[:]
    model, tok = load(env)
    assert conv.calls == 2 and len(lines) == 1 and "converting it again" in lines[0]
    assert {"flip": "does not match its digest", "truncate": "tokenizer.json has 100 bytes",
            "no-manifest": "no manifest", "missing-file": "model.safetensors is missing"}[damage] in lines[0]
    assert same_weights(model, good)
    del lines[:]
    load(env)
    assert conv.calls == 2 and lines == []  # the rebuilt entry is trusted again


def test_entry_that_looks_intact_but_does_not_load_is_rebuilt(env):
    src, conv, lines = env
    load(env)
    weights = os.path.join(entry(env), "model.safetensors")
    st = os.stat(weights)
    with open(weights, "r+b") as f:  # break the header, then put the mtime back: the stat check passes
        f.write(b"\xff" * 16)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    del lines[:]
    load(env)
    assert conv.calls == 2 and len(lines) == 1 and "unreadable" in lines[0]


def test_copied_entry_is_verified_once(env):
    """New mtimes with intact contents (a copied cache): hashed, accepted, and the manifest refreshed."""
    src, conv, lines = env
    load(env)
    for name in os.listdir(entry(env)):
        p = os.path.join(entry(env), name)
        st = os.stat(p)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert mc.check_entry(entry(env), mc.entry_folder("tiny", src)[1]) is None
    manifest = mc._read_json(os.path.join(entry(env), mc.MANIFEST))
    st = os.stat(os.path.join(entry(env), "model.safetensors"))
    assert manifest["files"]["model.safetensors"]["mtime_ns"] == st.st_mtime_ns
    load(env)
    assert conv.calls == 1


def test_interrupted_write_leaves_no_entry(env, monkeypatch):
    src, conv, lines = env
    import safetensors.torch

    real = safetensors.torch.save_model

    def interrupted(model, path, *a, **k):
        real(model, path, *a, **k)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)  # half written, then the process is interrupted
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load(env)
    parent = os.path.dirname(entry(env))
    assert not os.path.exists(entry(env))
    assert [n for n in os.listdir(parent) if n.startswith(".tmp-")] == []
    monkeypatch.setattr(safetensors.torch, "save_model", real)
    # a killed writer (no clean-up at all) leaves a temporary folder: ignored, and removed once stale
    stale = os.path.join(parent, ".tmp-tiny-killed")
    os.makedirs(stale)
    open(os.path.join(stale, "model.safetensors"), "wb").write(b"partial")
    os.utime(stale, (1, 1))
    del lines[:]
    model, _ = load(env)
    assert conv.calls == 2 and lines[0].startswith("rsd: converting tiny") and not os.path.exists(stale)
    assert mc.check_entry(entry(env), mc.entry_folder("tiny", src)[1]) is None


def test_unwritable_cache_costs_one_line(env, monkeypatch):
    src, conv, lines = env

    def fail(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(mc, "_write_entry", fail)
    model, tok = load(env)
    assert conv.calls == 1 and len(lines) == 2 and "could not write the model cache" in lines[1]
    assert tok("a")["input_ids"]


@pytest.mark.slow
def test_embedded_target_warm_equals_cold(tmp_path, monkeypatch):
    """The real conversion (GGUF de-quantisation, tokenizer rebuild) through a fresh cache, then
    loaded back: the same weights, tokenizer and greedy tokens."""
    from rsd.engine.generate import generate
    from rsd.engine.models import load_target, prompt_ids

    monkeypatch.setenv("RSD_CACHE_DIR", str(tmp_path))
    lines = []
    cold = load_target("embedded", log=lines.append)
    warm = load_target("embedded", log=lines.append)
    assert len(lines) == 1 and "converting smollm2-135m-instruct" in lines[0]
    assert same_weights(cold.model, warm.model)
    assert warm.model.lm_head.weight.data_ptr() == warm.model.model.embed_tokens.weight.data_ptr()
    assert warm.model.generation_config.eos_token_id == cold.model.generation_config.eos_token_id
    text = "Héllo 東京 🌍, what is 2+2?"
    assert prompt_ids(warm.tokenizer, text, True) == prompt_ids(cold.tokenizer, text, True)
    ids = prompt_ids(cold.tokenizer, text, True)
    a = generate(cold.model, None, ids, "ar", max_new_tokens=8)
    b = generate(warm.model, None, ids, "ar", max_new_tokens=8)
    assert a.tokens == b.tokens
    assert warm.tokenizer.decode(b.tokens) == cold.tokenizer.decode(a.tokens)
