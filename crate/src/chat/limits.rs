//! Bounds on rendering an untrusted chat template: one that loops, recurses or builds text
//! without end stops within milliseconds with [`Error::ChatTemplateLimit`], having made at most
//! a few times the conversation's size in data (but see the gaps at the end).
//!
//! - **Fuel** (minijinja's): one unit per instruction and per 64 bytes of data made (4 bytes of
//!   a container written as text or JSON). It ends loops, and it refuses `'x' * 10**9` before
//!   allocating. The budget grows with the conversation, so a long chat never meets it.
//! - **Recursion**: macros and recursive loops nest at most [`RECURSION_LIMIT`] levels.
//! - **Output**: the rendered text is written into a buffer that stops at its cap.
//!
//! minijinja 3.1 charges some data only after making it, so a list of 100 000 references to
//! one 10 kB string (cheap: the list is lazy) turns into 1 GB of text before fuel runs out.
//! The formatter and the builtins that make text this way (`join`, `string`, `pprint`,
//! `tojson`, `format`, `sum`, and pycompat's `str.join` and `str.format`) are replaced here by
//! versions that first count the text into a sink that gives up when the fuel left could not
//! pay for it. What still escapes is listed in ARCHITECTURE.md ("Untrusted chat templates").

use super::ChatMessage;
use crate::error::Error;
use minijinja::value::{Kwargs, Rest, StringInput, ValueKind, ValueOrKwargs};
use minijinja::{Environment, ErrorKind, Output, State, Value};
use std::fmt::Write as _;

type JinjaResult<T> = std::result::Result<T, minijinja::Error>;

/// Fuel of every render: a few ms of the costliest loop natively, and at most 6.4 MB of data
/// made. The small models' templates take 100–150 fuel for four short messages.
const FUEL_BASE: u64 = 100_000;
/// Fuel per message: a template takes 20–30 per message to format it.
const FUEL_PER_MESSAGE: u64 = 1_000;
/// Fuel per byte of roles and contents: enough to copy each byte 64 times (templates copy a
/// message 2–5 times: `+`, `trim`, `split`).
const FUEL_PER_INPUT_BYTE: u64 = 1;
/// Macros nest 32 deep within it. minijinja's default (500, 82 macros) needs up to 512 KiB of
/// stack natively, half of what wasm has.
const RECURSION_LIMIT: usize = 200;
/// Output of every render; templates add a few dozen bytes per message and a system prompt.
const OUTPUT_BASE: u64 = 1 << 20;
const OUTPUT_PER_MESSAGE: u64 = 256;
const OUTPUT_PER_INPUT_BYTE: u64 = 4;

/// Bytes of data one fuel pays for (minijinja 3.1's `UNITS_PER_FUEL`).
const BYTES_PER_FUEL: u64 = 64;
/// Bytes of a container written as text or JSON one fuel pays for (`SERIALIZED_BYTE_COST`).
const SERIALIZED_BYTES_PER_FUEL: u64 = 4;
/// What visiting one item of a list costs, in bytes (`ITEM_COST`), so that iterating a huge
/// list of empty strings is paid for too.
const ITEM_BYTES: u64 = 32;

/// The bounds of one render, from the conversation's size.
pub(crate) struct Limits {
    pub fuel: u64,
    pub output: u64,
}

impl Limits {
    /// `extra`: bytes of the other variables (the tools).
    pub fn for_conversation(
        messages: &[ChatMessage],
        extra: usize,
        bos: &str,
        eos: &str,
    ) -> Limits {
        let n = messages.len() as u64;
        let bytes = messages.iter().map(|m| m.text_bytes() as u64).sum::<u64>()
            + (extra + bos.len() + eos.len()) as u64;
        Limits {
            fuel: FUEL_BASE + FUEL_PER_MESSAGE * n + FUEL_PER_INPUT_BYTE * bytes,
            output: OUTPUT_BASE + OUTPUT_PER_MESSAGE * n + OUTPUT_PER_INPUT_BYTE * bytes,
        }
    }

