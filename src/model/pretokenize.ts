/**
 * Byte-level BPE pre-tokenizers, as llama.cpp runs them (src/unicode.cpp, unicode_regex_split): the text is
 * cut into words by the pre-tokenizer named in `tokenizer.ggml.pre`, then each word's UTF-8 bytes are
 * mapped to printable characters (GPT-2's bytes_to_unicode) before BPE merges.
 *
 * llama.cpp does not run the tokenizer.json regexes with a general engine for the common ones; it uses
 * hand-written scanners whose behaviour is the specification here (they differ from the regex in corner
 * cases, e.g. `\s+(?!\S)` at the end of the text). Character classes come from the Unicode general
 * category, llama.cpp's way:
 *   letter \p{L}, number \p{N}, whitespace = Unicode White_Space (U+0009-000D, 0020, 0085, 00A0, 1680,
 *   2000-200A, 2028, 2029, 202F, 205F, 3000); every code point inside the text has some flag.
 *
 *   gpt2   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *   llama3 (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   qwen2  as llama3 with \p{N} (one digit per word)
 *   tekken llama.cpp runs its regex through std::regex on a "collapsed" text where each code point >= 128
 *          becomes one byte naming its class (letter 0xD2, number 0xD1, punctuation 0xD3, mark 0xD4,
 *          symbol 0xD5, whitespace 0x0B, other 0xD0); \p{L} becomes [\xD2A-Za-z] and so on. So a non-ASCII
 *          letter is neither upper- nor lower-case to it. The same is done here with a JS regex (ECMAScript
 *          semantics, as std::regex's default grammar).
 */
import { fail } from '../errors.js';

export type PreTokenizerKind = 'gpt2' | 'llama3' | 'qwen2' | 'tekken';

/** tokenizer.ggml.pre names llama.cpp maps to each scanner (llama-vocab.cpp) */
const PRE_NAMES: Readonly<Record<string, PreTokenizerKind>> = Object.freeze({
  'llama-bpe': 'llama3',
  llama3: 'llama3',
  'llama-v3': 'llama3',
  smaug: 'llama3',
  'smaug-bpe': 'llama3',
  dbrx: 'llama3',
  pixtral: 'llama3',
  falcon3: 'llama3',
  'gpt-2': 'gpt2',
  gpt2: 'gpt2',
  'phi-2': 'gpt2',
  mpt: 'gpt2',
  olmo: 'gpt2',
  qwen2: 'qwen2',
  'deepseek-r1-qwen': 'qwen2',
  stablelm2: 'qwen2',
  megrez: 'qwen2',
  tekken: 'tekken',
});

/** The pre-tokenizer names this tokenizer knows (what `tokenizer.ggml.pre` may say). */
export const knownPreTokenizers = (): string[] => Object.keys(PRE_NAMES);

/** The scanner for a `tokenizer.ggml.pre` name; a clear error naming the known ones otherwise. */
export function preTokenizerKind(pre: string | undefined): PreTokenizerKind {
  if (pre === undefined || pre === '') fail(`the GGUF tokenizer has no tokenizer.ggml.pre (byte-level BPE needs its pre-tokenizer; known: ${knownPreTokenizers().join(', ')})`);
  const k = PRE_NAMES[pre];
  if (!k) fail(`unknown pre-tokenizer '${pre}' (tokenizer.ggml.pre); known: ${knownPreTokenizers().join(', ')}`);
  return k;
}

/** llama.cpp's behaviour differences per pre-tokenizer: whole-word lookup before merges, BOS default */
export function preTokenizerTraits(kind: PreTokenizerKind): { ignoreMerges: boolean; addBosDefault: boolean } {
  const llamaLike = kind === 'llama3' || kind === 'tekken';
  return { ignoreMerges: llamaLike, addBosDefault: llamaLike };
}

// ---- character classes -------------------------------------------------------------------------

const F_NUMBER = 1;
const F_LETTER = 2;
const F_WHITESPACE = 4;
const F_PUNCT = 8;
const F_MARK = 16;
const F_SYMBOL = 32;
const F_KNOWN = 128; // the entry has been computed

const WHITESPACE = new Set([0x20, 0x85, 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000]);
for (let c = 0x09; c <= 0x0d; c++) WHITESPACE.add(c);
for (let c = 0x2000; c <= 0x200a; c++) WHITESPACE.add(c);

