"""How a hand-managed KV cache is handed to an HF decoder's forward.

The engine (`rollout.kv_cache.SlotCache`) and the learner's shared-prompt forward pass their own cache objects,
which duck-type the one method HF attention layers call: `cache.update(key, value, layer_idx) -> (keys, values)`.
transformers 5.2x renamed the forward keyword from `past_key_values` to `cache` (the old name still works but warns
on every call, once per forward); older releases know only `past_key_values`. `cache_kwarg` reads the model's own
signature once, so the same code runs warning-free on both.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any


def cache_kwarg(module: Any) -> str:
    """The keyword `module.forward` takes a KV cache by: 'cache' where the model accepts it, else 'past_key_values'.

    inspect.signature follows the `functools.wraps` chain of HF's decorators to the real parameter list. A PEFT
    wrapper's forward takes **kwargs and hands them to the model it wraps, so that model's signature decides."""
    base = getattr(module, "get_base_model", None)
    if callable(base):
        module = base()
    return _kwarg_for(type(module))


@functools.lru_cache(maxsize=None)
def _kwarg_for(cls: type) -> str:
    """Per model class, once: the learner asks on every forward, and inspect.signature is not free."""
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
