/**
 * Tokenizer vocabularies from three sources, all giving the same Vocab (src/model/types.ts):
 *  - llama2.c tokenizer.bin: int32 max_token_length, then per token (float32 score, int32 byte length,
 *    UTF-8 bytes) until the end of the file. The export wrote U+2581 as ' ' and BOS/EOS as "\n<s>\n"/"\n</s>\n".
 *  - sentencepiece tokenizer.model: a protobuf ModelProto (sentencepiece_model.proto):
 *      ModelProto      { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2; NormalizerSpec normalizer_spec = 3; }
 *      SentencePiece   { string piece = 1; float score = 2; Type type = 3 [default NORMAL]; }
 *      TrainerSpec     { ... unk_id = 40 [default 0]; bos_id = 41 [default 1]; eos_id = 42 [default 2]; }
 *      NormalizerSpec  { ... bool add_dummy_prefix = 3 [default true]; }
 *  - GGUF metadata (tokenizer.ggml.*) given as a plain key -> value map.
 */
import { fail } from '../errors.js';
import { preTokenizerKind, preTokenizerTraits } from '../model/pretokenize.js';
import { TokenType, type Vocab } from '../model/types.js';
import type { ByteSource } from './source.js';

const SPACE = '\u2581';
const BYTE_PIECE = /^<0x[0-9A-Fa-f]{2}>$/;

function findId(tokens: readonly string[], piece: string, fallback: number): number {
  const i = tokens.indexOf(piece);
  return i >= 0 ? i : fallback;
}

/** Parse llama2.c tokenizer.bin bytes. `vocabSize`, when given, must match the number of entries. */
export function parseTokenizerBin(bytes: Uint8Array, name = 'tokenizer.bin', vocabSize?: number): Vocab {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4) fail(`${name}: too short for a llama2.c tokenizer (${bytes.length} bytes)`);
  const maxLen = dv.getInt32(0, true);
  if (!(maxLen > 0 && maxLen < 1 << 16)) fail(`${name}: not a llama2.c tokenizer: max_token_length = ${maxLen}`);
  const utf8 = new TextDecoder('utf-8');
  const tokens: string[] = [];
  const scores: number[] = [];
  let off = 4;
  while (off < bytes.length && (vocabSize === undefined || tokens.length < vocabSize)) {
    if (off + 8 > bytes.length) fail(`${name}: truncated entry ${tokens.length} at byte ${off}`);
    const score = dv.getFloat32(off, true);
    const len = dv.getInt32(off + 4, true);
    off += 8;
    if (len < 0 || len > maxLen || off + len > bytes.length) fail(`${name}: entry ${tokens.length} has a bad length ${len} at byte ${off - 4}`);
    const raw = utf8.decode(bytes.subarray(off, off + len));
    off += len;
    scores.push(score);
    tokens.push(raw === '\n<s>\n' ? '<s>' : raw === '\n</s>\n' ? '</s>' : raw.replaceAll(' ', SPACE));
  }
  if (vocabSize !== undefined && tokens.length !== vocabSize) fail(`${name}: has ${tokens.length} tokens but the model needs ${vocabSize}`);
  if (off !== bytes.length) fail(`${name}: ${bytes.length - off} bytes left after ${tokens.length} tokens`);
  const unk = findId(tokens, '<unk>', 0);
  const bos = findId(tokens, '<s>', 1);
  const eos = findId(tokens, '</s>', 2);
  const types = new Int32Array(tokens.length);
  tokens.forEach((t, i) => {
    types[i] = i === unk ? TokenType.UNKNOWN : i === bos || i === eos ? TokenType.CONTROL : BYTE_PIECE.test(t) ? TokenType.BYTE : TokenType.NORMAL;
  });
  return { tokens, scores: Float32Array.from(scores), types, bos, eos, unk, addBos: true, addSpacePrefix: true };
}

// ---- a minimal protobuf reader (wire types 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32) ----

interface ProtoField {
  field: number;
  wire: number;
  /** varint value (wire 0) */
  int: number;
  /** payload (wire 1, 2, 5) */
  bytes: Uint8Array;
}

