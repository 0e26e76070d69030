// Tokenizer and chat-template goldens from llama.cpp (node-llama-cpp 3.21.1, CPU).
//
//   cd tests/oracle && npm ci && node make_tokenizer_goldens.mjs
//
// Writes tests/golden/tokenizer-smollm2.json, tokenizer-gemma3.json (≥ 200 strings each: ids
// with special-token parsing off and on, and llama.cpp's detokenization of those ids; chat
// templates rendered by @huggingface/jinja, the Jinja engine node-llama-cpp uses) and
// tokenizer-variants.json (the same vocabularies with other `tokenizer.ggml.pre` values and
// `add_space_prefix`, written as tensor-less GGUFs that llama.cpp loads vocab-only, so that every
// pre-tokenizer regex family is checked against llama.cpp, not just SmolLM2's).
//
// Models are read from ../../models (see /work/shared/models.md); gemma's four byte chunks are
// concatenated into a temporary file for the oracle only.

import { getLlama } from "node-llama-cpp";
import { Template } from "@huggingface/jinja";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const models = path.join(root, "models");
const golden = path.join(root, "tests/golden");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "quantweb-tok-"));

// ---------------------------------------------------------------- test strings

const rep = (s, n) => s.repeat(n);
const strings = [
    // empty, whitespace, leading/trailing spaces
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\r", "\r\r\n\n", "\u000B\u000C", "\u0085",
    "Hello", "Hello world", " Hello world", "Hello world ", "  leading two", "trailing two  ",
    "Hello\n\nworld", "tabs\tand\t\tmore", "mixed \t\n whitespace \n\n\t end", "a \n b", "a\n\n\n\nb",
    "line one\nline two\r\nline three\rfour", "   three leading", "end with newline\n", "\n\nstarts with newlines",
    // contractions
    "I'm", "you're", "they've", "he'll", "she'd", "it's", "IT'S", "We'Ll", "YOU'RE", "don't", "'s", "'tis",
    "rock 'n' roll", "O'Neil's", "Jones' car", " ' ", "a ' b", "he 's here", "didn 't", "x 'll y", "we 've",
    "It's John's dog's bone, isn't it?",
    // digits and numbers
    "1", "12", "123", "1234", "1234567", "12345678901234567890", "3.14159", "1,000,000", "1.000.000,00",
    "10^6", "$1,234.56", "2024-01-15", "12:30:45", "+1 (555) 123-4567", "0x1F 0b1010 1e-9", "v2.0.1",
    "٣٤٥ ١٢٣٤", "१२३४", "Ⅻ ½ ²³", "①②③", "x1y22z333w4444", " 42", "  42", "a1b2c3",
    // punctuation and symbols
    "Hello, world!", "What?!", "...", "a . b , c ! d ?", "«quotes» “curly” ‘single’", "—–-", "!!!???",
    "(parens) [brackets] {braces}", "@#$%^&*", "~`|\\", "<>=+", "©®™", "°C ±5%", "∑∫√∞≠≤≥", "→←↑↓",
    "■□▲", "♠♣♥♦", "€£¥₹₿", "\"double\" 'single'", "a_b", "__init__", "--flag=value", "**bold**",
    // scripts, combining marks
    "héllo wörld", "naïve café résumé", "e\u0301 combining", "Å vs A\u030A", "Ελληνικά κείμενο",
    "Русский текст", "中文字符测试", "日本語のテキスト、カタカナ", "한국어 텍스트", "العربية نص", "עברית",
    "हिन्दी पाठ", "ไทยภาษา", "Tiếng Việt", "ẞ ß", "ﬁ ligature", "Ｆｕｌｌｗｉｄｔｈ", "\u00A0nbsp\u00A0",
    "zero\u200Bwidth", "\u3000ideographic space", "line\u2028sep", "\uFEFFbom", "𝕳𝖊𝖑𝖑𝖔 math", "ᏣᎳᎩ",
    "𓀀 hieroglyph", "a\u0300\u0301\u0302 stacked", "ǅ titlecase", "ʰ modifier", "\u0650\u064Eharakat",
    // emoji
    "😀", "😀😃😄", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸🇫🇷", "❤️", "Hi 👋 there", "1️⃣", "👩🏾‍💻 coding",
    "\u{1FAE9} Unicode 16 emoji", "\u{1FAE9}\u{1FAE9}x", " \u{1CEC0}", // assigned after Unicode 15.1
    // code
    "fn main() {\n    println!(\"hi\");\n}", "def f(x):\n\treturn x**2  # comment",
    "if (a && b || !c) { x += 1; }", "<div class=\"x\">y</div>", "SELECT * FROM t WHERE id = 42;",
    "const x = {a: 1, b: [2, 3]};", "    indented four", "\t\tindented tabs", "x=1;y=2", "a->b::c",
    "#include <stdio.h>", "// comment\n/* block */", "{\"key\": \"value\", \"n\": [1, 2.5, null]}",
    "for i in range(10):\n    print(i)\n", "let s = 'it''s';", "λx.x", "if x >= 10 && y != 3:",
    // URLs and paths
    "https://example.com/path?q=1&r=2#frag", "http://localhost:8080/", "user@example.com",
    "www.test.org/a_b-c", "ftp://x.y/z.tar.gz", "C:\\Users\\name\\file.txt", "/usr/local/bin",
    // special-token texts (both models' and lookalikes)
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nHi<|im_end|>\n",
    "text<|im_end|>more", "<|im_start|><|im_end|>", "< |im_start| >", "<repo_name>", "<reponame>x",
    "<bos>", "<eos>", "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n", "<unused0>",
    "<unused99>", "[multimodal]", "<table><tr><td>x</td></tr></table>", "<b>bold</b> <i>it</i>", "<pad>",
    "<mask>", "<unk>", "<start_of_image>", " <end_of_turn> ", "<s>", "</s>", "<0x41>", "▁", "▁▁x", "Ġ",
    "<", "<|", "<|im_start", "<start_of_turn", "<bos><bos>", "a<eos>b", "x <|endoftext|> y",
    // misc
    "ALL CAPS SHOUTING", "camelCaseIdentifier", "snake_case_identifier", "kebab-case-id", "MiXeD cAsE",
    "a", "A", "?", "'", "\"", "\\", "\u0000", "\u0001\u0002", "\u007F", "\u00AD soft hyphen",
    "The quick brown fox jumps over the lazy dog.",
    // runs of whitespace (Gemma has tokens for up to 31 spaces, newlines and tabs)
    ...[4, 5, 8, 15, 16, 30, 31, 32, 33, 40, 64].map((n) => rep(" ", n)),
    ...[3, 4, 8, 31, 32, 40].map((n) => rep("\n", n)),
    ...[2, 3, 8, 31, 32].map((n) => rep("\t", n)),
    ...[1, 2, 3, 7, 31, 32].map((n) => "x" + rep(" ", n) + "y"),
    "x" + rep(" \n", 5) + "y", "indent\n" + rep(" ", 12) + "deep",
    // long
    "supercalifragilisticexpialidocious", "Pneumonoultramicroscopicsilicovolcanoconiosis",
    rep("x", 300), rep("ab", 200), rep("antidisestablishmentarianism", 5), rep("é", 100), rep("中", 60),
    rep("😀", 30), rep("1", 100), rep("ab1", 50),
    "Tokenizers split text into pieces. Some pieces are words, some are parts of words, and some are " +
        "punctuation marks or spaces! Numbers like 3,141,592 and dates like 1999-12-31 are split " +
        "differently by different models; so are URLs (https://a.b/c?d=e) and emoji 🎉.",
    "Mixed: English, Français, Deutsch (Größe), 日本語, 中文, 한국어, العربية, русский — 12345 ✓ " +
        "<tags> & \"quotes\" 'single' `code` \t tab \n newline.",
];

