//! The fuzz harnesses (docs/fuzzing.md): each runs one part of the crate on a fuzzer's input and
//! panics only on a bug, a panic in the crate or a property that does not hold. `fuzz/` runs
//! them under libFuzzer; `tests/fuzz_corpus.rs` runs them over the committed corpora on stable,
//! so that every finding stays a test without nightly.
//!
//! Inputs with several parts (model parts, template fields) are cut at [`SEPARATOR`]; the
//! structured ones (tokenizer metadata, read requests) are read front to back by [`Reader`],
//! which gives zeros past the end, so that every input means something.

use crate::chat::{ChatMessage, ChatTemplate};
use crate::error::Error;
use crate::gguf::{read_header, GgufHeader, GgufModel, Value, ValueType};
use crate::quant::{convert, GgmlType};
use crate::source::{window_slice, ByteSource, ConcatSource, MemorySource};
use crate::tokenizer::{TokenAttr, Tokenizer, TokenizerKind};
use std::collections::{BTreeMap, HashSet};

/// Cuts multi-part inputs: four bytes that GGUF headers and templates hardly contain, so a seed
/// is its parts joined by it.
pub const SEPARATOR: &[u8] = b"\xffQW\xff";

/// The GGUF header parser on arbitrary bytes. Property: the outcome does not depend on the
/// size of the first window (the parser re-parses from the start each time it needs more).
pub fn gguf_header(data: &[u8]) {
    let src = MemorySource::new("fuzz.gguf", data.to_vec());
    let small = pollster::block_on(read_header(&src, 64));
    let whole = pollster::block_on(read_header(&src, data.len() as u64));
    assert_same_outcome(&small, &whole);
    if let Ok(h) = small {
        let _ = h.validate();
    }
}

/// [`GgufModel::open`] over 1–3 parts (shards or byte chunks). Property: every tensor of a model
/// that opens can be read, and has the size its header gives.
pub fn gguf_model(data: &[u8]) {
    let Ok(model) = pollster::block_on(GgufModel::open(memory_parts(data, 3))) else {
        return;
    };
    for t in &model.tensors {
        let bytes = pollster::block_on(model.read_tensor(&t.info.name))
            .unwrap_or_else(|e| panic!("tensor {:?} of an opened model: {e}", t.info.name));
        assert_eq!(bytes.len() as u64, t.info.n_bytes, "{}", t.info.name);
    }
}

/// `convert` planning and writing on arbitrary models: the first byte picks the target type
/// (its low 6 bits, as a ggml type id) and whether requantizing is allowed. Properties: the
/// plan's summary counts the bytes `write` writes, and what it writes opens as a model with the
/// planned tensors.
pub fn convert_plan(data: &[u8]) {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let Some(target) = GgmlType::from_id(u32::from(choice & 0x3f)) else {
        return;
    };
    let allow_requantize = choice & 0x40 != 0;
    let Ok(model) = pollster::block_on(GgufModel::open(memory_parts(rest, 3))) else {
        return;
    };
    let Ok(plans) = convert::plan(&model, target, allow_requantize) else {
        return;
    };
    let summary = convert::summarize(&model, target, &plans);
    let mut out = Vec::new();
    let written = pollster::block_on(convert::write(
        &model,
        target,
        &plans,
        &mut out,
        "out",
        |_, _| {},
    ))
    .unwrap_or_else(|e| panic!("writing a planned conversion: {e}"));
    assert_eq!(written, summary.out_bytes);
    assert_eq!(out.len() as u64, written);
    let converted = pollster::block_on(GgufModel::open(vec![Box::new(MemorySource::new(
        "out", out,
    ))]))
    .unwrap_or_else(|e| panic!("the converted model does not open: {e}"));
    let got: Vec<(&str, &[u64], GgmlType)> = converted
        .tensors
        .iter()
        .map(|t| (t.info.name.as_str(), t.info.dims.as_slice(), t.info.ty))
        .collect();
    let planned: Vec<(&str, &[u64], GgmlType)> = plans
        .iter()
        .map(|p| (p.name.as_str(), p.dims.as_slice(), p.to))
        .collect();
    assert_eq!(got, planned);
}

