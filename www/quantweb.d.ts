// Types for quantweb.js, the public ES module of quantweb.
//
// Field names match the JSON that `quantweb inspect --json` and `quantweb fit --json` print
// (snake_case), because the wasm functions return exactly those objects. Byte counts and
// parameter counts are plain numbers (all below 2^53).

/** Something `inspect` can read: a URL string, a Blob/File, or several of them in order. */
export type ModelSource = string | Blob | ReadonlyArray<string | Blob>;

/** One file (or byte chunk) of a model. */
export interface PartInfo {
  /** The URL or file name. */
  name: string;
  bytes: number;
}

/** How much of the model one tensor type takes. */
export interface TypeShare {
  /** ggml type name: "Q4_K", "Q6_K", "F32", … */
  type: string;
  tensors: number;
  bytes: number;
  parameters: number;
}

/** A tensor type quantweb cannot run yet, and the tensors that use it. */
export interface UnsupportedType {
  type: string;
  tensors: string[];
}

export interface TensorSummary {
  name: string;
  type: string;
  /** ggml order: dims[0] is the row length. */
  dims: number[];
  bytes: number;
  /** Which shard holds it; always 0 for a single file or byte chunks. */
  part: number;
}

/** The hyperparameters that size a run (llama.cpp's defaults where the header is silent). */
export interface HParams {
  layers: number;
  embedding_length: number;
  heads: number;
  /** KV heads per layer (GQA); most models repeat one value. */
  kv_heads: number[];
  key_length: number;
  value_length: number;
  feed_forward_length: number | null;
  /** The context the model was trained for. */
  context_length: number;
  vocab_size: number;
  /** Sliding-window attention size, when the model uses it. */
  sliding_window: number | null;
  /** Indices of the layers that attend only over the window. */
  sliding_window_layers: number[];
  rope_freq_base: number | null;
}

/** What `inspect` returns (= `quantweb inspect --json`). */
export interface ModelInfo {
  /** `general.name`, when present. */
  name: string | null;
  /** `general.architecture`: "llama", "gemma3", "qwen2", … */
  architecture: string;
  layout: 'single' | 'shards' | 'chunks';
  parts: PartInfo[];
  gguf_version: number;
  /** Sum of the part sizes: what a download costs. */
  file_bytes: number;
  /** Sum of the tensor data sizes: what the weights take in GPU memory. */
  tensor_bytes: number;
  tensor_count: number;
  /** Total elements of all tensors, as llama.cpp counts parameters. */
  parameters: number;
  /** `general.file_type` as llama.cpp names it ("Q4_K_M"), when recorded. */
  file_type: string | null;
  /** Largest share first. */
  type_mix: TypeShare[];
  unsupported_types: UnsupportedType[];
  hparams: HParams;
  tensors: TensorSummary[];
  /** Requests (or local reads) made to read the header(s). */
  header_reads: number;
  /** All metadata; long arrays are summarized as `{type, len}`. */
  metadata: Record<string, unknown>;
}

export type KvType = 'f16' | 'f32' | 'q8_0';

export interface EstimateOptions {
  /** Tokens of context the KV cache holds (default 4096). */
  contextLength?: number;
  /** KV cache element type (default 'f16'). */
  kvType?: KvType;
  /** Tokens per prefill step (default 512): sizes activations and sliding-window caches. */
  batch?: number;
}

export interface LargestTensor {
  name: string;
  bytes: number;
}

/** How the KV cache figure was computed. */
export interface KvBreakdown {
  /** Layers attending over the whole context, and their cells (= context_length). */
  full_layers: number;
  full_cells: number;
  /** Sliding-window layers and their cells (window + batch, at most the context). */
  sliding_layers: number;
  sliding_cells: number;
  /** K + V bytes of one cell in one layer (GQA: kv_heads × (key + value length) × element size). */
  bytes_per_cell_per_layer: number;
}

export interface ScratchBreakdown {
  /** One batch of f32 activations. */
  activations_bytes: number;
  /** Logits for the one sampled position (vocab × 4 B). */
  logits_bytes: number;
}

/** The same model quantized to another level by llama.cpp's `llama-quantize` (what-if). */
export interface QuantRow {
  /** "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K". */
  quant: string;
  /** Nominal bits the rule of thumb uses for it. */
  rule_bits: number;
  weights_bytes: number;
  /** weights + the same KV cache and scratch as the file. */
  total_bytes: number;
  rule_of_thumb_bytes: number;
  largest_tensor: LargestTensor;
}

/** What `estimateMemory` returns (= `quantweb fit --json` without `verdicts`). */
export interface MemoryEstimate {
  model: string | null;
  architecture: string;
  parameters: number;
  context_length: number;
  model_context_length: number;
  kv_type: KvType;
  batch: number;
  /** Exact tensor bytes from the header. */
  weights_bytes: number;
  kv_cache_bytes: number;
  scratch_bytes: number;
  /** weights + KV cache + scratch. */
  total_bytes: number;
  /** parameters × rule_bits / 8 × 1.2. */
  rule_of_thumb_bytes: number;
  /** Nominal bits of this file's quantization (4 for Q4_K_M). */
  rule_bits: number;
  kv_cache: KvBreakdown;
  scratch: ScratchBreakdown;
  largest_tensor: LargestTensor;
  by_quant: QuantRow[];
  warnings: string[];
}

