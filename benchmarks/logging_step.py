"""Where the time of one logging step goes, measured side by side in one process, against two naive anchors.

Components (each the median over ``--repeats`` interleaved repeats, after warm-up; on CUDA every timing is bracketed
by ``torch.cuda.synchronize()``):

* ``eval forward``: one eval/no_grad forward of the probe batch (the unit of the CPU target);
* ``train step``: forward, backward and AdamW step on the training batch (the unit of the CUDA target);
* ``probe forward``: the probe runner with no request (eval mode, hooks, mode restore);
* ``entropy``: the probe with an entropy request for every block, minus the probe forward;
* ``CKA``: the probe with a pooled request for every block plus the batched shared-PCA CKA against a reference,
  minus the probe forward;
* ``gradient norms``: the activation-gradient hooks on a backward (on the CPU the time spent inside the hooks; on
  CUDA a training step with hooks minus one without) plus the grouped parameter-gradient norms of every block;
* ``transfer``: the one device-to-host copy of all values of a step;
* ``logging``: ``TensorBoardLogger.log_metrics`` of every key of a step; ``heatmap``: one heatmap image of 50 logs;
* ``all three monitors``: the real callbacks in a real ``Trainer`` with ``every_n_steps=2``: median time of the
  logging steps minus median time of the other steps, and the monitors' own ``overhead_ms``;
* anchors: ``naive eager entropy`` (an eager copy of the model with ``output_attentions=True``, ``-sum p log p``,
  one value per block to the host) and ``Lightning grad_norm`` (``lightning.pytorch.utilities.grad_norm``, every
  parameter's norm read as a float, as logging it does).

``--long-context`` measures instead a random-init decoder (default: 24 blocks, hidden 896, 14 query / 2 key-value
heads: the shape of a small long-context decoder such as Qwen2.5-0.5B) at ``--seq-len``: a plain forward, the
entropy probe and an eager forward with ``output_attentions=True``, in time and peak memory above the loaded model
(CUDA: peak allocated; CPU: resident memory sampled every millisecond, in a fresh subprocess per variant).

Usage, from the repository root::

    python benchmarks/logging_step.py                                   # real MiniLM, CPU, 16 x 64
    python benchmarks/logging_step.py --shape bert-base --batch-size 32 --seq-len 128 --device cuda --precision bf16
    python benchmarks/logging_step.py --long-context --seq-len 1024 --layers 4            # CPU-sized
    python benchmarks/logging_step.py --long-context --seq-len 8192 --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if importlib.util.find_spec("lightning_inflect") is None:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=["minilm", "bert-base"], default="minilm",
                   help="minilm: the real pretrained MiniLM (random init if the package is missing); bert-base: "
                        "random init of the bert-base shape")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=None, help="tokens per example (default 64, long context 1024)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast, as bf16-mixed")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--trainer-steps", type=int, default=40, help="steps of the real-Trainer measurement")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--long-context", action="store_true")
    p.add_argument("--layers", type=int, default=24, help="long context: decoder blocks")
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.seq_len is None:
        args.seq_len = 1024 if args.long_context else 64
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timeit(fn: Callable[[], Any], device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return 1000.0 * (time.perf_counter() - start)


def medians(fns: dict[str, Callable[[], Any]], device: str, repeats: int, warmup: int) -> dict[str, float]:
    """Interleave the functions repeat by repeat (so slow drifts of a shared machine hit them all alike)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timeit(fn, device))
    return {name: statistics.median(ts) for name, ts in times.items()}


