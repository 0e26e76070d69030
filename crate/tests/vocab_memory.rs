//! A 10 M-entry vocabulary is refused before the tokenizer builds anything from it. A test
//! binary of its own, because it counts every allocation of the process.

use quantweb::error::Error;
use quantweb::gguf::{Value, ValueType};
use quantweb::tokenizer::Tokenizer;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes held and their peak.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let held = HELD.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(held, Ordering::SeqCst);
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The error of `Tokenizer::from_metadata` and the most it allocated on top of what was held.
fn refused(md: &BTreeMap<String, Value>) -> (String, usize) {
    let held = HELD.load(Ordering::SeqCst);
    PEAK.store(held, Ordering::SeqCst);
    let e = Tokenizer::from_metadata("big.gguf", md).err().unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - held;
    assert!(matches!(e, Error::BadValue { .. }), "{e}");
    (e.to_string(), peak)
}

fn strings(v: Vec<String>) -> Value {
    Value::Array(
        ValueType::String,
        v.into_iter().map(Value::String).collect(),
    )
}

/// One test, so that no other test allocates meanwhile.
#[test]
fn ten_million_tokens_or_merges_are_refused_before_anything_is_built() {
    let ten_million = || vec![String::new(); 10_000_000];
    let mut md = BTreeMap::new();
    md.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
    md.insert("tokenizer.ggml.tokens".into(), strings(ten_million()));
    let (msg, peak) = refused(&md);
    assert!(
        msg.contains("\"tokenizer.ggml.tokens\": 10000000 tokens is more than 1048576"),
        "{msg}"
    );
    // Collecting the texts alone would take 160 MB (16 bytes a token).
    assert!(peak < 64 << 10, "{peak} bytes allocated");

    let tokens = ["a", "b", "ab"].map(String::from).to_vec();
    md.insert("tokenizer.ggml.tokens".into(), strings(tokens));
    md.insert("tokenizer.ggml.merges".into(), strings(ten_million()));
    let (msg, peak) = refused(&md);
    assert!(
        msg.contains("\"tokenizer.ggml.merges\": 10000000 merges is more than 1048576"),
        "{msg}"
    );
    assert!(peak < 64 << 10, "{peak} bytes allocated");
}
