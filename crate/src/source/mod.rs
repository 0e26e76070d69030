//! Byte-range sources: the one abstraction between "where the model lives" and the GGUF parser.
//!
//! The parser only ever asks for `read_at(offset, len)`, so the same code reads a local file, an
//! in-memory buffer, a browser `Blob`/`File` and an HTTP URL through Range requests (`browser.rs`).
//! Reads are async because in the browser they are; natively they complete at once (the CLI
//! drives them with `pollster`).

#[cfg(target_arch = "wasm32")]
pub mod browser;

use crate::error::{Error, Result};
use std::future::Future;
use std::pin::Pin;

/// The future of a read. Not `Send`: browser reads hold JS values.
pub type ReadFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>>> + 'a>>;

pub trait ByteSource {
    /// File name or URL, used in error messages.
    fn name(&self) -> &str;
    /// Total size in bytes.
    fn size(&self) -> u64;
    /// Exactly `len` bytes starting at `offset`; an error if the range passes the end.
    fn read_at(&self, offset: u64, len: usize) -> ReadFuture<'_>;
}

/// Checks a requested range against the source size, so every source reports the same error.
pub fn check_range(src: &dyn ByteSource, offset: u64, len: usize) -> Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= src.size() => Ok(()),
        _ => Err(Error::ReadPastEnd {
            source_name: src.name().to_string(),
            offset,
            len: len as u64,
            size: src.size(),
        }),
    }
}

/// Bytes `offset..offset + len` of `window`, the first bytes of a file fetched ahead, if it holds
/// all of them. Computed in u64: on wasm32 `offset as usize` wraps at 4 GiB, and a range of a
/// large model beyond it would be served from the window.
pub fn window_slice(window: &[u8], offset: u64, len: usize) -> Option<&[u8]> {
    let end = offset.checked_add(len as u64)?;
    (end <= window.len() as u64).then(|| &window[offset as usize..end as usize])
}

/// Bytes already in memory (tests, and the browser when a user drops a small file).
pub struct MemorySource {
    name: String,
    bytes: Vec<u8>,
}

impl MemorySource {
    pub fn new(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            bytes,
        }
    }
}

impl ByteSource for MemorySource {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_at(&self, offset: u64, len: usize) -> ReadFuture<'_> {
        let r = check_range(self, offset, len)
            .map(|()| self.bytes[offset as usize..offset as usize + len].to_vec());
        Box::pin(std::future::ready(r))
    }
}

/// Several sources read as one: the raw byte chunks of a single file (e.g. `model.gguf.part00`,
/// `part01`, …) in order. Nothing is joined on disk or in memory; a read that spans a boundary
/// is served piecewise.
pub struct ConcatSource {
    name: String,
    parts: Vec<Box<dyn ByteSource>>,
    /// starts[i] = offset of part i in the whole; starts[n] = total size.
    starts: Vec<u64>,
}

impl ConcatSource {
    pub fn new(parts: Vec<Box<dyn ByteSource>>) -> Self {
        let mut starts = vec![0u64];
        for p in &parts {
            starts.push(starts.last().unwrap() + p.size());
        }
        let name = match parts.as_slice() {
            [] => String::new(),
            [one] => one.name().to_string(),
            [first, .., last] => format!("{} … {}", first.name(), last.name()),
        };
        Self {
            name,
            parts,
            starts,
        }
    }

    pub fn into_parts(self) -> Vec<Box<dyn ByteSource>> {
        self.parts
    }
}