/// Byte-range reassembly: a file cut into chunks and read through [`ConcatSource`], as the
/// browser reads a model given as several Blobs or URLs, and reads served from the window a URL
/// source fetched ahead ([`window_slice`]). Input: the number of cuts and their positions, read
/// requests, then the file. Properties: every read gives the file's bytes or, exactly when it
/// passes the end, `ReadPastEnd`; the window serves exactly the reads inside it; the header
/// read through the chunks is the header of the whole file.
pub fn byte_ranges(data: &[u8]) {
    let mut r = Reader(data);
    let cuts: Vec<u16> = (0..r.u8() % 8).map(|_| r.u16()).collect();
    let reads: Vec<(u64, usize)> = (0..r.u8() % 16)
        .map(|_| {
            let flags = r.u8();
            let offset = u64::from(r.u16());
            let offset = if flags & 1 != 0 {
                u64::MAX - offset
            } else {
                offset
            };
            (offset, usize::from(r.u16()))
        })
        .collect();
    let whole = r.rest();
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) % (whole.len() + 1))
        .collect();
    at.sort_unstable();
    let bounds: Vec<usize> = std::iter::once(0)
        .chain(at)
        .chain(std::iter::once(whole.len()))
        .collect();
    let chunks = || -> Vec<Box<dyn ByteSource>> {
        bounds
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                Box::new(MemorySource::new(
                    format!("part{i}"),
                    whole[w[0]..w[1]].to_vec(),
                )) as Box<dyn ByteSource>
            })
            .collect()
    };
    let flat = ConcatSource::new(chunks());
    // The same chunks grouped in two, each group itself a concatenation.
    let mut parts = chunks();
    let tail = parts.split_off(parts.len() / 2);
    let nested = ConcatSource::new(vec![
        Box::new(ConcatSource::new(parts)),
        Box::new(ConcatSource::new(tail)),
    ]);
    // The first cut's bytes as the window fetched ahead.
    let window = &whole[..bounds[1]];
    for &(offset, len) in &reads {
        let inside = offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= window.len() as u64);
        match window_slice(window, offset, len) {
            Some(bytes) => assert!(inside && bytes == &window[offset as usize..][..len]),
            None => assert!(
                !inside,
                "read of {len} at {offset} inside a {}-byte window",
                window.len()
            ),
        }
    }
    for src in [&flat, &nested] {
        assert_eq!(src.size(), whole.len() as u64);
        for &(offset, len) in &reads {
            let got = pollster::block_on(src.read_at(offset, len));
            let end = offset.checked_add(len as u64);
            match end.filter(|&e| e <= whole.len() as u64) {
                Some(end) => assert_eq!(
                    got.expect("a read inside the file"),
                    &whole[offset as usize..end as usize]
                ),
                None => assert!(
                    matches!(got, Err(Error::ReadPastEnd { .. })),
                    "read of {len} at {offset} of {}: {got:?}",
                    whole.len()
                ),
            }
        }
    }
    let one = MemorySource::new(flat.name(), whole.to_vec());
    assert_same_outcome(
        &pollster::block_on(read_header(&flat, 64)),
        &pollster::block_on(read_header(&one, 64)),
    );
}

/// A tokenizer built from arbitrary `tokenizer.ggml.*` metadata, then run on arbitrary text.
/// Property: the ids it makes are in the vocabulary and decode; and where the tokenizer can
/// spell every text (see [`spells_exactly`]; and for BPE, no `add_space_prefix`), decoding
/// gives the text back, whole and streamed.
pub fn tokenizer(data: &[u8]) {
    let mut r = Reader(data);
    let (md, kind) = tokenizer_metadata(&mut r);
    let text = String::from_utf8_lossy(r.rest()).into_owned();
    let Ok(tok) = Tokenizer::from_metadata("fuzz", &md) else {
        return;
    };
    for (add_special, parse_special) in [(false, false), (true, false), (true, true)] {
        let ids = tok.encode(&text, add_special, parse_special);
        for special in [false, true] {
            tok.decode(&ids, special)
                .unwrap_or_else(|e| panic!("ids the tokenizer made: {e}"));
        }
    }
    // llama.cpp drops the first space when decoding whenever the file asks for a space prefix,
    // but BPE adds none when encoding.
    let space_prefix = md
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(Value::as_bool)
        == Some(true);
    let exact = |k: TokenizerKind| {
        !(k == TokenizerKind::Bpe && space_prefix) && spells_exactly(&tok, k, &text)
    };
    if let Some(kind) = kind.filter(|&k| exact(k)) {
        let ids = tok.encode(&text, false, false);
        let decoded = tok.decode(&ids, false).unwrap();
        assert_eq!(decoded, text, "{kind:?} ids {ids:?}");
        let mut stream = tok.stream_decoder(false);
        let mut streamed = String::new();
        for &id in &ids {
            streamed.push_str(&stream.push(id).unwrap());
        }
        streamed.push_str(&stream.finish());
        assert_eq!(streamed, text, "streamed, {kind:?} ids {ids:?}");
    }
}

