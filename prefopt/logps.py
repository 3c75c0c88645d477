"""Model + batch -> completion-aligned per-token log-probs, without the full ``[N, T, V]`` fp32 tensor.

How the memory-lean ("chunked") path works:

1. The model's *top-level* forward runs (so DDP / FSDP / PEFT wrapper hooks fire — bypassing the
   wrapper's forward is how TRL v1.14 lost its DDP gradient all-reduce), with the output head
   temporarily replaced by :class:`_HeadInForward`. Inside the forward it takes the final hidden
   states at the positions that predict a completion token (``[M, H]``) and computes their
   log-probs through a call of the real head module, so the head's own hooks (DeepSpeed ZeRO-3's
   parameter gather, FSDP's unshard) wrap the computation, forward and backward; the model gets the
   head applied to *zero* positions, empty logits still connected to the head weight.
2. :class:`_SelectedTokenLogps` computes ``log softmax(h W^T + b)[y]`` in chunks of ``chunk_size``
   tokens: logits of one chunk in the head's dtype, logsumexp in fp32, nothing saved but the
   inputs and one float per token; the backward recomputes each chunk and returns gradients for
   the hidden states, the head weight (tied embeddings included: autograd sums both uses; summed
   over chunks in fp32) and bias. Running inside the forward, it sees the forward's autocast
   state, which is how the precomputed reference and the policy share one precision.

Known final-logit transforms are applied inside the chunk loop: ``logit_scale`` (Cohere),
``logits_scaling`` (Granite, a divisor) and ``final_logit_softcapping`` (Gemma 2/3). A model
whose head is not a plain :class:`torch.nn.Linear` (e.g. LoRA on ``lm_head``, a quantized head)
goes through the naive path automatically (``method="auto"``): a normal forward, then an fp32
log-softmax of the logits at completion positions only. Custom (remote-code) models that transform
logits in other ways must use ``method="naive"``.

Alignment (docs/design.md §1): ``logps[n, t]`` is ``log pi(t-th completion token of row n | all
tokens before it)``, left-justified; ``mask[n, t]`` is True on real tokens, padding holds 0.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Literal

import torch
from torch import nn

from prefopt.losses.base import PairLogps

Method = Literal["auto", "chunked", "naive"]
ADAPTER_DISABLED = "adapter_disabled"
CHUNK_BYTES = 128 * 2**20


def default_chunk_size(vocab_size: int) -> int:
    """Tokens per chunk so that one fp32 ``[chunk, V]`` logits block is about 128 MiB (682 at V=49,152)."""
    if vocab_size < 1:
        raise ValueError(
            f"output head has {vocab_size} rows: its weight is not materialised here (a DeepSpeed ZeRO-3 or FSDP "
            "shard read outside the head's forward?)"
        )
    return max(1, CHUNK_BYTES // (4 * vocab_size))


@dataclass(frozen=True)
class LogitTransform:
    """Elementwise map applied to head outputs: ``z -> softcap * tanh(scale * z / softcap)``."""

    scale: float = 1.0
    softcap: float | None = None

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def derivative(self, transformed: torch.Tensor) -> torch.Tensor | float:
        """d(transformed)/d(raw logits), written in terms of the transformed values."""
        if self.softcap is None:
            return self.scale
        return (1.0 - (transformed / self.softcap) ** 2) * self.scale


def logit_transform(config) -> LogitTransform:
    """Read the final-logit transform a Hugging Face config declares (nested ``text_config`` too)."""
    cfg = getattr(config, "text_config", None) or config
    scale = getattr(cfg, "logit_scale", None)
    scaling = getattr(cfg, "logits_scaling", None)
    softcap = getattr(cfg, "final_logit_softcapping", None)
    total = 1.0
    if isinstance(scale, (int, float)):
        total *= float(scale)
    if isinstance(scaling, (int, float)) and scaling:
        total /= float(scaling)
    return LogitTransform(scale=total, softcap=float(softcap) if softcap else None)


class _SelectedTokenLogps(torch.autograd.Function):
    """``log_softmax(transform(hidden @ weight.T + bias), -1)[i, targets[i]]`` in token chunks."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size: int, transform: LogitTransform):
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        for start in range(0, hidden.shape[0], chunk_size):
            sl = slice(start, start + chunk_size)
            logits = transform.apply(nn.functional.linear(hidden[sl], weight, bias).float())
            lse[sl] = torch.logsumexp(logits, dim=-1)
            out[sl] = logits.gather(-1, targets[sl, None]).squeeze(-1) - lse[sl]
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_size = chunk_size
        ctx.transform = transform
        device = hidden.device.type
        ctx.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # Recompute the logits under the forward's autocast state, so they match the saved logsumexp.
        device, dtype, enabled = ctx.autocast
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            return _SelectedTokenLogps._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        # fp32 accumulator: summing per-chunk products in bf16 loses ~2e-2 relative at 64 chunks
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_b else None
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            sl = slice(start, start + ctx.chunk_size)
            logits = ctx.transform.apply(nn.functional.linear(hidden[sl], weight, bias).float())
            derivative = ctx.transform.derivative(logits) if ctx.transform != LogitTransform() else None
            # d logp / d logits = onehot(target) - softmax, scaled by the upstream gradient (in place).
            grad_logits = logits.sub_(lse[sl, None]).exp_().neg_()
            grad_logits.scatter_add_(-1, targets[sl, None], torch.ones_like(lse[sl, None]))
            grad_logits *= grad_out[sl, None]
            if derivative is not None:
                grad_logits *= derivative
            if grad_b is not None:
                grad_b += grad_logits.sum(0)
            grad_logits = grad_logits.to(weight.dtype)
            if grad_h is not None:
                grad_h[sl] = grad_logits @ weight
            if grad_w is not None:
                grad_w += grad_logits.T @ hidden[sl]  # the product in the head's dtype, the sum in fp32
        if grad_b is not None:
            grad_b = grad_b.to(bias.dtype)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        return grad_h, grad_w, grad_b, None, None, None