    /// The named error for a render that failed, if a limit stopped it.
    pub fn error(&self, e: &minijinja::Error, out: &CappedOutput) -> Option<Error> {
        let (limit, value) = if out.full {
            ("output size (bytes)", self.output)
        } else if e.kind() == ErrorKind::OutOfFuel {
            ("work (fuel)", self.fuel)
        } else if e.kind() == ErrorKind::InvalidOperation
            && e.detail() == Some("recursion limit exceeded")
        {
            ("recursion depth", RECURSION_LIMIT as u64)
        } else if e.detail() == Some(NESTING_DETAIL) {
            ("nesting depth of a value written as text", MAX_NESTING)
        } else {
            return None;
        };
        Some(Error::ChatTemplateLimit {
            limit,
            value,
            line: e.line(),
        })
    }
}

/// The rendered text, refusing to grow past its cap.
pub(crate) struct CappedOutput {
    pub bytes: Vec<u8>,
    cap: u64,
    full: bool,
}

impl CappedOutput {
    pub fn new(cap: u64) -> Self {
        CappedOutput {
            bytes: Vec::new(),
            cap,
            full: false,
        }
    }
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if (self.bytes.len() + buf.len()) as u64 > self.cap {
            self.full = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sets the recursion limit and replaces the formatter, filters and methods that make text
/// before paying for it.
pub(crate) fn install(env: &mut Environment<'static>) {
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_formatter(format_value);
    env.set_unknown_method_callback(method);
    env.add_filter("join", join);
    env.add_filter("string", string);
    env.add_filter("pprint", pprint);
    env.add_filter("tojson", tojson);
    env.add_filter("format", format);
    env.add_filter("sum", sum);
}

/// Why a guard refused to make some text.
enum Refusal {
    /// The fuel left cannot pay for it.
    Fuel,
    /// It nests containers deeper than [`MAX_NESTING`].
    Nesting,
}

type Measured = std::result::Result<u64, Refusal>;

/// The detail of the error a guard raises for a value nested too deep.
const NESTING_DETAIL: &str = "value nested too deep to write as text";

/// Containers nested deeper than this are refused as text: minijinja writes them recursively,
/// and a list nested 10 000 deep (a loop of `{% set ns.l = [ns.l] %}`) overflows a 2 MiB stack.
const MAX_NESTING: u64 = 64;

/// Fails as minijinja does when fuel runs out, unless the fuel left pays for the bytes that
/// `measure` counts (`per_fuel` bytes a fuel). `measure` gets that budget and gives up beyond
/// it, so the counting costs no more than the budget.
fn ensure(state: &State, per_fuel: u64, measure: impl FnOnce(u64) -> Measured) -> JinjaResult<()> {
    let budget = state
        .fuel_levels()
        .map_or(u64::MAX, |(_, left)| left.saturating_mul(per_fuel));
    match measure(budget) {
        Ok(n) if n < budget => Ok(()),
        Ok(_) | Err(Refusal::Fuel) => Err(minijinja::Error::from(ErrorKind::OutOfFuel)),
        Err(Refusal::Nesting) => Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            NESTING_DETAIL,
        )),
    }
}

/// `n` more bytes, or [`Refusal::Fuel`] past `limit`.
fn add(total: u64, n: u64, limit: u64) -> Measured {
    let total = total.saturating_add(n);
    if total > limit {
        Err(Refusal::Fuel)
    } else {
        Ok(total)
    }
}

/// Counts bytes written to it; fails past `limit`.
struct Counter {
    n: u64,
    limit: u64,
}

impl std::fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.n += s.len() as u64;
        if self.n > self.limit {
            Err(std::fmt::Error)
        } else {
            Ok(())
        }
    }
}

fn is_container(value: &Value) -> bool {
    matches!(
        value.kind(),
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable
    )
}

/// Checks that `value` nests at most [`MAX_NESTING`] containers deep, paying [`ITEM_BYTES`] a
/// visited item out of `budget`.
fn check_nesting(value: &Value, depth: u64, budget: &mut u64) -> std::result::Result<(), Refusal> {
    if !is_container(value) {
        return Ok(());
    }
    if depth >= MAX_NESTING {
        return Err(Refusal::Nesting);
    }
    let Ok(items) = value.try_iter() else {
        return Ok(());
    };
    let is_map = value.kind() == ValueKind::Map;
    for item in items {
        *budget = budget.checked_sub(ITEM_BYTES).ok_or(Refusal::Fuel)?;
        let child = match is_map {
            true => value.get_item(&item).unwrap_or_default(),
            false => item,
        };
        check_nesting(&child, depth + 1, budget)?;
    }
    Ok(())
}