// Strings aimed at the pre-tokenizer, for the variant vocabularies.
const variantStrings = [
    "", " ", "Hello world", " Hello world ", "I'm you're they've he'll she'd IT'S We'Ll DON'T",
    "1", "12", "123", "1234", "1234567", "12345678901234567890", "3.14159", "1,000,000", "$1,234.56",
    "2024-01-15 12:30:45", "٣٤٥ ١٢٣٤ Ⅻ ½ ²³", "x1y22z333w4444", "  42", "Hello, world!", "What?!...",
    "«quotes» “curly” ‘single’ —–-", "(parens) [brackets] {braces} @#$%^&* ~`|\\ <>=+", "©®™ °C ±5% ∑∫√",
    "héllo wörld naïve", "e\u0301 a\u0300\u0301 Å", "Ελληνικά Русский", "中文字符测试 日本語のテキスト",
    "한국어 العربية עברית हिन्दी ไทยภาษา", "CamelCase camelCase HTTPServer XMLHttpRequest iPhone",
    "ǅ titlecase ʰ modifier", "😀 👍🏽 👨‍👩‍👧‍👦 🇺🇸 \u{1FAE9}", "\u00A0nbsp\u00A0 \u3000x\u2028y",
    "a \n b", "a\n\n\n\nb", "x \n\n  y", "   three leading", "trailing   ", "\t\tindented\ttabs",
    "line one\r\nline two\rthree", "\n\n", "  \n  ", rep(" ", 9) + "x", rep(" ", 40),
    "fn main() {\n    println!(\"hi\");\n}", "def f(x):\n\treturn x**2  # comment",
    "if (a && b || !c) { x += 1; } // done", "<div class=\"x\">y</div>", "a/b/c", "path/to/file.rs\n",
    "https://example.com/path?q=1&r=2#frag", "user@example.com", "rock 'n' roll O'Neil's", " ' a ' b",
    "it 's he 'll we 're I 'm x 've", "Hello , world ! a . b ?", "x'S y'T z'Re", "__init__ --flag",
    "<|im_start|>user\nHi<|im_end|>", "supercalifragilisticexpialidocious", rep("ab1 ", 20),
    "Mixed: Größe, 日本語, 12345 ✓ <tags> & \"q\" `c` \t tab \n nl.",
];