/** A device as `judgeFit` sees it. The browser does not expose GPU memory: the user enters it. */
export interface DeviceBudget {
  gpuMemoryBytes: number;
  /** The adapter's limits; null when unknown (not checked). */
  maxStorageBufferBindingSize: number | null;
  maxBufferSize: number | null;
  /** Free storage for the offline cache (quota − usage); null when unknown. */
  storageAvailableBytes: number | null;
}

export interface FitQuery {
  /** A `total_bytes` from `MemoryEstimate` or one of its `by_quant` rows. */
  totalBytes: number;
  largestTensor: LargestTensor;
  /** Bytes to download and cache (the file size, or a row's weights). */
  downloadBytes: number;
  device: DeviceBudget;
  /**
   * 'cpu': judge for the CPU engine instead: against wasm's 4 GiB and, when given, the device's
   * memory (`navigator.deviceMemory` GiB); `device` is then not used.
   */
  engine?: 'webgpu' | 'cpu';
  deviceMemoryBytes?: number;
}

export type FitLevel = 'fits' | 'tight' | 'does_not_fit';

export interface Verdict {
  level: FitLevel;
  /** Why it does not fit or is tight (empty when it fits). */
  reasons: string[];
}

/** One row of the quick rule table. */
export interface RuleRow {
  /** 16, 8 or 4. */
  bits: number;
  /** bits / 8. */
  bytes_per_weight: number;
  /** parameters × bytes_per_weight. */
  weights_bytes: number;
  /** weights × 1.2 (20 % for the KV cache at ~4K context). */
  rule_of_thumb_bytes: number;
}

export interface RuleTable {
  parameters: number;
  /** 16-, 8- and 4-bit rows. */
  rows: RuleRow[];
}

/** Synchronous calculator functions, available once the wasm module is initialized. */
export interface QuantwebSync {
  /** Throws an Error on bad options (context 0, unknown KV type, …). */
  estimateMemory(info: ModelInfo, options?: EstimateOptions): MemoryEstimate;
  judgeFit(query: FitQuery): Verdict;
  /** "8B", "1.5b", "135M", "7e9" → the table. Throws on text it cannot read. */
  ruleOfThumb(params: string): RuleTable;
}

/** Initializes the wasm module once; resolves to the synchronous functions. */
export function ready(): Promise<QuantwebSync>;

/**
 * Reads only the header (HTTP Range for URLs, local slices for Files: nothing is uploaded).
 * Rejects with a named Error whose message names the problem: HttpError (404 …, a server
 * without Range support), NetworkError (network/CORS failure), InvalidModelError ("not a GGUF
 * file", a truncated or malformed header).
 */
export function inspect(source: ModelSource): Promise<ModelInfo>;
/** `inspect`, rejecting a model the engine cannot run with the error `Engine.load` would give. */
export function checkRunnable(source: ModelSource): Promise<ModelInfo>;
export function estimateMemory(info: ModelInfo, options?: EstimateOptions): Promise<MemoryEstimate>;
export function judgeFit(query: FitQuery): Promise<Verdict>;
export function ruleOfThumb(params: string): Promise<RuleTable>;

/** The WebGPU adapter's limits quantweb cares about (plus any other numeric limit present). */
export interface AdapterLimits {
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxUniformBufferBindingSize?: number;
  maxComputeWorkgroupStorageSize?: number;
  maxComputeInvocationsPerWorkgroup?: number;
  maxComputeWorkgroupSizeX?: number;
  maxComputeWorkgroupSizeY?: number;
  maxComputeWorkgroupSizeZ?: number;
  maxComputeWorkgroupsPerDimension?: number;
  maxStorageBuffersPerShaderStage?: number;
  maxBindGroups?: number;
  minStorageBufferOffsetAlignment?: number;
  minUniformBufferOffsetAlignment?: number;
  [limit: string]: number | undefined;
}

export interface DeviceInfoAvailable {
  available: true;
  /** From GPUAdapterInfo; empty strings when the browser hides them. */
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A software or fallback adapter (slow). */
  isFallbackAdapter: boolean;
  /** Whether 'shader-f16' is among the features (f16 arithmetic in shaders). */
  shaderF16: boolean;
  /** Sorted feature names. */
  features: string[];
  /**
   * Sorted WGSL language extensions (`navigator.gpu.wgslLanguageFeatures`). With
   * 'packed_4x8_integer_dot_product', the decode matvec of Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0
   * weights takes ggml's integer dot products.
   */
  wgslLanguageFeatures: string[];
  limits: AdapterLimits;
}

export interface Unavailable {
  available: false;
  /** What is missing and what the user can do. */
  reason: string;
}

export type DeviceInfo = DeviceInfoAvailable | Unavailable;

/** WebGPU adapter info, limits and features (requests an adapter, never a device). */
export function deviceInfo(): Promise<DeviceInfo>;

