"""PyTorch CPU reference trainer for lowbit's LLaMA (the same math as src/model/llama.ts and llama.cpp's
llama architecture: RMSNorm, interleaved-pair RoPE, grouped-query causal attention, SwiGLU, untied output).

Used (1) once, to train the first data/tinyllama256.gguf before lowbit's own trainer existed (issue 13
allows a one-off script), and (2) as the anchor of `npm run bench -- train` (--bench: tokens/s only).

  python3 scripts/train_llama_torch.py --tokens train.u16 [--heldout heldout.u16] --dim 256 --hidden 768 \
     --layers 4 --heads 8 --kv-heads 4 --vocab 512 --ctx 256 --batch 16 --steps 600 --lr 1e-3 --out W.safetensors
Tokens are little-endian uint16; windows of ctx+1 tokens start at seeded random offsets and their first
input token is replaced by BOS (as llama-perplexity scores chunks).
"""
import argparse, json, math, struct, sys, time
import numpy as np
import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument('--tokens', required=True)
p.add_argument('--heldout')
p.add_argument('--dim', type=int, default=256)
p.add_argument('--hidden', type=int, default=768)
p.add_argument('--layers', type=int, default=4)
p.add_argument('--heads', type=int, default=8)
p.add_argument('--kv-heads', type=int, default=4)
p.add_argument('--vocab', type=int, default=512)
p.add_argument('--ctx', type=int, default=256)
p.add_argument('--batch', type=int, default=16)
p.add_argument('--steps', type=int, default=600)
p.add_argument('--lr', type=float, default=1e-3)
p.add_argument('--min-lr', type=float, default=1e-4)
p.add_argument('--warmup', type=int, default=50)
p.add_argument('--wd', type=float, default=0.1)
p.add_argument('--clip', type=float, default=1.0)
p.add_argument('--seed', type=int, default=1)
p.add_argument('--threads', type=int, default=0)
p.add_argument('--eval-every', type=int, default=50)
p.add_argument('--eval-ctx', type=int, default=128)
p.add_argument('--bos', type=int, default=1)
p.add_argument('--bench', type=int, default=0, help='time this many steps after --bench-warmup steps, print JSON, exit')
p.add_argument('--bench-warmup', type=int, default=2)
p.add_argument('--out')
p.add_argument('--log', help='write the loss curve here: JSON lines {"step": 1-based, "loss"} (as lowbit train --log)')
a = p.parse_args()
if a.threads: torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
rng = np.random.default_rng(a.seed)
head = a.dim // a.heads
kvdim = head * a.kv_heads
EPS = 1e-5

def load(f):
    return torch.from_numpy(np.fromfile(f, dtype='<u2').astype(np.int64))

train = load(a.tokens)
held = load(a.heldout) if a.heldout else None

def param(*shape, std=0.02):
    return torch.nn.Parameter(torch.randn(*shape) * std)

names, params = [], []
def add(name, t):
    names.append(name); params.append(t); return t

resid_std = 0.02 / math.sqrt(2 * a.layers)
W = {}
W['token_embd.weight'] = add('token_embd.weight', param(a.vocab, a.dim))
for l in range(a.layers):
    pre = f'blk.{l}.'
    W[pre + 'attn_norm.weight'] = add(pre + 'attn_norm.weight', torch.nn.Parameter(torch.ones(a.dim)))
    W[pre + 'attn_q.weight'] = add(pre + 'attn_q.weight', param(a.dim, a.dim))
    W[pre + 'attn_k.weight'] = add(pre + 'attn_k.weight', param(kvdim, a.dim))
    W[pre + 'attn_v.weight'] = add(pre + 'attn_v.weight', param(kvdim, a.dim))
    W[pre + 'attn_output.weight'] = add(pre + 'attn_output.weight', param(a.dim, a.dim, std=resid_std))
    W[pre + 'ffn_norm.weight'] = add(pre + 'ffn_norm.weight', torch.nn.Parameter(torch.ones(a.dim)))
    W[pre + 'ffn_gate.weight'] = add(pre + 'ffn_gate.weight', param(a.hidden, a.dim))
    W[pre + 'ffn_down.weight'] = add(pre + 'ffn_down.weight', param(a.dim, a.hidden, std=resid_std))
    W[pre + 'ffn_up.weight'] = add(pre + 'ffn_up.weight', param(a.hidden, a.dim))
W['output_norm.weight'] = add('output_norm.weight', torch.nn.Parameter(torch.ones(a.dim)))
W['output.weight'] = add('output.weight', param(a.vocab, a.dim))

