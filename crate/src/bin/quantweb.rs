//! The `quantweb` command line: the same engine as the page, natively.

use clap::{Parser, Subcommand};
use quantweb::chat::tools::ToolUse;
use quantweb::chat::ChatMessage;
use quantweb::compare::{self, Size};
use quantweb::constrain::Constraint;
use quantweb::cpu::Cpu;
use quantweb::engine::{check_messages, check_runnable, CompleteOptions, Engine};
use quantweb::error::Result;
use quantweb::generate::{generate, score};
use quantweb::gguf::GgufModel;
use quantweb::gpu::{AdapterKind, Gpu};
use quantweb::inspect::ModelInfo;
use quantweb::memory::{self, DeviceBudget, FitOptions, KvType, MemoryEstimate};
use quantweb::model::Model;
use quantweb::sample::{Sampler, SamplerConfig};
use quantweb::source::open_args;
use quantweb::tokenizer::Tokenizer;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "quantweb",
    version,
    about = "Quantized LLMs on WebGPU: inspect GGUF models and see what they need"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Architecture, size, tensor types and hyperparameters, read from the header only.
    Inspect {
        /// A GGUF path or http(s) URL; the first shard of a split model; or all byte chunks in order.
        #[arg(required = true)]
        model: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// GPU memory the model needs for a context: weights, KV cache, scratch, and a what-if table.
    Fit {
        #[arg(required = true)]
        model: Vec<String>,
        /// Context length in tokens.
        #[arg(long, default_value_t = 4096)]
        ctx: u64,
        /// KV cache element type: f16, f32 or q8_0.
        #[arg(long, default_value = "f16")]
        kv: String,
        /// Prefill batch size in tokens.
        #[arg(long, default_value_t = 512)]
        batch: u64,
        /// GPU memory to judge the fit against, e.g. 16G or 8GB.
        #[arg(long)]
        gpu_memory: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Generate text on the GPU or the CPU, streaming it as it comes.
    Generate(Box<GenerateArgs>),
    /// One teacher-forced pass over token ids: each position's top token and the log-probability
    /// of the next id.
    Score {
        #[arg(required = true)]
        model: Vec<String>,
        /// Comma-separated token ids.
        #[arg(long, value_delimiter = ',', required = true)]
        tokens: Vec<u32>,
        #[arg(long, default_value_t = 4096)]
        ctx: u32,
        /// Tokens per forward pass (1-64). Under 64, attention computes as llama.cpp's decode
        /// steps do, which is what greedy outputs of llama.cpp are compared with.
        #[arg(long, default_value_t = 64)]
        batch: u32,
        /// Also list the K likeliest ids and their log-probabilities at each position.
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[command(flatten)]
        run_on: RunOn,
        #[arg(long)]
        json: bool,
    },
    /// How far quantizations of a model are from it, as `llama-perplexity --kl-divergence`:
    /// perplexities, KL divergence, top-token agreement and Δp over the same windows of a text.
    Compare {
        /// The base model, then each candidate (each a file or the first shard of a split
        /// model). Every candidate must have the base's vocabulary.
        #[arg(required = true, num_args = 2.., value_name = "BASE CANDIDATE…")]
        models: Vec<String>,
        /// The text to evaluate on (UTF-8); without it, the built-in one (`--builtin`).
        #[arg(long, conflicts_with = "builtin")]
        text: Option<String>,
        /// The shipped evaluation text (CC0, about 5 000 tokens; crate/data/README.md).
        #[arg(long)]
        builtin: bool,
        /// Tokens per window; the second half of each is scored.
        #[arg(long, default_value_t = 512)]
        ctx: u32,
        /// At most this many windows (default: all that the text fills).
        #[arg(long)]
        chunks: Option<usize>,
        #[command(flatten)]
        run_on: RunOn,
        #[arg(long)]
        json: bool,
    },
    /// Rewrite a model as llama.cpp gguf-split shards OUTPREFIX-00001-of-0000N.gguf, …
    Split {
        /// The model (a file, the first shard of a split model, or all byte chunks in order),
        /// then the prefix of the shards; options may come anywhere.
        #[arg(required = true, num_args = 1.., value_name = "MODEL… OUTPREFIX")]
        args: Vec<String>,
        /// Tensor data per shard, as gguf-split: 512M (10^6 bytes) or 2G (10^9).
        #[arg(long, conflicts_with = "max_tensors")]
        max_size: Option<String>,
        /// Tensors per shard (the default, 128, as gguf-split).
        #[arg(long)]
        max_tensors: Option<u64>,
        /// Shard 1 holds only the metadata.
        #[arg(long)]
        no_tensor_first_split: bool,
        /// Print the plan, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Prefill and decode speed.
    Bench {
        #[arg(required = true)]
        model: Vec<String>,
        /// Prompt tokens.
        #[arg(short = 'p', default_value_t = 128)]
        prompt_tokens: u32,
        /// Generated tokens.
        #[arg(short = 'n', default_value_t = 64)]
        gen_tokens: u32,
        /// Which GPU adapter: wgpu's choice, a hardware GPU, or a CPU one (llvmpipe).
        #[arg(long, value_enum, default_value_t = Adapter::Auto)]
        adapter: Adapter,
        #[command(flatten)]
        run_on: RunOn,
        #[arg(long)]
        json: bool,
    },
    /// Convert a model to one type, as `llama-quantize --pure`: weight matrices get TYPE (or
    /// llama.cpp's fallback where their rows do not fit its blocks), other tensors are copied.
    Quantize {
        /// The model (a file, the first shard of a split model, or all byte chunks in order),
        /// then the output file.
        #[arg(required = true, num_args = 1.., value_name = "MODEL… OUT")]
        args: Vec<String>,
        /// F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL or IQ4_XS.
        #[arg(long = "type", value_name = "TYPE")]
        ty: String,
        /// Quantize an already quantized model again (through f32: the errors add up).
        #[arg(long)]
        allow_requantize: bool,
    },
    /// Index a built documentation site for the chat widget's retrieval (www/widget/retrieve.js):
    /// its pages' main text in sections at h1–h3, with BM25 postings, as one JSON file.
    Index {
        /// The built static site: every *.html under it but 404.html and noindex pages.
        site_dir: PathBuf,
        /// Where to write the index [default: SITE_DIR/quantweb-index.json].
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// The URL the site is served at (e.g. /docs/ or https://example.org/docs/); without
        /// it, page URLs are relative to the directory that holds the index file.
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
    },
}

/// `quantweb generate`: boxed in [`Cmd`], whose other commands take a few arguments each.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "prompt_file", "messages"])))]
struct GenerateArgs {
    #[arg(required = true)]
    model: Vec<String>,
    #[arg(long)]
    prompt: Option<String>,
    /// The prompt from a UTF-8 file, `-` for standard input (an argument is limited to
    /// 128 KiB on Linux).
    #[arg(long, value_name = "PATH")]
    prompt_file: Option<String>,
    /// A conversation through the model's chat template: a JSON file (`-` for standard
    /// input) of OpenAI's messages: `[{"role": "system" | "user" | "assistant" | "tool",
    /// "content": "…", "tool_calls"?, "tool_call_id"?}, …]`.
    #[arg(long, value_name = "PATH")]
    messages: Option<String>,
    /// Wrap the prompt as one user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Parse special-token text (e.g. <|im_start|>) in a raw prompt.
    #[arg(long)]
    special: bool,
    /// At most this many tokens; generation also ends where the context does.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: Sampling,
    /// End the text before this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// With --json: each generated token's log-probability and its N likeliest
    /// alternatives (0 to 20), as OpenAI's `logprobs`.
    #[arg(long, value_name = "N")]
    logprobs: Option<usize>,
    /// Hold the output to the JSON schema in this file (`-` for standard input): it always
    /// parses and validates.
    #[arg(long, value_name = "PATH", conflicts_with = "grammar")]
    json_schema: Option<String>,
    /// Hold the output to the GBNF grammar (llama.cpp's format) in this file.
    #[arg(long, value_name = "PATH")]
    grammar: Option<String>,
    /// Functions the model may call: a JSON file of OpenAI's `tools` list. Calls come back
    /// parsed (with --json as OpenAI's `tool_calls`).
    #[arg(long, value_name = "PATH")]
    tools: Option<String>,
    /// none, auto (the default), required, or the name of one of the tools.
    #[arg(long, value_name = "CHOICE", requires = "tools")]
    tool_choice: Option<String>,
    /// Let a forced answer hold several calls (llama.cpp's default is one, as here).
    #[arg(long, requires = "tools")]
    parallel_tool_calls: bool,
    /// Use this Jinja chat template instead of the model's (as llama.cpp's
    /// --chat-template-file).
    #[arg(long, value_name = "PATH")]
    chat_template: Option<String>,
    /// Context length (KV cache) in tokens.
    #[arg(long, default_value_t = 4096)]
    ctx: u32,
    #[command(flatten)]
    run_on: RunOn,
    #[arg(long)]
    json: bool,
}

/// Which engine runs the model.
#[derive(clap::Args, Clone, Copy)]
struct RunOn {
    /// The GPU engine (wgpu: Vulkan, Metal, DX12) or the CPU one (SIMD integer dot products).
    #[arg(long, value_enum, default_value_t = BackendArg::Gpu)]
    backend: BackendArg,
    /// CPU engine threads; 0: one per core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BackendArg {
    Gpu,
    Cpu,
}

#[derive(clap::Args)]
struct Sampling {
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 40)]
    top_k: u32,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open(model: &[String]) -> Result<ModelInfo> {
    let m = pollster::block_on(GgufModel::open(open_args(model)?))?;
    ModelInfo::from_model(&m)
}

/// `--adapter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Adapter {
    Auto,
    Gpu,
    Cpu,
}