export interface StorageEstimateAvailable {
  available: true;
  quota: number;
  usage: number;
  /** quota − usage (at least 0). */
  free: number;
}

export type StorageInfo = StorageEstimateAvailable | Unavailable;

/** navigator.storage.estimate(), for the offline model cache. */
export function storageEstimate(): Promise<StorageInfo>;

/** Builds the `device` of a FitQuery from a GPU memory size and what the browser reported. */
export function deviceBudget(gpuMemoryBytes: number, device?: DeviceInfo | null, storage?: StorageInfo | null): DeviceBudget;

/** Whether an adapter is a software one (SwiftShader, llvmpipe, WARP), where 'auto' picks the CPU. */
export function isSoftwareAdapter(device: DeviceInfo & { available: true }): boolean;

/** The calculator's verdict for this browser, from a header alone (`fitForThisDevice`). */
export interface DeviceFit {
  /** The engine `Engine.load` with backend 'auto' would pick here. */
  engine: 'webgpu' | 'cpu';
  level: FitLevel;
  /** Why, in words (for the GPU: also the GPU memory assumed, which browsers do not report). */
  reasons: string[];
  /** Memory the model needs at `contextLength`. */
  totalBytes: number;
  downloadBytes: number;
  contextLength: number;
}

/** fits / tight / does_not_fit on this browser's engine for a model whose header `inspect` read. */
export function fitForThisDevice(info: ModelInfo, options?: { contextLength?: number }): Promise<DeviceFit>;

// ============================================================== the engine (Engine, in a worker)

/**
 * Load progress. `download`: bytes of the model files on disk in the browser cache (resumed
 * bytes count from the start); `upload`: tensor bytes copied into GPU buffers; `compile`: the
 * GPU kernels (0 of 1, then 1 of 1).
 */
export interface LoadProgress {
  phase: 'download' | 'upload' | 'compile';
  loaded: number;
  total: number;
  /** Over the last ~3 s; 0 until measurable. */
  bytesPerSec: number;
  /** Seconds left at that rate, or null. */
  etaSec: number | null;
  /** Since this phase began. */
  elapsedMs: number;
  /** upload: the tensor just copied. */
  tensor?: string;
  /** download: the part that progressed (0-based) and how many there are. */
  part?: number;
  parts?: number;
}

export interface LoadOptions {
  onProgress?: (p: LoadProgress) => void;
  /** KV cache size in tokens (default: the engine's: 4096, or the trained context if smaller). */
  contextLength?: number;
  /**
   * URLs only (default true): download into the browser's private file system once (parts in
   * parallel, resumable), later loads make no request. false: stream the weights from the
   * server with Range requests on every load. Files/Blobs never touch the cache.
   */
  cache?: boolean;
  /** Aborting stops the load (and its worker); downloaded bytes are kept for the next try. */
  signal?: AbortSignal;
  /**
   * Which engine runs the model (default 'auto'): 'webgpu' (NoWebGPUError without it), 'cpu'
   * (wasm SIMD, threads on a cross-origin isolated page), or 'auto': WebGPU on a hardware adapter, the CPU engine when the
   * browser has no WebGPU, no adapter, only a CPU adapter (SwiftShader, llvmpipe, WARP), or
   * when the model does not fit the GPU's limits. `EngineInfo.backend` and `backendReason` say
   * which ran and why.
   */
  backend?: 'auto' | 'webgpu' | 'cpu';
  /**
   * CPU engine threads, the engine's worker included. More than one needs a cross-origin
   * isolated page (COOP/COEP, for SharedArrayBuffer): there the threaded build runs, with
   * `threads − 1` helper workers; elsewhere the engine runs on one thread whatever is asked.
   * Default: `navigator.hardwareConcurrency`, at most 4, when isolated; else 1.
   * `EngineInfo.threads` says how many run.
   */
  threads?: number;
  /**
   * The CPU engine's build with relaxed SIMD where the browser has it (Chrome 114+, Edge):
   * its dot products and multiply-adds take one instruction each, about 1.4× the decode and
   * 1.8× the prompt speed. Its multiply-add is fused or not as the CPU does it (fused on x86
   * with FMA, as llama.cpp's own kernels), so `false` picks the plain simd128 build, whose
   * results are the same on every machine. `EngineInfo.adapter` names the one that runs.
   * Default true.
   */
  relaxedSimd?: boolean;
  /**
   * A Jinja chat template to use instead of the model's (as llama.cpp's
   * `--chat-template-file`): for a file whose own template lacks tool support, say. A template
   * that does not compile fails the load with a ChatTemplateError.
   */
  chatTemplate?: string;
}

/** A target of `quantize` (what `quantweb quantize --type` takes). */
export type QuantizeType =
  | 'F32' | 'F16' | 'BF16' | 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q8_0'
  | 'Q2_K' | 'Q3_K' | 'Q4_K' | 'Q5_K' | 'Q6_K' | 'IQ4_NL' | 'IQ4_XS';

