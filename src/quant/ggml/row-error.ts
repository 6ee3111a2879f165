/**
 * Per-row error sums of a quantized tensor (the quantize report's SQNR): for each row r of x (the
 * input) and y (its dequantized values), out[2r] = sum x^2 and out[2r + 1] = sum (x - y)^2.
 *
 * The arithmetic runs in a fixed order that the WebAssembly kernels (wasm/quant.ts rowErrors,
 * rowErrorsQ8_0) reproduce bit for bit: per 8 elements x[i..i+8) of a row, in float32, e = x - y and
 * lane j (0..3) takes x[i+j]^2 + x[i+j+4]^2 (e likewise), added to the lane's float64 sum; a row's sum
 * is (l0 + l2) + (l1 + l3). A row's last rowLength % 8 elements (float targets only) add x[k]^2 to
 * lane k mod 4. (Float32 squares lose nothing that matters to a dB figure; the float64 sums keep
 * large tensors exact enough.) Rows are independent, so a tensor's totals (the row sums added in row
 * order) do not depend on how its rows were split between threads or slabs.
 */
export function rowErrorSums(x: Float32Array, y: Float32Array, nRows: number, rowLength: number, out: Float64Array): void {
  if (x.length < nRows * rowLength || y.length < nRows * rowLength || out.length < 2 * nRows) throw new Error('rowErrorSums: arrays too short');
  const f = Math.fround; // float32 rounding of a float64 result: exactly float32 arithmetic for + - *
  const whole = rowLength - (rowLength % 8);
  for (let r = 0; r < nRows; r++) {
    const base = r * rowLength;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    let n0 = 0, n1 = 0, n2 = 0, n3 = 0;
    const end = base + whole;
    for (let i = base; i < end; i += 8) {
      const x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3], x4 = x[i + 4], x5 = x[i + 5], x6 = x[i + 6], x7 = x[i + 7];
      const e0 = f(x0 - y[i]), e1 = f(x1 - y[i + 1]), e2 = f(x2 - y[i + 2]), e3 = f(x3 - y[i + 3]);
      const e4 = f(x4 - y[i + 4]), e5 = f(x5 - y[i + 5]), e6 = f(x6 - y[i + 6]), e7 = f(x7 - y[i + 7]);
      s0 += f(f(x0 * x0) + f(x4 * x4));
      s1 += f(f(x1 * x1) + f(x5 * x5));
      s2 += f(f(x2 * x2) + f(x6 * x6));
      s3 += f(f(x3 * x3) + f(x7 * x7));
      n0 += f(f(e0 * e0) + f(e4 * e4));
      n1 += f(f(e1 * e1) + f(e5 * e5));
      n2 += f(f(e2 * e2) + f(e6 * e6));
      n3 += f(f(e3 * e3) + f(e7 * e7));
    }
    for (let k = whole; k < rowLength; k++) {
      const v = x[base + k];
      const e = f(v - y[base + k]);
      const sx = f(v * v);
      const se = f(e * e);
      switch (k & 3) {
        case 0: s0 += sx; n0 += se; break;
        case 1: s1 += sx; n1 += se; break;
        case 2: s2 += sx; n2 += se; break;
        default: s3 += sx; n3 += se;
      }
    }
    out[2 * r] = s0 + s2 + (s1 + s3);
    out[2 * r + 1] = n0 + n2 + (n1 + n3);
  }
}