impl ByteSource for ConcatSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> u64 {
        *self.starts.last().unwrap()
    }
    fn read_at(&self, offset: u64, len: usize) -> ReadFuture<'_> {
        Box::pin(async move {
            check_range(self, offset, len)?;
            let mut out = Vec::with_capacity(len);
            let end = offset + len as u64;
            let mut pos = offset;
            while pos < end {
                // The part holding `pos`: the last one that starts at or before it.
                let i = self.starts.partition_point(|&s| s <= pos) - 1;
                let take = (end.min(self.starts[i + 1]) - pos) as usize;
                out.extend(self.parts[i].read_at(pos - self.starts[i], take).await?);
                pos += take as u64;
            }
            Ok(out)
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};
    use std::sync::Mutex;

    /// A local file, read with positioned reads.
    pub struct FileSource {
        name: String,
        file: Mutex<std::fs::File>,
        size: u64,
    }

    impl FileSource {
        pub fn open(path: &std::path::Path) -> Result<Self> {
            let name = path.display().to_string();
            let io = |e: std::io::Error| Error::Io {
                source_name: name.clone(),
                message: e.to_string(),
            };
            let file = std::fs::File::open(path).map_err(io)?;
            let meta = file.metadata().map_err(io)?;
            if !meta.is_file() {
                return Err(Error::Io {
                    source_name: name,
                    message: "not a regular file".into(),
                });
            }
            Ok(Self {
                size: meta.len(),
                file: Mutex::new(file),
                name,
            })
        }
    }

    impl ByteSource for FileSource {
        fn name(&self) -> &str {
            &self.name
        }
        fn size(&self) -> u64 {
            self.size
        }
        fn read_at(&self, offset: u64, len: usize) -> ReadFuture<'_> {
            let r = check_range(self, offset, len).and_then(|()| {
                let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
                let mut buf = vec![0u8; len];
                f.seek(SeekFrom::Start(offset))
                    .and_then(|_| f.read_exact(&mut buf))
                    .map_err(|e| Error::Io {
                        source_name: self.name.clone(),
                        message: e.to_string(),
                    })?;
                Ok(buf)
            });
            Box::pin(std::future::ready(r))
        }
    }

    /// An HTTP(S) URL read with Range requests. Opening it fetches the first `prefetch` bytes
    /// (which also tells the total size), so a typical header needs one request.
    pub struct HttpSource {
        url: String,
        size: u64,
        prefetched: Vec<u8>,
        agent: ureq::Agent,
    }

    impl HttpSource {
        pub fn open(url: &str, prefetch: u64) -> Result<Self> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let (bytes, size) = get_range(&agent, url, 0, prefetch, None)?;
            Ok(Self {
                url: url.to_string(),
                size,
                prefetched: bytes,
                agent,
            })
        }
    }

    /// GET `len` bytes at `offset`; returns the bytes and the total size from Content-Range.
    fn get_range(
        agent: &ureq::Agent,
        url: &str,
        offset: u64,
        len: u64,
        known_size: Option<u64>,
    ) -> Result<(Vec<u8>, u64)> {
        let last = offset + len.max(1) - 1;
        let mut resp = agent
            .get(url)
            .header("Range", &format!("bytes={offset}-{last}"))
            .call()
            .map_err(|e| Error::Network {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let size = match status {
            206 => header("content-range")
                .and_then(|cr| {
                    cr.rsplit('/')
                        .next()
                        .and_then(|t| t.trim().parse::<u64>().ok())
                })
                .or(known_size)
                .ok_or_else(|| Error::Network {
                    url: url.to_string(),
                    message: "206 without a total size in Content-Range".into(),
                })?,
            // A whole small file is fine; a whole model is what Range exists to avoid.
            200 if header("content-length")
                .and_then(|l| l.parse::<u64>().ok())
                .is_some_and(|l| l <= len) =>
            {
                header("content-length").unwrap().parse().unwrap()
            }
            200 => {
                return Err(Error::RangeNotSupported {
                    url: url.to_string(),
                    status,
                })
            }
            // Range starting at or past the end of an empty or short file.
            416 => 0,
            _ => {
                let hint = match status {
                    404 => " (not found: check the URL)",
                    401 | 403 => " (access denied: the model may need a login or a token)",
                    _ => "",
                };
                return Err(Error::Http {
                    url: url.to_string(),
                    status,
                    hint,
                });
            }
        };
        let body = resp
            .body_mut()
            .with_config()
            .limit(len + 1)
            .read_to_vec()
            .map_err(|e| Error::Network {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let want = len.min(size.saturating_sub(offset)) as usize;
        if body.len() < want {
            return Err(Error::Network {
                url: url.to_string(),
                message: format!("connection closed after {} of {want} bytes", body.len()),
            });
        }
        Ok((body[..want].to_vec(), size))
    }

    /// The sources for model arguments as a user types them: paths or http(s) URLs, one file,
    /// all parts in order, or just the first shard of a llama.cpp split (the others are found
    /// by name). Only the first URL prefetches a header window; the others learn their size
    /// from a one-byte range, so byte chunks cost no tensor data.
    pub fn open_args(args: &[String]) -> Result<Vec<Box<dyn ByteSource>>> {
        let names = match args {
            [one] => crate::gguf::shard_names(one).unwrap_or_else(|| args.to_vec()),
            _ => args.to_vec(),
        };
        names
            .iter()
            .enumerate()
            .map(|(i, n)| -> Result<Box<dyn ByteSource>> {
                if n.starts_with("http://") || n.starts_with("https://") {
                    Ok(Box::new(HttpSource::open(
                        n,
                        if i == 0 {
                            crate::gguf::INITIAL_WINDOW
                        } else {
                            1
                        },
                    )?))
                } else {
                    Ok(Box::new(FileSource::open(std::path::Path::new(n))?))
                }
            })
            .collect()
    }

    impl ByteSource for HttpSource {
        fn name(&self) -> &str {
            &self.url
        }
        fn size(&self) -> u64 {
            self.size
        }
        fn read_at(&self, offset: u64, len: usize) -> ReadFuture<'_> {
            let r = check_range(self, offset, len).and_then(|()| {
                if let Some(bytes) = window_slice(&self.prefetched, offset, len) {
                    return Ok(bytes.to_vec());
                }
                get_range(&self.agent, &self.url, offset, len as u64, Some(self.size))
                    .map(|(b, _)| b)
            });
            Box::pin(std::future::ready(r))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        pollster::block_on(f)
    }

    /// Found in review while fuzzing: the URL sources sliced their window at `offset as usize`,
    /// which on wasm32 wraps at 4 GiB and served window bytes for a range beyond it.
    #[test]
    fn window_serves_only_ranges_inside_it() {
        let window: Vec<u8> = (0..16).collect();
        assert_eq!(window_slice(&window, 4, 3), Some(&window[4..7]));
        assert_eq!(window_slice(&window, 16, 0), Some(&[][..]));
        assert_eq!(window_slice(&window, 15, 2), None);
        assert_eq!(window_slice(&window, (1 << 32) + 4, 3), None);
        assert_eq!(window_slice(&window, u64::MAX, 1), None);
    }

    #[test]
    fn concat_reads_across_part_boundaries() {
        let whole: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let parts: Vec<Box<dyn ByteSource>> = [0..300, 300..301, 301..700, 700..1000]
            .into_iter()
            .map(|r| Box::new(MemorySource::new("p", whole[r].to_vec())) as Box<dyn ByteSource>)
            .collect();
        let c = ConcatSource::new(parts);
        assert_eq!(c.size(), 1000);
        for (off, len) in [
            (0, 1000),
            (299, 3),
            (300, 1),
            (250, 600),
            (999, 1),
            (1000, 0),
        ] {
            assert_eq!(
                block_on(c.read_at(off, len)).unwrap(),
                whole[off as usize..off as usize + len]
            );
        }
        assert!(matches!(
            block_on(c.read_at(990, 11)),
            Err(Error::ReadPastEnd { size: 1000, .. })
        ));
        assert!(matches!(
            block_on(c.read_at(u64::MAX, 2)),
            Err(Error::ReadPastEnd { .. })
        ));
    }
}