export interface QuantizeOptions {
  type: QuantizeType;
  /** Allow a block-quantized source (the errors of both formats add up). Default false. */
  allowRequantize?: boolean;
  /** File name in the browser's storage (default: the source's name + "-TYPE.gguf"). */
  name?: string;
  /** `loaded`/`total`: output bytes; `tensor`: the tensor being converted. */
  onProgress?: (p: { phase: 'quantize'; loaded: number; total: number; tensor: string; bytesPerSec: number; etaSec: number | null; elapsedMs: number }) => void;
  /** Aborts between tensors (AbortError); the partial file is deleted. */
  signal?: AbortSignal;
}

export interface QuantizeResult {
  /** The new GGUF, in the browser's private storage: `Engine.load(file)`, or save it. */
  file: File;
  name: string;
  type: QuantizeType;
  outBytes: number;
  tensors: number;
  /** Tensors that changed type (the rest were copied byte for byte). */
  converted: number;
  /** Of those, already block-quantized ones. */
  requantized: number;
  /** Fallback type → tensors whose rows the target's blocks do not divide (as llama.cpp). */
  fallbacks: Record<string, string[]>;
}

/**
 * `quantweb quantize` in the browser (a worker; no GPU needed): the same bytes as the CLI and
 * llama.cpp's quantizer, streamed tensor by tensor into the browser's private storage. Errors:
 * TypeError / Error (bad type; "requantizing" without `allowRequantize`), UnsupportedModelError
 * (a source type that cannot be read), QuotaExceededError (checked before writing), AbortError,
 * and the load errors of the source (HttpError, NetworkError, InvalidModelError).
 */
export function quantize(source: ModelSource | URL, options: QuantizeOptions): Promise<QuantizeResult>;
/** Models quantized in this browser, newest first. */
export function quantizedModels(): Promise<{ name: string; size: number; lastModified: number; file: File }[]>;
/** Deletes a model quantized in this browser; true if it existed. */
export function deleteQuantized(name: string): Promise<boolean>;

/** A value with llama.cpp's one-sigma uncertainty. */
export interface Estimate {
  value: number;
  err: number;
}

/**
 * One candidate against the base, as `llama-perplexity --kl-divergence` reports it and as
 * `quantweb compare --json` writes it (the same keys). Probabilities are fractions, KL in nats.
 */
export interface CompareReport {
  /** Positions compared: the second half of each window, less its last token. */
  positions: number;
  ppl: Estimate;
  ppl_base: Estimate;
  /** PPL(candidate) / PPL(base). */
  ppl_ratio: Estimate;
  ln_ppl_ratio: Estimate;
  ppl_correlation: number;
  /** Mean KL(base ‖ candidate) per position. */
  kld: Estimate;
  kld_median: number;
  kld_p90: number;
  kld_p99: number;
  kld_p999: number;
  kld_max: number;
  /** How often both models' likeliest token is the same ("Same top p"). */
  same_top: Estimate;
  /** Root mean square of p_candidate(next) − p_base(next). */
  rms_dp: Estimate;
}

export type CompareProgress =
  | (LoadProgress & { model: number })
  | { phase: 'compare'; chunk: number; chunks: number; windowEnd: boolean; reports: CompareReport[] };

export interface CompareOptions {
  /** The text to evaluate on; default: the built-in CC0 text (about 5 500 SmolLM2 tokens). */
  text?: string;
  /** Tokens per window (default 512); the second half of each is scored. */
  ctx?: number;
  /** At most this many windows (default: all that the text fills). */
  chunks?: number;
  /**
   * Load events carry `model` (0: the base, i: candidate i); then one 'compare' event after
   * every batch of scored positions, with each candidate's report so far (`reports[i - 1]`).
   */
  onProgress?: (p: CompareProgress) => void;
  /** Stops the loads or the comparison (AbortError). */
  signal?: AbortSignal;
  backend?: 'auto' | 'webgpu' | 'cpu';
  threads?: number;
  /** As `Engine.load`: URLs are kept in the browser's storage (default true). */
  cache?: boolean;
}

export interface ComparedModel {
  /** The file name, without ".gguf". */
  name: string;
  fileBytes: number;
  /** The calculator's total at its defaults (4096-token f16 KV cache). */
  totalBytes: number;
  info: EngineInfo;
}

export interface Comparison {
  ctx: number;
  /** Windows compared. */
  chunks: number;
  /** Tokens of the text (the base's tokenizer). */
  tokens: number;
  base: ComparedModel;
  /** In the order given: a report, or the error that kept the candidate from loading. */
  candidates: ((ComparedModel & { report: CompareReport; error?: undefined }) | { name: string; error: Error; report?: undefined })[];
}

/**
 * `quantweb compare` in the browser: each candidate (a quantization of the same model) against
 * `base`, over the same windows of a text. All models are loaded at once in one worker, so the
 * base's distributions are computed once and never stored whole. Errors: VocabMismatchError (a
 * candidate with another tokenizer), InvalidRequestError (text shorter than one window, `ctx`
 * beyond a model's), AbortError, and the base's load errors; a candidate that cannot load is
 * returned with its error instead.
 */
export function compare(base: ModelSource | URL, candidates: ReadonlyArray<ModelSource | URL>, options?: CompareOptions): Promise<Comparison>;

