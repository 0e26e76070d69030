//! What llama.cpp's tokenizers know about characters: the general-category class of a code
//! point (from its own Unicode 15.1 table, reproduced in `unicode_table.rs`), its notion of
//! whitespace, and GPT-2's byte ↔ character mapping for byte-level BPE.
//!
//! Using the regex engine's own `\p{L}` instead would follow whatever Unicode version the regex
//! crate ships (16.0 at the time of writing), and characters assigned since 15.1 would split
//! differently from llama.cpp.

use super::unicode_table::CLASS_RUNS;

/// General-category class of a code point, as in llama.cpp's `unicode_cpt_flags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Unassigned (Cn).
    Undefined = 0,
    /// `\p{N}`
    Number = 1,
    /// `\p{L}`
    Letter = 2,
    /// `\p{Z}`
    Separator = 3,
    /// `\p{M}`
    Mark = 4,
    /// `\p{P}`
    Punctuation = 5,
    /// `\p{S}`
    Symbol = 6,
    /// `\p{C}` other than Cn: Cc, Cf, Co, Cs.
    Control = 7,
}

impl Class {
    fn from_u8(v: u8) -> Class {
        match v {
            1 => Class::Number,
            2 => Class::Letter,
            3 => Class::Separator,
            4 => Class::Mark,
            5 => Class::Punctuation,
            6 => Class::Symbol,
            7 => Class::Control,
            _ => Class::Undefined,
        }
    }
}

pub(crate) fn class(c: char) -> Class {
    let cp = c as u32;
    // The last run whose first code point is <= cp.
    let i = CLASS_RUNS.partition_point(|&(start, _)| start <= cp);
    Class::from_u8(CLASS_RUNS[i - 1].1)
}

/// Unicode's White_Space property (PropList.txt), which is llama.cpp's `is_whitespace` and also
/// what the regex crate's `\s` matches.
pub(crate) fn is_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{09}'..='\u{0D}'
            | ' '
            | '\u{85}'
            | '\u{A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}'
    )
}

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the other 68 bytes
/// (controls, space, DEL, NBSP, soft hyphen …) for U+0100 onwards in byte order, so that every
/// byte is a visible character in the vocabulary.
pub(crate) fn byte_to_char(b: u8) -> char {
    BYTE_TO_CHAR[b as usize]
}

/// The inverse of [`byte_to_char`]; `None` for a character that stands for no byte.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 256 && is_printable_byte(cp as u8) {
        return Some(cp as u8);
    }
    if (256..256 + 68).contains(&cp) {
        return Some(NONPRINTABLE[(cp - 256) as usize]);
    }
    None
}

const fn is_printable_byte(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The 68 bytes that are not printable, in increasing order: byte `NONPRINTABLE[i]` is written
/// as U+0100 + i.
const NONPRINTABLE: [u8; 68] = {
    let mut out = [0u8; 68];
    let mut n = 0;
    let mut b = 0usize;
    while b < 256 {
        if !is_printable_byte(b as u8) {
            out[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    assert!(n == 68);
    out
};

static BYTE_TO_CHAR: [char; 256] = {
    let mut out = ['\0'; 256];
    let mut b = 0usize;
    while b < 256 {
        out[b] = b as u8 as char;
        b += 1;
    }
    let mut i = 0;
    while i < 68 {
        out[NONPRINTABLE[i] as usize] = match char::from_u32(256 + i as u32) {
            Some(c) => c,
            None => panic!(),
        };
        i += 1;
    }
    out
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_some_characters() {
        assert_eq!(class('a'), Class::Letter);
        assert_eq!(class('7'), Class::Number);
        assert_eq!(class('٣'), Class::Number); // Arabic-Indic digit three
        assert_eq!(class('Ⅻ'), Class::Number); // Nl
        assert_eq!(class('$'), Class::Symbol);
        assert_eq!(class('_'), Class::Punctuation);
        assert_eq!(class('\u{301}'), Class::Mark);
        assert_eq!(class(' '), Class::Separator);
        assert_eq!(class('\n'), Class::Control);
        assert_eq!(class('\u{200D}'), Class::Control); // ZWJ is Cf
        assert_eq!(class('😀'), Class::Symbol);
        assert_eq!(class('中'), Class::Letter);
        // Assigned in Unicode 16.0, so still unassigned in llama.cpp's 15.1 table.
        assert_eq!(class('\u{1FAE9}'), Class::Undefined);
        assert_eq!(class('\u{10FFFF}'), Class::Undefined);
        assert_eq!(class('\u{E000}'), Class::Control); // private use
    }

    #[test]
    fn byte_mapping_round_trips() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(char_to_byte('中'), None);
        assert_eq!(char_to_byte('\u{AD}'), None);
    }
}