/// Opens the GGUF and loads the weights into the engine `on` asks for (on the GPU engine, the
/// `adapter`).
fn load(model: &[String], ctx: u32, on: RunOn, adapter: Adapter) -> Result<(GgufModel, Model)> {
    let gguf = pollster::block_on(GgufModel::open(open_args(model)?))?;
    // Before the engine and the weights: an unrunnable file fails in a moment.
    check_runnable(&gguf)?;
    let m = match on.backend {
        BackendArg::Cpu => pollster::block_on(Model::load(Cpu::new(on.threads)?, &gguf, ctx))?,
        BackendArg::Gpu => {
            let kind = match adapter {
                Adapter::Auto => AdapterKind::Any,
                Adapter::Gpu => AdapterKind::Hardware,
                Adapter::Cpu => AdapterKind::Cpu,
            };
            let gpu = pollster::block_on(Gpu::with_adapter(kind))?;
            pollster::block_on(Model::load(gpu, &gguf, ctx))?
        }
    };
    // Shader compilation happens here, not inside the first prefill's timing.
    m.compile()?;
    Ok((gguf, m))
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Inspect { model, json } => {
            let info = open(&model)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&info).expect("serializable")
                );
            } else {
                print_info(&info);
            }
        }
        Cmd::Fit {
            model,
            ctx,
            kv,
            batch,
            gpu_memory,
            json,
        } => {
            let opts = FitOptions {
                context_length: ctx,
                kv_type: KvType::parse(&kv)?,
                batch,
            };
            let gpu = gpu_memory.as_deref().map(parse_bytes).transpose()?;
            let info = open(&model)?;
            let est = memory::estimate(&info, &opts)?;
            if json {
                let mut v = serde_json::to_value(&est).expect("serializable");
                if let Some(g) = gpu {
                    v["verdicts"] =
                        serde_json::to_value(verdicts(&est, &info, g)).expect("serializable");
                }
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).expect("serializable")
                );
            } else {
                print_fit(&est, &info, gpu);
            }
        }
        Cmd::Generate(args) => generate_text(*args)?,
        Cmd::Score {
            model,
            tokens,
            ctx,
            batch,
            top_k,
            run_on,
            json,
        } => {
            let (_, mut m) = load(&model, ctx.max(tokens.len() as u32), run_on, Adapter::Auto)?;
            let s = pollster::block_on(score(&mut m, &tokens, batch, top_k))?;
            if json {
                println!("{}", serde_json::to_string(&s).expect("serializable"));
            } else {
                for (i, p) in s.positions.iter().enumerate() {
                    let lp = p.logprob.map_or("-".to_string(), |l| format!("{l:.4}"));
                    println!(
                        "{i:>5} id {:>7} -> top {:>7}  logprob(next) {lp}",
                        tokens[i], p.argmax
                    );
                    for (id, lp) in &p.top {
                        println!("        {id:>7} {lp:.4}");
                    }
                }
                if let Some(ppl) = s.perplexity {
                    println!("perplexity {ppl:.4}");
                }
            }
        }
        Cmd::Compare {
            models,
            text,
            builtin: _,
            ctx,
            chunks,
            run_on,
            json,
        } => compare_models(&models, text.as_deref(), ctx, chunks, run_on, json)?,
        Cmd::Split {
            mut args,
            max_size,
            max_tensors,
            no_tensor_first_split,
            dry_run,
        } => {
            use quantweb::gguf::split::{parse_max_size, split_files, SplitLimit, SplitOptions};
            let prefix = args.pop().filter(|_| !args.is_empty());
            let prefix = prefix.ok_or_else(|| quantweb::Error::BadOption {
                name: "split",
                value: "one path".into(),
                reason: "give the model, then the prefix of the shards",
            })?;
            let limit = match max_size {
                Some(s) => SplitLimit::MaxBytes(parse_max_size(&s)?),
                None => SplitLimit::MaxTensors(max_tensors.unwrap_or(128)),
            };
            let opts = SplitOptions {
                limit,
                no_tensor_first_split,
            };
            for s in split_files(&args, &prefix, &opts, dry_run)? {
                println!(
                    "{}  {} tensors  {} bytes",
                    s.path, s.n_tensors, s.file_bytes
                );
            }
        }
        Cmd::Bench {
            model,
            prompt_tokens,
            gen_tokens,
            adapter,
            run_on,
            json,
        } => {
            let ctx = prompt_tokens + gen_tokens + 1;
            let (_, mut m) = load(&model, ctx, run_on, adapter)?;
            // A fixed, ordinary stretch of ids: the speed does not depend on which.
            let prompt: Vec<u32> = (0..prompt_tokens)
                .map(|i| 1000 + (i * 7919) % (m.config.n_vocab - 1000))
                .collect();
            let mut sampler = Sampler::new(SamplerConfig::default());
            let (tokens, t) = pollster::block_on(generate(
                &mut m,
                &prompt,
                gen_tokens as usize,
                &mut sampler,
                None,
                None,
                |_| false,
                |_, _| true,
            ))?;
            if json {
                let out = serde_json::json!({
                    "backend": m.backend_name(),
                    "adapter": m.gpu().map(|g| g.adapter_info.name.clone()),
                    "adapter_type": m.gpu().map(|g| format!("{:?}", g.adapter_info.device_type)),
                    "threads": m.cpu().map(|c| c.threads()),
                    "simd": m.cpu().map(|c| c.simd.name()),
                    "prompt_tokens": prompt.len(),
                    "generated_tokens": tokens.len(),
                    "timings": t,
                    "prefill_per_batch": t.prefill.per(t.prefill_batches),
                    "decode_per_token": t.decode.per(t.decode_steps),
                });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&out).expect("serializable")
                );
            } else {
                println!(
                    "prefill {:>5} tokens  {:>9.1} ms  {:>8.1} tok/s",
                    prompt.len(),
                    t.prefill_ms,
                    t.prefill_tok_s
                );
                println!(
                    "decode  {:>5} tokens  {:>9.1} ms  {:>8.1} tok/s",
                    tokens.len().saturating_sub(1),
                    t.decode_ms,
                    t.decode_tok_s
                );
                println!("per prefill batch: {}", t.prefill.per(t.prefill_batches));
                println!("per decoded token: {}", t.decode.per(t.decode_steps));
            }
        }
        Cmd::Quantize {
            mut args,
            ty,
            allow_requantize,
        } => {
            let out = args.pop().filter(|_| !args.is_empty());
            let out = out.ok_or_else(|| quantweb::Error::BadOption {
                name: "quantize",
                value: "one path".into(),
                reason: "give the model, then the output file",
            })?;
            quantize_model(&args, &out, &ty, allow_requantize)?;
        }
        Cmd::Index {
            site_dir,
            output,
            base_url,
        } => {
            let out = output.unwrap_or_else(|| site_dir.join("quantweb-index.json"));
            index_site(&site_dir, &out, base_url)?;
        }
    }
    Ok(())
}