/** What the engine reports about the loaded model. */
export interface EngineInfo {
  architecture: string;
  name: string | null;
  /** KV cache size in tokens. */
  contextLength: number;
  trainedContext: number;
  nVocab: number;
  /** Bytes of the weights and of the KV cache (GPU memory, or wasm memory on the CPU). */
  weightBytes: number;
  kvBytes: number;
  /** Where the chat format comes from: the file's template ("model"), a built-in one, or the load's `chatTemplate` ("custom"). */
  chatTemplate: 'model' | 'gemma' | 'chatml' | 'custom' | string;
  /** The WebGPU adapter in words, or the CPU engine's ("CPU (simd128, 2 threads)"). */
  adapter: string;
  /** The engine that runs the model. */
  backend: 'webgpu' | 'cpu';
  /** Why it runs there: "chosen by the page", "this browser has no WebGPU", … */
  backendReason: string;
  /** Threads the CPU engine runs on (1 on WebGPU). */
  threads: number;
  /** How the weights came: "cache" (no request), "network" (downloaded or streamed), "local". */
  source: 'cache' | 'network' | 'local';
  /** Cache entry key, when the cache was used. */
  cacheKey: string | null;
  /**
   * Why the cache was asked for but could not be used (no private file system, as in some
   * private windows): the weights were streamed with Range requests instead. Null otherwise.
   */
  cacheUnavailable: string | null;
  /** Bytes downloaded by this load (0 from the cache or a local file). */
  downloadedBytes: number;
  loadMs: number;
  downloadMs: number;
  uploadMs: number;
  /** Size of the worker's wasm memory (it only grows: this is also its peak). */
  wasmMemoryBytes: number;
  /**
   * Bytes of the GPU buffers the engine holds (weights, KV cache, scratch, cached parameters),
   * as the engine tracks them: WebGPU reports no figure. Set by `refreshInfo()`; null on the CPU
   * engine and before the first refresh.
   */
  gpuBufferBytes?: number | null;
}

/**
 * `null` is the same as absent (the SDKs' request types allow it). A value outside the range
 * given (NaN included) rejects the request, before anything runs, with an InvalidRequestError
 * whose `param` names the option.
 */
export interface SamplingOptions {
  /**
   * A whole number ≥ 1 (default 256). More than the context has room for is not an error:
   * generation stops at the context's end with finish_reason 'length' (1e9 means "until the
   * end of the context or of the answer").
   */
  max_tokens?: number | null;
  /** ≥ 0, finite; 0 = greedy. */
  temperature?: number | null;
  /** A whole number ≥ 0; 0 (or more than the vocabulary) keeps every token. */
  top_k?: number | null;
  /** From 0 to 1; 1 keeps every token. */
  top_p?: number | null;
  /** From 0 to 1; 0 keeps every token. */
  min_p?: number | null;
  /** > 0, finite; 1 is off. llama.cpp's: over the last 64 tokens, a positive logit is divided by it, a negative one multiplied. */
  repeat_penalty?: number | null;
  /** A whole number ≥ 0. */
  seed?: number | null;
  /**
   * Generation stops before any of these strings (not included in the text). At most 16, each
   * 1 to 1024 bytes (UTF-8).
   */
  stop?: string | ReadonlyArray<string> | null;
  /**
   * Each generated token's log-probability under the model's own distribution (before
   * temperature and truncation): `choices[0].logprobs.content` of a chat answer, streamed too;
   * `logprobs` of a raw completion. Every step then reads back the logits, so greedy decoding
   * is a little slower.
   */
  logprobs?: boolean | null;
  /** With `logprobs`: the 0 to 20 likeliest tokens at each step (InvalidRequestError beyond). */
  top_logprobs?: number | null;
  /**
   * Holds the output to JSON or a grammar by constrained decoding: at every step only the
   * tokens that keep the text a valid prefix can be sampled, so the answer parses (unless
   * max_tokens cuts it: finish_reason 'length'). Numbers are held to 16 digits in a row, as
   * llama.cpp's json-schema-to-grammar does. A grammar or schema that cannot be used rejects
   * the request before anything runs: GrammarError, or UnsupportedSchemaError naming the JSON
   * schema keywords (`error.keywords`) not implemented (docs/structured-output.md lists them).
   */
  response_format?: ResponseFormat | null;
}

/**
 * OpenAI's `response_format` (text, JSON mode, a JSON schema; `strict` is accepted and the
 * schema always held to) and WebLLM's (`json_object` with `schema` as a JSON string, and
 * `grammar`: llama.cpp's GBNF grammar format).
 */
export type ResponseFormat =
  | {
      /** Absent is 'text'. WebLLM's 'structural_tag' is an UnsupportedOptionError. */
      type?: 'text' | 'json_object' | 'grammar' | 'structural_tag' | null;
      /** `json_object`: a JSON schema as a JSON string (WebLLM's). */
      schema?: string | null;
      /** `grammar`: the GBNF text. */
      grammar?: string | null;
      structural_tag?: unknown;
    }
  | {
      type: 'json_schema';
      json_schema: { name: string; description?: string | null; schema?: Record<string, unknown> | null; strict?: boolean | null };
    };