// ---------------------------------------------------------------- GGUF header rewriting

// Reads the key/value section of a GGUF file; returns [{key, bytes}] with each entry's raw
// encoding (key included) so entries can be copied unchanged.
function readKvs(file) {
    const fd = fs.openSync(file, "r");
    const size = fs.fstatSync(fd).size;
    const buf = Buffer.alloc(Math.min(size, 64 << 20));
    fs.readSync(fd, buf, 0, buf.length, 0);
    fs.closeSync(fd);
    if (buf.toString("latin1", 0, 4) !== "GGUF") throw new Error(`${file}: not GGUF`);
    const version = buf.readUInt32LE(4);
    let off = 24;
    const nKv = Number(buf.readBigUInt64LE(16));
    const sizes = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
    const skipValue = (type) => {
        if (type === 8) {
            off += 8 + Number(buf.readBigUInt64LE(off));
        } else if (type === 9) {
            const et = buf.readUInt32LE(off);
            const n = Number(buf.readBigUInt64LE(off + 4));
            off += 12;
            for (let i = 0; i < n; i++) skipValue(et);
        } else {
            off += sizes[type];
        }
    };
    const kvs = [];
    for (let i = 0; i < nKv; i++) {
        const start = off;
        const klen = Number(buf.readBigUInt64LE(off));
        const key = buf.toString("utf8", off + 8, off + 8 + klen);
        off += 8 + klen;
        const type = buf.readUInt32LE(off);
        off += 4;
        skipValue(type);
        kvs.push({ key, bytes: buf.subarray(start, off) });
    }
    return { version, kvs };
}

function kvString(key, value) {
    const k = Buffer.from(key, "utf8");
    const v = Buffer.from(value, "utf8");
    const b = Buffer.alloc(8 + k.length + 4 + 8 + v.length);
    b.writeBigUInt64LE(BigInt(k.length), 0);
    k.copy(b, 8);
    b.writeUInt32LE(8, 8 + k.length);
    b.writeBigUInt64LE(BigInt(v.length), 12 + k.length);
    v.copy(b, 20 + k.length);
    return b;
}

