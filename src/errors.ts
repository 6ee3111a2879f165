/**
 * The one error type lowbit throws for bad input: an unknown format, a corrupt file, an impossible
 * shape, an out-of-range option. The CLI prints `message` as one line and exits with code 2;
 * anything else that escapes is a bug.
 */
export class LowbitError extends Error {
  override readonly name = 'LowbitError';
  constructor(message: string) {
    super(message);
  }
}

export function fail(message: string): never {
  throw new LowbitError(message);
}