export interface Timings {
  prefill_ms: number;
  decode_ms: number;
  prefill_tok_s: number;
  decode_tok_s: number;
  /** Batches of up to 64 prompt tokens, and what they cost on the GPU in all. */
  prefill_batches: number;
  prefill: GpuCounts;
  /** Decode steps (one token each), and what they cost on the GPU in all. */
  decode_steps: number;
  decode: GpuCounts;
  /** Of prefill_ms + decode_ms, what the masks of a `response_format` took (0 without one). */
  mask_ms: number;
}

/** What recorded GPU work cost (see README, "What a token costs"). Bytes read by kernels are
 * computed from shapes. */
export interface GpuCounts {
  dispatches: number;
  passes: number;
  submits: number;
  readbacks: number;
  readback_bytes: number;
  /** Bytes written with queue.writeBuffer (token ids, the position). */
  written_bytes: number;
  weight_bytes: number;
  kv_bytes: number;
  activation_bytes: number;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface CompleteRequest extends SamplingOptions {
  /**
   * Plain text (special-token text is not parsed); BOS is added when the model adds one. Lone
   * UTF-16 surrogates become U+FFFD, as TextEncoder makes them (here and in every string given
   * to the engine: messages, stop strings). A prompt of no tokens is InvalidRequestError; one
   * that fills the context, ContextFullError.
   */
  prompt?: string;
  /** Or the prompt's token ids, used as they are. */
  tokens?: ArrayLike<number>;
  /** Stops after the current token; the promise then resolves with `aborted: true`. */
  signal?: AbortSignal;
  /**
   * Called per generated token (`piece` may be '' while bytes or a possible stop are held);
   * `logprob` with the `logprobs` option.
   */
  onToken?: (piece: string, id: number, logprob?: TokenLogprob) => void;
}

export interface CompleteResult {
  text: string;
  /** Generated ids. */
  tokens: number[];
  /** The prompt's ids, BOS included. */
  prompt_tokens: number[];
  /** 'abort' when stopped by the signal. */
  finish_reason: 'stop' | 'length' | 'abort' | 'tool_calls';
  aborted: boolean;
  usage: Usage;
  timings: Timings;
  /** Prompt tokens reused from the KV cache of the previous request (same prefix). */
  cached_tokens: number;
  /** With `logprobs`: one entry per generated token, the end-of-generation token excepted. */
  logprobs?: TokenLogprob[];
}

/**
 * A part of a message's content. Text parts are joined; a refusal part counts as text (it is
 * what the assistant said). Image, audio and file parts are UnsupportedOptionError: the
 * engine runs text-only models.
 */
export type ChatContentPart =
  | { type: 'text'; text: string }
  | { type: 'refusal'; refusal: string }
  | { type: 'image_url'; image_url: { url: string; detail?: 'auto' | 'low' | 'high' } }
  | { type: 'input_audio'; input_audio: unknown }
  | { type: 'file'; file: unknown };

/**
 * A message, with every field of OpenAI's and WebLLM's message types. The model's chat template
 * sees `{role, content}`, an assistant's `tool_calls` (arguments as objects) and a tool
 * message's `tool_call_id`: `developer` (OpenAI's newer name for `system`) is rendered as
 * `system`; roles other than system, user, assistant and tool are InvalidRequestError
 * (`param` "messages[i].role"), as is an empty message list. A tool message or a tool call
 * through a template without tool support is an UnsupportedOptionError (`param`
 * "messages[i]"). Fields that would need more are UnsupportedOptionError: `role: 'function'`,
 * `function_call`, `audio`, and `name` (templates are not given it).
 */
export interface ChatMessage {
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool' | 'function' | (string & {});
  /** Absent or null: empty (OpenAI's types allow it in assistant turns). */
  content?: string | ReadonlyArray<ChatContentPart> | null;
  /** An assistant's refusal, rendered as its text. */
  refusal?: string | null;
  name?: string;
  /** An assistant's calls, as an answer gave them. */
  tool_calls?: ReadonlyArray<ToolCall> | null;
  /** A tool message: the `id` of the call it answers. */
  tool_call_id?: string;
  function_call?: unknown;
  audio?: unknown;
}

/** A function the model may call (OpenAI's `ChatCompletionTool`). */
export interface Tool {
  type: 'function';
  function: {
    /** 1 to 64 letters, digits, `_` or `-`. */
    name: string;
    description?: string;
    /** JSON schema of the arguments; a forced call's arguments are held to it. */
    parameters?: Record<string, unknown>;
    /** Accepted: forced calls always follow `parameters`. */
    strict?: boolean | null;
  };
}

/** A call in an answer (OpenAI's `ChatCompletionMessageToolCall`). */
export interface ToolCall {
  /** 9 letters and digits (what Mistral's template demands when the call is sent back). */
  id: string;
  type: 'function';
  function: {
    name: string;
    /** The arguments as JSON text. */
    arguments: string;
  };
}

/**
 * A chat request: OpenAI's `ChatCompletionCreateParams` and WebLLM's `ChatCompletionRequest`
 * are accepted as they are (tests/types checks this with the SDKs' own types). `null` is the
 * same as absent.
 *
 * No field is silently ignored. A field this engine does not implement rejects the request with
 * an UnsupportedOptionError that names it (`error.param`), unless it holds its default (the
 * value given after each below). Unknown fields are rejected the same way.
 */
export interface ChatCompletionRequest extends SamplingOptions {
  messages: ReadonlyArray<ChatMessage>;
  stream?: boolean | null;
  /** Streamed requests only. `include_usage: true` adds a last chunk with `choices: []` and `usage`, as OpenAI does. */
  stream_options?: { include_usage?: boolean | null } | null;
  /** OpenAI's newer name for max_tokens. */
  max_completion_tokens?: number | null;
  /** Stops after the current token (or pass it in create's second argument, as with the OpenAI SDK). */
  signal?: AbortSignal;