function* protoFields(buf: Uint8Array, name: string): Generator<ProtoField> {
  let p = 0;
  const varint = (): number => {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (p >= buf.length) fail(`${name}: truncated protobuf varint`);
      const b = buf[p++];
      v += (b & 0x7f) * mul;
      mul *= 128;
      if (!(b & 0x80)) return v;
    }
    fail(`${name}: protobuf varint longer than 10 bytes`);
  };
  while (p < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (field === 0) fail(`${name}: protobuf field number 0 at byte ${p}`);
    const empty = buf.subarray(0, 0);
    if (wire === 0) yield { field, wire, int: varint(), bytes: empty };
    else if (wire === 1 || wire === 5) {
      const n = wire === 1 ? 8 : 4;
      if (p + n > buf.length) fail(`${name}: truncated protobuf field ${field}`);
      yield { field, wire, int: 0, bytes: buf.subarray(p, p + n) };
      p += n;
    } else if (wire === 2) {
      const n = varint();
      if (p + n > buf.length) fail(`${name}: protobuf field ${field} of ${n} bytes runs past the end`);
      yield { field, wire, int: 0, bytes: buf.subarray(p, p + n) };
      p += n;
    } else fail(`${name}: unsupported protobuf wire type ${wire} (field ${field})`);
  }
}

/** Parse a sentencepiece ModelProto (tokenizer.model). */
export function parseSentencepieceModel(bytes: Uint8Array, name = 'tokenizer.model'): Vocab {
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const tokens: string[] = [];
  const scores: number[] = [];
  const types: number[] = [];
  let unk = 0;
  let bos = 1;
  let eos = 2;
  let addSpacePrefix = true;
  for (const f of protoFields(bytes, name)) {
    if (f.field === 1 && f.wire === 2) {
      let piece = '';
      let score = 0;
      let type: number = TokenType.NORMAL;
      for (const g of protoFields(f.bytes, name)) {
        if (g.field === 1 && g.wire === 2) {
          try {
            piece = utf8.decode(g.bytes);
          } catch {
            fail(`${name}: piece ${tokens.length} is not valid UTF-8`);
          }
        } else if (g.field === 2 && g.wire === 5) score = new DataView(g.bytes.buffer, g.bytes.byteOffset, 4).getFloat32(0, true);
        else if (g.field === 3 && g.wire === 0) type = g.int;
      }
      if (type < 1 || type > 6) fail(`${name}: piece ${tokens.length} has unknown type ${type}`);
      tokens.push(piece);
      scores.push(score);
      types.push(type);
    } else if (f.field === 2 && f.wire === 2) {
      for (const g of protoFields(f.bytes, name)) {
        if (g.wire !== 0) continue;
        // int32 ids are varint-encoded; -1 comes out as 2^64 - 1
        const id = g.int >= 2 ** 63 ? -1 : g.int;
        if (g.field === 40) unk = id;
        else if (g.field === 41) bos = id;
        else if (g.field === 42) eos = id;
      }
    } else if (f.field === 3 && f.wire === 2) {
      for (const g of protoFields(f.bytes, name)) if (g.field === 3 && g.wire === 0) addSpacePrefix = g.int !== 0;
    }
  }
  if (tokens.length === 0) fail(`${name}: no sentencepiece pieces found (not a tokenizer.model?)`);
  for (const [what, id] of [['unk', unk], ['bos', bos], ['eos', eos]] as const)
    if (id >= tokens.length) fail(`${name}: ${what} id ${id} is outside the ${tokens.length}-token vocabulary`);
  return { tokens, scores: Float32Array.from(scores), types: Int32Array.from(types), bos, eos, unk, addBos: true, addSpacePrefix };
}

