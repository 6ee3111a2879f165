import v8 from 'node:v8'; v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
const fs = await import('node:fs');
const { ptqOptions } = await import('./dist/src/algos/ptq-options.js');
const { defineRecipe, llamaRecipe, schemeRecipe } = await import('./dist/src/algos/recipe.js');
const { fileSource } = await import('./dist/src/cli/node-source.js');
const { openModelFile } = await import('./dist/src/io/model-file.js');
const { memorySink } = await import('./dist/src/io/sink.js');
const { bytesSource } = await import('./dist/src/io/source.js');
const { runPtq } = await import('./dist/src/pipeline/calibrate.js');
const { planQuantization, quantizeModel } = await import('./dist/src/pipeline/quantize.js');
const { evaluateBase, evaluateAgainst } = await import('./dist/src/pipeline/evaluate.js');
const { setMatmul } = await import('./dist/src/model/matmul.js');
const { gemmABt } = await import('./dist/src/kernels/gptq.js');
setMatmul(gemmABt);
const GGUF='data/stories260K.gguf';
const stories=fs.readFileSync('data/tinystories-valid-head.txt','utf8'); const calib=stories.slice(0,300000);
const sets=[stories.slice(500000), fs.readFileSync('data/wikitext-2-test.raw','utf8').slice(0,400000)];
const bases=[]; for (const t of sets) bases.push(await evaluateBase(fileSource(GGUF), t, {ctx:128, chunks:32}));
async function q(recipe, kind){const src=fileSource(GGUF);const m=await openModelFile(src);const plan=planQuantization(m,recipe,kind);const ptq=await runPtq(m,plan,{recipe,options:ptqOptions(recipe.ptq??{}),calibText:calib});const sink=memorySink();await quantizeModel(m,plan,sink,{ptq});src.close();return sink.bytes();}
const W=(r,algorithm,ptq)=>defineRecipe({...JSON.parse(JSON.stringify(r)),algorithm,ptq:{calibTokens:8192,calibCtx:256,seed:1,...ptq}});
const fmts = {Q4_K_M:[llamaRecipe('Q4_K_M'),'gguf'], int4:[schemeRecipe('int4',{groupSize:32}),'safetensors'], int3:[schemeRecipe('int3',{groupSize:32}),'safetensors']};
for (const f of process.argv[2].split(',')) for (const v of JSON.parse(process.argv[3])) {
  const [alg, opt] = v; const b = await q(W(fmts[f][0], alg, opt), fmts[f][1]);
  const k=[]; for (const base of bases) k.push((await evaluateAgainst(bytesSource(b,'x'), base, {ctx:128, chunks:32})).kld.mean.toFixed(5));
  console.log(f, alg, JSON.stringify(opt), k.join(' / '));
}