function kvBool(key, value) {
    const k = Buffer.from(key, "utf8");
    const b = Buffer.alloc(8 + k.length + 4 + 1);
    b.writeBigUInt64LE(BigInt(k.length), 0);
    k.copy(b, 8);
    b.writeUInt32LE(7, 8 + k.length);
    b.writeUInt8(value ? 1 : 0, 12 + k.length);
    return b;
}

// A tensor-less GGUF with `src`'s metadata, some entries replaced or added.
function writeVariant(src, out, replace) {
    const { version, kvs } = readKvs(src);
    const entries = kvs.filter((kv) => !(kv.key in replace)).map((kv) => kv.bytes);
    for (const [key, val] of Object.entries(replace)) {
        entries.push(typeof val === "boolean" ? kvBool(key, val) : kvString(key, val));
    }
    const head = Buffer.alloc(24);
    head.write("GGUF", 0, "latin1");
    head.writeUInt32LE(version, 4);
    head.writeBigUInt64LE(0n, 8);
    head.writeBigUInt64LE(BigInt(entries.length), 16);
    const body = Buffer.concat([head, ...entries]);
    const pad = Buffer.alloc((32 - (body.length % 32)) % 32);
    fs.writeFileSync(out, Buffer.concat([body, pad]));
}

// ---------------------------------------------------------------- chat templates