  // Accepted, with no effect here: they concern OpenAI's service, not the answer.
  /** The loaded model answers, whatever is named (the answer's `model` says which). */
  model?: string | null;
  user?: string;
  metadata?: Record<string, string> | null;
  service_tier?: string | null;
  /** Predicted output: a speed-up in OpenAI's service; the answer does not depend on it. */
  prediction?: unknown;

  // UnsupportedOptionError unless at the default given.
  /** 1. One choice per request. */
  n?: number | null;
  /** 0. Use `repeat_penalty`. */
  frequency_penalty?: number | null;
  /** 0. Use `repeat_penalty`. */
  presence_penalty?: number | null;
  /** WebLLM's; 1. Use `repeat_penalty` (over the last 64 tokens, as llama.cpp). */
  repetition_penalty?: number | null;
  /** `{}`. */
  logit_bias?: Record<string, number> | null;
  /**
   * Functions the model may call, shown to it through the model's chat template (Hermes/Qwen,
   * Llama 3.1+ and Mistral formats; docs/tools.md). Calls come back as `message.tool_calls`
   * with finish_reason 'tool_calls'. A template without tool support is an
   * UnsupportedOptionError (`param` "tools").
   */
  tools?: ReadonlyArray<Tool> | null;
  /**
   * 'auto' (the default): the model decides, and calls are parsed from what it writes.
   * 'required' or a named function: the answer is calls, constrained to the template's format
   * and each function's `parameters` schema. 'none': the tools are not shown.
   */
  tool_choice?: 'none' | 'auto' | 'required' | { type: 'function'; function: { name: string } } | null;
  /** Whether an answer may hold several calls (default true, as OpenAI; Llama 3.1 makes one). */
  parallel_tool_calls?: boolean | null;
  /** OpenAI's deprecated function calling: `[]` and 'none'. */
  functions?: ReadonlyArray<unknown>;
  function_call?: 'none' | 'auto' | { name: string };
  /** No default: text output only. */
  audio?: unknown;
  /** `['text']`. */
  modalities?: ReadonlyArray<string> | null;
  /** false: nothing is stored, the model runs in this browser. */
  store?: boolean | null;
  /** No default. */
  reasoning_effort?: string | null;
  /** No default. */
  web_search_options?: unknown;
  /** WebLLM's; false. */
  ignore_eos?: boolean;
  /** WebLLM's (`enable_thinking`, …): every key null or absent. */
  extra_body?: Record<string, unknown>;
}

/** The second argument of `create`, as the OpenAI SDK's request options; only `signal` is read. */
export interface ChatRequestOptions {
  signal?: AbortSignal | null;
}

/**
 * OpenAI finish reasons. An answer stopped by the signal finishes with 'stop' and carries
 * `aborted: true`; an answer of tool calls finishes with 'tool_calls' (or 'length' if
 * `max_tokens` may have cut one).
 */
export type FinishReason = 'stop' | 'length' | 'tool_calls';

/** `usage` of a chat answer: OpenAI's fields, plus WebLLM's `extra` figures. */
export interface ChatUsage extends Usage {
  /** `cached_tokens`: prompt tokens reused from the KV cache of the previous request. */
  prompt_tokens_details: { cached_tokens: number };
  /** WebLLM's names for the engine's timings (0 when generation was aborted before it began). */
  extra: {
    /** From the call to the answer, measured on the page. */
    e2e_latency_s: number;
    prefill_tokens_per_s: number;
    decode_tokens_per_s: number;
    /** The prefill's time, as WebLLM counts it. */
    time_to_first_token_s: number;
    /** Decode time per decode step. */
    time_per_output_token_s: number;
  };
}

/** A token as `logprobs` show it: its text (lossy inside a UTF-8 sequence) and its bytes. */
export interface TopLogprob {
  token: string;
  bytes: number[];
  logprob: number;
}

/** One generated token (OpenAI's `ChatCompletionTokenLogprob`). */
export interface TokenLogprob extends TopLogprob {
  top_logprobs: TopLogprob[];
}

/**
 * `choices[0].logprobs` with `logprobs: true`: one entry per generated token, the
 * end-of-generation token excepted (in a stream, the entries of the tokens a chunk completes).
 */
export interface ChoiceLogprobs {
  content: TokenLogprob[];
  refusal: null;
}

export interface ChatCompletionMessage {
  role: 'assistant';
  /** With tool calls: the text before them, or null when there is none. */
  content: string | null;
  /** The model's answer is never classified as a refusal. */
  refusal: null;
  /** The calls the answer made, when it made any. */
  tool_calls?: ToolCall[];
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: [{ index: 0; message: ChatCompletionMessage; finish_reason: FinishReason; logprobs: ChoiceLogprobs | null }];
  usage: ChatUsage;
  timings: Timings;
  aborted: boolean;
}

/** A streamed choice: the first has `delta.role`; the last has an empty delta and `finish_reason`. */
export interface ChatCompletionChunkChoice {
  index: 0;
  /**
   * Text as it comes (text that may open a tool call waits until it is known not to); each
   * call comes whole in a chunk of its own, before the one with the `finish_reason`.
   */
  delta: { role?: 'assistant'; content?: string; tool_calls?: Array<ToolCall & { index: number }> };
  finish_reason: FinishReason | null;
  logprobs: ChoiceLogprobs | null;
}

/**
 * A streamed piece. Each chunk has one choice, except the extra last one that
 * `stream_options: {include_usage: true}` asks for, which has none (OpenAI's shape). The chunk
 * with the `finish_reason` also has `usage`, `timings` and `aborted`.
 */
export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: ChatCompletionChunkChoice[];
  usage?: ChatUsage;
  timings?: Timings;
  aborted?: boolean;
}

