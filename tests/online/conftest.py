"""Fixtures of the online tests: a tiny model whose continuations depend on the prompt.

The conftest tiny Llama (init std 0.02) greedily repeats its last token, which would hide padding
and batching bugs; ``lively_model`` redraws its matrices with std 0.3 so continuations vary token
by token, depend on the whole prompt, and its logits are far apart (gaps well above the
floating-point differences of batched matmuls, so batch-invariance tests are exact).
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture()
def lively_model(tiny_model):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in tiny_model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return tiny_model