/// `quantweb generate`: the request is checked before the model loads, then the text streams
/// to stdout.
fn generate_text(args: GenerateArgs) -> Result<()> {
    let opts = args.options()?;
    let messages = args.messages()?;
    let (gguf, m) = load(&args.model, args.ctx, args.run_on, Adapter::Auto)?;
    let mut engine = Engine::new(&gguf, m)?;
    if let Some(path) = &args.chat_template {
        engine.set_chat_template(&read_input(path)?)?;
    }
    let prompt_tokens = args.prompt_tokens(&engine, messages, &opts)?;
    let mut shown = 0;
    let done = pollster::block_on(engine.complete(&prompt_tokens, &opts, |piece, _, _| {
        if !args.json {
            print!("{piece}");
            shown += piece.len();
            let _ = std::io::stdout().flush();
        }
        true
    }))?;
    if args.json {
        let out = serde_json::json!({
            "prompt_tokens": done.prompt_tokens,
            "tokens": done.tokens,
            "text": done.text,
            "finish_reason": done.finish_reason,
            "timings": done.timings,
            "logprobs": done.logprobs,
            "tool_calls": done.tool_calls,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serializable")
        );
        return Ok(());
    }
    // Text held back while it might have been a tool call, and was not one.
    print!("{}", done.text.get(shown..).unwrap_or_default());
    for c in done.tool_calls.iter().flatten() {
        print!(
            "\ntool call {}: {}({})",
            c.id, c.function.name, c.function.arguments
        );
    }
    println!();
    let t = &done.timings;
    eprintln!(
        "\n{} prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s",
        done.prompt_tokens.len(),
        t.prefill_tok_s,
        done.tokens.len(),
        t.decode_tok_s
    );
    if opts.constraint.is_some() || opts.tools.as_ref().is_some_and(ToolUse::forced) {
        eprintln!(
            "constraint masks: {:.2} ms per token ({:.1} % of the generation time)",
            t.mask_ms / done.tokens.len().max(1) as f64,
            100.0 * t.mask_ms / (t.prefill_ms + t.decode_ms).max(1e-9)
        );
    }
    Ok(())
}

/// A JSON file of the request, or the named error for `param`.
fn read_json(path: &str, param: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(&read_input(path)?).map_err(|e| quantweb::Error::InvalidRequest {
        param: param.into(),
        value: path.into(),
        reason: format!("not {what}: {e}"),
    })
}

impl GenerateArgs {
    /// The sampling options, constraint and tools, checked.
    fn options(&self) -> Result<CompleteOptions> {
        let constraint = match (&self.json_schema, &self.grammar) {
            (Some(path), _) => Some(Constraint::JsonSchema(
                serde_json::from_str(&read_input(path)?).map_err(|e| {
                    quantweb::Error::BadConstraint {
                        param: "--json-schema".into(),
                        reason: format!("{path}: not JSON: {e}"),
                    }
                })?,
            )),
            (None, Some(path)) => Some(Constraint::Gbnf(read_input(path)?)),
            (None, None) => None,
        };
        let tools = match &self.tools {
            Some(path) => Some(read_json(path, "--tools", "JSON")?),
            None => None,
        };
        let tool_choice = self.tool_choice.as_deref().map(|c| match c {
            "none" | "auto" | "required" => serde_json::json!(c),
            name => serde_json::json!({"type": "function", "function": {"name": name}}),
        });
        let s = &self.sampling;
        let opts = CompleteOptions {
            max_tokens: self.max_tokens,
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            min_p: s.min_p,
            repeat_penalty: s.repeat_penalty,
            seed: s.seed,
            stop: self.stop.clone(),
            logprobs: self.logprobs.is_some(),
            top_logprobs: self.logprobs.unwrap_or(0),
            constraint,
            tools: ToolUse::from_request(
                tools.as_ref(),
                tool_choice.as_ref(),
                Some(self.parallel_tool_calls),
            )?,
        };
        opts.check()?;
        Ok(opts)
    }

    /// The `--messages` conversation, checked.
    fn messages(&self) -> Result<Option<Vec<ChatMessage>>> {
        let Some(path) = &self.messages else {
            return Ok(None);
        };
        let m: Vec<ChatMessage> = serde_json::from_value(read_json(path, "messages", "JSON")?)
            .map_err(|e| quantweb::Error::InvalidRequest {
                param: "messages".into(),
                value: path.clone(),
                reason: format!("not a JSON list of {{role, content}}: {e}"),
            })?;
        check_messages(&m)?;
        Ok(Some(m))
    }

    /// The prompt's ids: a conversation through the chat template (whose rendered text
    /// carries special tokens as text), or a raw prompt (special tokens only with --special).
    fn prompt_tokens(
        &self,
        engine: &Engine,
        messages: Option<Vec<ChatMessage>>,
        opts: &CompleteOptions,
    ) -> Result<Vec<u32>> {
        let tools = opts.tools.as_ref();
        let prompt = match (&self.prompt, &self.prompt_file) {
            (Some(p), _) => p.clone(),
            (None, Some(path)) => read_input(path)?,
            (None, None) => String::new(),
        };
        match messages {
            Some(m) => engine.chat_tokens(&m, tools),
            None if self.chat => engine.chat_tokens(&[ChatMessage::new("user", prompt)], tools),
            None if tools.is_some() => Err(quantweb::Error::InvalidRequest {
                param: "--tools".into(),
                value: String::new(),
                reason: "needs --messages or --chat: the chat template shows the tools".into(),
            }),
            None => Ok(engine.prompt_tokens(&prompt, self.special)),
        }
    }
}

/// `quantweb compare`: loads every model, checks their vocabularies, then reads the text's
/// windows with all of them at once (compare.rs), with progress on stderr.
fn compare_models(
    paths: &[String],
    text: Option<&str>,
    ctx: u32,
    max_chunks: Option<usize>,
    on: RunOn,
    json: bool,
) -> Result<()> {
    let text = match text {
        Some(path) => read_input(path)?,
        None => compare::BUILTIN_TEXT.to_string(),
    };
    let mut loaded = vec![];
    for path in paths {
        let (gguf, model) = load(std::slice::from_ref(path), ctx, on, Adapter::Auto)?;
        let tokenizer = Tokenizer::from_model(&gguf)?;
        let size = Size::of(&ModelInfo::from_model(&gguf)?)?;
        loaded.push((tokenizer, size, model));
    }
    let (base_tok, base_size, mut base) = loaded.remove(0);
    for ((tok, _, _), path) in loaded.iter().zip(&paths[1..]) {
        compare::check_same_vocab(&base_tok, tok, path)?;
    }
    let tokens = base_tok.encode(&text, true, false);
    let bos = base_tok.add_bos().then(|| base_tok.bos()).flatten();
    let windows = compare::chunks(&tokens, ctx, max_chunks, bos)?;
    let (sizes, mut candidates): (Vec<Size>, Vec<Model>) =
        loaded.into_iter().map(|(_, size, m)| (size, m)).unzip();
    eprintln!(
        "compare: {} tokens, {} windows of {ctx}, {} candidates",
        tokens.len(),
        windows.len(),
        candidates.len()
    );
    let started = std::time::Instant::now();
    let on_progress = |p: compare::Progress| {
        if !p.window_end {
            return true;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let eta = elapsed / p.chunk as f64 * (p.chunks - p.chunk) as f64;
        let klds: Vec<String> = p
            .reports
            .iter()
            .map(|r| format!("{:.5}", r.kld.value))
            .collect();
        eprintln!(
            "[{}/{}] {elapsed:.0} s, about {eta:.0} s left; mean KLD so far: {}",
            p.chunk,
            p.chunks,
            klds.join(", ")
        );
        true
    };
    let mut candidates: Vec<&mut Model> = candidates.iter_mut().collect();
    let reports = pollster::block_on(compare::compare(
        &mut base,
        &mut candidates,
        &windows,
        on_progress,
    ))?;
    let names = &paths[1..];
    if json {
        let candidates: Vec<serde_json::Value> = names
            .iter()
            .zip(&sizes)
            .zip(&reports)
            .map(|((model, size), report)| {
                serde_json::json!({"model": model, "size": size, "report": report})
            })
            .collect();
        let out = serde_json::json!({
            "base": {"model": paths[0], "size": base_size},
            "ctx": ctx,
            "chunks": windows.len(),
            "tokens": tokens.len(),
            "candidates": candidates,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serializable")
        );
        return Ok(());
    }
    println!(
        "base {}: file {}, memory {} (the calculator's, at a 4096-token context)",
        paths[0],
        human(base_size.file_bytes),
        human(base_size.total_bytes)
    );
    for ((name, size), r) in names.iter().zip(&sizes).zip(&reports) {
        let pct = |e: compare::Estimate| format!("{:.3} ± {:.3} %", 100.0 * e.value, 100.0 * e.err);
        println!(
            "\n{name}: file {}, memory {}",
            human(size.file_bytes),
            human(size.total_bytes)
        );
        println!("  positions              {}", r.positions);
        for (label, e) in [
            ("PPL(Q)", r.ppl),
            ("PPL(base)", r.ppl_base),
            ("PPL(Q)/PPL(base)", r.ppl_ratio),
            ("Mean KLD", r.kld),
        ] {
            println!("  {label:<22} {:.6} ± {:.6}", e.value, e.err);
        }
        println!(
            "  KLD median/90/99/99.9% {:.6} / {:.6} / {:.6} / {:.6}",
            r.kld_median, r.kld_p90, r.kld_p99, r.kld_p999
        );
        println!("  Same top p             {}", pct(r.same_top));
        println!("  RMS Δp                 {}", pct(r.rms_dp));
    }
    Ok(())
}

/// `quantweb quantize`: the plan, what falls back or is requantized, then OUT via a temp file.
fn quantize_model(model: &[String], out: &str, ty: &str, allow_requantize: bool) -> Result<()> {
    use quantweb::quant::{convert, GgmlType};
    use std::io::IsTerminal;
    let target = GgmlType::from_name(ty).ok_or_else(|| quantweb::Error::BadOption {
        name: "--type",
        value: ty.into(),
        reason: "not a ggml type name (e.g. Q4_K, Q8_0, F16)",
    })?;
    let gguf = pollster::block_on(GgufModel::open(open_args(model)?))?;
    let plans = convert::plan(&gguf, target, allow_requantize)?;
    let summary = convert::summarize(&gguf, target, &plans);
    for (to, names) in &summary.fallbacks {
        eprintln!(
            "fallback to {to} for {} tensors whose rows are not a multiple of {target}'s {} values: {}",
            names.len(),
            target.block_size(),
            names.join(", ")
        );
    }
    if summary.requantized > 0 {
        eprintln!("warning: requantizing {} already quantized tensors through f32: the errors of both formats add up", summary.requantized);
    }
    let start = std::time::Instant::now();
    let progress = std::io::stderr().is_terminal();
    let bytes = convert::write_file(&gguf, target, &plans, std::path::Path::new(out), |i, p| {
        if progress {
            eprint!("\r[{:>4}/{}] {:<40}", i + 1, plans.len(), p.name);
        }
    })?;
    if progress {
        eprintln!();
    }
    println!(
        "wrote {out}: {} ({bytes} bytes), {} tensors: {} converted, {} fell back, {} copied; {:.1} s",
        human(bytes),
        summary.tensors,
        summary.converted,
        summary.fallbacks.values().map(Vec::len).sum::<usize>(),
        summary.tensors - summary.converted,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `quantweb index`: the index as compact JSON (gzip is the web server's business), and a
/// summary on stderr.
fn index_site(site_dir: &Path, out: &Path, base_url: Option<String>) -> Result<()> {
    let indexed = quantweb::site_index::index_site(site_dir, base_url)?;
    let json = serde_json::to_vec(&indexed.index).expect("serializable");
    std::fs::write(out, &json).map_err(|e| quantweb::Error::Io {
        source_name: out.display().to_string(),
        message: format!("cannot write the index: {e}"),
    })?;
    eprintln!(
        "indexed {} pages in {} sections ({} terms): {} ({} bytes)",
        indexed.pages,
        indexed.index.sections.len(),
        indexed.index.postings.len(),
        out.display(),
        json.len()
    );
    Ok(())
}

/// "16G", "16GB", "16GiB", "8e9" → bytes (G = GiB, as GPU memory is sold).
/// A UTF-8 file's text, or standard input's for `-`.
fn read_input(path: &str) -> Result<String> {
    let mut text = String::new();
    let read = if path == "-" {
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
    } else {
        std::fs::File::open(path).and_then(|mut f| std::io::Read::read_to_string(&mut f, &mut text))
    };
    read.map_err(|e| quantweb::Error::Io {
        source_name: path.to_string(),
        message: e.to_string(),
    })?;
    Ok(text)
}

fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_uppercase();
    let t = t.trim_end_matches("IB").trim_end_matches('B');
    let (num, mult) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok((v * mult as f64) as u64),
        _ => Err(quantweb::Error::BadOption {
            name: "--gpu-memory",
            value: s.into(),
            reason: "write e.g. 16G or 8GB",
        }),
    }
}

fn verdicts(est: &MemoryEstimate, info: &ModelInfo, gpu: u64) -> Vec<(String, memory::Verdict)> {
    let dev = DeviceBudget {
        gpu_memory_bytes: gpu,
        max_storage_buffer_binding_size: None,
        max_buffer_size: None,
        storage_available_bytes: None,
    };
    let mut out = vec![(
        "this file".to_string(),
        memory::verdict(est.total_bytes, &est.largest_tensor, info.file_bytes, &dev),
    )];
    out.extend(est.by_quant.iter().map(|r| {
        (
            r.quant.clone(),
            memory::verdict(r.total_bytes, &r.largest_tensor, r.weights_bytes, &dev),
        )
    }));
    out
}

fn human(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn count(n: u64) -> String {
    match n {
        0..=999_999 => n.to_string(),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    }
}

fn print_info(i: &ModelInfo) {
    let h = &i.hparams;
    println!(
        "model         {} ({})",
        i.name.as_deref().unwrap_or("(unnamed)"),
        i.architecture
    );
    println!(
        "file          {} in {} part(s), layout {}, GGUF v{}",
        human(i.file_bytes),
        i.parts.len(),
        i.layout,
        i.gguf_version
    );
    println!(
        "tensors       {} tensors, {} ({} bytes)",
        i.tensor_count,
        human(i.tensor_bytes),
        i.tensor_bytes
    );
    println!("parameters    {} ({})", count(i.parameters), i.parameters);
    println!(
        "file type     {}",
        i.file_type.as_deref().unwrap_or("(not recorded)")
    );
    for t in &i.type_mix {
        println!(
            "  {:<8} {:>4} tensors  {:>12}  {:>10} params",
            t.ty,
            t.tensors,
            human(t.bytes),
            count(t.parameters)
        );
    }
    let kv = match h.kv_heads.iter().min() == h.kv_heads.iter().max() {
        true => h.kv_heads[0].to_string(),
        false => format!("{:?}", h.kv_heads),
    };
    println!("layers        {}", h.layers);
    println!("embedding     {}", h.embedding_length);
    println!(
        "heads         {} (kv heads {kv}), key/value length {}/{}",
        h.heads, h.key_length, h.value_length
    );
    if let Some(ff) = h.feed_forward_length {
        println!("ffn           {ff}");
    }
    println!("context       {}", h.context_length);
    println!("vocab         {}", h.vocab_size);
    if let Some(w) = h.sliding_window {
        println!(
            "sliding win   {w} on {} of {} layers",
            h.sliding_window_layers.len(),
            h.layers
        );
    }
    if let Some(b) = h.rope_freq_base {
        println!("rope base     {b}");
    }
    for u in &i.unsupported_types {
        println!(
            "UNSUPPORTED   {} in {} tensor(s): {}",
            u.ty,
            u.tensors.len(),
            u.tensors.join(", ")
        );
    }
}

fn print_fit(e: &MemoryEstimate, info: &ModelInfo, gpu: Option<u64>) {
    let kv = &e.kv_cache;
    println!(
        "{} ({}), context {}, KV {:?}, batch {}",
        e.model.as_deref().unwrap_or("(unnamed)"),
        e.architecture,
        e.context_length,
        e.kv_type,
        e.batch
    );
    println!(
        "  weights     {:>12}  exact tensor bytes from the header",
        human(e.weights_bytes)
    );
    let mut kv_how = format!(
        "{} layers × {} cells × {} B",
        kv.full_layers, kv.full_cells, kv.bytes_per_cell_per_layer
    );
    if kv.sliding_layers > 0 {
        kv_how += &format!(
            " + {} sliding layers × {} cells × {} B",
            kv.sliding_layers, kv.sliding_cells, kv.bytes_per_cell_per_layer
        );
    }
    println!("  KV cache    {:>12}  {kv_how}", human(e.kv_cache_bytes));
    println!(
        "  scratch     {:>12}  activations {} + logits {}",
        human(e.scratch_bytes),
        human(e.scratch.activations_bytes),
        human(e.scratch.logits_bytes)
    );
    println!("  total       {:>12}", human(e.total_bytes));
    println!(
        "  rule        {:>12}  {} params × {} B/weight ({}-bit) × 1.2",
        human(e.rule_of_thumb_bytes),
        count(e.parameters),
        e.rule_bits as f64 / 8.0,
        e.rule_bits
    );
    println!();
    println!(
        "  {:<8} {:>12} {:>12} {:>12}",
        "quant", "weights", "total", "rule"
    );
    for r in &e.by_quant {
        println!(
            "  {:<8} {:>12} {:>12} {:>12}",
            r.quant,
            human(r.weights_bytes),
            human(r.total_bytes),
            human(r.rule_of_thumb_bytes)
        );
    }
    if let Some(g) = gpu {
        println!();
        for (what, v) in verdicts(e, info, g) {
            println!(
                "  {what:<10} {:?}{}",
                v.level,
                v.reasons
                    .iter()
                    .map(|r| format!("\n             {r}"))
                    .collect::<String>()
            );
        }
    }
    for w in &e.warnings {
        println!("warning: {w}");
    }
}
