// Features of a frozen nsfwjs network for benchmarks/frozen_probe.py (see its docstring for the steps).
//
//   node benchmarks/frozen_probe.js WORK LAYER[,LAYER...] [MODEL] [SCALE]
//
// WORK is the folder `frozen_probe.py prep` filled (N x 224 x 224 x 3 uint8 arrays, one file per
// treatment) and where nsfwjs and TensorFlow.js were installed with `npm install --prefix WORK ...`.
// MODEL is an nsfwjs model name (default MobileNetV2; LAYER: a layer name) or the model.json of a
// TensorFlow.js graph model (LAYER: a node name, e.g. global_pooling/Mean); faces are resized to its
// input size. Pixels are scaled to 0-SCALE (default 1, as nsfwjs's own classify does).
// For each treatment and layer it writes WORK/feat/MODEL_LAYER_TREATMENT.f32 (N x channels float32,
// '/' in LAYER written as '_'): the output, averaged over the image when it is a feature map.
// Runs on TensorFlow.js's WebAssembly backend (CPU).
const fs = require('fs');
const path = require('path');

const [work, layerArg, modelArg = 'MobileNetV2', scaleArg = '1'] = process.argv.slice(2);
if (!work || !layerArg) {
  console.error('usage: node benchmarks/frozen_probe.js WORK LAYER[,LAYER...] [MODEL] [SCALE]');
  process.exit(2);
}
const need = (name) => require(require.resolve(name, { paths: [path.resolve(work)] }));
const tf = need('@tensorflow/tfjs');
need('@tensorflow/tfjs-backend-wasm');
const nsfwjs = need('nsfwjs');

// A graph model's model.json and weight files read from disk (TensorFlow.js without tfjs-node has no file://).
function fromFiles(json) {
  return {
    load: async () => {
      const m = JSON.parse(fs.readFileSync(json));
      const paths = m.weightsManifest.flatMap((group) => group.paths);
      const data = Buffer.concat(paths.map((p) => fs.readFileSync(path.join(path.dirname(json), p))));
      return {
        modelTopology: m.modelTopology,
        weightSpecs: m.weightsManifest.flatMap((group) => group.weights),
        weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.length),
        format: m.format,
        signature: m.signature,
        userDefinedMetadata: m.userDefinedMetadata,
      };
    },
  };
}

// (run, input size, name): run maps a float batch to one tensor per requested layer.
async function open(names) {
  if (modelArg.endsWith('.json')) {
    const graph = await tf.loadGraphModel(fromFiles(modelArg));
    return [(x) => graph.execute(x, names), graph.inputs[0].shape[1], path.basename(modelArg, '.json')];
  }
  const net = await nsfwjs.load(modelArg);
  const layers = names.map((name) => {
    const layer = net.model.layers.find((l) => l.name === name);
    if (!layer) throw new Error(`no layer ${name}; the model has: ${net.endpoints.join(' ')}`);
    return layer;
  });
  const sub = tf.model({ inputs: net.model.inputs, outputs: layers.map((l) => l.output) });
  return [(x) => sub.predict(x), net.options.size, modelArg];
}

(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
  const names = layerArg.split(',');
  const [run, inputSize, modelName] = await open(names);
  const size = 224; // what frozen_probe.py prep writes
  const scale = Number(scaleArg);
  const treatments = fs.readdirSync(work).filter((f) => f.endsWith('.u8')).map((f) => f.slice(0, -3));
  fs.mkdirSync(path.join(work, 'feat'), { recursive: true });
  const per = size * size * 3;
  const batch = 32;
  for (const treatment of treatments) {
    const pixels = fs.readFileSync(path.join(work, `${treatment}.u8`));
    const n = pixels.length / per;
    if (!Number.isInteger(n)) throw new Error(`${treatment}.u8 is not a whole number of ${size} px images`);
    const outs = names.map((name) => fs.openSync(path.join(work, 'feat', `${modelName}_${name.replaceAll('/', '_')}_${treatment}.f32`), 'w'));
    const start = Date.now();
    for (let i = 0; i < n; i += batch) {
      const k = Math.min(batch, n - i);
      const ys = tf.tidy(() => {
        const view = new Uint8Array(pixels.buffer, pixels.byteOffset + i * per, k * per);
        let x = tf.tensor4d(view, [k, size, size, 3], 'int32').toFloat().div(255).mul(scale);
        if (inputSize !== size) x = tf.image.resizeBilinear(x, [inputSize, inputSize]);
        const y = run(x);
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
