// Test fixtures the browser tests generate and the test server serves at /fixtures/
// (target/browser-fixtures, or $QUANTWEB_FIXTURES_DIR, relative to the repository).
//
// `splitGguf` writes a GGUF as llama.cpp shards (`NAME-0000i-of-0000N.gguf`: the first holds
// all metadata, every shard `split.no` (0-based u16), `split.count` (u16) and
// `split.tensors.count` (i32), its own tensor infos and data), the layout `llama-gguf-split`
// produces and crate/tests/real_models.rs builds with GgufWriter. Metadata is copied as raw
// bytes, tensor data verbatim.
import { readFileSync, writeFileSync, mkdirSync, existsSync, statSync, openSync, writeSync, closeSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const fixturesDir = process.env.QUANTWEB_FIXTURES_DIR
  ? path.resolve(root, process.env.QUANTWEB_FIXTURES_DIR)
  : path.join(root, 'target', 'browser-fixtures');

const SCALAR_BYTES = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

/** Parses a GGUF header: raw kv byte ranges, tensor infos, alignment, data start. */
function parseHeader(buf) {
  let p = 0;
  const u32 = () => { const v = buf.readUInt32LE(p); p += 4; return v; };
  const u64 = () => { const v = Number(buf.readBigUInt64LE(p)); p += 8; return v; };
  const str = () => { const n = u64(); const s = buf.toString('utf8', p, p + n); p += n; return s; };
  const skipValue = (type) => {
    if (type in SCALAR_BYTES) p += SCALAR_BYTES[type];
    else if (type === 8) { const n = u64(); p += n; }
    else if (type === 9) {
      const t = u32();
      const n = u64();
      if (t in SCALAR_BYTES) p += n * SCALAR_BYTES[t];
      else for (let i = 0; i < n; i++) skipValue(t);
    } else throw new Error(`GGUF value type ${type}?`);
  };
  if (buf.toString('latin1', 0, 4) !== 'GGUF') throw new Error('not a GGUF file');
  p = 4;
  const version = u32();
  const nTensors = u64();
  const nKv = u64();
  const kvs = [];
  let alignment = 32;
  for (let i = 0; i < nKv; i++) {
    const start = p;
    const key = str();
    const type = u32();
    const vStart = p;
    skipValue(type);
    if (key === 'general.alignment') alignment = buf.readUInt32LE(vStart);
    kvs.push({ key, raw: buf.subarray(start, p) });
  }
  const tensors = [];
  for (let i = 0; i < nTensors; i++) {
    const start = p;
    const name = str();
    const nd = u32();
    p += 8 * nd;
    u32();
    const offPos = p;
    const offset = u64();
    tensors.push({ name, infoNoOffset: buf.subarray(start, offPos), offset });
  }
  const dataStart = Math.ceil(p / alignment) * alignment;
  const byOffset = [...tensors].sort((a, b) => a.offset - b.offset);
  byOffset.forEach((t, i) => {
    const end = i + 1 < byOffset.length ? byOffset[i + 1].offset : buf.length - dataStart;
    t.size = end - t.offset;
  });
  return { version, kvs, tensors, alignment, dataStart };
}

function kvBytes(key, type, value) {
  const k = Buffer.from(key, 'utf8');
  const head = Buffer.alloc(8 + k.length + 4);
  head.writeBigUInt64LE(BigInt(k.length), 0);
  k.copy(head, 8);
  head.writeUInt32LE(type, 8 + k.length);
  let v;
  if (type === 2) { v = Buffer.alloc(2); v.writeUInt16LE(value); }
  else if (type === 5) { v = Buffer.alloc(4); v.writeInt32LE(value); }
  else throw new Error('kv type');
  return Buffer.concat([head, v]);
}

/** A GGUF header from raw kv records and tensor infos (without offsets), padded to `alignment`. */
function encodeHeader(version, kvs, infos, offsets, alignment) {
  const head = Buffer.alloc(24);
  head.write('GGUF', 0, 'latin1');
  head.writeUInt32LE(version, 4);
  head.writeBigUInt64LE(BigInt(infos.length), 8);
  head.writeBigUInt64LE(BigInt(kvs.length), 16);
  const parts = [head, ...kvs];
  infos.forEach((info, i) => {
    const o = Buffer.alloc(8);
    o.writeBigUInt64LE(BigInt(offsets[i]));
    parts.push(info, o);
  });
  const header = Buffer.concat(parts);
  return Buffer.concat([header, Buffer.alloc(Math.ceil(header.length / alignment) * alignment - header.length)]);
}

/**
 * Writes `src` with an F32 tensor `pad.hole` of `holeBytes` in front of its tensors, as a sparse
 * file (the hole takes no disk space), so that every real tensor starts beyond `holeBytes`: the
 * layout of crate/tests/big.rs, for loading a > 4 GiB model in the browser. Returns `out`.
 */
export function withHole(src, out, holeBytes) {
  if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) return out;
  const buf = readFileSync(src);
  const h = parseHeader(buf);
  const name = Buffer.from('pad.hole');
  const hole = Buffer.alloc(8 + name.length + 4 + 8 + 4);
  hole.writeBigUInt64LE(BigInt(name.length), 0);
  name.copy(hole, 8);
  hole.writeUInt32LE(1, 8 + name.length);
  hole.writeBigUInt64LE(BigInt(holeBytes / 4), 12 + name.length);
  hole.writeUInt32LE(0, 20 + name.length); // F32
  const shift = Math.ceil(holeBytes / h.alignment) * h.alignment;
  const header = encodeHeader(h.version, h.kvs.map((k) => k.raw), [hole, ...h.tensors.map((t) => t.infoNoOffset)], [0, ...h.tensors.map((t) => t.offset + shift)], h.alignment);
  mkdirSync(path.dirname(out), { recursive: true });
  const fd = openSync(out, 'w');
  try {
    writeSync(fd, header, 0, header.length, 0);
    const data = buf.subarray(h.dataStart);
    writeSync(fd, data, 0, data.length, header.length + shift);
  } finally {
    closeSync(fd);
  }
  return out;
}

