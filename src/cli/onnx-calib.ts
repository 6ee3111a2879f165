/**
 * Calibration samples for `lowbit quantize model.onnx`: each sample is a feed per model input, read from
 *   .npy (single-input models) / .npz (one array per input name): the model's own inputs;
 *   .png and baseline .jpg images: decoded (io/png.ts, io/jpeg.ts), resized and normalized (--calib-size, --calib-mean, --calib-std,
 *     --calib-layout, --calib-bgr, --calib-resize) into the model's single image input;
 *   .wav audio: mono, resampled to --calib-rate, cut into frames of --calib-window samples (default the
 *     audio input's static last dimension, else 512); the model's other inputs get the sample rate
 *     (int64 inputs named like 'sr') or zeros, and a recurrent state input X is carried from the output
 *     named XN / Xn / X_out by running the model over each file's frames in order (Silero VAD's state).
 * A file or a folder of such files (sorted by name).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { inflateRawSync, inflateSync } from 'node:zlib';
import { fail } from '../errors.js';
import { decodeWav, imageTensor, resample, type ImagePrep } from '../io/calib-media.js';
import { readNpy, readNpz, type NpyArray } from '../io/npy.js';
import { decodePng } from '../io/png.js';
import { decodeJpeg } from '../io/jpeg.js';
import type { ModelProto } from '../io/onnx/schema.js';
import type { OptionSpec } from './args.js';
import type { ParsedArgs } from './args.js';
import { ortSession, type Feeds } from './onnx-runtime.js';

export const CALIB_MEDIA_OPTIONS: readonly OptionSpec[] = [
  { name: 'calib-size', type: 'string', help: 'ONNX calibration images: HxW the images are resized to (default: the model input\'s static size)' },
  { name: 'calib-mean', type: 'string', help: 'ONNX calibration images: per-channel mean in 0..1 units', default: '0.485,0.456,0.406' },
  { name: 'calib-std', type: 'string', help: 'ONNX calibration images: per-channel std in 0..1 units', default: '0.229,0.224,0.225' },
  { name: 'calib-layout', type: 'string', choices: ['nchw', 'nhwc'], help: 'ONNX calibration images: tensor layout (default: from the model input\'s shape)' },
  { name: 'calib-bgr', type: 'boolean', help: 'ONNX calibration images: channels in BGR order' },
  { name: 'calib-resize', type: 'string', choices: ['stretch', 'fit'], default: 'stretch', help: 'ONNX calibration images: stretch to the size, or fit keeping the aspect ratio and pad with 0 (PaddleOCR rec)' },
  { name: 'calib-rate', type: 'int', min: 1000, max: 384000, default: 16000, help: 'ONNX calibration WAV: sample rate the audio is resampled to (Hz)' },
  { name: 'calib-window', type: 'int', min: 1, help: 'ONNX calibration WAV: samples per model run (default: the audio input\'s static last dimension, else 512)' },
];

interface InputInfo {
  name: string;
  elemType: number;
  dims: (number | undefined)[];
}

export function modelInputs(m: ModelProto): InputInfo[] {
  const inits = new Set((m.graph?.initializer ?? []).map((t) => t.name));
  return (m.graph?.input ?? [])
    .filter((v) => !inits.has(v.name))
    .map((v) => ({
      name: v.name ?? '',
      elemType: v.type?.tensor_type?.elem_type ?? 1,
      dims: (v.type?.tensor_type?.shape?.dim ?? []).map((d) => (d.dim_value !== undefined && Number(d.dim_value) > 0 ? Number(d.dim_value) : undefined)),
    }));
}

const f32 = (shape: number[], data: Float32Array): NpyArray => ({ type: 'float32', shape, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
const numbers = (s: string, opt: string, n: number) => {
  const v = s.split(',').map(Number);
  if (v.length !== n || v.some((x) => !Number.isFinite(x))) fail(`--${opt} ${s}: ${n} comma-separated numbers expected`);
  return v;
};

function imagePrep(a: ParsedArgs, input: InputInfo): ImagePrep {
  const d = input.dims;
  if (d.length !== 4) fail(`calibration images need a 4-D image input; ${input.name} has ${d.length} dimensions`);
  const layout = (a.values['calib-layout'] as 'nchw' | 'nhwc' | undefined) ?? (d[3] === 3 && d[1] !== 3 ? 'nhwc' : 'nchw');
  let [H, W] = layout === 'nchw' ? [d[2], d[3]] : [d[1], d[2]];
  const size = a.values['calib-size'] as string | undefined;
  if (size) {
    const m = /^(\d+)x(\d+)$/.exec(size) ?? fail(`--calib-size ${size}: HxW expected (e.g. 48x320)`);
    [H, W] = [Number(m[1]), Number(m[2])];
  }
  if (!H || !W) fail(`${input.name} has a dynamic image size: give --calib-size HxW`);
  const std = numbers(a.values['calib-std'] as string, 'calib-std', 3);
  if (std.some((s) => s === 0)) fail('--calib-std: a std of 0');
  return { height: H, width: W, mean: numbers(a.values['calib-mean'] as string, 'calib-mean', 3), std, layout, bgr: a.values['calib-bgr'] as boolean, resize: a.values['calib-resize'] as 'stretch' | 'fit' };
}

/** Calibration samples from `p` (see the file header). `model` is the model's bytes or path, for state carrying. */
export async function readCalibration(p: string, m: ModelProto, a: ParsedArgs, max = Infinity, model?: Uint8Array | string): Promise<Feeds[]> {
  if (!fs.existsSync(p)) fail(`--calib ${p} does not exist`);
  const inputs = modelInputs(m);
  const inputNames = inputs.map((i) => i.name);
  const files = fs.statSync(p).isDirectory()
    ? fs
        .readdirSync(p)
        .filter((f) => /\.(npy|npz|png|jpe?g|wav)$/i.test(f))
        .sort()
        .map((f) => path.join(p, f))
    : [p];
  if (!files.length) fail(`--calib ${p}: no .npy, .npz, .png, .jpg or .wav files`);
  const out: Feeds[] = [];
  for (const f of files) {
    if (out.length >= max) break;
    const bytes = new Uint8Array(fs.readFileSync(f));
    if (/\.npz$/i.test(f)) {
      const arrays = readNpz(bytes, f, (d) => new Uint8Array(inflateRawSync(d)));
      const feeds: Feeds = {};
      for (const name of inputNames) feeds[name] = arrays.get(name) ?? fail(`${f}: no array named '${name}' (model inputs: ${inputNames.join(', ')}; arrays: ${[...arrays.keys()].join(', ')})`);
      out.push(feeds);
    } else if (/\.npy$/i.test(f)) {
      if (inputNames.length !== 1) fail(`${f}: a .npy holds one array, the model has ${inputNames.length} inputs (${inputNames.join(', ')}); use .npz files named by input`);
      out.push({ [inputNames[0]]: readNpy(bytes, f) });
    } else if (/\.(png|jpe?g)$/i.test(f)) {
      if (inputs.length !== 1) fail(`${f}: images calibrate single-input models; this one has ${inputNames.join(', ')}`);
      const prep = imagePrep(a, inputs[0]);
      const img = /\.png$/i.test(f) ? decodePng(bytes, f, (d) => new Uint8Array(inflateSync(d))) : decodeJpeg(bytes, f);
      out.push({ [inputNames[0]]: f32(prep.layout === 'nchw' ? [1, 3, prep.height, prep.width] : [1, prep.height, prep.width, 3], imageTensor(img, prep)) });
    } else {
      const frames = await audioFeeds(decodeWav(bytes, f), inputs, a, f, model);
      out.push(...frames.slice(0, max - out.length));
    }
  }
  return out;
}

