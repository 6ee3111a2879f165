/**
 * The shapes every model reader produces and the runtime consumes: hyper-parameters, a named tensor in
 * its stored GGML type, and a tokenizer vocabulary. Readers (src/io) fill these; src/model never reads files.
 */
import type { GgmlTypeInfo } from '../quant/ggml/types.js';

/** How RoPE pairs dimensions: 'normal' rotates (2i, 2i+1) (llama2.c, GGUF llama); 'neox' rotates (i, i + d/2). */
export type RopeStyle = 'normal' | 'neox';

/** LLaMA-family hyper-parameters. */
export interface LlamaConfig {
  /** model width (embedding length) */
  dim: number;
  /** SwiGLU inner width */
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  /** key/value heads (grouped-query attention when < nHeads) */
  nKvHeads: number;
  vocabSize: number;
  /** context length the model was trained for */
  seqLen: number;
  /** per-head width, normally dim / nHeads */
  headDim: number;
  /** RMSNorm epsilon */
  normEps: number;
  /** RoPE base frequency */
  ropeTheta: number;
  /** number of leading dimensions of each head that RoPE rotates (normally headDim) */
  ropeDim: number;
  ropeStyle: RopeStyle;
  // ---- family traits (absent = Llama 2 behaviour); see src/model/llama.ts llamaConfigFromGguf ----
  /** GGUF general.architecture the model came from (llama, qwen2, qwen3, qwen3moe, phi3, gemma2, gemma3) */
  arch?: string;
  /** gate activation of the feed-forward block: SwiGLU (silu) or GeGLU (gelu, tanh form, as ggml) */
  activation?: 'silu' | 'gelu';
  /** query scale (default 1/sqrt(headDim)) */
  attnScale?: number;
  /** attention scores soft-capped to cap*tanh(s/cap) (Gemma 2) */
  attnSoftcap?: number;
  /** logits soft-capped to cap*tanh(z/cap) (Gemma 2/3) */
  finalSoftcap?: number;
  /** token embeddings multiplied by this (Gemma: sqrt(dim)) */
  embedScale?: number;
  /** sliding-window size of the layers flagged in swaLayers: position p attends to p-window+1 .. p */
  slidingWindow?: number;
  /** per layer: true when it uses sliding-window attention */
  swaLayers?: readonly boolean[];
  /** RoPE base of sliding-window layers (Gemma 3: 10000) */
  ropeThetaSwa?: number;
  /** linear RoPE scaling: positions are multiplied by this (1/factor) */
  ropeFreqScale?: number;
  /** the same for sliding-window layers (default ropeFreqScale) */
  ropeFreqScaleSwa?: number;
  /** mixture of experts: experts per layer, experts used per token, each expert's inner width */
  nExperts?: number;
  nExpertsUsed?: number;
  expertHiddenDim?: number;
}

/**
 * A tensor as stored: GGUF naming and GGUF dimension order (innermost first), e.g. blk.0.attn_k.weight
 * with dims [dim, kvDim] is kvDim rows of dim contiguous values. `data` holds the raw bytes in `type`.
 */
export interface StoredTensor {
  readonly name: string;
  readonly type: GgmlTypeInfo;
  readonly dims: readonly number[];
  readonly data: Uint8Array;
}

/** sentencepiece piece types (ModelProto.SentencePiece.Type), as GGUF tokenizer.ggml.token_type stores them. */
export const TokenType = Object.freeze({ NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 });

/**
 * A tokenizer vocabulary as GGUF stores it. 'llama' (sentencepiece): pieces use U+2581 for a space.
 * 'gpt2' (byte-level BPE): pieces are UTF-8 bytes written as GPT-2's printable characters ('Ġ' = space),
 * with merge ranks and the pre-tokenizer llama.cpp names in tokenizer.ggml.pre.
 */
export interface Vocab {
  /** tokenizer.ggml.model (default 'llama') */
  readonly model?: 'llama' | 'gpt2';
  /** tokenizer.ggml.pre: the byte-level BPE pre-tokenizer (llama-bpe, qwen2, gpt-2, tekken, ...) */
  readonly pre?: string;
  /** tokenizer.ggml.merges: "left right" per rank (byte-level BPE) */
  readonly merges?: readonly string[];
  readonly tokens: readonly string[];
  readonly scores: Float32Array;
  /** TokenType per id */
  readonly types: Int32Array;
  readonly bos: number;
  readonly eos: number;
  readonly unk: number;
  /** prepend BOS when encoding with special tokens (llama: true) */
  readonly addBos: boolean;
  /** prepend a space to the text before encoding (sentencepiece add_dummy_prefix) */
  readonly addSpacePrefix: boolean;
}