def machine(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"{cpu}, {torch.get_num_threads()} threads"


def autocast(args: argparse.Namespace):
    if args.precision == "bf16":
        return torch.autocast(args.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------- logging step
def build_model(args: argparse.Namespace):
    from transformers import AutoModelForSequenceClassification, BertConfig

    if args.shape == "minilm":
        try:
            from lightning_inflect.experiments import load_minilm

            model, _ = load_minilm(num_labels=2)
            return model, "MiniLM (pretrained)"
        except Exception:  # the package is not installed: same shape, random init
            cfg = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
            return AutoModelForSequenceClassification.from_config(cfg), "MiniLM shape (random init)"
    cfg = BertConfig(num_labels=2)  # bert-base: 12 blocks, hidden 768, 12 heads
    return AutoModelForSequenceClassification.from_config(cfg, attn_implementation="sdpa"), "bert-base shape (random)"


def make_batch(args: argparse.Namespace, vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b, t = args.batch_size, args.seq_len
    ids = torch.randint(1000, vocab, (b, t), generator=g)
    lengths = torch.randint(t // 2, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask, "labels": torch.randint(0, 2, (b,), generator=g)}


def component_times(args: argparse.Namespace) -> tuple[dict[str, float], str]:
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.utilities import grad_norm

    from lightning_inflect.architectures import find_attention_modules, find_layers
    from lightning_inflect.callbacks.base import layer_key
    from lightning_inflect.capture import ActivationGradCapture, EntropyRequest, PooledRequest, run_probe
    from lightning_inflect.functional import grouped_grad_norms, heatmap_image, pca_basis, shared_pca_cka

    model, name = build_model(args)
    model.to(args.device)
    batch = {k: v.to(args.device) for k, v in make_batch(args, model.config.vocab_size).items()}
    probe = {k: v for k, v in batch.items() if k != "labels"}
    info = find_layers(model)
    attention = find_attention_modules(info)
    n = info.num_layers
    blocks = tuple(range(n))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    eager = copy.deepcopy(model)
    eager.config._attn_implementation_internal = "eager"
    for module in eager.modules():
        if hasattr(module, "config"):
            module.config._attn_implementation_internal = "eager"

    def train_step(capture: ActivationGradCapture | None = None) -> None:
        model.train()
        if capture is not None:
            capture.reset()
            capture.arm()
            capture.new_micro_batch()
        with autocast(args):
            loss = model(**batch).loss
        loss.backward()
        if capture is not None:
            capture.disarm()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)

    def eval_forward() -> None:
        model.eval()
        with torch.no_grad(), autocast(args):
            model(**probe)
        model.train()

    def probe_run(requests) -> Any:
        return run_probe(model, [probe], info.blocks, requests, attention, precision_context=lambda: autocast(args))

    reference = probe_run([PooledRequest(blocks)]).answer(PooledRequest(blocks))
    basis = pca_basis(torch.cat(reference, -2), 32)

    def cka() -> None:
        now = probe_run([PooledRequest(blocks)]).answer(PooledRequest(blocks))
        shared_pca_cka(reference, now, 32, "reference", args.batch_size >= 4, basis)

    capture = ActivationGradCapture(info.blocks, blocks)
    hook_ms: list[float] = []

    def train_step_with_hooks() -> None:
        train_step(capture)
        hook_ms.append(1000.0 * capture.seconds)  # time spent inside the gradient hooks (exact on the CPU)

    train_step()  # grads exist from here on

    def param_norms() -> torch.Tensor:
        groups = [[p.grad for p in info.blocks[i].parameters() if p.grad is not None] for i in blocks]
        return grouped_grad_norms(groups, device=torch.device(args.device))

    def naive_entropy() -> None:
        eager.eval()
        with torch.no_grad(), autocast(args):
            attentions = eager(**probe, output_attentions=True).attentions
        mask = probe["attention_mask"].bool()
        values = []
        for a in attentions:
            h = -(a.float() * a.float().clamp_min(1e-30).log()).sum(-1)  # (b, heads, queries)
            values.append(h.masked_select(mask[:, None, :]).mean())
        torch.stack(values).tolist()

    def lightning_grad_norm() -> None:
        [float(v) for v in grad_norm(model, norm_type=2).values()]

    values = torch.randn(4 * n, device=args.device)
    tmp = tempfile.TemporaryDirectory(prefix="inflect_bench_")
    logger = TensorBoardLogger(tmp.name, name="")
    keys = [layer_key("inflect", m, i) for m in ("attn_entropy", "act_grad_norm", "param_grad_norm", "cka_drift")
            for i in blocks]  # fmt: skip
    history = torch.randn(n, 50)

    def log() -> None:
        logger.log_metrics(dict(zip(keys, values.tolist())), step=0)

    def heatmap() -> None:
        logger.experiment.add_image("inflect/heatmap/x", heatmap_image(history), 0, dataformats="CHW")

    times = medians(
        {
            "eval forward": eval_forward,
            "train step": train_step,
            "train step, activation-gradient hooks": train_step_with_hooks,
            "probe forward": lambda: probe_run([]),
            "probe + entropy": lambda: probe_run([EntropyRequest(blocks)]),
            "probe + pooled + CKA": cka,
            "parameter-gradient norms": param_norms,
            "transfer": lambda: values.tolist(),
            "logging": log,
            "heatmap": heatmap,
            "anchor: naive eager entropy": naive_entropy,
            "anchor: Lightning grad_norm": lightning_grad_norm,
        },
        args.device,
        args.repeats,
        args.warmup,
    )
    tmp.cleanup()
    times["entropy"] = times["probe + entropy"] - times["probe forward"]
    times["CKA"] = times["probe + pooled + CKA"] - times["probe forward"]
    if args.device == "cuda":  # hooks only launch kernels there: take the difference of the two steps
        times["activation-gradient hooks"] = times["train step, activation-gradient hooks"] - times["train step"]
    else:
        times["activation-gradient hooks"] = statistics.median(hook_ms[args.warmup :])
    times["gradient norms"] = times["activation-gradient hooks"] + times["parameter-gradient norms"]
    return times, f"{name}, {n} blocks"


def trainer_times(args: argparse.Namespace) -> dict[str, float]:
    """All three real monitors in a real Trainer with every_n_steps=2: logging steps vs the others."""
    import lightning as L
    from torch.utils.data import DataLoader

    from lightning_inflect import AttentionEntropyMonitor, CKADriftMonitor, GradientNormMonitor

    model, _ = build_model(args)
    batch = make_batch(args, model.config.vocab_size)
    rows = [{k: v[i] for k, v in batch.items()} for i in range(args.batch_size)]

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, b, i):
            return self.model(**b).loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-5)

    class Timer(L.Callback):
        def __init__(self) -> None:
            self.times: list[tuple[int, float]] = []
            self.start = 0.0

        def on_train_batch_start(self, trainer, *a) -> None:
            sync(args.device)
            self.start = time.perf_counter()
            self.step = trainer.global_step

        def on_train_batch_end(self, trainer, *a) -> None:
            sync(args.device)
            self.times.append((self.step, 1000.0 * (time.perf_counter() - self.start)))

    class Overhead(L.pytorch.loggers.logger.DummyLogger):
        def __init__(self) -> None:
            super().__init__()
            self.values: list[float] = []

        def log_metrics(self, metrics, step=None) -> None:
            self.values += [v for k, v in metrics.items() if k.endswith("overhead_ms")]

    timer = Timer()
    monitors = [AttentionEntropyMonitor(every_n_steps=2), GradientNormMonitor(every_n_steps=2),
                CKADriftMonitor(every_n_steps=2)]  # fmt: skip
    logger = Overhead()
    trainer = L.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu", devices=1, max_steps=args.trainer_steps,
        callbacks=[timer, *monitors], logger=logger, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, precision="bf16-mixed" if args.precision == "bf16" else "32-true",
    )  # fmt: skip
    loader = DataLoader(rows * args.trainer_steps, batch_size=args.batch_size)
    trainer.fit(Module(), loader)
    steady = timer.times[4:]  # warm-up
    logging = statistics.median(t for s, t in steady if s % 2 == 0)
    plain = statistics.median(t for s, t in steady if s % 2 == 1)
    return {
        "trainer: training step": plain,
        "trainer: logging step extra": logging - plain,
        "trainer: self-reported overhead": statistics.median(logger.values[2:]),
    }