def selected_token_logps(
    hidden: torch.Tensor,
    head: nn.Linear,
    targets: torch.Tensor,
    *,
    chunk_size: int | None = None,
    transform: LogitTransform = LogitTransform(),
) -> torch.Tensor:
    """fp32 ``log p(targets[i] | hidden[i])`` through a linear ``head``, ``chunk_size`` rows at a time.

    ``hidden`` is ``[M, H]``, ``targets`` ``[M]`` (long). Peak extra memory is a few
    ``[chunk_size, V]`` fp32 blocks instead of ``[M, V]``; ``chunk_size=None`` picks
    :func:`default_chunk_size`. Differentiable w.r.t. ``hidden``, ``head.weight`` and ``head.bias``.
    """
    if chunk_size is None:
        chunk_size = default_chunk_size(head.weight.shape[0])
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return _SelectedTokenLogps.apply(hidden, head.weight, head.bias, targets, chunk_size, transform)


def selected_log_sum_sq(
    hidden: torch.Tensor, head: nn.Linear, *, chunk_size: int | None = None, transform: LogitTransform = LogitTransform()
) -> torch.Tensor:
    """fp32 ``log sum_v p(v | hidden[i])^2`` per row, ``chunk_size`` rows at a time, without gradient.

    WPO's sampling-probability normalizer (arXiv 2406.11827, Eq. 2):
    ``logsumexp(2 z) - 2 logsumexp(z)`` of the (transformed) head logits ``z``.
    """
    chunk_size = chunk_size or default_chunk_size(head.weight.shape[0])
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    with torch.no_grad():
        for start in range(0, hidden.shape[0], chunk_size):
            sl = slice(start, start + chunk_size)
            logits = transform.apply(nn.functional.linear(hidden[sl], head.weight, head.bias).float())
            out[sl] = torch.logsumexp(2 * logits, dim=-1) - 2 * torch.logsumexp(logits, dim=-1)
    return out


