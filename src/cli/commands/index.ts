import type { Command } from '../args.js';

/**
 * Every CLI command by name, in the order `lowbit --help` lists them. Each module is imported only
 * when its command runs (or for the full help): loading all of them costs about 0.1 s of start-up,
 * which a short `lowbit cast` pays in full.
 */
const loaders: Record<string, () => Promise<Command>> = {
  formats: async () => (await import('./formats.js')).formatsCommand,
  schemes: async () => (await import('./schemes.js')).schemesCommand,
  cast: async () => (await import('./cast.js')).castCommand,
  inspect: async () => (await import('./inspect.js')).inspectCommand,
  convert: async () => (await import('./convert.js')).convertCommand,
  imatrix: async () => (await import('./imatrix.js')).imatrixCommand,
  quantize: async () => (await import('./quantize.js')).quantizeCommand,
  generate: async () => (await import('./generate.js')).generateCommand,
  eval: async () => (await import('./eval.js')).evalCommand,
  sensitivity: async () => (await import('./sensitivity.js')).sensitivityCommand,
  audit: async () => (await import('./audit.js')).auditCommand,
  attack: async () => (await import('./audit.js')).attackCommand,
  train: async () => (await import('./train.js')).trainCommand,
  qat: async () => (await import('./qat.js')).qatCommand,
};

export const commandNames: readonly string[] = Object.keys(loaders);

/** The command named `name`, or undefined. */
export async function loadCommand(name: string): Promise<Command | undefined> {
  const load = Object.hasOwn(loaders, name) ? loaders[name] : undefined;
  return load ? await load() : undefined;
}

/** Every command, in help order. */
export async function loadCommands(): Promise<Command[]> {
  return Promise.all(commandNames.map((n) => loaders[n]()));
}
