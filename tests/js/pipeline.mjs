// Runs one transformers.js pipeline on a local export and prints its answers as JSON:
//   node pipeline.mjs MODELS_DIR NAME TASK DTYPE < requests.json
// MODELS_DIR/NAME is the export folder; requests.json is a list of [inputs, options] pairs, one call each.
import { env, pipeline } from "@huggingface/transformers";
import { readFileSync } from "node:fs";

const [modelsDir, name, task, dtype] = process.argv.slice(2);
env.localModelPath = modelsDir.endsWith("/") ? modelsDir : modelsDir + "/";
env.allowRemoteModels = false; // offline: the export is read as it was written, nothing is fetched
env.allowLocalModels = true;

const pipe = await pipeline(task, name, { dtype, device: "cpu" });
const requests = JSON.parse(readFileSync(0, "utf-8"));
const answers = [];
for (const [inputs, options] of requests) {
  let out = task === "question-answering" ? await pipe(inputs.question, inputs.context, options)
                                          : await pipe(inputs, options);
  if (out && typeof out.tolist === "function") out = out.tolist(); // a Tensor (feature extraction)
  answers.push(out);
}
process.stdout.write(JSON.stringify(answers));
