"""Thread time per greedy verify_tree call on the CPU (torch backend), T=11, V=49152, B=1, one thread.

    OMP_NUM_THREADS=1 python bench/time_greedy_verify_cpu.py

Issue 13: 0.73 ms (reference) and 3.4-3.6 ms (verify_tree as the decoding loop calls it) before the
vectorised greedy walk, chunked argmax and one-pass logit check; 0.29 ms and 0.56-0.59 ms after.
"""
import time, torch
torch.set_num_threads(1)
import rsd_kernels as rk
from rsd_kernels.verify import reference as vref
torch.manual_seed(0)
B, T, V = 1, 11, 49152
par = torch.tensor([[-1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]], dtype=torch.int32)  # rsd-s 2x5-like: two beams of depth 5
tl = torch.randn(B, T, V)
tokens = torch.randint(0, V, (B, T))
am = tl.argmax(-1)
tokens[0, 1] = am[0, 0]; tokens[0, 3] = am[0, 1]; tokens[0, 5] = am[0, 3]  # 3 accepted tokens
nn = torch.full((B,), T, dtype=torch.int32)
def tt(name, f, N=400):
    for _ in range(10): r = f()
    t0 = time.thread_time()
    for _ in range(N): r = f()
    print(f"  {name}: {(time.thread_time()-t0)/N*1e3:.3f} ms/call  (path {[i for i in r[0][0].tolist() if i >= 0]}, next {r[2].item()})")
tt("reference.verify(mode='greedy')", lambda: vref.verify(tl, None, tokens, par, nn, "greedy", 1.0, 5))
tt("verify_tree(DraftTree(...), mode='greedy', backend='torch')  [as the decoding loop calls it]",
   lambda: rk.verify_tree(tl, None, rk.DraftTree(tokens, par), mode="greedy", temperature=0.0, backend="torch"))
