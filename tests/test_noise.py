"""The noise contract (rsd_kernels/noise.py), pinned by an independent implementation.

``_philox_py`` / ``_log32_py`` below are plain Python written from the contract's text (exact
rational arithmetic, each float32 operation rounded by hand), not from noise.py's numpy/torch
code; the known values are their output, frozen here so the contract cannot drift silently.
"""
import math
import struct
from fractions import Fraction

import pytest
import torch

from rsd_kernels import noise

M32 = 0xFFFFFFFF


def _philox_py(key, ctr):
    """Philox4x32-10 on Python ints (Random123's definition)."""
    k0, k1 = key
    c0, c1, c2, c3 = ctr
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & M32, p1 & M32, ((p0 >> 32) ^ c3 ^ k1) & M32, p0 & M32
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return c0, c1, c2, c3


def _rn32(q: Fraction) -> float:
    """``q`` rounded to the nearest binary32 (ties to even); normal range only."""
    if q == 0:
        return 0.0
    sign, q = (-1, -q) if q < 0 else (1, q)
    e = q.numerator.bit_length() - q.denominator.bit_length()
    if Fraction(2) ** e > q:
        e -= 1
    scaled = q / Fraction(2) ** (e - 23)  # in [2**23, 2**24)
    n = math.floor(scaled)
    rem = scaled - n
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and n % 2):
        n += 1
    return sign * float(Fraction(n) * Fraction(2) ** (e - 23))


def _fma(a, b, c):
    return _rn32(Fraction(a) * Fraction(b) + Fraction(c))


LOG_COEFFS_TEXT = [float.fromhex(h) for h in ("-0x1.000000p-1", "0x1.555502p-2", "-0x1.fffe84p-3", "0x1.99d1f2p-3",
                                              "-0x1.55a754p-3", "0x1.1ebe68p-3", "-0x1.f25de0p-4", "0x1.1ed146p-3",
                                              "-0x1.0931d6p-3")]  # C2 .. C10 as the contract's text gives them
LN2_TEXT = float.fromhex("0x1.62e430p-1")


def _log32_py(x: float) -> float:
    bits = struct.unpack("<i", struct.pack("<f", x))[0]
    e = (bits - 0x3F2AAAAB) >> 23
    m = struct.unpack("<f", struct.pack("<i", bits - (e << 23)))[0]
    f = _rn32(Fraction(m) - 1)
    s = _rn32(Fraction(f) * Fraction(f))
    c = LOG_COEFFS_TEXT
    r = _fma(c[8], f, c[7])
    for ck in c[6::-1]:
        r = _fma(r, f, ck)
    r = _fma(r, s, f)
    return _fma(float(e), LN2_TEXT, r)


def _uniform_py(x):
    return ((x >> 9) * 2 + 1) * 2.0**-24


def _gumbel_py(seed, offset, row, stream, token):
    lanes = _philox_py((seed & M32, seed >> 32), (offset, row, stream, token >> 2))
    u = _uniform_py(lanes[token & 3])
    return -_log32_py(-_log32_py(u))


def _bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def test_philox_known_answers():
    """Known-answer vectors of Philox4x32-10 from the Random123 distribution, both implementations."""
    cases = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ]
    for ctr, (k0, k1), want in cases:
        got = noise.philox4x32(k0 | (k1 << 32), *[torch.tensor(c) for c in ctr])
        assert [int(x) for x in got] == list(want)
        assert _philox_py((k0, k1), ctr) == want


# Frozen outputs of the independent implementation (float32 bits): GUMBEL stream, seed 2**40 + 12345,
# offset 7, row 3, tokens 0..9 (tokens 0-3 share one Philox call, 4-7 the next, 8-9 a third).
GUMBEL_KNOWN = [0x402C749D, 0x3AF4C679, 0x3F4F584A, 0x3FAEFBE1, 0x3F0BD4B9,
                0xBE8AC780, 0x3EA9FA6E, 0x3EB326D5, 0x3FE1BEDF, 0x3FAF7DA6]
# RESIDUAL stream, seed 5, offset 0, row 0, tokens 1, 2, 3, 1000; ACCEPT stream, seed 5, offset 0, row 1, nodes 0..3
RESIDUAL_KNOWN = [0x3FA58124, 0xBE8D5DDC, 0x3E085A90, 0xBF27C97C]
ACCEPT_KNOWN = [0x3F7FA023, 0x3F039A79, 0x3CD79760, 0x3E81CE62]