def report_logging_step(args: argparse.Namespace) -> None:
    times, what = component_times(args)
    times.update(trainer_times(args))
    print(f"Logging step of the three monitors: {what}, batch {args.batch_size} x {args.seq_len}, {args.precision}")
    print(f"Machine: {machine(args.device)}; torch {torch.__version__}; medians of {args.repeats} repeats\n")
    eval_ms, train_ms = times["eval forward"], times["train step"]
    print("| component | ms | / eval forward | / train step |\n| --- | ---: | ---: | ---: |")
    order = ["eval forward", "train step", "probe forward", "entropy", "CKA", "activation-gradient hooks",
             "parameter-gradient norms", "gradient norms", "transfer", "logging", "heatmap",
             "anchor: naive eager entropy", "anchor: Lightning grad_norm", "trainer: training step",
             "trainer: logging step extra", "trainer: self-reported overhead"]  # fmt: skip
    for key in order:
        print(f"| {key} | {times[key]:.2f} | {times[key] / eval_ms:.2f} | {times[key] / train_ms:.3f} |")
    extra = times["trainer: logging step extra"]
    print(
        f"\nA logging step costs {extra / eval_ms:.2f}x an eval forward of the probe batch and "
        f"{extra / train_ms:.2f}x a training step; at every_n_steps=50 that is {extra / (50 * train_ms):.2%} of "
        f"training time. Entropy monitor alone (probe + entropy) vs the naive eager anchor: "
        f"{times['probe + entropy'] / times['anchor: naive eager entropy']:.2f}x. Gradient norms vs Lightning's "
        f"grad_norm: {times['gradient norms'] / times['anchor: Lightning grad_norm']:.2f}x."
    )


