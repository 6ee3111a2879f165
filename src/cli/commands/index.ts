import type { Command } from '../args.js';
import { castCommand } from './cast.js';
import { convertCommand } from './convert.js';
import { evalCommand } from './eval.js';
import { formatsCommand } from './formats.js';
import { generateCommand } from './generate.js';
import { imatrixCommand } from './imatrix.js';
import { inspectCommand } from './inspect.js';
import { quantizeCommand } from './quantize.js';
import { schemesCommand } from './schemes.js';

/** Every CLI command, in the order `lowbit --help` lists them. */
export const commands: readonly Command[] = [
  formatsCommand,
  schemesCommand,
  castCommand,
  inspectCommand,
  convertCommand,
  imatrixCommand,
  quantizeCommand,
  generateCommand,
  evalCommand,
];
