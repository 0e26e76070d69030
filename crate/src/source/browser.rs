//! The browser's byte sources: a `Blob`/`File` read slice by slice, and a URL read with HTTP
//! Range requests through `fetch` (in a window or a worker).

use super::{check_range, window_slice, ByteSource, ReadFuture};
use crate::error::{Error, Result};
use crate::gguf::{shard_names, INITIAL_WINDOW};
use js_sys::{Array, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen]
extern "C" {
    /// `globalThis.fetch`: the same in a window and in a worker.
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(req: &web_sys::Request) -> js_sys::Promise;
}

/// A JS exception's message.
pub(crate) fn js_message(v: &JsValue) -> String {
    v.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| v.as_string())
        .unwrap_or_else(|| format!("{v:?}"))
}

/// A `Blob` or `File` picked by the user: read locally, slice by slice.
struct BlobSource {
    name: String,
    blob: web_sys::Blob,
}

impl ByteSource for BlobSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> u64 {
        self.blob.size() as u64
    }
    fn read_at(&self, offset: u64, len: usize) -> ReadFuture<'_> {
        Box::pin(async move {
            check_range(self, offset, len)?;
            let io = |v: JsValue| Error::Io {
                source_name: self.name.clone(),
                message: js_message(&v),
            };
            let slice = self
                .blob
                .slice_with_f64_and_f64(offset as f64, (offset + len as u64) as f64)
                .map_err(io)?;
            let buf = JsFuture::from(slice.array_buffer()).await.map_err(io)?;
            Ok(Uint8Array::new(&buf).to_vec())
        })
    }
}

/// An HTTP(S) URL read with Range requests. Opening it fetches the first window, which also
/// gives the total size.
struct FetchSource {
    url: String,
    size: u64,
    prefetched: Vec<u8>,
}

impl FetchSource {
    /// `prefetch`: the header window for a model's first file, 1 byte (just the size) for the
    /// other parts.
    async fn open(url: &str, prefetch: u64) -> Result<Self> {
        let (prefetched, size) = fetch_range(url, 0, prefetch, None).await?;
        Ok(FetchSource {
            url: url.into(),
            size,
            prefetched,
        })
    }
}

async fn fetch_range(
    url: &str,
    offset: u64,
    len: u64,
    known_size: Option<u64>,
) -> Result<(Vec<u8>, u64)> {
    let net = |v: JsValue| Error::Network {
        url: url.into(),
        message: js_message(&v),
    };
    let headers = web_sys::Headers::new().map_err(net)?;
    headers
        .set(
            "Range",
            &format!("bytes={offset}-{}", offset + len.max(1) - 1),
        )
        .map_err(net)?;
    let init = web_sys::RequestInit::new();
    init.set_headers(&headers);
    let req = web_sys::Request::new_with_str_and_init(url, &init).map_err(net)?;
    let resp: web_sys::Response = JsFuture::from(global_fetch(&req))
        .await
        .map_err(net)?
        .unchecked_into();
    let status = resp.status();
    let header = |name: &str| resp.headers().get(name).ok().flatten();
    let content_length = header("content-length").and_then(|l| l.parse::<u64>().ok());
    let size = match status {
        206 => match header("content-range")
            .and_then(|cr| {
                cr.rsplit('/')
                    .next()
                    .and_then(|t| t.trim().parse::<u64>().ok())
            })
            .or(known_size)
        {
            Some(s) => s,
            // Cross-origin servers that do not expose Content-Range: ask for the length.
            None => head_length(url).await?,
        },
        200 if content_length.is_some_and(|l| l <= len) => content_length.unwrap_or(0),
        200 => {
            cancel_body(&resp);
            return Err(Error::RangeNotSupported {
                url: url.into(),
                status,
            });
        }
        416 => 0,
        _ => {
            cancel_body(&resp);
            let hint = match status {
                404 => " (not found: check the URL)",
                401 | 403 => " (access denied: the model may need a login or a token)",
                _ => "",
            };
            return Err(Error::Http {
                url: url.into(),
                status,
                hint,
            });
        }
    };
    let buf = JsFuture::from(resp.array_buffer().map_err(net)?)
        .await
        .map_err(net)?;
    let body = Uint8Array::new(&buf).to_vec();
    let want = len.min(size.saturating_sub(offset)) as usize;
    if body.len() < want {
        return Err(Error::Network {
            url: url.into(),
            message: format!("connection closed after {} of {want} bytes", body.len()),
        });
    }
    Ok((body[..want].to_vec(), size))
}

/// Stops the browser from downloading a body nobody will read (a whole model sent as a 200).
fn cancel_body(resp: &web_sys::Response) {
    if let Some(body) = resp.body() {
        // Dropping the promise is fine: there is nothing to do when the cancel completes.
        let _ = body.cancel();
    }
}

async fn head_length(url: &str) -> Result<u64> {
    let net = |v: JsValue| Error::Network {
        url: url.into(),
        message: js_message(&v),
    };
    let init = web_sys::RequestInit::new();
    init.set_method("HEAD");
    let req = web_sys::Request::new_with_str_and_init(url, &init).map_err(net)?;
    let resp: web_sys::Response = JsFuture::from(global_fetch(&req))
        .await
        .map_err(net)?
        .unchecked_into();
    resp.headers().get("content-length").ok().flatten().and_then(|l| l.parse().ok()).ok_or_else(|| Error::Network {
        url: url.into(),
        message: "the server exposes neither Content-Range nor Content-Length to this page (CORS Access-Control-Expose-Headers)".into(),
    })
}

impl ByteSource for FetchSource {
    fn name(&self) -> &str {
        &self.url
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, offset: u64, len: usize) -> ReadFuture<'_> {
        Box::pin(async move {
            check_range(self, offset, len)?;
            if let Some(bytes) = window_slice(&self.prefetched, offset, len) {
                return Ok(bytes.to_vec());
            }
            Ok(fetch_range(&self.url, offset, len as u64, Some(self.size))
                .await?
                .0)
        })
    }
}

/// `source`: a URL string, a Blob/File, or an array of them (shards or byte chunks, in order).
/// A lone URL or File name of a first shard (`-00001-of-0000N.gguf`) expands to all shards
/// for URLs; Files must all be given.
pub(crate) async fn open_sources(source: JsValue) -> Result<Vec<Box<dyn ByteSource>>> {
    let items: Vec<JsValue> = if Array::is_array(&source) {
        Array::from(&source).to_vec()
    } else {
        vec![source]
    };
    let items = match items.as_slice() {
        [one] => match one.as_string().and_then(|u| shard_names(&u)) {
            Some(names) => names.into_iter().map(JsValue::from).collect(),
            None => items,
        },
        _ => items,
    };
    let mut out: Vec<Box<dyn ByteSource>> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if let Some(url) = item.as_string() {
            out.push(Box::new(
                FetchSource::open(&url, if i == 0 { INITIAL_WINDOW } else { 1 }).await?,
            ));
        } else if let Some(blob) = item.dyn_ref::<web_sys::Blob>() {
            let name = item
                .dyn_ref::<web_sys::File>()
                .map(|f| f.name())
                .unwrap_or_else(|| "blob".into());
            out.push(Box::new(BlobSource {
                name,
                blob: blob.clone(),
            }));
        } else {
            return Err(Error::Io {
                source_name: format!("{item:?}"),
                message: "expected a URL string, a File or a Blob".into(),
            });
        }
    }
    Ok(out)
}