/** A cached model (`Engine.cached()`). */
export interface CachedModel {
  /** For `Engine.deleteCached`. */
  key: string;
  /** The first URL's file name. */
  name: string;
  urls: string[];
  /** Bytes of all parts, as the server reported them. */
  size: number;
  /** Bytes on disk (less than `size` while partial). */
  storedBytes: number;
  complete: boolean;
  etags: (string | null)[];
  created: number;
  lastUsed: number;
}

/**
 * A model on the GPU, run in a Web Worker; requests run one at a time, in order. Errors are
 * `Error`s with a `name`: NoWebGPUError (backend 'webgpu' without WebGPU), OutOfMemoryError (the
 * CPU engine could not allocate the weights: wasm memory is at most 4 GiB), HttpError, NetworkError (network, CORS or an
 * interrupted download: `resumable`), QuotaExceededError, CacheUnavailableError, AbortError,
 * NotLoadedError, DeviceLostError (the GPU was reset: load the model again),
 * UnsupportedModelError (a quant type, architecture or tokenizer this engine does not run; the
 * message names it and the tensors; found from the header alone, before any download),
 * InvalidModelError (not a GGUF, truncated or malformed), ChatTemplateError (the model's chat
 * template raised an error, e.g. roles that do not alternate, or went past its work, recursion or
 * output limits), ContextFullError (the prompt fills the context), BusyError, UnsupportedOptionError
 * (a chat request field this engine does not implement; `param` names it, e.g. "n" or
 * "messages[1].content[0]"; see ChatCompletionRequest), InvalidRequestError (a value out of
 * range, an empty or unknown-role message list; `param` names it, e.g. "top_p" or "stop[1]";
 * see SamplingOptions), GrammarError (a `response_format` that is no grammar or schema; `param`
 * names the field), UnsupportedSchemaError (a JSON schema keyword constrained decoding does not
 * implement; `keywords` lists them), VocabMismatchError (`compare`: a candidate with another tokenizer). A
 * request made while another runs waits for it: requests run in the order they were made.
 */
export class Engine {
  /** `source`: a URL, a File/Blob, or an array (shards or byte chunks, in order). */
  static load(source: ModelSource | URL, options?: LoadOptions): Promise<Engine>;
  /** Cached models, most recently used first (no network). */
  static cached(): Promise<CachedModel[]>;
  /** Deletes a cached model; true if it existed. */
  static deleteCached(key: string): Promise<boolean>;
  /** The complete cached entry of a model URL (a first shard stands for all), or null; no network. */
  static cachedEntry(url: string | URL): Promise<CachedModel | null>;

  /** As at load; `refreshInfo()` updates it. */
  info: EngineInfo;
  /** The `model` of completions: the file's general.name. */
  model: string;
  chat: {
    completions: {
      create(req: ChatCompletionRequest & { stream: true }, options?: ChatRequestOptions): Promise<AsyncIterable<ChatCompletionChunk>>;
      create(req: ChatCompletionRequest & { stream?: false | null }, options?: ChatRequestOptions): Promise<ChatCompletion>;
      create(req: ChatCompletionRequest, options?: ChatRequestOptions): Promise<AsyncIterable<ChatCompletionChunk> | ChatCompletion>;
    };
  };
  complete(req: CompleteRequest): Promise<CompleteResult>;
  /** Token ids without BOS; `parseSpecial` maps special-token text to its ids. */
  tokenize(text: string, options?: { parseSpecial?: boolean }): Promise<number[]>;
  detokenize(ids: ArrayLike<number>): Promise<string>;
  refreshInfo(): Promise<EngineInfo>;
  /** Forgets the KV cache. */
  reset(): Promise<void>;
  /** Frees GPU memory and ends the worker; the engine cannot be used afterwards. */
  unload(): Promise<void>;
}
