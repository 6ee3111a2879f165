/** Training: backward pass, optimizers, low-precision training, QAT (the library API). */
export { gemmRef, referenceBackend, wasmBackend, type Backend, type Vec } from './gemm.js';
export { TrainModel, trainModelFloats, paramLayout, checkTrainConfig, exactLinear, type TrainConfig, type LinearOp, type ParamTensor, type TrainModelOptions } from './llama-grad.js';
export { AdamW, learningRate, gradNorm, DEFAULT_OPTIM, type OptimOptions, type Schedule } from './optim.js';
export { Rng, sampleBatch, evalBatches, type Batch } from './data.js';
export { Trainer, DEFAULT_TRAIN, evalLoss, checkpointBytes, restoreCheckpoint, readCheckpointHead, NonFiniteLoss, type TrainOptions, type StepResult } from './trainer.js';
export { PRECISIONS, applyPrecision, type Precision } from './precision.js';
export { Qat, QAT_METHODS, dgeScale, distillationLoss, type QatMethod, type WeightCodec } from './qat.js';
export { quantizeOperand, quantizedLinear, modeSpec, dgeFactors, type OperandQuant, type PrecisionOp } from './precision.js';
export { trainingReportHtml, type RunCurve } from './report-html.js';
export type { TrainHooks } from './trainer.js';