/// The chat template renderer on an arbitrary template and conversation. Input: a flag byte
/// (bit 0: `add_generation_prompt`), then template, BOS text, EOS text and role/content pairs,
/// cut at [`SEPARATOR`]. Property: a template that compiles renders or fails with a chat
/// template error, a limit included, never anything else.
pub fn chat_template(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let fields: Vec<String> = fields(rest, usize::MAX)
        .into_iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let field = |i: usize| fields.get(i).map_or("", String::as_str);
    let template = match ChatTemplate::new(field(0), field(1), field(2)) {
        Ok(t) => t,
        Err(Error::ChatTemplate { .. }) => return,
        Err(e) => panic!("compiling a template: {e:?}"),
    };
    let messages: Vec<ChatMessage> = fields
        .get(3..)
        .unwrap_or_default()
        .chunks(2)
        .map(|m| ChatMessage::new(&m[0], m.get(1).map_or("", String::as_str)))
        .collect();
    match template.render(&messages, flags & 1 != 0) {
        Ok(_) | Err(Error::ChatTemplate { .. } | Error::ChatTemplateLimit { .. }) => {}
        Err(e) => panic!("rendering: {e:?}"),
    }
}

/// The parts of a multi-part input, at most `max`: the last one keeps any further separators.
fn fields(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut rest = data;
    while fields.len() + 1 < max {
        let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) else {
            break;
        };
        fields.push(&rest[..at]);
        rest = &rest[at + SEPARATOR.len()..];
    }
    fields.push(rest);
    fields
}

fn memory_parts(data: &[u8], max: usize) -> Vec<Box<dyn ByteSource>> {
    fields(data, max)
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            Box::new(MemorySource::new(format!("part{i}"), p.to_vec())) as Box<dyn ByteSource>
        })
        .collect()
}

/// Two reads of one header agree: the same header (but for the number of reads) or the same
/// error.
fn assert_same_outcome(a: &crate::Result<GgufHeader>, b: &crate::Result<GgufHeader>) {
    let show = |r: &crate::Result<GgufHeader>| match r {
        Ok(h) => format!(
            "{:?}",
            GgufHeader {
                reads: 0,
                ..h.clone()
            }
        ),
        Err(e) => format!("error: {e}"),
    };
    assert_eq!(show(a), show(b));
}

/// Reads an input front to back; past its end every read gives zeros.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    /// Up to 15 bytes of text.
    fn string(&mut self) -> String {
        let n = usize::from(self.u8() % 16);
        String::from_utf8_lossy(self.bytes(n)).into_owned()
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// GPT-2's byte alphabet (`bytes_to_unicode` in its `encoder.py`): printable Latin-1 bytes stand
/// for themselves, the others for U+0100 onwards in byte order.
fn gpt2_byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        char::from(b)
    } else {
        let below = (0..b).filter(|&x| !printable(x)).count() as u32;
        char::from_u32(256 + below).expect("U+0100 to U+0143")
    }
}

fn spm_byte_token(b: u8) -> String {
    format!("<0x{b:02X}>")
}

/// `<0xXX>`, upper-case hex as llama.cpp looks them up.
fn is_spm_byte_token(text: &str) -> bool {
    text.strip_prefix("<0x")
        .and_then(|h| h.strip_suffix('>'))
        .is_some_and(|h| {
            h.len() == 2
                && h.bytes()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
        })
}