/// Length of `value` as text (`{value}`, or `{value:#?}` for `pprint`), counted up to `limit`.
fn text_len(value: &Value, limit: u64, pretty: bool) -> Measured {
    if let Some(s) = value.as_str() {
        return Ok(s.len() as u64);
    }
    check_nesting(value, 0, &mut limit.clone())?;
    let mut c = Counter { n: 0, limit };
    let written = if pretty {
        write!(c, "{value:#?}")
    } else {
        write!(c, "{value}")
    };
    written.map(|_| c.n).map_err(|_| Refusal::Fuel)
}

/// Length of the items of `list` as text, `sep` bytes between them, plus what visiting them
/// costs, counted up to `limit`. Something that is not a list counts nothing: the builtin then
/// reports it.
fn items_len(list: &Value, sep: u64, limit: u64) -> Measured {
    let Ok(items) = list.try_iter() else {
        return Ok(0);
    };
    let mut n = 0u64;
    for item in items {
        n = add(n, ITEM_BYTES + sep, limit)?;
        n = add(n, text_len(&item, limit - n, false)?, limit)?;
    }
    Ok(n)
}

/// An upper bound of `tojson`'s output, counted up to `limit`: each item after a separator of
/// two bytes (`", "` or `",\n"`) and indented `indent` per level, each escaped byte 6 bytes
/// (`\u001f`).
fn json_len(value: &Value, indent: u64, depth: u64, limit: u64) -> Measured {
    if depth > MAX_NESTING {
        return Err(Refusal::Nesting);
    }
    let mut n = add(0, 2 + indent.saturating_mul(depth), limit)?;
    if let Some(s) = value.as_str() {
        n = add(n, s.len() as u64 + 2, limit)?;
        let escaped = s
            .bytes()
            .filter(|&b| b < 0x20 || b"\"\\<>&'".contains(&b))
            .count();
        return add(n, 5 * escaped as u64, limit);
    }
    if !is_container(value) {
        return add(n, text_len(value, limit, false)?, limit);
    }
    n = add(n, 2, limit)?;
    let Ok(items) = value.try_iter() else {
        return Ok(n);
    };
    let is_map = value.kind() == ValueKind::Map;
    for item in items {
        n = add(n, json_len(&item, indent, depth + 1, limit - n)?, limit)?;
        if is_map {
            let v = value.get_item(&item).unwrap_or_default();
            n = add(n, 2 + json_len(&v, indent, depth + 1, limit - n)?, limit)?;
        }
    }
    Ok(n)
}

fn format_value(out: &mut Output, state: &mut State, value: &Value) -> JinjaResult<()> {
    if value.as_object().is_some() {
        ensure(state, SERIALIZED_BYTES_PER_FUEL, |b| {
            text_len(value, b, false)
        })?;
    }
    minijinja::escape_formatter(out, state, value)
}

/// pycompat's methods, with `str.join` and `str.format` paid for first.
fn method(state: &mut State, value: &Value, name: &str, args: &[Value]) -> JinjaResult<Value> {
    if let Some(s) = value.as_str() {
        match name {
            "join" => ensure(state, BYTES_PER_FUEL, |b| {
                args.first()
                    .map_or(Ok(0), |list| items_len(list, s.len() as u64, b))
            })?,
            "format" => ensure(state, BYTES_PER_FUEL, |b| str_format_len(s, args, b))?,
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, name, args)
}

/// An upper bound of `s.format(args)`: each `{` a field as wide as the widest width written in
/// `s` (any run of digits) or the longest argument, whichever is larger.
fn str_format_len(s: &str, args: &[Value], limit: u64) -> Measured {
    let widest = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<u64>().unwrap_or(u64::MAX))
        .max()
        .unwrap_or(0);
    let mut longest = 0u64;
    for a in args {
        longest = longest.max(text_len(a, limit, false)?);
    }
    let fields = s.matches('{').count() as u64;
    add(
        s.len() as u64,
        fields.saturating_mul(widest.max(longest)),
        limit,
    )
}

