"""`SlotCache`: the HF engine's hand-managed, row-per-request KV cache (see `zerotir.rollout.hf_engine`)."""

from __future__ import annotations

from typing import Any

import torch


class SlotCache:
    """Per-layer KV buffers [rows, heads, capacity, dim]; duck-types the `Cache.update` call HF attention makes.

    Before each forward, `plan(r0, write_pos, kv_len)` says which rows (r0..r0+B-1) are computed, where the new
    keys/values go (write_pos [B, q] absolute positions) and how many positions attention reads (kv_len).
    Buffers are allocated on first use and grow (doubling) along the position axis.
    """

    is_compileable = False

    def __init__(self, rows: int):
        self.rows = rows
        self.k: list[torch.Tensor | None] = []
        self.v: list[torch.Tensor | None] = []
        self._r0 = 0
        self._b = 0
        self._pos: torch.Tensor | None = None
        self._kv_len = 0

    def plan(self, r0: int, write_pos: torch.Tensor, kv_len: int) -> None:
        self._r0, self._b, self._pos, self._kv_len = r0, write_pos.shape[0], write_pos, kv_len

    def _ensure(self, layer: int, like: torch.Tensor, length: int) -> None:
        while len(self.k) <= layer:
            self.k.append(None)
            self.v.append(None)
        buf = self.k[layer]
        if buf is not None and buf.shape[2] >= length:
            return
        cap = max(64, length if buf is None else max(length, 2 * buf.shape[2]))
        _, heads, _, dim = like.shape
        new_k = like.new_zeros((self.rows, heads, cap, dim))
        new_v = like.new_zeros((self.rows, heads, cap, dim))
        if buf is not None:
            old = buf.shape[2]
            new_k[:, :, :old] = buf
            new_v[:, :, :old] = self.v[layer]
        self.k[layer], self.v[layer] = new_k, new_v

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """key_states/value_states [B, heads, q, dim] → the rows' keys/values [B, heads, kv_len, dim]."""
        self._ensure(layer_idx, key_states, self._kv_len)
        k, v = self.k[layer_idx], self.v[layer_idx]
        b, q = self._pos.shape
        rows = (torch.arange(b, device=k.device) + self._r0)[:, None].expand(b, q)
        k[rows, :, self._pos] = key_states.permute(0, 2, 1, 3).to(k.dtype)
        v[rows, :, self._pos] = value_states.permute(0, 2, 1, 3).to(v.dtype)
        sl = slice(self._r0, self._r0 + self._b)
        return k[sl, :, :self._kv_len], v[sl, :, :self._kv_len]

    # row management (positions 0..length-1 of a row are meaningful)
    def move_row(self, src: int, dst: int, length: int) -> None:
        for k, v in zip(self.k, self.v):
            if k is not None:
                k[dst, :, :length] = k[src, :, :length]
                v[dst, :, :length] = v[src, :, :length]

    def copy_rows(self, src: list[int], dst: list[int], length: int) -> None:
        """Rows dst[i] := rows src[i] over positions 0..length-1 (one indexed copy per layer)."""
        si = torch.tensor(src)
        di = torch.tensor(dst)
        for k, v in zip(self.k, self.v):
            if k is not None:
                k[di, :, :length] = k[si.to(k.device), :, :length]
                v[di, :, :length] = v[si.to(v.device), :, :length]

    def save_row(self, row: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(k[row, :, :length].clone(), v[row, :, :length].clone()) for k, v in zip(self.k, self.v)
                if k is not None]

    def load_row(self, row: int, saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for layer, (sk, sv) in enumerate(saved):
            self._ensure(layer, sk[None], sk.shape[1])
            self.k[layer][row, :, :sk.shape[1]] = sk
            self.v[layer][row, :, :sv.shape[1]] = sv

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._kv_len
