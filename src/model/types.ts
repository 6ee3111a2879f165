/**
 * The shapes every model reader produces and the runtime consumes: hyper-parameters, a named tensor in
 * its stored GGML type, and a tokenizer vocabulary. Readers (src/io) fill these; src/model never reads files.
 */
import type { GgmlTypeInfo } from '../quant/ggml/types.js';

/** The hyper-parameters: the one config type, declared with the model families (model/family.ts). */
export type { ModelConfig as LlamaConfig, ModelConfig, RopeStyle } from './family.js';


/**
 * A tensor as stored: GGUF naming and GGUF dimension order (innermost first), e.g. blk.0.attn_k.weight
 * with dims [dim, kvDim] is kvDim rows of dim contiguous values. `data` holds the raw bytes in `type`.
 */
export interface StoredTensor {
  readonly name: string;
  readonly type: GgmlTypeInfo;
  readonly dims: readonly number[];
  readonly data: Uint8Array;
  /**
   * set when `data` was allocated but not read (storedTensors' `lazy`): fill(start, dest) reads the
   * tensor's bytes [start, start + dest.length) from its file, synchronously, into dest
   */
  readonly fill?: (start: number, dest: Uint8Array) => void;
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
