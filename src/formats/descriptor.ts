/**
 * Number-format descriptors. A format is one frozen object; its limits are derived from its fields,
 * never written by hand. "Mantissa bits" always means stored bits (no implicit leading one).
 *
 * Specials policies (exponent field all ones = "top exponent"):
 *   ieee  top exponent: mantissa 0 = ±inf, others NaN                    (fp16, bf16, e5m2, fp32)
 *   fn    finite only; the all-ones pattern (S.1..1.1..1) is NaN        (e4m3fn, e8m0)
 *   fnuz  finite only, no -0; the negative-zero pattern 1.0..0.0..0 is the single NaN (e4m3fnuz)
 *   none  every code is a finite number                                 (e2m1, e2m3, e3m2)
 */
export type Specials = 'ieee' | 'fn' | 'fnuz' | 'none';

export interface FloatSpec {
  readonly name: string;
  /** exponent field width */
  readonly expBits: number;
  /** stored mantissa width (no implicit bit) */
  readonly manBits: number;
  readonly bias: number;
  /** has a sign bit (false for e8m0) */
  readonly signed?: boolean;
  /** exponent field 0 encodes subnormals (true) or is flushed to zero (false) */
  readonly subnormals?: boolean;
  /** false: exponent field 0 is an ordinary binade and there is no zero (e8m0) */
  readonly hasZero?: boolean;
  readonly specials: Specials;
  readonly description?: string;
}

export interface FloatFormat {
  readonly kind: 'float';
  readonly name: string;
  readonly description: string;
  readonly bits: number;
  readonly signed: boolean;
  readonly expBits: number;
  readonly manBits: number;
  readonly bias: number;
  readonly subnormals: boolean;
  readonly hasZero: boolean;
  readonly specials: Specials;
  /** smallest exponent of a normal number: 1 - bias, or -bias when field 0 is a normal binade */
  readonly emin: number;
  readonly maxFinite: number;
  readonly minNormal: number;
  /** smallest positive value (= minNormal without subnormals) */
  readonly minSubnormal: number;
  readonly hasInf: boolean;
  readonly hasNaN: boolean;
  readonly hasNegZero: boolean;
  /** number of distinct finite values (+0 and -0 count once) */
  readonly finiteCount: number;
  /** the code written for NaN (positive-sign pattern where there is a choice); -1 if none */
  readonly nanCode: number;
  /** the code written for +inf; -1 if none */
  readonly infCode: number;
}

export interface IntFormat {
  readonly kind: 'int';
  readonly name: string;
  readonly description: string;
  readonly bits: number;
  readonly signed: boolean;
  readonly qmin: number;
  readonly qmax: number;
  readonly expBits: 0;
  readonly manBits: number;
  readonly bias: 0;
  readonly maxFinite: number;
  readonly minNormal: number;
  readonly minSubnormal: number;
  readonly hasInf: false;
  readonly hasNaN: false;
  readonly hasNegZero: false;
  readonly finiteCount: number;
}

export interface CodebookFormat {
  readonly kind: 'codebook';
  readonly name: string;
  readonly description: string;
  readonly bits: number;
  /** value of each code, as float32 */
  readonly levels: Float32Array;
  /** level values ascending, with the code of each (ties between equal values: lowest code) */
  readonly sortedValues: Float64Array;
  readonly sortedCodes: Uint16Array;
  readonly expBits: 0;
  readonly manBits: 0;
  readonly bias: 0;
  readonly maxFinite: number;
  readonly minNormal: number;
  readonly minSubnormal: number;
  readonly hasInf: false;
  readonly hasNaN: false;
  readonly hasNegZero: boolean;
  readonly finiteCount: number;
}

export type Format = FloatFormat | IntFormat | CodebookFormat;