// The built-in templates of crate/src/chat.rs, read from the source so there is one copy.
function rustTemplates() {
    const src = fs.readFileSync(path.join(root, "crate/src/chat.rs"), "utf8");
    const gemma = src.match(/pub const GEMMA: &str = r#"([\s\S]*?)"#;/)[1];
    const chatml = JSON.parse(src.match(/pub const CHATML: &str = ("(?:[^"\\]|\\.)*");/)[1]);
    return { gemma, chatml };
}

const conversations = [
    [{ role: "user", content: "Hello!" }],
    [
        { role: "system", content: "You are terse." },
        { role: "user", content: "What is 2+2?" },
        { role: "assistant", content: "4." },
        { role: "user", content: "And 3+3?" },
    ],
    [
        { role: "user", content: "Write \"hi\" in 中文 😀\n" },
        { role: "assistant", content: "  你好  " },
        { role: "user", content: "  spaces  and <b>tags</b>" },
    ],
];

function renderAll(source, bos_token, eos_token, model, name) {
    const t = new Template(source);
    const out = [];
    conversations.forEach((messages, conversation) => {
        for (const add_generation_prompt of [false, true]) {
            const rendered = t.render({ messages, add_generation_prompt, bos_token, eos_token });
            out.push({
                template: name,
                conversation,
                add_generation_prompt,
                rendered,
                ids: Array.from(model.tokenize(rendered, true)),
            });
        }
    });
    return out;
}

// ---------------------------------------------------------------- run the oracle

const llama = await getLlama({ gpu: false });

async function record(modelPath, list) {
    const model = await llama.loadModel({ modelPath, vocabOnly: true });
    const cases = list.map((text) => {
        const ids = Array.from(model.tokenize(text, false));
        const ids_special = Array.from(model.tokenize(text, true));
        return {
            text,
            ids,
            ids_special,
            decoded: model.detokenize(ids, false),
            decoded_special: model.detokenize(ids_special, true),
        };
    });
    return { model, cases };
}

function write(name, obj) {
    const file = path.join(golden, name);
    const text = JSON.stringify(obj) + "\n";
    fs.writeFileSync(file, text);
    console.log(`${file}: ${(text.length / 1024).toFixed(0)} KiB`);
}

const header = {
    generator: "tests/oracle/make_tokenizer_goldens.mjs",
    oracle: "node-llama-cpp 3.21.1 (llama.cpp), vocab-only load; chat templates by @huggingface/jinja",
};
const { gemma: gemmaTemplate, chatml } = rustTemplates();

// SmolLM2
const smolPath = path.join(models, "SmolLM2-135M-Instruct.Q4_1.gguf");
{
    const { model, cases } = await record(smolPath, strings);
    const info = await import("node-llama-cpp").then((m) => m.readGgufFileInfo(smolPath, { readTensorInfo: false }));
    const tmpl = info.metadata.tokenizer.chat_template;
    const bos = model.detokenize([model.tokens.bos], true);
    const eos = model.detokenize([model.tokens.eos], true);
    write("tokenizer-smollm2.json", {
        ...header,
        model: "SmolLM2-135M-Instruct.Q4_1.gguf",
        bos: model.tokens.bos ?? null,
        eos: model.tokens.eos ?? null,
        should_prepend_bos: model.tokens.shouldPrependBosToken,
        cases,
        chat: [
            ...renderAll(tmpl, bos, eos, model, "model"),
            ...renderAll(chatml, bos, eos, model, "chatml"),
        ],
    });
    await model.dispose();
}

// Gemma 3: four byte chunks, joined for the oracle only.
const gemmaPath = path.join(tmp, "gemma-3-270m-q4_k_m.gguf");
{
    const out = fs.openSync(gemmaPath, "w");
    for (const p of ["00", "01", "02", "03"]) {
        fs.writeSync(out, fs.readFileSync(path.join(models, `gemma-3-270m-q4_k_m.gguf.part${p}`)));
    }
    fs.closeSync(out);
    const { model, cases } = await record(gemmaPath, strings);
    write("tokenizer-gemma3.json", {
        ...header,
        model: "gemma-3-270m-q4_k_m.gguf.part00..03",
        bos: model.tokens.bos ?? null,
        eos: model.tokens.eos ?? null,
        should_prepend_bos: model.tokens.shouldPrependBosToken,
        cases,
        // The base model has no template; this is quantweb's built-in GEMMA one.
        chat: renderAll(gemmaTemplate, "<bos>", "<eos>", model, "gemma"),
    });
    await model.dispose();
}

// Variants: other pre-tokenizers on SmolLM2's vocabulary, SPM with a space prefix on Gemma's.
const variantPres = [
    "default", "llama-bpe", "dbrx", "chatglm-bpe", "falcon", "gpt-2", "trillion", "starcoder",
    "command-r", "qwen2", "stablelm2", "gpt-4o", "tekken", "granite-embed-multi-97m", "seed-coder",
    "bailingmoe", "exaone-moe", "minicpm5", "laguna", "jais-2",
];
const variants = [];
const compact = (cases) =>
    cases.map((c) => ({
        text: c.text,
        ids: c.ids,
        // null: llama.cpp's detokenization gives the text back
        decoded: c.decoded === c.text ? null : c.decoded,
    }));
for (const pre of variantPres) {
    const file = path.join(tmp, `smollm2-${pre}.gguf`);
    writeVariant(smolPath, file, { "tokenizer.ggml.pre": pre });
    const model = await llama.loadModel({ modelPath: file, vocabOnly: true });
    const cases = variantStrings.map((text) => {
        const ids = Array.from(model.tokenize(text, false));
        return { text, ids, decoded: model.detokenize(ids, false) };
    });
    variants.push({ base: "smollm2", set: { "tokenizer.ggml.pre": pre }, cases: compact(cases) });
    await model.dispose();
    fs.rmSync(file);
}
{
    const file = path.join(tmp, "gemma3-space-prefix.gguf");
    writeVariant(gemmaPath, file, { "tokenizer.ggml.add_space_prefix": true });
    const model = await llama.loadModel({ modelPath: file, vocabOnly: true });
    const cases = variantStrings.map((text) => {
        const ids = Array.from(model.tokenize(text, true));
        return { text, ids, decoded: model.detokenize(ids, true) };
    });
    variants.push({
        base: "gemma3",
        set: { "tokenizer.ggml.add_space_prefix": true },
        parse_special: true,
        cases: compact(cases),
    });
    await model.dispose();
    fs.rmSync(file);
}
write("tokenizer-variants.json", { ...header, variants });

fs.rmSync(tmp, { recursive: true, force: true });
console.log(`${strings.length} strings per model, ${variantStrings.length} per variant`);