/**
 * Splits `src` into `count` shards in `outDir` named `${stem}-0000i-of-0000N.gguf` (tensor
 * groups as in real_models.rs for 3: the first tensor, then halves). Returns their paths.
 * Skips the work when the files exist and are newer than `src`.
 */
export function splitGguf(src, outDir, stem, count = 3) {
  const names = Array.from({ length: count }, (_, i) => path.join(outDir, `${stem}-${String(i + 1).padStart(5, '0')}-of-${String(count).padStart(5, '0')}.gguf`));
  const srcTime = statSync(src).mtimeMs;
  if (names.every((n) => existsSync(n) && statSync(n).mtimeMs >= srcTime)) return names;
  mkdirSync(outDir, { recursive: true });
  const buf = readFileSync(src);
  const h = parseHeader(buf);
  const n = h.tensors.length;
  const cuts = count === 3 ? [0, 1, Math.floor(n / 2), n] : Array.from({ length: count + 1 }, (_, i) => Math.round((i * n) / count));
  for (let s = 0; s < count; s++) {
    const group = h.tensors.slice(cuts[s], cuts[s + 1]);
    const kvs = s === 0 ? h.kvs.map((k) => k.raw) : h.kvs.filter((k) => k.key === 'general.alignment').map((k) => k.raw);
    kvs.push(kvBytes('split.no', 2, s), kvBytes('split.count', 2, count), kvBytes('split.tensors.count', 5, n));
    const offsets = [];
    let off = 0;
    for (const t of group) {
      offsets.push(off);
      off += Math.ceil(t.size / h.alignment) * h.alignment;
    }
    const header = encodeHeader(h.version, kvs, group.map((t) => t.infoNoOffset), offsets, h.alignment);
    const data = Buffer.alloc(off);
    let at = 0;
    for (const t of group) {
      buf.copy(data, at, h.dataStart + t.offset, h.dataStart + t.offset + t.size);
      at += Math.ceil(t.size / h.alignment) * h.alignment;
    }
    writeFileSync(names[s], Buffer.concat([header, data]));
  }
  return names;
}

/**
 * Copies `src` to `out` with `tokenizer.chat_template` set to `template` (tensor data and the
 * other metadata unchanged). Returns `out`.
 */
export function withChatTemplate(src, out, template) {
  const buf = readFileSync(src);
  const h = parseHeader(buf);
  const key = Buffer.from('tokenizer.chat_template');
  const value = Buffer.from(template, 'utf8');
  const kv = Buffer.alloc(8 + key.length + 4 + 8 + value.length);
  kv.writeBigUInt64LE(BigInt(key.length), 0);
  key.copy(kv, 8);
  kv.writeUInt32LE(8, 8 + key.length); // string
  kv.writeBigUInt64LE(BigInt(value.length), 12 + key.length);
  value.copy(kv, 20 + key.length);
  const kvs = [...h.kvs.filter((k) => k.key !== 'tokenizer.chat_template').map((k) => k.raw), kv];
  const header = encodeHeader(h.version, kvs, h.tensors.map((t) => t.infoNoOffset), h.tensors.map((t) => t.offset), h.alignment);
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, Buffer.concat([header, buf.subarray(h.dataStart)]));
  return out;
}

/**
 * Copies `src` to `out` with the ggml type id of the named tensors replaced by `typeId` (the
 * data is left as it is: the file is only for tests of the header checks). Returns `out`.
 */
export function retypeTensors(src, out, names, typeId) {
  if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) return out;
  const buf = readFileSync(src);
  const h = parseHeader(buf);
  for (const name of names) {
    const t = h.tensors.find((x) => x.name === name);
    if (!t) throw new Error(`${src} has no tensor ${name}`);
    // The type is the last u32 of the info before its offset.
    t.infoNoOffset.writeUInt32LE(typeId, t.infoNoOffset.length - 4);
  }
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, buf);
  return out;
}