/// Tokenizer metadata from the input: a few random tokens and, by flags, the 256 byte tokens,
/// SentencePiece's `▁`, merges of random token pairs (with the tokens they make), token types,
/// scores, special ids and switches, some of each of the wrong type. Returns the kind it asks
/// for (`None` for a model name that is neither).
fn tokenizer_metadata(r: &mut Reader) -> (BTreeMap<String, Value>, Option<TokenizerKind>) {
    let flags = r.u16();
    let flag = |bit: u16| flags & (1 << bit) != 0;
    let (kind, model) = match (flag(0), flag(1)) {
        (false, false) => (Some(TokenizerKind::Spm), "llama".to_string()),
        (true, false) => (Some(TokenizerKind::Bpe), "gpt2".to_string()),
        _ => (None, r.string()),
    };
    let bpe = kind == Some(TokenizerKind::Bpe);

    // (text, GGUF token type)
    let mut tokens: Vec<(String, u8)> = (0..r.u8() % 32).map(|_| (r.string(), 1)).collect();
    if flag(2) {
        tokens.extend((0..=255u8).map(|b| match bpe {
            true => (gpt2_byte_char(b).to_string(), 1),
            false => (spm_byte_token(b), 6),
        }));
    }
    if flag(3) {
        tokens.push(("▁".into(), 1));
    }
    let mut merges = Vec::new();
    for _ in 0..r.u8() % 32 {
        if tokens.is_empty() {
            break;
        }
        let a = tokens[usize::from(r.u8()) % tokens.len()].0.clone();
        let b = tokens[usize::from(r.u8()) % tokens.len()].0.clone();
        merges.push(Value::String(format!("{a} {b}")));
        if flag(4) {
            tokens.push((a + &b, 1));
        }
    }
    if flag(5) {
        let mut seen = HashSet::new();
        tokens.retain(|(t, _)| seen.insert(t.clone()));
    }
    if flag(6) {
        for t in tokens.iter_mut().filter(|t| t.1 == 1) {
            // Mostly normal; the others are every type, and 7 is none.
            let ty = r.u8();
            if ty >= 0xc0 {
                t.1 = ty % 8;
            }
        }
    }

    let mut md = BTreeMap::new();
    let mut set = |k: &str, v: Value| md.insert(format!("tokenizer.ggml.{k}"), v);
    set("model", Value::String(model));
    if bpe || flag(7) {
        let names = crate::tokenizer::supported_pre_names();
        let i = usize::from(r.u8());
        let pre = names.get(i).map_or("bogus", |n| n).to_string();
        set("pre", Value::String(pre));
    }
    let strings = |v: Vec<String>| {
        Value::Array(
            ValueType::String,
            v.into_iter().map(Value::String).collect(),
        )
    };
    set(
        "tokens",
        strings(tokens.iter().map(|t| t.0.clone()).collect()),
    );
    if flag(6) {
        let types = tokens.iter().map(|t| Value::I32(i32::from(t.1))).collect();
        set("token_type", Value::Array(ValueType::I32, types));
    }
    if flag(8) {
        let scores = tokens
            .iter()
            .map(|_| Value::F32(f32::from(r.u8() as i8)))
            .collect();
        set("scores", Value::Array(ValueType::F32, scores));
    }
    if bpe || flag(9) {
        set("merges", Value::Array(ValueType::String, merges));
    }
    for (bit, key) in [
        (10, "bos_token_id"),
        (11, "eos_token_id"),
        (12, "unknown_token_id"),
    ] {
        if flag(bit) {
            set(key, Value::I32(i32::from(r.u8() as i8)));
        }
    }
    for key in ["add_space_prefix", "add_bos_token", "add_eos_token"] {
        match r.u8() % 4 {
            1 => set(key, Value::Bool(false)),
            2 => set(key, Value::Bool(true)),
            3 => set(key, Value::U8(1)),
            _ => None,
        };
    }
    if flag(13) {
        md.insert("general.name".into(), Value::String("phi-3".into()));
    }
    (md, kind)
}

/// Whether `text` must come back from its tokens unchanged: every token is a plain one (no
/// control, user-defined or unknown tokens, which decode to other text or to nothing), every
/// byte has its token (so nothing is dropped or unknown), SentencePiece has `▁` for spaces and
/// the text holds neither `▁` nor a `<0x` that could spell a byte token, and the text has
/// nothing that BPE's `clean_up_tokenization_spaces` changes (a space before `?!.,'`).
fn spells_exactly(tok: &Tokenizer, kind: TokenizerKind, text: &str) -> bool {
    // SentencePiece's byte tokens must be byte tokens, or they decode as their text.
    let plain = |id: u32| {
        let byte = kind == TokenizerKind::Spm && tok.token_text(id).is_ok_and(is_spm_byte_token);
        let attr = tok.token_attr(id).unwrap();
        attr == if byte {
            TokenAttr::BYTE
        } else {
            TokenAttr::NORMAL
        }
    };
    let all_plain = (0..tok.n_vocab() as u32).all(plain);
    let byte_tokens = (0..=255u8).all(|b| match kind {
        TokenizerKind::Spm => tok.token_id(&spm_byte_token(b)).is_some(),
        TokenizerKind::Bpe => tok.token_id(&gpt2_byte_char(b).to_string()).is_some(),
    });
    let text_ok = match kind {
        TokenizerKind::Spm => {
            tok.token_id("▁").is_some() && !text.contains('▁') && !text.contains("<0x")
        }
        TokenizerKind::Bpe => !text
            .as_bytes()
            .windows(2)
            .any(|w| w[0] == b' ' && matches!(w[1], b'?' | b'!' | b'.' | b',' | b'\'')),
    };
    byte_tokens && all_plain && text_ok
}