# ----------------------------------------------------------------------------------------------- long context
def decoder(args: argparse.Namespace, attn: str):
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=args.layers, num_attention_heads=14,
        num_key_value_heads=2, vocab_size=1024, max_position_embeddings=max(32768, args.seq_len),
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    return model.to(device=args.device, dtype=dtype).eval()


def run_variant(args: argparse.Namespace) -> dict[str, float]:
    """One long-context variant, timed and measured for memory (called in a fresh process on the CPU)."""
    from lightning_inflect.architectures import find_attention_modules, find_layers
    from lightning_inflect.capture import EntropyRequest, run_probe

    model = decoder(args, "eager" if args.variant == "eager output_attentions" else "sdpa")
    ids = torch.randint(0, 1024, (1, args.seq_len), generator=torch.Generator().manual_seed(0)).to(args.device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    info = find_layers(model)
    request = EntropyRequest(tuple(range(info.num_layers)))

    def plain() -> None:
        with torch.no_grad():
            model(**batch, logits_to_keep=1)

    def probe() -> None:
        run_probe(model, [batch], info.blocks, [request], find_attention_modules(info)).answer(request).entropy.sum(1)

    def eager() -> None:
        with torch.no_grad():
            out = model(**batch, output_attentions=True, logits_to_keep=1)
        torch.stack([-(a.float() * a.float().clamp_min(1e-30).log()).sum(-1).mean() for a in out.attentions]).tolist()

    fn = {"plain forward": plain, "entropy probe": probe, "eager output_attentions": eager}[args.variant]
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        ms = medians({"x": fn}, args.device, args.repeats, args.warmup)["x"]
        return {"ms": ms, "peak_mb": (torch.cuda.max_memory_allocated() - base) / 2**20}
    with RssPeak() as rss:
        ms = medians({"x": fn}, args.device, args.repeats, args.warmup)["x"]
    return {"ms": ms, "peak_mb": rss.growth_mb}


class RssPeak:
    """Peak resident memory above the level at entry, sampled every millisecond by a thread (CPU runs)."""

    def __enter__(self) -> RssPeak:
        import psutil

        self._proc = psutil.Process()
        self._base = self._peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.growth_mb = (self._peak - self._base) / 2**20


def report_long_context(args: argparse.Namespace) -> None:
    results = {}
    for variant in ("plain forward", "entropy probe", "eager output_attentions"):
        if args.device == "cuda":
            args.variant = variant
            results[variant] = run_variant(args)
            torch.cuda.empty_cache()
            continue
        cmd = [sys.executable, __file__, "--long-context", "--variant", variant, "--device", "cpu",
               "--seq-len", str(args.seq_len), "--layers", str(args.layers), "--precision", args.precision,
               "--repeats", str(args.repeats), "--warmup", str(args.warmup)]  # fmt: skip
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            results[variant] = None
            print(f"{variant}: failed ({done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode})")
            continue
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"Long context: decoder {args.layers} blocks, hidden 896, 14/2 heads, T={args.seq_len}, batch 1, "
          f"{args.precision}; {machine(args.device)}; medians of {args.repeats}\n")  # fmt: skip
    mem = "peak CUDA allocated MiB" if args.device == "cuda" else "peak RSS growth MiB (sampled, fresh process)"
    print(f"| variant | ms | / plain | {mem} | / plain |\n| --- | ---: | ---: | ---: | ---: |")
    plain = results["plain forward"]
    for variant, r in results.items():
        if r is None:
            print(f"| {variant} | failed | | | |")
            continue
        print(f"| {variant} | {r['ms']:.1f} | {r['ms'] / plain['ms']:.2f} | {r['peak_mb']:.0f} | "
              f"{r['peak_mb'] / max(plain['peak_mb'], 1e-9):.2f} |")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if args.variant:
        print(json.dumps(run_variant(args)))
    elif args.long_context:
        report_long_context(args)
    else:
        report_logging_step(args)


if __name__ == "__main__":
    main()