class _HeadInForward(nn.Module):
    """Stand-in output head that computes the selected-token log-probs *inside* the model's forward.

    The log-probs go through a call of the real head module (its ``forward`` swapped for the chunked
    computation for that one call), so whatever the head's hooks do around a forward also happens
    around this one: DeepSpeed ZeRO-3 gathers the partitioned weight before it and frees it after,
    and registers the pre-backward hook that gathers it again for the backward; FSDP unshards it.
    Reading ``head.weight`` after the model's forward instead finds an empty ZeRO-3 shard. The model
    itself gets the head applied to zero positions: empty logits, still connected to the weight.
    """

    def __init__(self, head: nn.Module, rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor,
                 chunk_size: int | None, transform: LogitTransform, log_sum_sq: bool = False) -> None:
        super().__init__()
        self.head = head
        self.positions = (rows, cols - 1)
        self.targets, self.chunk_size, self.transform = targets, chunk_size, transform
        self.want_log_sum_sq = log_sum_sq
        self.logps: torch.Tensor | None = None
        self.log_sum_sq: torch.Tensor | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        self.logps = _call_as_forward(self.head, self._selected_logps, hidden[self.positions])
        return self.head(hidden[..., :0, :])

    def _selected_logps(self, hidden: torch.Tensor) -> torch.Tensor:
        """Runs as the head's forward (its weight gathered): the log-probs, and WPO's ``log sum p^2`` if asked."""
        if self.want_log_sum_sq:
            self.log_sum_sq = selected_log_sum_sq(hidden.detach(), self.head, chunk_size=self.chunk_size,
                                                  transform=self.transform)
        return selected_token_logps(hidden, self.head, self.targets, chunk_size=self.chunk_size, transform=self.transform)


def _call_as_forward(module: nn.Module, fn, *args: torch.Tensor) -> torch.Tensor:
    """``fn(*args)`` run as ``module``'s forward, inside the module's forward hooks."""
    if "forward" in vars(module):  # forward already patched per instance (accelerate's dispatch hooks): keep it
        return fn(*args)
    module.forward = fn
    try:
        return module(*args)
    finally:
        del module.forward


def _unwrap(model: nn.Module) -> nn.Module:
    """Strip DDP/FSDP-style ``.module`` wrappers down to the object with ``get_output_embeddings``."""
    inner = model
    while not hasattr(inner, "get_output_embeddings") and isinstance(getattr(inner, "module", None), nn.Module):
        inner = inner.module
    return inner


