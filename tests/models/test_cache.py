"""models.cache.cache_kwarg: the keyword a decoder's forward takes a KV cache by (no deprecation warning either way)."""

import functools
import warnings

from zerotir.models.cache import cache_kwarg


class Old:
    def forward(self, input_ids=None, past_key_values=None, use_cache=None):
        return past_key_values


class New:
    def _real(self, input_ids=None, cache=None, use_cache=None):
        return cache

    @functools.wraps(_real)  # HF's decorators wrap forward; the signature is read through __wrapped__
    def forward(self, *args, **kwargs):
        return self._real(*args, **kwargs)


def test_old_and_new_keyword():
    assert cache_kwarg(Old()) == "past_key_values"
    assert cache_kwarg(New()) == "cache"


def test_the_installed_transformers_takes_it_without_warnings(tiny_model_dir):
    """The tiny Qwen2 model's forward, called with the chosen keyword and a real DynamicCache, warns about nothing."""
    import torch
    from transformers import DynamicCache

    from zerotir.models import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(tiny_model_dir, "cpu")
    kw = cache_kwarg(model.base_model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        out = model.base_model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True,
                               **{kw: DynamicCache(config=model.config)})
    assert out.last_hidden_state.shape[:2] == (1, 3)