/** Build a Vocab from GGUF tokenizer.ggml.* metadata (tokenizer.ggml.model must be 'llama'). */
export function vocabFromGgufMetadata(meta: ReadonlyMap<string, unknown> | Readonly<Record<string, unknown>>): Vocab {
  const get = (k: string): unknown => (meta instanceof Map ? meta.get(k) : (meta as Record<string, unknown>)[k]);
  const model = get('tokenizer.ggml.model') ?? 'llama';
  if (model !== 'llama' && model !== 'gpt2') fail(`GGUF tokenizer '${String(model)}' is not supported (llama = sentencepiece, gpt2 = byte-level BPE)`);
  const bpe = model === 'gpt2';
  let pre: string | undefined;
  let merges: string[] | undefined;
  if (bpe) {
    const p = get('tokenizer.ggml.pre');
    pre = typeof p === 'string' ? p : undefined;
    preTokenizerKind(pre); // an unknown pre-tokenizer fails here, naming the known ones
    const m = get('tokenizer.ggml.merges');
    if (!Array.isArray(m) || m.some((x) => typeof x !== 'string')) fail('GGUF byte-level BPE tokenizer has no tokenizer.ggml.merges string array');
    merges = m as string[];
  }
  const tokens = get('tokenizer.ggml.tokens');
  if (!Array.isArray(tokens) || tokens.length === 0 || typeof tokens[0] !== 'string') fail('GGUF metadata has no tokenizer.ggml.tokens string array');
  const n = tokens.length;
  const numArray = (k: string, dflt: number): number[] => {
    const v = get(k);
    if (v === undefined) return new Array<number>(n).fill(dflt);
    if (!(Array.isArray(v) || ArrayBuffer.isView(v)) || (v as ArrayLike<unknown>).length !== n) fail(`GGUF metadata ${k} must be an array of ${n} numbers`);
    return Array.from(v as ArrayLike<number | bigint>, Number);
  };
  const scores = numArray('tokenizer.ggml.scores', 0);
  const types = numArray('tokenizer.ggml.token_type', TokenType.NORMAL);
  const id = (k: string, dflt: number): number => {
    const v = get(k);
    if (v === undefined) return dflt;
    const x = Number(v as number | bigint);
    if (!Number.isInteger(x) || x < 0 || x >= n) fail(`GGUF metadata ${k} = ${String(v)} is not a token id below ${n}`);
    return x;
  };
  const flag = (k: string, dflt: boolean): boolean => {
    const v = get(k);
    return v === undefined ? dflt : Boolean(v);
  };
  if (bpe) {
    // llama.cpp's BPE defaults: BOS/EOS id 11 (GPT-2's), no unknown token, BOS added for llama3/tekken
    const addBosDefault = preTokenizerTraits(preTokenizerKind(pre)).addBosDefault;
    return {
      model: 'gpt2',
      pre,
      merges,
      tokens: tokens as string[],
      scores: Float32Array.from(scores),
      types: Int32Array.from(types),
      bos: id('tokenizer.ggml.bos_token_id', Math.min(11, n - 1)),
      eos: id('tokenizer.ggml.eos_token_id', Math.min(11, n - 1)),
      unk: id('tokenizer.ggml.unknown_token_id', 0),
      addBos: flag('tokenizer.ggml.add_bos_token', addBosDefault),
      addSpacePrefix: false,
    };
  }
  return {
    tokens: tokens as string[],
    scores: Float32Array.from(scores),
    types: Int32Array.from(types),
    bos: id('tokenizer.ggml.bos_token_id', 1),
    eos: id('tokenizer.ggml.eos_token_id', 2),
    unk: id('tokenizer.ggml.unknown_token_id', 0),
    addBos: flag('tokenizer.ggml.add_bos_token', true),
    addSpacePrefix: flag('tokenizer.ggml.add_space_prefix', true),
  };
}

/** Read a tokenizer file, telling tokenizer.bin from tokenizer.model by content. */
export async function readVocab(src: ByteSource, vocabSize?: number): Promise<Vocab> {
  const bytes = await src.read(0, src.size);
  // a ModelProto starts with field 1, wire type 2 (key byte 0x0a); tokenizer.bin starts with a small int32
  if (bytes[0] === 0x0a) return parseSentencepieceModel(bytes, src.name);
  const v = parseTokenizerBin(bytes, src.name, vocabSize);
  return v;
}
