// What every golden records about the oracle: the node-llama-cpp version, llama.cpp's release
// and build commit, and the build.

import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

// The folder of an installed package (their exports maps hide package.json).
export function packageDir(name) {
  let dir = path.dirname(require.resolve(name));
  while (!fs.existsSync(path.join(dir, "package.json")) ||
         JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")).name !== name) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no package.json for ${name}`);
    dir = up;
  }
  return dir;
}

// llama.cpp's build commit as compiled into the prebuilt binary (LLAMA_COMMIT in
// libllama-common.so). Read with python3 ctypes when available; null otherwise.
function llamaCppCommit() {
  try {
    const binDir = path.join(packageDir("@node-llama-cpp/linux-x64"), "bins", "linux-x64");
    const r = spawnSync("python3", ["-c",
      "import ctypes;l=ctypes.CDLL('./libllama-common.so');" +
      "print(ctypes.c_char_p.in_dll(l,'LLAMA_COMMIT').value.decode())"],
      { cwd: binDir, env: { ...process.env, LD_LIBRARY_PATH: binDir }, encoding: "utf8" });
    return r.status === 0 ? r.stdout.trim() || null : null;
  } catch {
    return null;
  }
}

export function oracleInfo(llama) {
  const nlc = JSON.parse(fs.readFileSync(path.join(packageDir("node-llama-cpp"), "package.json"), "utf8"));
  return {
    node_llama_cpp: nlc.version,
    llama_cpp_release: llama.llamaCppRelease.release,
    llama_cpp_repo: llama.llamaCppRelease.repo,
    llama_cpp_commit: llamaCppCommit(),
    build: `${llama.buildType} ${process.platform}-${process.arch} ${llama.gpu === false ? "CPU" : llama.gpu}`,
  };
}
