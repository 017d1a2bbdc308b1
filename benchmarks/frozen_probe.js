// Features of a frozen nsfwjs network for benchmarks/frozen_probe.py (see its docstring for the steps).
//
//   node benchmarks/frozen_probe.js WORK LAYER[,LAYER...] [MODEL]
//
// WORK is the folder `frozen_probe.py prep` filled (N x 224 x 224 x 3 uint8 arrays, one file per
// treatment) and where nsfwjs and TensorFlow.js were installed with `npm install --prefix WORK ...`.
// For each treatment and layer it writes WORK/feat/MODEL_LAYER_TREATMENT.f32 (N x channels float32):
// the layer's output, averaged over the image when it is a feature map. Pixels are scaled to 0-1,
// as nsfwjs's own classify does. Runs on TensorFlow.js's WebAssembly backend (CPU).
const fs = require('fs');
const path = require('path');

const [work, layerArg, modelName = 'MobileNetV2'] = process.argv.slice(2);
if (!work || !layerArg) {
  console.error('usage: node benchmarks/frozen_probe.js WORK LAYER[,LAYER...] [MODEL]');
  process.exit(2);
}
const need = (name) => require(require.resolve(name, { paths: [path.resolve(work)] }));
const tf = need('@tensorflow/tfjs');
need('@tensorflow/tfjs-backend-wasm');
const nsfwjs = need('nsfwjs');

(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
  const net = await nsfwjs.load(modelName);
  const size = net.options.size;
  const names = layerArg.split(',');
  const layers = names.map((name) => {
    const layer = net.model.layers.find((l) => l.name === name);
    if (!layer) throw new Error(`no layer ${name}; the model has: ${net.endpoints.join(' ')}`);
    return layer;
  });
  const sub = tf.model({ inputs: net.model.inputs, outputs: layers.map((l) => l.output) });
  const treatments = fs.readdirSync(work).filter((f) => f.endsWith('.u8')).map((f) => f.slice(0, -3));
  fs.mkdirSync(path.join(work, 'feat'), { recursive: true });
  const per = size * size * 3;
  const batch = 32;
  for (const treatment of treatments) {
    const pixels = fs.readFileSync(path.join(work, `${treatment}.u8`));
    const n = pixels.length / per;
    if (!Number.isInteger(n)) throw new Error(`${treatment}.u8 is not a whole number of ${size} px images`);
    const outs = names.map((name) => fs.openSync(path.join(work, 'feat', `${modelName}_${name}_${treatment}.f32`), 'w'));
    const start = Date.now();
    for (let i = 0; i < n; i += batch) {
      const k = Math.min(batch, n - i);
      const ys = tf.tidy(() => {
        const view = new Uint8Array(pixels.buffer, pixels.byteOffset + i * per, k * per);
        const x = tf.tensor4d(view, [k, size, size, 3], 'int32').toFloat().div(255);
        const y = sub.predict(x);
        return (Array.isArray(y) ? y : [y]).map((t) => (t.rank === 4 ? t.mean([1, 2]) : t.reshape([k, -1])));
      });
      for (let j = 0; j < ys.length; j++) {
        fs.writeSync(outs[j], Buffer.from((await ys[j].data()).buffer));
        ys[j].dispose();
      }
    }
    outs.forEach((fd) => fs.closeSync(fd));
    console.log(`${treatment}: ${n} images in ${((Date.now() - start) / 1000).toFixed(0)} s`);
  }
})();