async function audioFeeds(wav: ReturnType<typeof decodeWav>, inputs: InputInfo[], a: ParsedArgs, file: string, model?: Uint8Array | string): Promise<Feeds[]> {
  const rate = a.values['calib-rate'] as number;
  const audio = inputs.find((i) => i.elemType === 1 && i.dims.length <= 2) ?? fail(`${file}: the model has no 1-D or 2-D float input to take audio`);
  const window = (a.values['calib-window'] as number | undefined) ?? audio.dims[audio.dims.length - 1] ?? 512;
  const x = resample(wav.samples, wav.sampleRate, rate);
  const nFrames = Math.floor(x.length / window);
  if (!nFrames) fail(`${file}: ${x.length} samples at ${rate} Hz, shorter than one window of ${window}`);
  const others = inputs.filter((i) => i !== audio);
  const fixed: Feeds = {};
  for (const i of others) {
    const shape = i.dims.map((d) => d ?? 1);
    const n = shape.reduce((s, v) => s * v, 1);
    if (i.elemType === 7) fixed[i.name] = { type: 'int64', shape, data: new Uint8Array(BigInt64Array.from({ length: n }, () => (/(^|_)(sr|rate|sample_?rate)$/i.test(i.name) ? BigInt(rate) : 0n)).buffer) };
    else if (i.elemType === 1) fixed[i.name] = f32(shape, new Float32Array(n));
    else fail(`${file}: cannot make a value for the model input ${i.name} (type ${i.elemType}) from audio`);
  }
  const shape = audio.dims.length === 2 ? [1, window] : [window];
  const feeds: Feeds[] = [];
  for (let k = 0; k < nFrames; k++) feeds.push({ ...fixed, [audio.name]: f32(shape, x.slice(k * window, (k + 1) * window)) });
  // recurrent state: run the frames in order, each frame's state is the previous frame's output
  if (model && others.some((i) => i.elemType === 1)) {
    const s = await ortSession(model);
    try {
      const carry = others.filter((i) => i.elemType === 1).flatMap((i) => {
        const o = [`${i.name}N`, `${i.name}n`, `${i.name}_out`].find((n) => s.outputNames.includes(n));
        return o ? [[i.name, o] as const] : [];
      });
      if (carry.length)
        for (let k = 0; k + 1 < feeds.length; k++) {
          const r = await s.run(feeds[k], carry.map((c) => c[1]));
          for (const [inName, outName] of carry) {
            const t = r.get(outName)!;
            feeds[k + 1][inName] = f32(t.dims, Float32Array.from(t.data));
          }
        }
    } finally {
      await s.release();
    }
  }
  return feeds;
}
