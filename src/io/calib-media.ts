/**
 * Calibration inputs from media: an RGBA image resized and normalized into a model's input tensor, and
 * WAV audio (RIFF PCM 8/16/24/32-bit or IEEE float 32/64) mixed to mono and resampled.
 *
 * Image: resize to H x W (bilinear, half-pixel centres; 'fit' keeps the aspect ratio, scales the image to
 * the height (or less, to fit the width), and pads the right/bottom with 0 after normalization, as
 * PaddleOCR's recognizer does), then per channel (v / 255 - mean) / std, RGB or BGR, NCHW or NHWC.
 * WAV: chunks 'fmt ' (format 1 PCM or 3 float, or 0xFFFE extensible with either sub-format) and 'data';
 * samples to [-1, 1) (8-bit is unsigned with offset 128), channels averaged, linear resampling.
 */
import { fail } from '../errors.js';
import type { RgbaImage } from './png.js';

export interface ImagePrep {
  height: number;
  width: number;
  /** per-channel mean and std in 0..1 units (after / 255) */
  mean: readonly number[];
  std: readonly number[];
  layout: 'nchw' | 'nhwc';
  bgr?: boolean;
  resize: 'stretch' | 'fit';
}

/** the image as a [1, 3, H, W] (or [1, H, W, 3]) float32 tensor */
export function imageTensor(img: RgbaImage, p: ImagePrep): Float32Array {
  const { height: H, width: W } = p;
  let rh = H;
  let rw = W;
  if (p.resize === 'fit') {
    const r = Math.min(H / img.height, W / img.width);
    rh = Math.max(1, Math.min(H, Math.round(img.height * r)));
    rw = Math.max(1, Math.min(W, Math.round(img.width * r)));
  }
  const out = new Float32Array(3 * H * W);
  const sy = img.height / rh;
  const sx = img.width / rw;
  for (let y = 0; y < rh; y++) {
    const fy = Math.min(img.height - 1, Math.max(0, (y + 0.5) * sy - 0.5));
    const y0 = Math.floor(fy);
    const y1 = Math.min(img.height - 1, y0 + 1);
    const wy = fy - y0;
    for (let x = 0; x < rw; x++) {
      const fx = Math.min(img.width - 1, Math.max(0, (x + 0.5) * sx - 0.5));
      const x0 = Math.floor(fx);
      const x1 = Math.min(img.width - 1, x0 + 1);
      const wx = fx - x0;
      for (let c = 0; c < 3; c++) {
        const src = p.bgr ? 2 - c : c;
        const at = (yy: number, xx: number) => img.data[(yy * img.width + xx) * 4 + src];
        const v = (1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x1)) + wy * ((1 - wx) * at(y1, x0) + wx * at(y1, x1));
        const n = (v / 255 - p.mean[c]) / p.std[c];
        out[p.layout === 'nchw' ? (c * H + y) * W + x : (y * W + x) * 3 + c] = n;
      }
    }
  }
  return out;
}

export interface WavAudio {
  sampleRate: number;
  channels: number;
  /** mono samples in [-1, 1) */
  samples: Float32Array;
}

export function decodeWav(b: Uint8Array, name: string): WavAudio {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const tag = (o: number) => String.fromCharCode(b[o], b[o + 1], b[o + 2], b[o + 3]);
  if (b.length < 12 || tag(0) !== 'RIFF' || tag(8) !== 'WAVE') fail(`${name}: not a WAV file (no RIFF/WAVE header)`);
  let fmt: { format: number; channels: number; rate: number; bits: number } | undefined;
  let data: Uint8Array | undefined;
  for (let o = 12; o + 8 <= b.length; ) {
    const id = tag(o);
    const len = dv.getUint32(o + 4, true);
    if (o + 8 + len > b.length && id !== 'data') fail(`${name}: WAV chunk '${id}' of ${len} bytes past the end`);
    if (id === 'fmt ') {
      if (len < 16) fail(`${name}: WAV fmt chunk of ${len} bytes`);
      let format = dv.getUint16(o + 8, true);
      if (format === 0xfffe && len >= 40) format = dv.getUint16(o + 8 + 24, true);
      fmt = { format, channels: dv.getUint16(o + 10, true), rate: dv.getUint32(o + 12, true), bits: dv.getUint16(o + 22, true) };
    } else if (id === 'data') data = b.subarray(o + 8, Math.min(b.length, o + 8 + len));
    o += 8 + len + (len & 1);
  }
  if (!fmt) fail(`${name}: WAV without a fmt chunk`);
  if (!data) fail(`${name}: WAV without a data chunk`);
  const { format, channels, rate, bits } = fmt;
  if (!channels || !rate) fail(`${name}: WAV with ${channels} channels at ${rate} Hz`);
  const ok = (format === 1 && [8, 16, 24, 32].includes(bits)) || (format === 3 && (bits === 32 || bits === 64));
  if (!ok) fail(`${name}: WAV format ${format} with ${bits}-bit samples is not supported (PCM 8/16/24/32 or float 32/64)`);
  const bytes = bits / 8;
  const frames = Math.floor(data.length / (bytes * channels));
  const d = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const read = (o: number): number => {
    if (format === 3) return bits === 32 ? d.getFloat32(o, true) : d.getFloat64(o, true);
    switch (bits) {
      case 8:
        return (d.getUint8(o) - 128) / 128;
      case 16:
        return d.getInt16(o, true) / 32768;
      case 24:
        return ((d.getUint8(o) | (d.getUint8(o + 1) << 8) | (d.getInt8(o + 2) << 16)) as number) / 8388608;
      default:
        return d.getInt32(o, true) / 2147483648;
    }
  };
  const samples = new Float32Array(frames);
  for (let f = 0; f < frames; f++) {
    let s = 0;
    for (let c = 0; c < channels; c++) s += read((f * channels + c) * bytes);
    samples[f] = s / channels;
  }
  return { sampleRate: rate, channels, samples };
}

/** linear-interpolation resampling from `from` Hz to `to` Hz */
export function resample(x: Float32Array, from: number, to: number): Float32Array {
  if (from === to) return x;
  const n = Math.floor((x.length * to) / from);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const t = (i * from) / to;
    const i0 = Math.floor(t);
    const i1 = Math.min(x.length - 1, i0 + 1);
    out[i] = x[i0] + (x[i1] - x[i0]) * (t - i0);
  }
  return out;
}

/** a 16-bit PCM mono WAV (tests, test beds) */
export function encodeWav16(samples: Float32Array, sampleRate: number): Uint8Array {
  const out = new Uint8Array(44 + samples.length * 2);
  const dv = new DataView(out.buffer);
  const put = (o: number, s: string) => [...s].forEach((ch, i) => (out[o + i] = ch.charCodeAt(0)));
  put(0, 'RIFF');
  dv.setUint32(4, 36 + samples.length * 2, true);
  put(8, 'WAVE');
  put(12, 'fmt ');
  dv.setUint32(16, 16, true);
  dv.setUint16(20, 1, true);
  dv.setUint16(22, 1, true);
  dv.setUint32(24, sampleRate, true);
  dv.setUint32(28, sampleRate * 2, true);
  dv.setUint16(32, 2, true);
  dv.setUint16(34, 16, true);
  put(36, 'data');
  dv.setUint32(40, samples.length * 2, true);
  samples.forEach((v, i) => dv.setInt16(44 + 2 * i, Math.max(-32768, Math.min(32767, Math.round(v * 32768))), true));
  return out;
}
