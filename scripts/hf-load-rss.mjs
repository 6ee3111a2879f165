// Peak memory of loading a Hugging Face checkpoint of a non-llama family into the runtime (eval/load.ts).
//   node scripts/hf-load-rss.mjs make DIR          a seeded Qwen2-shaped F32 checkpoint (98.6 M parameters, 394 MB) + config.json
//   /usr/bin/time -v node --experimental-wasm-relaxed-simd scripts/hf-load-rss.mjs load DIR [ROOT]
//                                                  loadModel + one 3-token forward pass (ROOT: a built tree, default this one)
// docs/architecture.md "Memory" has the numbers.
import * as fs from 'node:fs';
import * as path from 'node:path';
const [cmd, dir, rootArg] = process.argv.slice(2);
const root = path.resolve(rootArg ?? path.join(path.dirname(new URL(import.meta.url).pathname), '..'));
if (cmd === 'make') {
  const { SafetensorsWriter } = await import(root + '/dist/src/io/safetensors.js');
  const dim = 1024, hidden = 2816, layers = 8, vocab = 8192, heads = 8, kv = 2, hd = dim / heads;
  const specs = [];
  const add = (name, shape) => specs.push({ name, dtype: 'F32', shape });
  add('model.embed_tokens.weight', [vocab, dim]);
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}.`;
    add(p + 'input_layernorm.weight', [dim]);
    for (const [n, rows] of [['q', dim], ['k', kv * hd], ['v', kv * hd]]) {
      add(p + `self_attn.${n}_proj.weight`, [rows, dim]);
      add(p + `self_attn.${n}_proj.bias`, [rows]);
    }
    add(p + 'self_attn.o_proj.weight', [dim, dim]);
    add(p + 'post_attention_layernorm.weight', [dim]);
    add(p + 'mlp.gate_proj.weight', [hidden, dim]);
    add(p + 'mlp.up_proj.weight', [hidden, dim]);
    add(p + 'mlp.down_proj.weight', [dim, hidden]);
  }
  add('model.norm.weight', [dim]);
  fs.mkdirSync(dir, { recursive: true });
  const fd = fs.openSync(path.join(dir, 'model.safetensors'), 'w');
  const w = new SafetensorsWriter({ write: (b) => void fs.writeSync(fd, b) }, specs, { format: 'pt' });
  await w.begin();
  let s = 1;
  for (const t of specs) {
    const v = new Float32Array(t.shape.reduce((a, b) => a * b, 1));
    const norm = t.name.endsWith('norm.weight');
    for (let i = 0; i < v.length; i++) {
      s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
      v[i] = norm ? 1 : ((s >>> 0) / 4294967296 - 0.5) * 0.06;
    }
    await w.write(new Uint8Array(v.buffer));
  }
  await w.end();
  fs.closeSync(fd);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', vocab_size: vocab, hidden_size: dim, intermediate_size: hidden, num_hidden_layers: layers, num_attention_heads: heads, num_key_value_heads: kv, max_position_embeddings: 2048, rms_norm_eps: 1e-6, rope_theta: 1000000, tie_word_embeddings: true, hidden_act: 'silu', torch_dtype: 'float32' }));
} else if (cmd === 'load') {
  const { loadModel } = await import(root + '/dist/src/eval/load.js');
  const { fileSource } = await import(root + '/dist/src/cli/node-source.js');
  const hfConfig = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  const m = await loadModel(fileSource(path.join(dir, 'model.safetensors')), { hfConfig, contextLength: 64 });
  console.log('logit[0]', m.model.forward([1, 2, 3], 0, 0)[0]);
} else {
  console.error('usage: node scripts/hf-load-rss.mjs make|load DIR [ROOT]');
  process.exit(2);
}
