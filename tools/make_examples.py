#!/usr/bin/env python3
"""Make the committed example models under examples/ (needs the torch extra and scikit-learn).

    python tools/make_examples.py            # all four
    python tools/make_examples.py digits     # one

* digits_cnn.onnx   a small CNN trained on scikit-learn's digits (8x8 images, real
                    data, real test accuracy), with digits_calib.npz: held-out test
                    images ("x") and labels ("labels").
* resnet_dag.onnx   a ResNet-style DAG (stem, three stages of residual blocks with
                    projection shortcuts, a concat of two pooled branches) on
                    3x32x32 inputs, random weights.
* transformer.onnx  a 2-layer transformer encoder (d=64, 4 heads, 32 tokens) whose
                    attention mask feeds every layer; inputs input_ids, attention_mask.
* tiny_lm/          a Llama-architecture LM (4 layers, d=128, 4 heads over 2 key/value
                    heads, SwiGLU, rotary) trained here on the Python standard
                    library's sources, byte-level (vocabulary: the 256 byte values), a
                    transformers model directory (float16 weights); tiny_lm/heldout.txt
                    is text of modules it never saw, tiny_lm/training.json how it was
                    trained and its held-out perplexity.

Every input has a symbolic batch dimension, so servers can batch requests.
Everything is seeded: running the script again gives the same models.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _torch():
    import torch

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    return torch


def _save(model_proto, name: str) -> Path:
    import onnx

    from slicer_compile.frontend import normalise

    path = EXAMPLES / name
    onnx.save(normalise(model_proto), str(path))
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return path


def make_digits() -> None:
    torch = _torch()
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from slicer_compile.frontend import export_torch

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # N x 1 x 8 x 8 in [0, 1]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)

    nn = torch.nn
    # Dropout after each conv block: the usual regulariser, and it also makes the
    # features robust to the values ATKF drops (the export is in eval mode: no-ops).
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Dropout(0.3), nn.MaxPool2d(2),  # 64 x 4 x 4
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Dropout(0.3),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for epoch in range(40):
        order = torch.randperm(len(xt), generator=generator)
        for i in range(0, len(xt), 64):
            batch = order[i: i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[batch]), yt[batch])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    print(f"digits CNN test accuracy: {accuracy:.4f} on {len(y_test)} held-out images")
    _save(export_torch(model, [torch.from_numpy(x_test[:1])], ["x"], ["logits"], dynamic_batch=True), "digits_cnn.onnx")
    np.savez_compressed(EXAMPLES / "digits_calib.npz", x=x_test, labels=y_test)
    print(f"wrote {EXAMPLES / 'digits_calib.npz'}")


def make_resnet() -> None:
    torch = _torch()
    from slicer_compile.frontend import export_torch

    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                             if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))

    class ResNetDag(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
            self.stages = nn.Sequential(Block(32, 32, 1), Block(32, 32, 1), Block(32, 64, 2), Block(64, 64, 1),
                                        Block(64, 128, 2), Block(128, 128, 1))
            self.fc = nn.Linear(256, 100)

        def forward(self, x):
            y = self.stages(self.stem(x))
            pooled = torch.cat([y.mean(dim=(2, 3)), y.amax(dim=(2, 3))], dim=1)  # a merge of two branches
            return self.fc(pooled)

    model = ResNetDag().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so the folded graph is not an identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    _save(export_torch(model, [torch.randn(1, 3, 32, 32)], ["image"], ["logits"], dynamic_batch=True), "resnet_dag.onnx")


def make_transformer() -> None:
    torch = _torch()
    from slicer_compile.frontend import export_torch

    nn = torch.nn
    vocab, d, heads, seq, layers = 1000, 64, 4, 32, 2

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(d, 3 * d)
            self.out = nn.Linear(d, d)
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

        def forward(self, h, bias):
            b, t, _ = h.shape
            q, k, v = self.qkv(h).view(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            scores = q @ k.transpose(-1, -2) / (d // heads) ** 0.5 + bias  # the mask, in every layer
            attn = torch.softmax(scores, dim=-1) @ v
            h = self.ln1(h + self.out(attn.transpose(1, 2).reshape(b, t, d)))
            return self.ln2(h + self.ff(h))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(torch.randn(1, seq, d) * 0.02)
            self.layers = nn.ModuleList(Layer() for _ in range(layers))

        def forward(self, input_ids, attention_mask):
            bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -1e4
            h = self.tok(input_ids) + self.pos
            for layer in self.layers:
                h = layer(h, bias)
            return h

    ids = torch.randint(0, vocab, (1, seq))
    mask = torch.ones(1, seq, dtype=torch.int64)
    _save(export_torch(Encoder().eval(), [ids, mask], ["input_ids", "attention_mask"], ["hidden"],
                       dynamic_batch=True),
          "transformer.onnx")
    rng = np.random.default_rng(0)
    calib_ids = rng.integers(0, vocab, (32, seq)).astype(np.int64)
    calib_mask = np.ones((32, seq), dtype=np.int64)
    calib_mask[::2, seq // 2:] = 0  # half the samples padded
    np.savez_compressed(EXAMPLES / "transformer_calib.npz", input_ids=calib_ids, attention_mask=calib_mask)
    print(f"wrote {EXAMPLES / 'transformer_calib.npz'}")


#: The standard library's modules the LM learns from and the ones held out (sorted
#: file lists under the running interpreter's lib directory: text every machine has).
LM_HELDOUT = ("textwrap.py", "fractions.py", "shlex.py")
LM_STEPS, LM_BATCH, LM_CONTEXT = 2500, 16, 128


def _stdlib_text(names=None) -> bytes:
    import sysconfig

    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(lib.glob("*.py")) if names is None else [lib / n for n in names]
    return b"\n".join(f.read_bytes() for f in files if f.name not in (() if names else LM_HELDOUT))


def make_tiny_lm() -> None:
    import json
    import math
    import time

    torch = _torch()
    import transformers

    train = np.frombuffer(_stdlib_text(), np.uint8)
    heldout = _stdlib_text(LM_HELDOUT)
    config = transformers.LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                      rope_theta=10000.0, bos_token_id=None, eos_token_id=None, pad_token_id=None,
                                      tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=LM_STEPS, pct_start=0.05)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    model.train()
    for step in range(LM_STEPS):
        starts = rng.integers(0, len(train) - LM_CONTEXT - 1, LM_BATCH)
        batch = torch.from_numpy(np.stack([train[s: s + LM_CONTEXT + 1] for s in starts]).astype(np.int64))
        loss = torch.nn.functional.cross_entropy(model(batch[:, :-1]).logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if step % 250 == 0:
            print(f"step {step}: loss {loss.item():.3f} ({time.perf_counter() - started:.0f} s)", flush=True)
    model.eval()
    ids = torch.from_numpy(np.frombuffer(heldout, np.uint8).astype(np.int64))
    losses = []
    with torch.no_grad():
        for start in range(0, len(ids) - LM_CONTEXT - 1, LM_CONTEXT):
            chunk = ids[start: start + LM_CONTEXT + 1][None]
            logits = model(chunk[:, :-1]).logits
            losses.append(torch.nn.functional.cross_entropy(logits.reshape(-1, 256), chunk[0, 1:]).item())
    perplexity = math.exp(float(np.mean(losses)))
    folder = EXAMPLES / "tiny_lm"
    model.half().save_pretrained(folder)
    (folder / "heldout.txt").write_bytes(heldout)
    (folder / "training.json").write_text(json.dumps({
        "text": "the Python standard library's *.py sources, byte-level", "heldout_files": list(LM_HELDOUT),
        "train_bytes": int(len(train)), "heldout_bytes": len(heldout), "steps": LM_STEPS, "batch": LM_BATCH,
        "context": LM_CONTEXT, "parameters": sum(p.numel() for p in model.parameters()),
        "heldout_perplexity_per_byte": round(perplexity, 3), "python": sys.version.split()[0],
        "seconds": round(time.perf_counter() - started, 1)}, indent=1) + "\n")
    print(f"wrote {folder}: held-out perplexity {perplexity:.3f} per byte")


MAKERS = {"digits": make_digits, "resnet": make_resnet, "transformer": make_transformer, "tiny_lm": make_tiny_lm}

if __name__ == "__main__":
    EXAMPLES.mkdir(exist_ok=True)
    for name in sys.argv[1:] or MAKERS:
        MAKERS[name]()