def test_known_values_of_the_streams():
    seed = 2**40 + 12345
    ref = [_gumbel_py(seed, 7, 3, noise.STREAM_GUMBEL, t) for t in range(10)]
    assert [_bits(v) for v in ref] == GUMBEL_KNOWN
    got = noise.gumbel_noise(seed, 7, 2, 10, row_start=2)[1]
    assert [_bits(float(v)) for v in got] == GUMBEL_KNOWN
    res = [_gumbel_py(5, 0, 0, noise.STREAM_RESIDUAL, t) for t in (1, 2, 3, 1000)]
    assert [_bits(v) for v in res] == RESIDUAL_KNOWN
    u, g = noise.verify_noise(5, 0, 2, 4, 1001)
    assert [_bits(float(v)) for v in g[0, [1, 2, 3, 1000]]] == RESIDUAL_KNOWN
    acc = [_uniform_py(_philox_py((5, 0), (0, 1, noise.STREAM_ACCEPT | n, 0))[0]) for n in range(4)]
    assert [_bits(v) for v in acc] == ACCEPT_KNOWN
    assert [_bits(float(v)) for v in u[1]] == ACCEPT_KNOWN


def test_uniform_lanes_and_index_rule():
    """Token streams: token t is lane t & 3 of counter t >> 2 (every lane used); ACCEPT: lane 0 per node."""
    t = torch.arange(37)
    lanes = noise.philox4x32(11, 2, 5, noise.STREAM_GUMBEL, t >> 2)
    want = noise.uniform_from_bits(torch.stack(lanes, -1)[t, t & 3])
    assert torch.equal(noise.uniform(11, 2, 5, noise.STREAM_GUMBEL, t), want)
    assert torch.equal(noise.uniform(11, 2, 5, noise.STREAM_GUMBEL, t)[4:8],
                       noise.uniform_from_bits(torch.stack(noise.philox4x32(11, 2, 5, noise.STREAM_GUMBEL, 1))))
    acc = noise.uniform(11, 2, 5, noise.STREAM_ACCEPT, t)
    assert torch.equal(acc, noise.uniform_from_bits(noise.philox4x32(11, 2, 5, noise.STREAM_ACCEPT | t, 0)[0]))
    with pytest.raises(ValueError, match="unknown stream"):
        noise.uniform(11, 2, 5, 7, t)


def _fma_via_float64(a, b, c):
    """float32(a*b + c) evaluated in float64 (the reference's way), and how many of its float64 sums
    were inexact *and* on a float32 midpoint (the only case where that differs from a fused fma)."""
    p = a.double() * b
    ssum = p + c
    bb = ssum - p
    err = (p - (ssum - bb)) + (c - bb)  # TwoSum: ssum + err == p + c exactly
    low = ssum.view(torch.int64) & ((1 << 29) - 1)
    return ssum.float(), int(((err != 0) & (low == (1 << 28))).sum())


def test_log32_within_one_ulp_and_reference_fma_exact():
    """log32 over every mantissa it can see: the reference's float64-evaluated fma never differs from
    the fused one (no float64 rounding lands on a float32 midpoint), and the result is within 1 ulp."""
    c = noise.LOG_COEFFS
    hazards, worst = 0, 0.0
    for lo in range(0x3F2AAAAB, 0x3FAAAAAB, 1 << 16):  # every float32 m in [2/3, 4/3), cache-sized chunks
        m = torch.arange(lo, min(lo + (1 << 16), 0x3FAAAAAB), dtype=torch.int32).view(torch.float32)
        f32 = m - 1.0
        f, s = f32.double(), (f32 * f32).double()
        r, h = _fma_via_float64(torch.full_like(f32, c[-1]), f, torch.tensor(c[-2], dtype=torch.float64))
        hazards += h
        for ck in c[-3::-1]:
            r, h = _fma_via_float64(r, f, torch.tensor(ck, dtype=torch.float64))
            hazards += h
        r, h = _fma_via_float64(r, s, f)
        hazards += h
        assert torch.equal(r, noise.log32(m))  # e == 0: log32(m) is the polynomial alone
        exact = torch.log(m.double())
        ulp = (torch.nextafter(exact.abs().float(), torch.tensor(float("inf"))) - exact.abs().float()).double()
        worst = max(worst, float(((r.double() - exact).abs() / ulp).max()))
    assert hazards == 0
    assert worst < 1.0
    # the last fma, i * LN2 + r, is exact in float64 for |e| <= 24 (53 bits span 2**4 .. 2**-48); spot-check
    u = (2 * torch.arange(0, 1 << 23, 4099) + 1).float() * 2.0**-24
    got = noise.log32(u)
    assert float(((got.double() - torch.log(u.double())).abs() / got.double().abs()).max()) < 2.0**-23


def test_gumbel_matches_independent_implementation():
    assert list(noise.LOG_COEFFS) == LOG_COEFFS_TEXT and noise.LN2 == LN2_TEXT
    assert all(struct.unpack("<f", struct.pack("<f", c))[0] == c for c in LOG_COEFFS_TEXT + [LN2_TEXT])  # float32
    k = torch.randint(0, 1 << 23, (500,), generator=torch.Generator().manual_seed(0))
    u = torch.cat([torch.tensor([2.0**-24, 3 * 2.0**-24, 0.25, 0.3678794, 0.5, 0.75, 1 - 3 * 2.0**-24, 1 - 2.0**-24]),
                   (2 * k + 1).float() * 2.0**-24])
    got = noise.gumbel_from_uniform(u)
    want = [-_log32_py(-_log32_py(float(x))) for x in u]
    assert [_bits(float(v)) for v in got] == [_bits(v) for v in want]
    assert torch.allclose(got.double(), -torch.log(-torch.log(u.double())), rtol=1e-6, atol=1e-6)


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
    # the RESIDUAL and GUMBEL streams differ
    assert not torch.equal(noise.verify_noise(3, 2, 4, 1, 9)[1], noise.gumbel_noise(3, 2, 4, 9))