const GGML_Q8_0 = 8;
const Q8_0_BLOCK = 34;

/** A Q8_0 row of `n` values, all zero but value `hot` (= 100 × 1.0). */
function q8OneHot(n, hot) {
  const row = Buffer.alloc((n / 32) * Q8_0_BLOCK);
  if (hot !== null) {
    const b = Math.floor(hot / 32) * Q8_0_BLOCK;
    row.writeUInt16LE(0x3c00, b); // d = 1.0 (f16)
    row.writeInt8(100, b + 2 + (hot % 32));
  }
  return row;
}

/**
 * A copy of a llama model whose greedy output is `ids`, then `eos`, whatever the prompt (as long
 * as it ends in a token outside `ids`): for tests of what the page does with a given output.
 * Every layer's matrices are zero, so a position's hidden state is its token's embedding; the
 * embeddings are one-hot (position k of the chain at dimension k + 1, every other token at 0) and
 * an added untied `output.weight` maps dimension k to the chain's next token. The norms become
 * ones. Needs a Q8_0 `token_embd.weight` and no `output.weight` (tiny-llama3.gguf). Returns `out`.
 */
export function withForcedOutput(src, out, ids, eos) {
  const buf = readFileSync(src);
  const h = parseHeader(buf);
  const data = Buffer.from(buf.subarray(h.dataStart));
  const embd = h.tensors.find((t) => t.name === 'token_embd.weight');
  if (!embd || h.tensors.some((t) => t.name === 'output.weight')) throw new Error(`${src}: needs a tied token_embd.weight`);
  const info = embd.infoNoOffset;
  const nameLen = Number(info.readBigUInt64LE(0));
  if (info.readUInt32LE(8 + nameLen) !== 2 || info.readUInt32LE(info.length - 4) !== GGML_Q8_0) throw new Error('token_embd.weight: a 2-D Q8_0 tensor is needed');
  const nEmbd = Number(info.readBigUInt64LE(12 + nameLen));
  const nVocab = Number(info.readBigUInt64LE(20 + nameLen));
  if (new Set(ids).size !== ids.length || ids.includes(eos) || ids.length + 1 >= nEmbd) throw new Error('the forced ids must be distinct, without eos, and fewer than n_embd');
  for (const t of h.tensors) {
    const bytes = data.subarray(t.offset, t.offset + t.size);
    if (t.name === 'rope_freqs.weight') continue;
    if (/norm\.weight$/.test(t.name)) {
      for (let i = 0; i + 4 <= t.size; i += 4) bytes.writeFloatLE(1, i);
    } else {
      bytes.fill(0);
    }
  }
  const rowBytes = (nEmbd / 32) * Q8_0_BLOCK;
  const chain = new Map(ids.map((id, k) => [id, k + 1]));
  for (let v = 0; v < nVocab; v++) q8OneHot(nEmbd, chain.get(v) ?? 0).copy(data, embd.offset + v * rowBytes);
  const output = Buffer.alloc(nVocab * rowBytes);
  [...ids, eos].forEach((id, k) => q8OneHot(nEmbd, k).copy(output, id * rowBytes));
  const outName = Buffer.from('output.weight');
  const outInfo = Buffer.alloc(8 + outName.length + 4 + 16 + 4);
  outInfo.writeBigUInt64LE(BigInt(outName.length), 0);
  outName.copy(outInfo, 8);
  outInfo.writeUInt32LE(2, 8 + outName.length);
  outInfo.writeBigUInt64LE(BigInt(nEmbd), 12 + outName.length);
  outInfo.writeBigUInt64LE(BigInt(nVocab), 20 + outName.length);
  outInfo.writeUInt32LE(GGML_Q8_0, 28 + outName.length);
  const outOffset = Math.ceil(data.length / h.alignment) * h.alignment;
  const infos = [...h.tensors.map((t) => t.infoNoOffset), outInfo];
  const offsets = [...h.tensors.map((t) => t.offset), outOffset];
  // The tensor count is in the header, so the metadata is re-encoded around the added tensor.
  const header = encodeHeader(h.version, h.kvs.map((k) => k.raw), infos, offsets, h.alignment);
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, Buffer.concat([header, data, Buffer.alloc(outOffset - data.length), output]));
  return out;
}

/** A u32 or i32 metadata value of a GGUF file (e.g. `tokenizer.ggml.eos_token_id`), or null. */
export function ggufInt(src, key) {
  const buf = readFileSync(src);
  const kv = parseHeader(buf).kvs.find((k) => k.key === key);
  if (!kv) return null;
  const at = 8 + Buffer.byteLength(key);
  const type = kv.raw.readUInt32LE(at);
  if (type === 4) return kv.raw.readUInt32LE(at + 4);
  if (type === 5) return kv.raw.readInt32LE(at + 4);
  throw new Error(`${key}: not a 32-bit integer`);
}