fn join(
    state: &mut State,
    value: &Value,
    joiner: Option<StringInput<'_>>,
    attribute: Option<&str>,
    kwargs: Kwargs,
) -> JinjaResult<Value> {
    let sep = joiner.as_ref().map_or(0, |j| j.as_str().len() as u64);
    ensure(state, BYTES_PER_FUEL, |b| items_len(value, sep, b))?;
    minijinja::filters::join(state, value, joiner, attribute, kwargs)
}

pub(crate) fn string(state: &State, value: &Value) -> JinjaResult<Value> {
    ensure(state, SERIALIZED_BYTES_PER_FUEL, |b| {
        text_len(value, b, false)
    })?;
    minijinja::filters::string(state, value)
}

fn pprint(state: &State, value: &Value) -> JinjaResult<String> {
    ensure(state, SERIALIZED_BYTES_PER_FUEL, |b| {
        text_len(value, b, true)
    })?;
    let text = minijinja::filters::pprint(value);
    state.consume_fuel(text.len() as u64 / SERIALIZED_BYTES_PER_FUEL)?;
    Ok(text)
}

fn tojson(
    state: &State,
    value: &Value,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> JinjaResult<Value> {
    // `true` is 2 spaces, as the builtin reads it.
    let width = match indent.or(kwargs.get("indent")?) {
        Some(v) if v.kind() == ValueKind::Bool => 2 * v.is_true() as usize,
        Some(v) => usize::try_from(v)?,
        None => 0,
    };
    ensure(state, SERIALIZED_BYTES_PER_FUEL, |b| {
        json_len(value, width as u64, 0, b)
    })?;
    let json = python_json(value, width)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    state.consume_fuel(json.len() as u64 / SERIALIZED_BYTES_PER_FUEL)?;
    // Safe: JSON is written into the prompt as it is, never HTML-escaped.
    Ok(Value::from_safe_string(json))
}

/// JSON as Python's `json.dumps(value, ensure_ascii=False, indent=…)` writes it, which is how
/// Hugging Face's `tojson` writes tools and arguments into prompts: `", "` and `": "` without
/// an indent, `","` and newlines with one, no HTML escapes (minijinja's builtin writes compact
/// JSON with `<`, `>`, `&` and `'` escaped, which no model saw in training).
fn python_json(value: &Value, indent: usize) -> std::result::Result<String, serde_json::Error> {
    use serde::Serialize;
    use serde_json::ser::{Formatter, PrettyFormatter, Serializer};
    struct Spaced;
    fn separate<W: ?Sized + std::io::Write>(w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    impl Formatter for Spaced {
        fn begin_array_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            separate(w, first)
        }
        fn begin_object_key<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            separate(w, first)
        }
        fn begin_object_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
        ) -> std::io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    if indent == 0 {
        value.serialize(&mut Serializer::with_formatter(&mut out, Spaced))?;
    } else {
        let spaces = vec![b' '; indent];
        value.serialize(&mut Serializer::with_formatter(
            &mut out,
            PrettyFormatter::with_indent(&spaces),
        ))?;
    }
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

fn format(state: &mut State, format_str: &Value, args: Rest<ValueOrKwargs>) -> JinjaResult<Value> {
    ensure(state, BYTES_PER_FUEL, |b| {
        let mut n = text_len(format_str, b, false)?;
        for a in args.iter() {
            n = add(n, text_len(a, b - n, false)?, b)?;
        }
        Ok(n)
    })?;
    minijinja::filters::format(state, format_str, args)
}

/// `sum` of lists or strings copies the running total for every item: that copying is paid
/// for first (the builtin charges only for visiting the items).
fn sum(
    state: &State,
    values: Value,
    attribute: Option<&str>,
    start: Option<Value>,
    kwargs: Kwargs,
) -> JinjaResult<Value> {
    let start_value = match &start {
        Some(s) => Some(s.clone()),
        None => kwargs.peek::<Option<Value>>("start")?,
    };
    let attribute_path = match attribute {
        Some(a) => Some(a.to_string()),
        None => kwargs.peek::<Option<String>>("attribute")?,
    };
    let size = |v: &Value| match v.kind() {
        ValueKind::String => v.as_str().map_or(0, str::len) as u64,
        ValueKind::Seq | ValueKind::Iterable => v.len().unwrap_or(0) as u64 * ITEM_BYTES,
        _ => 0,
    };
    ensure(state, BYTES_PER_FUEL, |limit| {
        let mut running = start_value.as_ref().map_or(0, size);
        let mut copied = 0u64;
        let Ok(items) = values.try_iter() else {
            return Ok(0);
        };
        for item in items {
            let item = match &attribute_path {
                Some(path) => path.split('.').fold(item, |v, key| {
                    let key = key.parse::<i64>().map_or(Value::from(key), Value::from);
                    v.get_item(&key).unwrap_or_default()
                }),
                None => item,
            };
            running = running.saturating_add(size(&item));
            copied = add(copied, running + ITEM_BYTES, limit)?;
        }
        Ok(copied)
    })?;
    minijinja::filters::sum(state, values, attribute, start, kwargs)
}

#[cfg(test)]
mod tests {
    use super::super::{ChatMessage, ChatTemplate, CHATML, GEMMA};
    use crate::error::Error;
    use std::time::{Duration, Instant};

    /// One message of 6 bytes ("user" + "hi"): fuel 100 000 + 1 000 + 6, output
    /// 1 MiB + 256 + 4 × 6.
    fn hi() -> Vec<ChatMessage> {
        vec![ChatMessage::new("user", "hi")]
    }
    const FUEL_FOR_HI: u64 = 101_006;
    const OUTPUT_FOR_HI: u64 = 1_048_856;

    /// Renders `src` on [`hi`]; the error, and how long the render took.
    fn fail(src: &str) -> (Error, Duration) {
        let t = ChatTemplate::new(src, "", "").unwrap();
        let start = Instant::now();
        let e = t.render(&hi(), true).unwrap_err();
        (e, start.elapsed())
    }

    /// The template stops at `limit`, of `value`, quickly: the issue asks for a second; these
    /// renders take under 50 ms in a debug build, and 0.9–5 s without the guards of this module.
    fn assert_stops(src: &str, limit: &str, value: u64) {
        let (e, took) = fail(src);
        match &e {
            Error::ChatTemplateLimit {
                limit: l, value: v, ..
            } if *l == limit && *v == value => {}
            _ => panic!("{src}: {e}"),
        }
        assert!(took < Duration::from_millis(500), "{src}: {took:?}");
    }

    #[test]
    fn endless_loops_stop_at_the_fuel_limit() {
        let src = "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}";
        assert_stops(src, "work (fuel)", FUEL_FOR_HI);
        let (e, _) = fail(src);
        assert!(
            e.to_string().contains("at line 1") && e.to_string().contains("101006"),
            "{e}"
        );
        // Accumulating through a namespace is a loop too.
        assert_stops(
            "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + [i] %}{% endfor %}",
            "work (fuel)",
            FUEL_FOR_HI,
        );
    }

    #[test]
    fn recursion_stops_at_the_recursion_limit() {
        assert_stops(
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "recursion depth",
            200,
        );
        assert_stops(
            "{% for m in [[1]] recursive %}{{ loop([[1]]) }}{% endfor %}",
            "recursion depth",
            200,
        );
    }

    #[test]
    fn gigabyte_strings_are_refused_before_they_are_made() {
        for src in [
            "{{ 'x' * 1000000000 }}",
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "{% set s = 'x' * 100000 %}{{ s.replace('x', s) }}",
            "{{ '%1000000000s'|format('x') }}",
            "{{ '{:>1000000000}'.format('x') }}",
        ] {
            assert_stops(src, "work (fuel)", FUEL_FOR_HI);
        }
    }

    /// A list of 100 000 references to one 10 kB string is cheap, and 1 GB as text.
    #[test]
    fn gigabyte_text_from_a_shared_list_is_refused() {
        for use_it in [
            "{{ l }}",
            "{% set b %}{{ l }}{% endset %}",
            "{{ l|join }}",
            "{{ ''.join(l) }}",
            "{{ l|string }}",
            "{{ l|pprint }}",
            "{{ l|tojson }}",
            "{{ '%s'|format(l) }}",
            "{{ '{}'.format(l) }}",
            "{{ raise_exception(l) }}",
        ] {
            let src = format!("{{% set l = ['x' * 10000] * 100000 %}}{use_it}");
            assert_stops(&src, "work (fuel)", FUEL_FOR_HI);
        }
        assert_stops(
            "{{ ([[[[[[1]]]]]] * 1000)|tojson(indent=100000) }}",
            "work (fuel)",
            FUEL_FOR_HI,
        );
        assert_stops(
            "{{ ([[1] * 1000] * 1000)|sum(start=[]) }}",
            "work (fuel)",
            FUEL_FOR_HI,
        );
    }

    #[test]
    fn output_past_its_cap_is_refused() {
        // 2 MB for about 60 000 fuel: within the fuel, past the output cap.
        assert_stops(
            "{% for i in range(100) %}{{ 'x' * 20000 }}{% endfor %}",
            "output size (bytes)",
            OUTPUT_FOR_HI,
        );
    }

    /// minijinja writes nested lists recursively: 10 000 levels overflow a 2 MiB stack.
    #[test]
    fn values_nested_too_deep_are_not_written() {
        let build = "{% set ns = namespace(l=[]) %}{% for i in range(100) %}{% set ns.l = [ns.l] %}{% endfor %}";
        for use_it in ["{{ ns.l }}", "{{ ns.l|tojson }}", "{{ [ns.l]|join }}"] {
            assert_stops(
                &format!("{build}{use_it}"),
                "nesting depth of a value written as text",
                64,
            );
        }
    }

    #[test]
    fn a_template_stays_usable_after_a_limit() {
        let src = "{% if messages[0].content == 'loop' %}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}ok";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let looping = [ChatMessage::new("user", "loop")];
        assert!(matches!(
            t.render(&looping, true),
            Err(Error::ChatTemplateLimit { .. })
        ));
        assert_eq!(t.render(&hi(), true).unwrap(), "ok");
    }

    /// Limits grow with the conversation: a 1 MB message and 2 000 turns render as usual.
    #[test]
    fn long_conversations_fit_the_limits() {
        let big = "x".repeat(1 << 20);
        let t = ChatTemplate::new(CHATML, "", "").unwrap();
        let out = t
            .render(&[ChatMessage::new("user", big.as_str())], true)
            .unwrap();
        assert_eq!(
            out,
            format!("<|im_start|>user\n{big}<|im_end|>\n<|im_start|>assistant\n")
        );
        let turns: Vec<ChatMessage> = (0..2000)
            .map(|i| ChatMessage::new(["user", "assistant"][i % 2], format!("turn {i}")))
            .collect();
        let t = ChatTemplate::new(GEMMA, "<bos>", "<eos>").unwrap();
        let out = t.render(&turns, true).unwrap();
        assert!(out.starts_with("<bos><start_of_turn>user\nturn 0<end_of_turn>\n"));
        assert!(out.ends_with("turn 1999<end_of_turn>\n<start_of_turn>model\n"));
        // A template that writes each message as JSON, as tool-calling templates do.
        let t =
            ChatTemplate::new("{% for m in messages %}{{ m|tojson }}{% endfor %}", "", "").unwrap();
        let out = t
            .render(&[ChatMessage::new("user", big.as_str())], false)
            .unwrap();
        assert_eq!(
            out.len(),
            big.len() + r#"{"role": "user", "content": ""}"#.len()
        );
    }

    /// As Jinja2 and llama.cpp's renderer: printed, tested or iterated an undefined variable is
    /// empty or false; reading its attribute is an error that names it.
    #[test]
    fn undefined_variables_are_lenient_but_their_attributes_are_errors() {
        let t = ChatTemplate::new(
            "[{{ nothing }}][{{ nothing is defined }}][{% for x in nothing %}x{% endfor %}][{{ messages[5] }}][{{ messages[0].name }}]",
            "",
            "",
        )
        .unwrap();
        assert_eq!(t.render(&hi(), false).unwrap(), "[][False][][][]");
        let (e, _) = fail("{{ nothing.attr }}");
        match e {
            Error::ChatTemplate { message } => {
                assert!(message.contains("`nothing` is undefined"), "{message}")
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn raised_exceptions_carry_the_template_message() {
        let (e, _) = fail("{{ raise_exception('Only user and assistant roles are supported!') }}");
        match e {
            Error::ChatTemplate { message } => assert!(
                message.contains("Only user and assistant roles are supported!"),
                "{message}"
            ),
            e => panic!("{e}"),
        }
    }
}
