import torch

from rsd_kernels import noise


def test_philox_known_answers():
    """Known-answer vectors of Philox4x32-10 from the Random123 distribution."""
    cases = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ]
    for ctr, (k0, k1), want in cases:
        got = noise.philox4x32(k0 | (k1 << 32), *[torch.tensor(c) for c in ctr])
        assert [int(x) for x in got] == list(want)


def test_uniform_open_interval_and_streams_differ():
    u = noise.uniform(7, 0, torch.arange(4096)[:, None], noise.STREAM_ACCEPT, 0)
    assert u.dtype == torch.float32 and bool((u > 0).all()) and bool((u < 1).all())
    assert abs(float(u.mean()) - 0.5) < 0.02
    a, g = noise.verify_noise(7, 0, 3, 5, 11)
    assert a.shape == (3, 5) and g.shape == (3, 11) and torch.isfinite(g).all()
    a2, _ = noise.verify_noise(7, 1, 3, 5, 11)
    assert not torch.equal(a, a2)  # the offset changes the draw
    # a row's noise does not depend on how many rows are drawn with it
    assert torch.equal(noise.verify_noise(7, 0, 5, 5, 11)[0][:3], a)
    assert torch.equal(noise.gumbel_noise(3, 2, 4, 9)[2:], noise.gumbel_noise(3, 2, 2, 9, row_start=2))


def test_bad_seed():
    import pytest

    with pytest.raises(TypeError, match="seed must be an int"):
        noise.gumbel_noise(-1, 0, 1, 4)
    with pytest.raises(TypeError, match="offset must be an int"):
        noise.gumbel_noise(1, 2**40, 1, 4)


def test_gumbel_noise_drawn_only_where_read():
    """``where=``: the same values at the drawn entries, 0 elsewhere; and the seeded reference samplers,
    which draw only at finite logits, give the same draws as with the full explicit noise."""
    from rsd_kernels.sampling import reference as ref

    g = torch.Generator().manual_seed(0)
    where = torch.rand(5, 300, generator=g) < 0.2
    full = noise.gumbel_noise(9, 3, 5, 300, row_start=2)
    part = noise.gumbel_noise(9, 3, 5, 300, row_start=2, where=where)
    assert torch.equal(part[where], full[where]) and not part[~where].any()
    assert torch.equal(noise.gumbel_noise(9, 3, 5, 300, where=torch.ones(5, 300, dtype=torch.bool)),
                       noise.gumbel_noise(9, 3, 5, 300))
    logits = torch.randn(5, 300, generator=g).masked_fill(~where, float("-inf"))
    k = torch.full((5,), 4, dtype=torch.int32)
    a = ref.sample_topk(logits, k, 4, 1.0, seed=9, offset=3)
    b = ref.sample_topk(logits, k, 4, 1.0, gumbel=noise.gumbel_noise(9, 3, 5, 300))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    lg = logits.view(1, 5, 300)
    phi = torch.tensor([[0.0, -1.0, float("-inf"), -2.0, -0.5]])
    G = torch.tensor([[0.0, -0.3, float("-inf"), -1.0, 0.2]])
    a = ref.beam_step(lg, phi, G, 6, 1.0, seed=4, offset=1)
    b = ref.beam_step(lg, phi, G, 6, 1.0, gumbel=noise.gumbel_noise(4, 1, 5, 300).view(1, 5, 300))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