def test_bad_seed():
    with pytest.raises(TypeError, match="seed must be an int"):
        noise.gumbel_noise(-1, 0, 1, 4)
    with pytest.raises(TypeError, match="offset must be an int"):
        noise.gumbel_noise(1, 2**40, 1, 4)
    with pytest.raises(TypeError, match="seed must be an int"):
        noise.gumbel_noise(-1, 0, 1, 4, where=torch.tensor([[True, False, True, False]]))


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
    one = torch.zeros(5, 301, dtype=torch.bool)
    one[3, 300] = one[0, 0] = one[0, 2] = True  # the last, ragged counter group; two tokens of one group
    assert torch.equal(noise.gumbel_noise(9, 3, 5, 301, where=one)[one], noise.gumbel_noise(9, 3, 5, 301)[one])
    r, x = where.nonzero(as_tuple=True)  # gumbel_at (the sparse samplers' draws): the dense stream's values
    assert torch.equal(noise.gumbel_at(9, 3, r + 2, x), full[r, x])
    assert not torch.equal(noise.gumbel_at(9, 3, r + 2, x ^ 1), full[r, x])  # the lane of each token matters
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


# ---------------- the Triton device functions (interpreter here, compiled on a GPU) ----------------
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from rsd_kernels import triton_compat  # noqa: E402
from rsd_kernels.triton_noise import accept_uniform, gumbel, token_uniforms  # noqa: E402


@triton.jit
def _stream_kernel(g_ptr, u_ptr, V, T, seed, offset, stream, NQ: tl.constexpr, BT: tl.constexpr):
    row = tl.program_id(0)
    quad = tl.arange(0, NQ)[:, None]
    lane = tl.arange(0, 4)[None, :]
    tok = 4 * quad + lane
    g = gumbel(token_uniforms(seed, offset, row, stream, quad, lane))
    tl.store(g_ptr + row * V + tok, g, mask=tok < V)
    node = tl.arange(0, BT)
    tl.store(u_ptr + row * T + node, accept_uniform(seed, offset, row, node), mask=node < T)


@triton.jit
def _transform_kernel(u_ptr, g_ptr, fma_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    tl.store(g_ptr + offs, gumbel(tl.load(u_ptr + offs, mask=ok, other=0.5)), mask=ok)
    x = tl.load(fma_ptr + offs * 0)
    tl.store(fma_ptr + 1 + offs * 0, tl.fma(x, 2.0 - x, -1.0), mask=offs == 0)


@pytest.mark.parametrize("fast_philox", [True, False], ids=["numpy-philox", "triton-philox"])
def test_triton_helpers_reproduce_the_streams(device, fast_philox, monkeypatch):
    """Bit for bit. Under the interpreter ``tl.philox``'s rounds run in NumPy (triton_compat, for speed);
    ``triton-philox`` runs Triton's own implementation instead."""
    from rsd_kernels import backends

    if not backends.triton_runs_on(torch.device(device)):
        pytest.skip("no Triton here")
    monkeypatch.setattr(triton_compat, "FAST_PHILOX", fast_philox)
    R, V, T = 3, 1001, 37
    for stream in (noise.STREAM_GUMBEL, noise.STREAM_RESIDUAL):
        g = torch.empty(R, V, device=device)
        u = torch.empty(R, T, device=device)
        _stream_kernel[(R,)](g, u, V, T, 2**40 + 3, 9, stream, NQ=256, BT=64)
        if stream == noise.STREAM_GUMBEL:
            assert torch.equal(g.cpu(), noise.gumbel_noise(2**40 + 3, 9, R, V))
        else:
            uu, gg = noise.verify_noise(2**40 + 3, 9, R, T, V)
            assert torch.equal(g.cpu(), gg) and torch.equal(u.cpu(), uu)
    # the transform on every 4099th uniform and the extremes, bit for bit; and tl.fma is fused
    k = torch.cat([torch.arange(0, 1 << 23, 4099), torch.tensor([0, 1, (1 << 23) - 1])])
    u = ((2 * k + 1).float() * 2.0**-24).to(device)
    out = torch.empty_like(u)
    one = 1 + 2.0**-23
    fma = torch.tensor([one, 0.0], device=device)  # (1 + 2^-23)(1 - 2^-23) - 1 = -2^-46, 0 unfused
    _transform_kernel[(triton.cdiv(u.numel(), 1024),)](u, out, fma, u.numel(), BLOCK=1024)
    assert torch.equal(out.cpu(), noise.gumbel_from_uniform(u.cpu()))
    assert float(fma[1]) == -(2.0**-46)
