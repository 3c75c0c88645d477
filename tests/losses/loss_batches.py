"""Random ragged ``PairLogps`` batches shared by the loss tests."""

from __future__ import annotations

import torch

from prefopt.losses import PairLogps

PAD_GARBAGE = 37.0


def random_batch(seed: int, batch: int = 6, chosen_width: int = 9, rejected_width: int = 5) -> PairLogps:
    """float64 random log-probs with ragged masks; padding filled with ``PAD_GARBAGE``."""
    gen = torch.Generator().manual_seed(seed)

    def side(width: int) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.randint(1, width + 1, (batch,), generator=gen)
        lengths[0] = width
        mask = torch.arange(width)[None, :] < lengths[:, None]
        return mask, lengths

    def logps(mask: torch.Tensor) -> torch.Tensor:
        values = -torch.rand(mask.shape, generator=gen, dtype=torch.float64) * 3.0
        return values.masked_fill(~mask, PAD_GARBAGE)

    chosen_mask, _ = side(chosen_width)
    rejected_mask, _ = side(rejected_width)
    token_reward = lambda mask: torch.rand(mask.shape, generator=gen, dtype=torch.float64) - 0.5
    return PairLogps(
        chosen=logps(chosen_mask).requires_grad_(True),
        rejected=logps(rejected_mask).requires_grad_(True),
        chosen_mask=chosen_mask,
        rejected_mask=rejected_mask,
        ref_chosen=logps(chosen_mask),
        ref_rejected=logps(rejected_mask),
        chosen_token_rewards=token_reward(chosen_mask),
        rejected_token_rewards=token_reward(rejected_mask),
        chosen_log_sum_sq=logps(chosen_mask),
        rejected_log_sum_sq=logps(rejected_mask),
    )