def rope_tables(T):
    freq = 10000.0 ** (-torch.arange(0, head, 2, dtype=torch.float64) / head)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * freq[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()

def rope(x, cos, sin):  # x (B, H, T, head): pairs (2i, 2i+1)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)

_masks = {}
def causal_mask(T):
    if T not in _masks: _masks[T] = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    return _masks[T]

def rmsnorm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w

def forward(idx):
    B, T = idx.shape
    cos, sin = rope_tables(T)
    x = W['token_embd.weight'][idx]
    for l in range(a.layers):
        pre = f'blk.{l}.'
        h = rmsnorm(x, W[pre + 'attn_norm.weight'])
        q = (h @ W[pre + 'attn_q.weight'].T).view(B, T, a.heads, head).transpose(1, 2)
        k = (h @ W[pre + 'attn_k.weight'].T).view(B, T, a.kv_heads, head).transpose(1, 2)
        v = (h @ W[pre + 'attn_v.weight'].T).view(B, T, a.kv_heads, head).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        g = a.heads // a.kv_heads
        k = k.repeat_interleave(g, dim=1); v = v.repeat_interleave(g, dim=1)  # query head h uses kv head h // g
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(head))
        att = att.masked_fill(causal_mask(T), float('-inf')).softmax(-1)
        o = att @ v
        x = x + o.transpose(1, 2).reshape(B, T, a.dim) @ W[pre + 'attn_output.weight'].T
        h = rmsnorm(x, W[pre + 'ffn_norm.weight'])
        x = x + (F.silu(h @ W[pre + 'ffn_gate.weight'].T) * (h @ W[pre + 'ffn_up.weight'].T)) @ W[pre + 'ffn_down.weight'].T
    return rmsnorm(x, W['output_norm.weight']) @ W['output.weight'].T

def batch(data, B, T):
    starts = rng.integers(0, len(data) - T - 1, size=B)
    x = torch.stack([data[s:s + T] for s in starts]).clone()
    y = torch.stack([data[s + 1:s + T + 1] for s in starts])
    x[:, 0] = a.bos
    return x, y

@torch.no_grad()
def heldout_loss():
    # llama-perplexity style: consecutive chunks of eval_ctx, BOS first, second half scored
    T = a.eval_ctx
    n = min(len(held) // T, 200)
    total, count = 0.0, 0
    for c0 in range(0, n, 16):
        rows = [held[(c0 + i) * T:(c0 + i + 1) * T].clone() for i in range(min(16, n - c0))]
        x = torch.stack(rows)
        y = x[:, 1:].clone()
        x[:, 0] = a.bos
        logits = forward(x[:, :-1])
        nll = F.cross_entropy(logits[:, T // 2 - 1:].reshape(-1, a.vocab), y[:, T // 2 - 1:].reshape(-1), reduction='sum')
        total += nll.item(); count += y[:, T // 2 - 1:].numel()
    return total / count

decay = [p_ for n_, p_ in zip(names, params) if p_.dim() == 2]
nodecay = [p_ for n_, p_ in zip(names, params) if p_.dim() < 2]
opt = torch.optim.AdamW([{'params': decay, 'weight_decay': a.wd}, {'params': nodecay, 'weight_decay': 0.0}], lr=a.lr, betas=(0.9, 0.95), eps=1e-8)

def lr_at(step):
    if step < a.warmup: return a.lr * (step + 1) / a.warmup
    r = (step - a.warmup) / max(1, a.steps - a.warmup)
    return a.min_lr + 0.5 * (a.lr - a.min_lr) * (1 + math.cos(math.pi * min(1.0, r)))

def train_step(step):
    for g in opt.param_groups: g['lr'] = lr_at(step)
    x, y = batch(train, a.batch, a.ctx)
    loss = F.cross_entropy(forward(x).reshape(-1, a.vocab), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, a.clip)
    opt.step()
    return loss.item()

if a.bench:
    for s in range(a.bench_warmup): train_step(s)
    t0 = time.perf_counter()
    for s in range(a.bench): train_step(s)
    dt = time.perf_counter() - t0
    print(json.dumps({'tokens_per_s': a.bench * a.batch * a.ctx / dt, 'seconds': dt, 'threads': torch.get_num_threads(), 'torch': torch.__version__}))
    sys.exit(0)

best = (float('inf'), None, -1)
t0 = time.time()
logf = open(a.log, 'w') if a.log else None
for step in range(a.steps):
    loss = train_step(step)
    if logf: logf.write(json.dumps({'step': step + 1, 'loss': loss, 'lr': lr_at(step)}) + '\n'); logf.flush()
    if step % 10 == 0: print(f'step {step} loss {loss:.4f} lr {lr_at(step):.2e} {time.time() - t0:.0f}s', flush=True)
    if held is not None and ((step + 1) % a.eval_every == 0 or step == a.steps - 1):
        h = heldout_loss()
        print(f'step {step + 1} heldout {h:.4f} ppl {math.exp(h):.3f}', flush=True)
        if h < best[0]: best = (h, {n_: p_.detach().clone() for n_, p_ in zip(names, params)}, step + 1)

state = best[1] if best[1] is not None else {n_: p_.detach() for n_, p_ in zip(names, params)}
if a.out:
    cfg = dict(dim=a.dim, hiddenDim=a.hidden, nLayers=a.layers, nHeads=a.heads, nKvHeads=a.kv_heads, vocabSize=a.vocab, seqLen=a.ctx,
               headDim=head, normEps=EPS, ropeTheta=10000.0, ropeDim=head)
    header, blobs, off = {}, [], 0
    for n_ in names:
        b = state[n_].contiguous().numpy().astype('<f4').tobytes()
        header[n_] = {'dtype': 'F32', 'shape': list(state[n_].shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b); off += len(b)
    header['__metadata__'] = {'config': json.dumps(cfg), 'name': 'tinyllama256', 'best_step': str(best[2]), 'heldout_loss': f'{best[0]:.5f}'}
    h = json.dumps(header).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(a.out, 'wb') as f:
        f.write(struct.pack('<Q', len(h))); f.write(h)
        for b in blobs: f.write(b)
    print(f'wrote {a.out} (best heldout {best[0]:.4f} at step {best[2]})')
