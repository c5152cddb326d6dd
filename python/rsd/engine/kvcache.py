"""A preallocated KV cache that the decoding loop writes trees into and compacts in place.

:class:`KVBuffer` is a ``transformers`` :class:`~transformers.Cache`: one tensor
``kv [layers, 2, Hkv, capacity, D]`` holds every layer's keys and values; ``length`` positions
are valid. A forward of ``n`` tokens writes its keys/values at ``length .. length + n - 1`` of
each layer (no ``torch.cat``) and attends over the view ``[:length + n]`` (no masked unused
slots); the caller then advances ``length`` (:meth:`advance`). Capacity grows by doubling
(amortised O(1) per token).

Compaction after verification moves only the accepted path's keys/values: :meth:`move_tail`
copies the kept tail positions down in one ``index_select`` over all layers at once; the prefix
is never touched. :meth:`truncate` only changes ``length``.

Masks: the cache reports its sizes to ``transformers.masking_utils`` (``get_mask_sizes``,
``get_query_offset``) so that a model driven by Hugging Face code (e.g. ``generate``) gets
correct causal masks, and it is not "compileable" so that single-token steps need no mask.
"""
from __future__ import annotations

import torch
from transformers import Cache

MIN_CAPACITY = 256


class _BufferCache(Cache):
    """The ``transformers`` :class:`~transformers.Cache` interface shared by both buffers: sizes
    for ``masking_utils`` from :meth:`get_seq_length`, full attention in every layer, not
    compileable (so single-token steps need no mask)."""

    is_compileable = False

    def get_query_offset(self, layer_idx: int = 0) -> int:
        return self.get_seq_length()

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        return -1

    @property
    def is_sliding(self) -> list[bool]:
        return [False] * self.num_layers

    @property
    def is_initialized(self) -> bool:
        return self.kv is not None

    def __len__(self):
        return self.num_layers

    def reserve(self, need: int):
        """Make room for ``need`` positions (before the first update: only raises the capacity)."""
        if self.kv is None:
            self.capacity = max(self.capacity, need)
        elif need > self.capacity:
            self._grow(need)