let flagTable: Uint8Array | null = null;
const RE_L = /\p{L}/u;
const RE_N = /\p{N}/u;
const RE_P = /\p{P}/u;
const RE_M = /\p{M}/u;
const RE_S = /\p{S}/u;

function flagsOf(cp: number): number {
  const table = (flagTable ??= new Uint8Array(0x110000));
  let f = table[cp];
  if (f !== 0) return f;
  const ch = String.fromCodePoint(cp);
  f = F_KNOWN;
  if (RE_L.test(ch)) f |= F_LETTER;
  else if (RE_N.test(ch)) f |= F_NUMBER;
  else if (RE_P.test(ch)) f |= F_PUNCT;
  else if (RE_M.test(ch)) f |= F_MARK;
  else if (RE_S.test(ch)) f |= F_SYMBOL;
  if (WHITESPACE.has(cp)) f |= F_WHITESPACE;
  table[cp] = f;
  return f;
}

const isCrLf = (c: number) => c === 0x0d || c === 0x0a;
const lowerAscii = (c: number) => (c >= 0x41 && c <= 0x5a ? c + 32 : c);

// ---- the scanners ------------------------------------------------------------------------------

/** Word lengths (in code points) of `cps` under the gpt2 / llama3 / qwen2 scanners. */
function scan(cps: Uint32Array, kind: 'gpt2' | 'llama3' | 'qwen2'): number[] {
  const n = cps.length;
  const out: number[] = [];
  const flags = (p: number) => (p < n ? flagsOf(cps[p]) : 0); // 0 past the end: no class
  const cpt = (p: number) => (p < n ? cps[p] : -1);
  let prevEnd = 0;
  const add = (end: number): number => {
    const len = end - prevEnd;
    if (len > 0) out.push(len);
    prevEnd = end;
    return len;
  };
  const caseFold = kind !== 'gpt2';
  for (let pos = 0; pos < n; ) {
    const c = cps[pos];
    const f = flags(pos);
    // contractions: 's 't 'm 'd 're 've 'll (case-insensitive except for gpt2)
    if (c === 0x27 && pos + 1 < n) {
      const c1 = caseFold ? lowerAscii(cpt(pos + 1)) : cpt(pos + 1);
      if (c1 === 0x73 || c1 === 0x74 || c1 === 0x6d || c1 === 0x64) {
        pos += add(pos + 2);
        continue;
      }
      if (pos + 2 < n) {
        const c2 = caseFold ? lowerAscii(cpt(pos + 2)) : cpt(pos + 2);
        if ((c1 === 0x72 && c2 === 0x65) || (c1 === 0x76 && c2 === 0x65) || (c1 === 0x6c && c2 === 0x6c)) {
          pos += add(pos + 3);
          continue;
        }
      }
    }
    if (kind === 'gpt2') {
      let f2 = c === 0x20 ? flags(pos + 1) : f;
      // ' ?\p{L}+' | ' ?\p{N}+' | ' ?[^\s\p{L}\p{N}]+'
      const cls = f2 & F_LETTER ? F_LETTER : f2 & F_NUMBER ? F_NUMBER : 0;
      if (cls !== 0) {
        if (c === 0x20) pos++;
        while (f2 & cls) f2 = flags(++pos);
        add(pos);
        continue;
      }
      if (!(f2 & (F_WHITESPACE | F_LETTER | F_NUMBER)) && f2 !== 0) {
        if (c === 0x20) pos++;
        while (!(f2 & (F_WHITESPACE | F_LETTER | F_NUMBER)) && f2 !== 0) f2 = flags(++pos);
        add(pos);
        continue;
      }
      let ws = 0;
      while (flags(pos + ws) & F_WHITESPACE) ws++;
      if (ws > 1 && pos + ws < n) {
        pos += ws - 1; // \s+(?!\S): leave the last space to the next word
        add(pos);
        continue;
      }
      if (ws > 0) {
        pos += ws;
        add(pos);
        continue;
      }
      add(++pos);
      continue;
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!(isCrLf(c) || f & F_NUMBER) && (f & F_LETTER || flags(pos + 1) & F_LETTER)) {
      pos++;
      while (flags(pos) & F_LETTER) pos++;
      add(pos);
      continue;
    }
    // \p{N}{1,3} (llama3) | \p{N} (qwen2)
    if (f & F_NUMBER) {
      if (kind === 'qwen2') {
        add(++pos);
        continue;
      }
      let ini = pos;
      while (flags(pos) & F_NUMBER) {
        if (++pos - ini >= 3) {
          add(pos);
          ini = pos;
        }
      }
      add(pos);
      continue;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    let f2 = c === 0x20 ? flags(pos + 1) : f;
    if (!(f2 & (F_WHITESPACE | F_LETTER | F_NUMBER)) && f !== 0) {
      if (c === 0x20) pos++;
      while (!(f2 & (F_WHITESPACE | F_LETTER | F_NUMBER)) && f2 !== 0) f2 = flags(++pos);
      while (isCrLf(cpt(pos))) pos++;
      add(pos);
      continue;
    }
    let ws = 0;
    let lastCrLfEnd = 0;
    while (flags(pos + ws) & F_WHITESPACE) {
      if (isCrLf(cps[pos + ws])) lastCrLfEnd = pos + ws + 1;
      ws++;
    }
    if (lastCrLfEnd > 0) {
      pos = lastCrLfEnd; // \s*[\r\n]+
      add(pos);
      continue;
    }
    if (ws > 1 && pos + ws < n) {
      pos += ws - 1;
      add(pos);
      continue;
    }
    if (ws > 0) {
      pos += ws;
      add(pos);
      continue;
    }
    add(++pos);
  }
  return out;
}

/** llama.cpp's tekken regex over the collapsed text (see top) */
const TEKKEN_COLLAPSED = new RegExp(
  [
    '[^\\r\\n\\xD2A-Za-z\\xD10-9]?((?=[\\xD2A-Za-z])([^a-z]))*((?=[\\xD2A-Za-z])([^A-Z]))+',
    '[^\\r\\n\\xD2A-Za-z\\xD10-9]?((?=[\\xD2A-Za-z])([^a-z]))+((?=[\\xD2A-Za-z])([^A-Z]))*',
    '[\\xD10-9]',
    ' ?[^\\s\\xD2A-Za-z\\xD10-9]+[\\r\\n/]*',
    '\\s*[\\r\\n]+',
    '\\s+(?!\\S)',
    '\\s+',
  ].join('|'),
  'g',
);

function collapse(cps: Uint32Array): string {
  let s = '';
  for (let i = 0; i < cps.length; i++) {
    const c = cps[i];
    if (c < 128) {
      s += String.fromCharCode(c);
      continue;
    }
    const f = flagsOf(c);
    s += String.fromCharCode(
      f & F_WHITESPACE ? 0x0b : f & F_NUMBER ? 0xd1 : f & F_LETTER ? 0xd2 : f & F_PUNCT ? 0xd3 : f & F_MARK ? 0xd4 : f & F_SYMBOL ? 0xd5 : 0xd0,
    );
  }
  return s;
}

function scanRegex(text: string, re: RegExp): number[] {
  const out: number[] = [];
  let last = 0;
  re.lastIndex = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    if (m[0].length === 0) {
      re.lastIndex++;
      continue;
    }
    if (m.index > last) out.push(m.index - last);
    out.push(m[0].length);
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(text.length - last);
  return out;
}

/** The words of `text` (as strings) under a pre-tokenizer. */
export function preTokenize(text: string, kind: PreTokenizerKind): string[] {
  const cps = Uint32Array.from(text, (ch) => ch.codePointAt(0)!);
  const lengths = kind === 'tekken' ? scanRegex(collapse(cps), TEKKEN_COLLAPSED) : scan(cps, kind);
  const words: string[] = [];
  let p = 0; // code points
  let u = 0; // UTF-16 units
  for (const len of lengths) {
    const from = u;
    for (const end = p + len; p < end; p++) u += cps[p] > 0xffff ? 2 : 1;
    words.push(text.slice(from, u));
  }
  return words;
}

// ---- GPT-2's byte <-> printable character map ----------------------------------------------------

/** byte -> the character standing for it in byte-level BPE vocabularies ('Ġ' for 0x20, ...) */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const map: string[] = new Array(256);
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) map[b] = String.fromCharCode(printable(b) ? b : 256 + n++);
  return map;
})();

/** character -> byte, the inverse of BYTE_TO_CHAR */
export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

const utf8 = new TextEncoder();

/** The byte-level form of a word: its UTF-8 bytes as BYTE_TO_CHAR characters. */
export function byteEncode(word: string): string {
  let s = '';
  for (const b of utf8.encode(word)) s += BYTE_TO_CHAR[b];
  return s;
}
