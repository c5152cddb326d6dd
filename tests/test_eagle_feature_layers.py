"""EAGLE-3-style target features (rsd.engine.drafts.eagle with ``feature_layers``): the draft also reads some
of the target's decoder layers' outputs. Tiny random models (rsd.train.draft.tiny_target: 3 layers)."""
import pytest
import torch

from rsd.engine.adapter import ModelAdapter
from rsd.engine.drafts import eagle as E
from rsd.train import eagle as TE
from rsd.engine.drafts.eagle import LayerTap
from rsd.train.draft import tiny_target

V, H = 512, 64


@pytest.fixture(scope="module")
def target():
    return tiny_target(0)


def _features(target, ids, layers):
    with torch.no_grad(), LayerTap(target, layers) as tap:
        return tap.features(target.model(input_ids=ids).last_hidden_state)


def test_layer_tap_reads_decoder_layer_outputs(target):
    ids = torch.randint(3, V, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hs = target.model(input_ids=ids, output_hidden_states=True).hidden_states
    f = _features(target, ids, (0, 1))
    assert f.shape == (2, 9, 3 * H)
    torch.testing.assert_close(f[..., :H], hs[1])  # hidden_states[0] is the embedding output
    torch.testing.assert_close(f[..., H:2 * H], hs[2])
    torch.testing.assert_close(f[..., 2 * H:], hs[-1])  # post-norm
    with pytest.raises(ValueError, match="feature_layers"):
        LayerTap(target, (3,))


def test_copy_init_ignores_extra_layers_until_trained(target):
    """feat_proj starts as [0 ; 0 ; I]: the same draft as without extra layers; once it is changed the
    extra layers matter, each through a parameter-free RMS norm (scale-invariant)."""
    kept = torch.arange(0, V, 3)
    plain = E.init_eagle_from_target(target, kept, 1, seed=0).eval()
    multi = E.init_eagle_from_target(target, kept, 1, seed=0, feature_layers=(0, 1)).eval()
    multi.load_state_dict(plain.state_dict(), strict=False)
    ids = torch.randint(3, V, (2, 10), generator=torch.Generator().manual_seed(1))
    f = _features(target, ids, (0, 1))
    with torch.no_grad():
        want = plain(ids, f[..., 2 * H:]).logits
        torch.testing.assert_close(multi(ids, f).logits, want)
        multi.feat_proj.weight.add_(0.5 * torch.randn_like(multi.feat_proj.weight))
        moved = multi(ids, f).logits
        assert (moved - want)[torch.isfinite(want)].abs().max() > 0.1
        scaled = f.clone()
        scaled[..., :2 * H] *= 3.0
        torch.testing.assert_close(multi(ids, scaled).logits, moved, atol=2e-3, rtol=1e-3)
        # a predicted feature (width H) bypasses the projection
        g = torch.randn(2, 10, H)
        torch.testing.assert_close(multi(ids, g).logits, plain(ids, g).logits)


def test_feature_width_is_checked(target):
    d = E.init_eagle_from_target(target, torch.arange(V), 1, feature_layers=(1,))
    assert d.feature_width == 2 * H
    with pytest.raises(ValueError, match="features: last dimension 96, expected 64 or 128"):
        d(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, 96))
    with pytest.raises(ValueError, match="feature_layers"):
        E.init_eagle_from_target(target, torch.arange(V), 1, feature_layers=(5,))


def test_export_load_keeps_feature_layers(target, tmp_path):
    d = E.init_eagle_from_target(target, torch.arange(0, V, 2), 1, feature_layers=(0, 2))
    with torch.no_grad():
        d.feat_proj.weight.add_(0.05 * torch.randn_like(d.feat_proj.weight))
    path = E.export_eagle(d, str(tmp_path / "e.safetensors"))
    d2 = E.load_eagle(path, target.get_input_embeddings().weight)
    assert d2.feature_layers == (0, 2)
    torch.testing.assert_close(d2.feat_proj.weight, d.feat_proj.weight.half().float())
    # weights that do not fit the stated config are refused, not silently left at random init
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    sd = load_file(path)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    del sd["feat_proj.weight"]
    save_file(sd, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="missing"):
        E.load_eagle(str(tmp_path / "bad.safetensors"), target.get_input_embeddings().weight)


def test_adapter_feature_capture_with_layers(target):
    a = ModelAdapter(target).enable_features((1,))
    ids = torch.randint(3, V, (1, 6), generator=torch.Generator().manual_seed(2))
    a.reset(16)
    a.forward_chain(ids)
    torch.testing.assert_close(a.features, _features(target, ids, (1,)), atol=1e-5, rtol=1e-5)
    assert a.enable_features((1,)) is a
    with pytest.raises(ValueError, match="layers"):
        a.enable_features((0,))
    with pytest.raises(ValueError, match="layers"):
        ModelAdapter(tiny_target(0)).enable_features((7,))


def test_training_data_and_steps_with_extra_layers(tmp_path):
    """The tiny pipeline end to end: stored features are (layers + 1) * H wide, training runs, the
    exported draft carries its layers; a draft on a subset of the stored layers (here: layer 1, and
    the final feature alone) trains from the same shards; a layer that was not stored is refused."""
    emb = tiny_target(0).get_input_embeddings().weight
    path = TE.main(["--out", str(tmp_path), "--tiny", "--feature-layers", "0,1"])
    assert E.load_eagle(path, emb).feature_layers == (0, 1)
    feats = torch.load(sorted((tmp_path / "feat").glob("shard_*.pt"))[0])
    assert feats[0].shape[-1] == 3 * H
    for layers, want in (("1", (1,)), ("", ())):
        sub = tmp_path / f"sub{layers}"
        sub.mkdir()
        for name in ("data", "feat"):
            (sub / name).symlink_to(tmp_path / name)
        path = TE.main(["--out", str(sub), "--tiny", "--feature-layers", layers])
        assert E.load_eagle(path, emb).feature_layers == want
    recs = TE.load_eagle_records([(str(p), str(tmp_path / "feat" / p.name))
                                  for p in sorted((tmp_path / "data").glob("shard_*.pt"))], (0, 1), (1,))
    torch.testing.assert_close(recs[0]["feat"], feats[0][:, H:])
    with pytest.raises(ValueError, match="feature_layers"):
        TE.main(["--out", str(tmp_path), "--tiny", "--feature-layers", "2"])


def test_warm_start_from_exported_draft(target, tmp_path):
    """--init-from: a draft with extra feature layers warm-started from a final-feature draft's file
    computes what that draft computes (its feat_proj picks the final feature) until trained."""
    kept = torch.arange(0, V, 3)
    src = E.init_eagle_from_target(target, kept, 1, seed=0)
    with torch.no_grad():
        for p in src.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    path = E.export_eagle(src, str(tmp_path / "src.safetensors"))
    ref = E.load_eagle(path, target.get_input_embeddings().weight)
    d = E.init_eagle_from_target(target, kept, 1, seed=1, feature_layers=(0,))
    msg = TE.warm_start(d, path)
    assert "feat_proj.weight" in msg
    ids = torch.randint(3, V, (2, 8), generator=torch.Generator().manual_seed(3))
    f = _features(target, ids, (0,))
    with torch.no_grad():
        torch.testing.assert_close(d(ids, f).logits, ref(ids, f[..., H:]).logits)
    other = E.init_eagle_from_target(target, torch.arange(0, V, 2), 1)
    with pytest.raises(ValueError, match="kept"):
        TE.warm_start(other, path)