class KVBuffer(_BufferCache):
    """Preallocated, in-place KV cache for ``num_layers`` full-attention layers (batch size 1)."""

    def __init__(self, num_layers: int, capacity: int = MIN_CAPACITY):
        super().__init__(layers=[])
        self.num_layers = int(num_layers)
        self.capacity = max(int(capacity), 1)
        self.kv: torch.Tensor | None = None  # [layers, 2, Hkv, capacity, D], allocated on first update
        self.length = 0

    # ---- transformers Cache interface ---------------------------------------------------
    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        """Write ``[1, Hkv, n, D]`` at ``length ..`` of layer ``layer_idx``; return the views ``[:length + n]``."""
        if key_states.shape[0] != 1:
            raise ValueError(f"KVBuffer holds batch size 1, got keys of shape {tuple(key_states.shape)}")
        n = key_states.shape[-2]
        end = self.length + n
        if self.kv is None:
            H, D = key_states.shape[1], key_states.shape[-1]
            self.kv = key_states.new_empty(self.num_layers, 2, H, max(self.capacity, end), D)
            self.capacity = self.kv.shape[3]
        elif end > self.capacity:
            self._grow(end)
        layer = self.kv[layer_idx]
        layer[0, :, self.length:end] = key_states[0]
        layer[1, :, self.length:end] = value_states[0]
        return layer[0, :, :end].unsqueeze(0), layer[1, :, :end].unsqueeze(0)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    # ---- the decoding loop's operations ---------------------------------------------
    def _grow(self, need: int):
        cap = self.capacity
        while cap < need:
            cap *= 2
        new = self.kv.new_empty(*self.kv.shape[:3], cap, self.kv.shape[4])
        new[:, :, :, : self.length] = self.kv[:, :, :, : self.length]
        self.kv, self.capacity = new, cap


    def advance(self, n: int):
        """Mark the ``n`` positions the last forward wrote as valid."""
        self.length += n

    def truncate(self, length: int):
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of length {self.length} to {length}")
        self.length = length

    def move_tail(self, start: int, src: torch.Tensor | list):
        """Keep ``[0, start)`` and then the positions ``src`` (increasing, all ``>= start``): the
        kept tail is copied to ``start .. start + len(src) - 1`` for every layer in one gather."""
        if isinstance(src, torch.Tensor):
            src_list = src.tolist()
        else:
            src_list = [int(s) for s in src]
        m = len(src_list)
        # positions already in place (a chain along the first nodes) need no copy
        skip = 0
        while skip < m and src_list[skip] == start + skip:
            skip += 1
        if skip < m:
            if self.kv is None or src_list[-1] >= self.length or any(
                    b <= a for a, b in zip(src_list[skip:], src_list[skip + 1:])) or src_list[skip] < start + skip:
                raise ValueError(f"cannot keep positions {src_list} after {start} of a cache of length {self.length}")
            idx = torch.tensor(src_list[skip:], dtype=torch.long, device=self.kv.device)
            moved = self.kv.index_select(3, idx)
            self.kv[:, :, :, start + skip: start + m] = moved
        elif m and src_list[-1] >= self.length:
            raise ValueError(f"cannot keep positions {src_list} of a cache of length {self.length}")
        self.length = start + m

    def keep(self, positions: torch.Tensor):
        """Keep ``positions`` (``[k]`` increasing): the common prefix ``0..i-1`` stays, the rest moves."""
        pos = positions.to("cpu", torch.long)
        k = pos.numel()
        if k and (int(pos[-1]) >= self.length or (k > 1 and bool((pos[1:] <= pos[:-1]).any())) or int(pos[0]) < 0):
            raise ValueError(f"positions must be increasing and lie in [0, {self.length})")
        same = pos == torch.arange(k)
        start = k if bool(same.all()) else int((~same).nonzero()[0])
        self.move_tail(start, pos[start:])

    def snapshot(self):
        kv = None if self.kv is None else self.kv[:, :, :, : self.length].clone()
        return kv, self.length

    def restore(self, snap):
        kv, length = snap
        if kv is None:
            self.kv, self.length = None, 0
            return
        if self.kv is None or self.kv.shape[:3] != kv.shape[:3] or self.capacity < length:
            self.kv = kv.new_empty(*kv.shape[:3], max(self.capacity, length), kv.shape[4])
            self.capacity = self.kv.shape[3]
        self.kv[:, :, :, :length] = kv
        self.length = length

    def layer_views(self, layer_idx: int):
        """``(keys, values)`` ``[1, Hkv, length, D]`` of one layer (views)."""
        layer = self.kv[layer_idx]
        return layer[0, :, : self.length].unsqueeze(0), layer[1, :, : self.length].unsqueeze(0)


