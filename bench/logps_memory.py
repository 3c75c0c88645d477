"""Peak memory and time of chunked vs naive fp32 token log-probs, forward + backward, on CPU.

Only the output head is modelled: random hidden states ``[B*T, H]`` and a random ``nn.Linear(H, V)``
head at SmolLM2-135M's sizes (H=576, V=49,152); every token is a completion token. Methods:

- ``naive``: ``log_softmax((h @ W^T).float(), -1).gather(targets)`` — the full ``[B*T, V]`` fp32.
- ``chunked-<c>``: :func:`prefopt.logps.selected_token_logps` with ``chunk_size=c``.

Each (method, T) runs in its own subprocess, so the peak RSS (``ru_maxrss``) is not polluted by the
other methods; memory is reported as the peak RSS increase over the process's RSS just before the
first forward (inputs, head and the allocator already set up). Time is the median wall time of
``--repeats`` forward+backward passes (gradients w.r.t. hidden states and head weight).

Usage::

    python bench/logps_memory.py --seq-lens 512 1024 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from prefopt.logps import selected_token_logps


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _naive(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)


def run_one(method: str, tokens: int, hidden_size: int, vocab: int, repeats: int) -> dict:
    """Measure one method in this process; returns peak RSS increase (MiB) and median seconds."""
    torch.manual_seed(0)
    head = torch.nn.Linear(hidden_size, vocab, bias=False)
    hidden = torch.randn(tokens, hidden_size, requires_grad=True)
    targets = torch.randint(0, vocab, (tokens,))
    upstream = torch.randn(tokens)
    if method == "naive":
        fn = lambda: _naive(hidden, head, targets)  # noqa: E731
    else:
        chunk = int(method.split("-")[1])
        fn = lambda: selected_token_logps(hidden, head, targets, chunk_size=chunk)  # noqa: E731
    before = _peak_rss_mib()
    times = []
    for _ in range(repeats):
        hidden.grad = head.weight.grad = None
        start = time.perf_counter()
        (fn() * upstream).sum().backward()
        times.append(time.perf_counter() - start)
    return {"method": method, "tokens": tokens, "peak_mib": _peak_rss_mib() - before, "seconds": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[256, 682, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "TOKENS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = run_one(args.child[0], int(args.child[1]), args.hidden, args.vocab, args.repeats)
        print(json.dumps(result))
        return

    methods = ["naive"] + [f"chunked-{c}" for c in args.chunk_sizes]
    print(f"B={args.batch}, H={args.hidden}, V={args.vocab}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| T | tokens B*T | method | peak RSS increase (MiB) | fwd+bwd time (s) |")
    print("|---|---|---|---|---|")
    for seq_len in args.seq_lens:
        tokens = args.batch * seq_len
        for method in methods:
            cmd = [sys.executable, __file__, "--child", method, str(tokens), "--hidden", str(args.hidden),
                   "--vocab", str(args.vocab), "--repeats", str(args.repeats)]
            out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            print(f"| {seq_len} | {tokens} | {method} | {out['peak_mib']:.0f} | {out['seconds']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
