/**
 * Where writers put bytes: a sequential sink. The CLI backs it with an AtomicFile (src/cli/files.ts);
 * tests and browsers use memorySink. Writers stream: header first, then one tensor at a time.
 */
export interface ByteSink {
  /**
   * Take the next bytes. The caller may reuse `bytes` once write has returned (or its promise has
   * resolved), unless the sink says otherwise (e.g. the CLI's pipelinedSink with depth > 0).
   */
  write(bytes: Uint8Array): void | Promise<void>;
}

/**
 * A container writer (GGUF, safetensors; ONNX will be another): constructed with the tensor list and
 * the metadata, it writes the header at begin(), then every tensor's bytes in the listed order (each
 * write may be a part of a tensor), and checks at end() that every tensor got exactly its bytes.
 */
export interface TensorWriter {
  begin(): Promise<void>;
  write(bytes: Uint8Array): Promise<void>;
  end(): Promise<void>;
}

/** Collects everything in memory (tests, small files, browsers). */
export interface MemorySink extends ByteSink {
  readonly length: number;
  bytes(): Uint8Array;
}

export function memorySink(): MemorySink {
  const parts: Uint8Array[] = [];
  let length = 0;
  return {
    get length() {
      return length;
    },
    write(b) {
      parts.push(b.slice());
      length += b.length;
    },
    bytes() {
      return concatParts(parts, length);
    },
  };
}

/** The parts one after another in one new array (`length`: their total, when the caller knows it). */
export function concatParts(parts: readonly Uint8Array[], length?: number): Uint8Array {
  const out = new Uint8Array(length ?? parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