def _output_head(model: nn.Module) -> nn.Module:
    inner = _unwrap(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if head is None:
        raise TypeError(f"{type(model).__name__} has no output embeddings; pass a causal LM (…ForCausalLM)")
    return head


@contextlib.contextmanager
def _swapped_head(model: nn.Module, head: nn.Module, stand_in: nn.Module) -> Iterator[None]:
    """Temporarily put ``stand_in`` where ``head`` sits inside ``model``."""
    name = next((n for n, m in model.named_modules() if m is head), None)
    if not name:
        raise TypeError(f"output head of {type(model).__name__} is not a submodule; use method='naive'")
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    setattr(parent, attr, stand_in)
    try:
        yield
    finally:
        setattr(parent, attr, head)


def _completion_positions(input_ids: torch.Tensor, completion_mask: torch.Tensor):
    """Row/column indices of completion tokens, their left-justified rank and the output width."""
    mask = completion_mask.bool()
    if mask.shape != input_ids.shape:
        raise ValueError(f"completion_mask shape {tuple(mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
    if mask[:, 0].any():
        bad = mask[:, 0].nonzero().flatten().tolist()
        raise ValueError(f"rows {bad}: completion starts at position 0, so nothing predicts it; add a prompt/BOS")
    rows, cols = mask.nonzero(as_tuple=True)
    rank = (mask.cumsum(1) - 1)[rows, cols]
    width = int(mask.sum(1).max()) if mask.numel() else 0
    return rows, cols, rank, width


def _left_justify(values: torch.Tensor, rows, rank, shape) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.zeros(shape, dtype=torch.float32, device=values.device).index_put((rows, rank), values)
    mask = torch.zeros(shape, dtype=torch.bool, device=values.device).index_put((rows, rank), torch.ones_like(rows, dtype=torch.bool))
    return out, mask


def _resolve_method(method: Method, head: nn.Module) -> Literal["chunked", "naive"]:
    if method == "auto":
        return "chunked" if type(head) is nn.Linear else "naive"
    if method == "chunked" and type(head) is not nn.Linear:
        raise TypeError(
            f"method='chunked' needs a plain nn.Linear output head, got {type(head).__name__} "
            "(LoRA on lm_head or a quantized head); use method='auto' or 'naive'"
        )
    if method not in ("chunked", "naive"):
        raise ValueError(f"method must be 'auto', 'chunked' or 'naive', got {method!r}")
    return method


def completion_logps(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    chunk_size: int | None = None,
    method: Method = "auto",
    log_sum_sq: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Per-token log-probs of the completion tokens of each row, completion-aligned.

    Args:
        model: a causal LM, optionally wrapped (PEFT, DDP); its top-level forward is called.
        input_ids, attention_mask: ``[N, T]``.
        completion_mask: ``[N, T]`` bool, True where ``input_ids`` holds a completion token.
        chunk_size: tokens per head chunk in the chunked path; ``None`` sizes chunks to about
            128 MiB of fp32 logits (:func:`default_chunk_size`).
        method: ``"chunked"`` (memory-lean), ``"naive"`` (full logits), or ``"auto"`` (chunked
            when the output head is a plain ``nn.Linear``).

        log_sum_sq: also return ``log sum_v p(v)^2`` at each completion position (detached; for
            WPO weighting, :func:`selected_log_sum_sq`).

    Returns:
        ``(logps [N, Tmax] float32, mask [N, Tmax] bool)`` with ``Tmax`` the longest completion,
        plus the ``log_sum_sq [N, Tmax]`` tensor when requested.
    """
    rows, cols, rank, width = _completion_positions(input_ids, completion_mask)
    targets = input_ids[rows, cols]
    head = _output_head(model)
    transform = logit_transform(_unwrap(model).config)
    if _resolve_method(method, head) == "chunked":
        stand_in = _HeadInForward(head, rows, cols, targets, chunk_size, transform, log_sum_sq)
        with _swapped_head(model, head, stand_in):
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        if stand_in.logps is None:
            raise RuntimeError(f"{type(model).__name__}'s forward never called its output head; use method='naive'")
        values = stand_in.logps
        if log_sum_sq:
            sum_sq = stand_in.log_sum_sq
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        selected = logits[rows, cols - 1].float()
        values = selected.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(selected, dim=-1)
        if log_sum_sq:
            detached = selected.detach()
            sum_sq = torch.logsumexp(2 * detached, dim=-1) - 2 * torch.logsumexp(detached, dim=-1)
    shape = (input_ids.shape[0], width)
    logps, mask = _left_justify(values, rows, rank, shape)
    if not log_sum_sq:
        return logps, mask
    return logps, mask, _left_justify(sum_sq, rows, rank, shape)[0]


def _split_pairs(logps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``[2B, T]`` -> chosen/rejected logps and masks, each trimmed to its own longest completion."""
    half = logps.shape[0] // 2
    parts = []
    for sl in (slice(0, half), slice(half, None)):
        width = int(mask[sl].sum(1).max()) if mask[sl].numel() else 0
        parts.append((logps[sl, :width], mask[sl, :width]))
    (chosen, chosen_mask), (rejected, rejected_mask) = parts
    return chosen, rejected, chosen_mask, rejected_mask


def _check_pair_batch(batch: dict) -> None:
    missing = [k for k in ("input_ids", "attention_mask", "completion_mask") if k not in batch]
    if missing:
        raise KeyError(f"pair batch lacks {missing}; build it with prefopt's PairCollator (docs/design.md §2)")
    if batch["input_ids"].shape[0] % 2:
        raise ValueError(f"pair batch has {batch['input_ids'].shape[0]} rows; expected 2B (chosen rows then rejected rows)")


def reference_pair_logps(
    ref_model: nn.Module | str,
    batch: dict,
    *,
    policy: nn.Module | None = None,
    chunk_size: int | None = None,
    method: Method = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference ``(ref_chosen, ref_rejected)`` for a pair batch, under ``torch.no_grad()``.

    ``ref_model`` is a frozen model, or the string ``"adapter_disabled"``: then ``policy`` must be a
    PEFT model and the reference is ``policy`` with its adapters disabled (``disable_adapter()``).
    The outputs have the same widths as the policy's chosen/rejected tensors from :func:`pair_logps`.
    """
    _check_pair_batch(batch)
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    with torch.no_grad():
        if isinstance(ref_model, str):
            if ref_model != ADAPTER_DISABLED:
                raise ValueError(f"ref_model must be a model or {ADAPTER_DISABLED!r}, got {ref_model!r}")
            if policy is None or not hasattr(policy, "disable_adapter"):
                raise TypeError(f"ref_model={ADAPTER_DISABLED!r} needs policy=<a peft.PeftModel>")
            with policy.disable_adapter():
                logps, mask = completion_logps(policy, *args, chunk_size=chunk_size, method=method)
        else:
            logps, mask = completion_logps(ref_model, *args, chunk_size=chunk_size, method=method)
    chosen, rejected, _, _ = _split_pairs(logps, mask)
    return chosen, rejected


def pair_logps(
    model: nn.Module,
    batch: dict,
    *,
    ref_model: nn.Module | str | None = None,
    chunk_size: int | None = None,
    method: Method = "auto",
    log_sum_sq: bool = False,
) -> PairLogps:
    """One forward over the concatenated ``[2B, T]`` pair batch -> :class:`PairLogps`.

    ``log_sum_sq=True`` also fills ``chosen_log_sum_sq`` / ``rejected_log_sum_sq`` (WPO weighting).

    The reference comes from ``batch["ref_chosen"]``/``batch["ref_rejected"]`` when present
    (the cache from :mod:`prefopt.reference`), else from ``ref_model`` (a model, or
    ``"adapter_disabled"`` for the PEFT policy with adapters off; see
    :func:`reference_pair_logps`), else it is ``None``. Token rewards and weights pass through.
    """
    _check_pair_batch(batch)
    outputs = completion_logps(
        model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], chunk_size=chunk_size,
        method=method, log_sum_sq=log_sum_sq,
    )
    chosen, rejected, chosen_mask, rejected_mask = _split_pairs(*outputs[:2])
    sum_sq = {}
    if log_sum_sq:
        sum_sq_chosen, sum_sq_rejected, _, _ = _split_pairs(outputs[2], outputs[1])
        sum_sq = {"chosen_log_sum_sq": sum_sq_chosen, "rejected_log_sum_sq": sum_sq_rejected}
    ref_chosen, ref_rejected = batch.get("ref_chosen"), batch.get("ref_rejected")
    if (ref_chosen is None) != (ref_rejected is None):
        raise KeyError("pair batch has only one of ref_chosen/ref_rejected; the reference cache writes both")
    if ref_chosen is None and ref_model is not None:
        ref_chosen, ref_rejected = reference_pair_logps(ref_model, batch, policy=model, chunk_size=chunk_size, method=method)
    return PairLogps(
        chosen=chosen,
        rejected=rejected,
        chosen_mask=chosen_mask,
        rejected_mask=rejected_mask,
        ref_chosen=None if ref_chosen is None else ref_chosen.float(),
        ref_rejected=None if ref_rejected is None else ref_rejected.float(),
        chosen_token_rewards=batch.get("chosen_token_rewards"),
        rejected_token_rewards=batch.get("rejected_token_rewards"),
        weights=batch.get("weights"),
        **sum_sq,
    )