class BatchKVBuffer(_BufferCache):
    """Preallocated, in-place KV cache for a batch of rows of different lengths.

    One tensor ``kv [layers, 2, B, Hkv, capacity, D]`` (zero-initialised, so that slots a row
    never wrote hold finite values that masked attention may multiply by 0); ``lengths [B]``
    (a Python list) are the valid positions per row. Before each forward the caller sets
    :attr:`write_slots` ``[B, n]``: the slot of each fed token (row b's new keys usually go at
    ``lengths[b] .. lengths[b] + n - 1``); :meth:`update` scatters the keys/values there and
    returns the views ``[:, :, :S]`` with ``S = max(write_slots) + 1``: the caller's bool mask says
    which of those keys each row sees (its own prefix plus its causal/tree keys). After the
    forward, :meth:`advance` adds each row's number of real tokens.

    :meth:`move_tails` compacts every row in one gather/scatter over all layers;
    :meth:`select_rows` drops finished rows (compacting the batch dimension).
    """

    def __init__(self, num_layers: int, batch: int, capacity: int = MIN_CAPACITY):
        super().__init__(layers=[])
        self.num_layers = int(num_layers)
        self.batch = int(batch)
        self.capacity = max(int(capacity), 1)
        self.kv: torch.Tensor | None = None
        self.lengths = [0] * self.batch
        self.write_slots: torch.Tensor | None = None  # [B, n] int64, set before each forward

    # ---- transformers Cache interface ---------------------------------------------------
    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        B, H, n, D = key_states.shape
        if B != self.batch:
            raise ValueError(f"BatchKVBuffer holds {self.batch} rows, got keys of shape {tuple(key_states.shape)}")
        ws = self.write_slots
        if ws is None or tuple(ws.shape) != (B, n):
            raise ValueError(f"set write_slots [{B}, {n}] before the forward")
        end = int(ws.max()) + 1
        if self.kv is None:
            self.kv = key_states.new_zeros(self.num_layers, 2, B, H, max(self.capacity, end), D)
            self.capacity = self.kv.shape[4]
        elif end > self.capacity:
            self._grow(end)
        layer = self.kv[layer_idx]
        rows = self._rows[:, None]
        layer[0][rows, :, ws] = key_states.transpose(1, 2)  # [B, n, H, D]
        layer[1][rows, :, ws] = value_states.transpose(1, 2)
        return layer[0, :, :, :end], layer[1, :, :, :end]

    @property
    def _rows(self):
        dev = self.write_slots.device
        r = getattr(self, "_rows_cache", None)
        if r is None or r.numel() != self.batch or r.device != dev:
            r = torch.arange(self.batch, device=dev)
            self._rows_cache = r
        return r

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return max(self.lengths) if self.lengths else 0

    # ---- the batched loop's operations ---------------------------------------------
    def _grow(self, need: int):
        cap = self.capacity
        while cap < need:
            cap *= 2
        new = self.kv.new_zeros(*self.kv.shape[:4], cap, self.kv.shape[5])
        m = max(self.lengths) if self.lengths else 0
        new[..., :m, :] = self.kv[..., :m, :]
        self.kv, self.capacity = new, cap


    def advance(self, counts):
        """Add ``counts[b]`` valid positions to row b (the real tokens of the last forward)."""
        counts = [int(c) for c in counts]
        if len(counts) != self.batch:
            raise ValueError(f"advance needs {self.batch} counts, got {len(counts)}")
        self.lengths = [a + c for a, c in zip(self.lengths, counts)]

    def set_lengths(self, lengths):
        lengths = [int(x) for x in lengths]
        if len(lengths) != self.batch or any(x < 0 for x in lengths):
            raise ValueError(f"bad lengths {lengths} for {self.batch} rows")
        self.lengths = lengths

    def move_tails(self, starts, srcs):
        """Row b keeps ``[0, starts[b])`` then the slots ``srcs[b]`` (increasing, all ``>= starts[b]``,
        below its length), copied to ``starts[b] ..``: one gather + one scatter for every row and layer."""
        bi, si, di, new_len = [], [], [], []
        for b, (start, src) in enumerate(zip(starts, srcs)):
            src = [int(s) for s in src]
            start = int(start)
            if src and (src[0] < start or src[-1] >= self.lengths[b]
                        or any(y <= x for x, y in zip(src, src[1:]))):
                raise ValueError(f"row {b}: cannot keep slots {src} after {start} of a row of length {self.lengths[b]}")
            for j, s in enumerate(src):
                if s != start + j:
                    bi.append(b)
                    si.append(s)
                    di.append(start + j)
            new_len.append(start + len(src))
        if bi:
            dev = self.kv.device
            bi_t = torch.tensor(bi, dtype=torch.long, device=dev)
            moved = self.kv[:, :, bi_t, :, torch.tensor(si, dtype=torch.long, device=dev)]  # [M, L, 2, H, D]
            self.kv[:, :, bi_t, :, torch.tensor(di, dtype=torch.long, device=dev)] = moved
        self.lengths = new_len

    def select_rows(self, rows):
        """Keep only the batch rows ``rows`` (in that order)."""
        rows = [int(r) for r in rows]
        if self.kv is not None:
            self.kv = self.kv.index_select(2, torch.tensor(rows, dtype=torch.long, device=self.kv.device))
        self.lengths = [self.lengths[r] for r in rows]
        self.batch = len(rows)
        self.write_slots = None

    def row_views(self, layer_idx: int, row: int):
        """``(keys, values)`` ``[Hkv, length_row, D]`` of one row of one layer (views)."""
        layer = self.kv[layer_idx]
        n = self.lengths[row]
        return layer[0, row, :, :n], layer[1, row, :, :n]
