//! A small static file server for development and the browser tests (std only, a thread per
//! connection, HTTP/1.1 keep-alive).
//!
//! Routes:
//! - `/…`         → `www/` (`Cache-Control: no-cache`; a directory serves its index.html)
//! - `/models/…`  → the models directory, with CORS headers so pages on other origins can read it
//! - `/nocors/…`  → the same models directory WITHOUT CORS headers (for testing CORS errors)
//!
//! Every response carries COOP `same-origin`, COEP `require-corp` and CORP `cross-origin` (so the
//! page is cross-origin isolated and may still be embedded/fetched). File responses support
//! GET/HEAD, single-range `Range` requests (206/416), `If-None-Match` (304) and `If-Range`, carry
//! `Accept-Ranges: bytes`, an ETag (size + mtime) and Last-Modified, and are streamed from disk.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::util::{repo_root, Result};

/// What to serve and how chatty to be.
#[derive(Clone, Debug)]
pub struct Config {
    pub www: PathBuf,
    pub models: PathBuf,
    /// Log every request (true) or only errors (4xx/5xx except HEAD/OPTIONS probes) (false).
    pub log_all: bool,
}

impl Config {
    /// `$QUANTWEB_WWW_DIR` or www/, and the models directory of this repository.
    pub fn repo(log_all: bool) -> Self {
        let www = match std::env::var_os("QUANTWEB_WWW_DIR") {
            Some(d) if !d.is_empty() => repo_root().join(d),
            _ => repo_root().join("www"),
        };
        Config {
            www,
            models: crate::models::models_dir(),
            log_all,
        }
    }
}

/// Binds `host:port` (port 0 = ephemeral) and serves in background threads; returns the bound
/// address. When `host` is 127.0.0.1 the same port is also bound on [::1] if possible, so that
/// `http://localhost:PORT` works whichever loopback address the client picks.
pub fn start(host: &str, port: u16, config: Config) -> Result<SocketAddr> {
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("host {host} has no address"))?;
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let config = Arc::new(config);
    if bound.ip() == IpAddr::from([127, 0, 0, 1]) {
        if let Ok(l6) = TcpListener::bind(SocketAddr::new(
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            bound.port(),
        )) {
            spawn_accept_loop(l6, config.clone());
        }
    }
    spawn_accept_loop(listener, config);
    Ok(bound)
}

fn spawn_accept_loop(listener: TcpListener, config: Arc<Config>) {
    thread::spawn(move || {
        for conn in listener.incoming() {
            match conn {
                Ok(stream) => {
                    let config = config.clone();
                    thread::spawn(move || {
                        let _ = handle_connection(stream, &config);
                    });
                }
                Err(e) => {
                    eprintln!("serve: accept failed: {e}");
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    });
}

/// `cargo xtask serve`: start on `host:port` and block forever.
pub fn serve_forever(host: &str, port: u16) -> Result<()> {
    let config = Config::repo(true);
    let addr = start(host, port, config.clone())?;
    let shown = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    println!();
    println!(
        "serving {} at /  and  {} at /models/ (CORS) and /nocors/",
        config.www.display(),
        config.models.display()
    );
    println!("open http://{shown}/   (Ctrl-C to stop)");
    loop {
        thread::park();
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

const MAX_HEAD: usize = 64 * 1024;
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

struct Request {
    method: String,
    target: String,
    http10: bool,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn keep_alive(&self) -> bool {
        let conn = self.header("connection").unwrap_or("").to_ascii_lowercase();
        if self.http10 {
            conn.contains("keep-alive")
        } else {
            !conn.contains("close")
        }
    }
}

/// Reads one request head; Ok(None) on a clean EOF between requests.
fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = reader
            .by_ref()
            .take((MAX_HEAD - total + 1) as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            if lines.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "eof in request head",
            ));
        }
        total += n;
        if total > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        let line = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerate blank lines before the request line
            }
            break;
        }
        lines.push(line);
    }
    let mut parts = lines[0].split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let headers = lines[1..]
        .iter()
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    Ok(Some(Request {
        method: method.to_string(),
        target: target.to_string(),
        http10: version == "HTTP/1.0",
        headers,
    }))
}

fn handle_connection(stream: TcpStream, config: &Config) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let req = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let mut r = Response::new(400, "400 bad request\n");
                r.keep_alive = false;
                return r.send(&mut writer, false, None);
            }
            Err(e) => return Err(e),
        };
        // We serve no request bodies: skip a Content-Length body, refuse chunked ones.
        let mut keep_alive = req.keep_alive();
        if let Some(len) = req
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok())
        {
            io::copy(&mut reader.by_ref().take(len), &mut io::sink())?;
        }
        if req.header("transfer-encoding").is_some() {
            keep_alive = false;
        }
        let mut resp = respond(&req, config);
        resp.keep_alive = keep_alive;
        let status = resp.status;
        let head_only = req.method == "HEAD";
        let noise = req.method == "OPTIONS" || req.target == "/favicon.ico";
        if config.log_all || (status >= 400 && !noise) {
            eprintln!("serve: {} {} -> {}", req.method, req.target, status);
        }
        let body_file = resp.file.take();
        resp.send(&mut writer, head_only, body_file)?;
        if !keep_alive {
            return Ok(());
        }
    }
}

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Streamed body: file, offset, length.
    file: Option<(File, u64, u64)>,
    keep_alive: bool,
}

impl Response {
    fn new(status: u16, text: &str) -> Self {
        let mut r = Response {
            status,
            headers: Vec::new(),
            body: text.as_bytes().to_vec(),
            file: None,
            keep_alive: true,
        };
        if !text.is_empty() {
            r.header("Content-Type", "text/plain; charset=utf-8");
        }
        r
    }

    fn header(&mut self, name: &'static str, value: impl Into<String>) {
        self.headers.push((name, value.into()));
    }

    fn send(
        mut self,
        w: &mut TcpStream,
        head_only: bool,
        file: Option<(File, u64, u64)>,
    ) -> io::Result<()> {
        let len = match &file {
            Some((_, _, len)) => *len,
            None => self.body.len() as u64,
        };
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        // Isolation headers on every response.
        self.header("Cross-Origin-Opener-Policy", "same-origin");
        self.header("Cross-Origin-Embedder-Policy", "require-corp");
        self.header("Cross-Origin-Resource-Policy", "cross-origin");
        self.header("Date", http_date(SystemTime::now()));
        if self.status != 204 && self.status != 304 {
            self.header("Content-Length", len.to_string());
        }
        self.header(
            "Connection",
            if self.keep_alive {
                "keep-alive"
            } else {
                "close"
            },
        );
        for (k, v) in &self.headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let bodyless = head_only || self.status == 204 || self.status == 304;
        if bodyless || file.is_some() {
            w.write_all(head.as_bytes())?;
        } else {
            let mut all = head.into_bytes();
            all.extend_from_slice(&self.body);
            w.write_all(&all)?;
        }
        if let (false, Some((mut f, offset, len))) = (bodyless, file) {
            f.seek(SeekFrom::Start(offset))?;
            // io::copy from a File to a TcpStream uses sendfile on Linux: no userspace copy.
            let sent = io::copy(&mut f.take(len), w)?;
            if sent != len {
                // The file shrank under us: the client sees a short body; don't reuse the connection.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than announced",
                ));
            }
        }
        w.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        _ => "Internal Server Error",
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Root {
    Www,
    Models { cors: bool },
}

fn add_cors(resp: &mut Response) {
    resp.header("Access-Control-Allow-Origin", "*");
    resp.header(
        "Access-Control-Expose-Headers",
        "Content-Range, Content-Length, Accept-Ranges, ETag",
    );
}

fn respond(req: &Request, config: &Config) -> Response {
    let path = req.target.split(['?', '#']).next().unwrap_or("");
    let (root, rest) = if let Some(rest) = strip_route(path, "/models") {
        (Root::Models { cors: true }, rest)
    } else if let Some(rest) = strip_route(path, "/nocors") {
        (Root::Models { cors: false }, rest)
    } else {
        (Root::Www, path)
    };
    let cors = root == Root::Models { cors: true };

    let mut resp = match req.method.as_str() {
        "GET" | "HEAD" => serve_path(req, config, root, path, rest),
        "OPTIONS" => {
            let mut r = Response::new(204, "");
            r.header("Allow", "GET, HEAD, OPTIONS");
            if cors {
                r.header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS");
                let asked = req.header("access-control-request-headers").unwrap_or("");
                r.header(
                    "Access-Control-Allow-Headers",
                    if asked.is_empty() { "Range" } else { asked },
                );
                r.header("Access-Control-Max-Age", "600");
            }
            r
        }
        _ => {
            let mut r = Response::new(405, "405 method not allowed\n");
            r.header("Allow", "GET, HEAD, OPTIONS");
            r
        }
    };
    if cors {
        add_cors(&mut resp);
    }
    resp
}

/// `/models/x` → Some("/x"), `/models` → Some(""), `/modelsx` → None.
fn strip_route<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

fn not_found() -> Response {
    Response::new(404, "404 not found\n")
}

/// Decodes `%XX` escapes; None on bad escapes or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Maps a URL path (below the route prefix) to a file under `base`. Rejects `..`, dot-files,
/// backslashes, NULs and encoded slashes, so nothing outside `base` can be named.
fn resolve(base: &Path, url_path: &str) -> Option<PathBuf> {
    let mut p = base.to_path_buf();
    for seg in url_path.split('/') {
        if seg.is_empty() || seg == "." {
            continue;
        }
        let seg = percent_decode(seg)?;
        if seg.starts_with('.') || seg.contains(['/', '\\', '\0']) {
            return None;
        }
        p.push(seg);
    }
    Some(p)
}

fn serve_path(req: &Request, config: &Config, root: Root, full_path: &str, rest: &str) -> Response {
    let base = match root {
        Root::Www => &config.www,
        Root::Models { .. } => &config.models,
    };
    let Some(mut file_path) = resolve(base, rest) else {
        return not_found();
    };
    let Ok(mut meta) = fs::metadata(&file_path) else {
        return not_found();
    };
    if meta.is_dir() {
        if root != Root::Www {
            return not_found(); // no directory listings
        }
        if !full_path.ends_with('/') {
            let mut r = Response::new(301, "");
            r.header("Location", format!("{full_path}/"));
            return r;
        }
        file_path.push("index.html");
        match fs::metadata(&file_path) {
            Ok(m) if m.is_file() => meta = m,
            _ => return not_found(),
        }
    }
    if !meta.is_file() {
        return not_found();
    }
    let Ok(file) = File::open(&file_path) else {
        return Response::new(403, "403 cannot read file\n");
    };
    let size = meta.len();
    let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
    let mtime_ns = mtime
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let etag = format!("\"{size:x}-{mtime_ns:x}\"");

    let mut resp = Response::new(200, "");
    resp.header("Content-Type", mime_type(&file_path));
    resp.header("Accept-Ranges", "bytes");
    resp.header("ETag", etag.clone());
    resp.header("Last-Modified", http_date(mtime));
    resp.header("Cache-Control", "no-cache");

    if let Some(inm) = req.header("if-none-match") {
        if inm.split(',').any(|t| {
            t.trim() == etag || t.trim() == "*" || t.trim().trim_start_matches("W/") == etag
        }) {
            resp.status = 304;
            return resp;
        }
    }
    // If-Range with a stale validator: ignore Range and send the whole file.
    let range_ok = match req.header("if-range") {
        Some(v) => v.trim() == etag || v.trim() == http_date(mtime),
        None => true,
    };
    let range = if range_ok {
        req.header("range").map(|r| parse_range(r, size))
    } else {
        None
    };
    match range {
        Some(RangeSpec::Unsatisfiable) => {
            let mut r = Response::new(416, "416 range not satisfiable\n");
            r.header("Content-Range", format!("bytes */{size}"));
            r.header("Accept-Ranges", "bytes");
            r
        }
        Some(RangeSpec::Range(start, end)) => {
            resp.status = 206;
            resp.header("Content-Range", format!("bytes {start}-{end}/{size}"));
            resp.file = Some((file, start, end - start + 1));
            resp
        }
        Some(RangeSpec::Ignore) | None => {
            resp.file = Some((file, 0, size));
            resp
        }
    }
}

#[derive(Debug, PartialEq)]
enum RangeSpec {
    /// Inclusive byte range, clamped to the file.
    Range(u64, u64),
    Unsatisfiable,
    /// Not a single byte range we understand (other units, several ranges, bad syntax):
    /// serve the whole file, as RFC 9110 allows.
    Ignore,
}

fn parse_range(header: &str, size: u64) -> RangeSpec {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| {
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse::<u64>().ok()
        } else {
            None
        }
    };
    if a.is_empty() {
        // Suffix range: the last n bytes.
        let Some(n) = num(b) else {
            return RangeSpec::Ignore;
        };
        if n == 0 || size == 0 {
            return RangeSpec::Unsatisfiable;
        }
        return RangeSpec::Range(size.saturating_sub(n), size - 1);
    }
    let Some(start) = num(a) else {
        return RangeSpec::Ignore;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match num(b) {
            Some(e) => e,
            None => return RangeSpec::Ignore,
        }
    };
    if start >= size || end < start {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Range(start, end.min(size - 1))
}

fn mime_type(path: &Path) -> &'static str {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if name.ends_with(".d.ts") {
        return "text/plain; charset=utf-8";
    }
    // Raw byte chunks of a model: NAME.gguf.part00 etc.
    if let Some(i) = name.rfind(".part") {
        if name[i + 5..].bytes().all(|c| c.is_ascii_digit()) {
            return "application/octet-stream";
        }
    }
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" | "ts" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "wgsl" => "text/wgsl; charset=utf-8",
        _ => "application/octet-stream", // .gguf, .bin, …
    }
}

/// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WD[days.rem_euclid(7) as usize],
        day,
        MON[(month - 1) as usize],
        year,
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn ranges() {
        use RangeSpec::*;
        assert_eq!(parse_range("bytes=0-9", 100), Range(0, 9));
        assert_eq!(parse_range("bytes=90-200", 100), Range(90, 99));
        assert_eq!(parse_range("bytes=10-", 100), Range(10, 99));
        assert_eq!(parse_range("bytes=-10", 100), Range(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), Range(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ignore);
        assert_eq!(parse_range("items=0-1", 100), Ignore);
        assert_eq!(parse_range("bytes=x-1", 100), Ignore);
        assert_eq!(parse_range("bytes=+1-2", 100), Ignore);
    }

    #[test]
    fn dates_and_mime() {
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            mime_type(Path::new("a/quantweb_bg.wasm")),
            "application/wasm"
        );
        assert_eq!(
            mime_type(Path::new("x.MJS")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            mime_type(Path::new("quantweb.d.ts")),
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            mime_type(Path::new("m.gguf.part03")),
            "application/octet-stream"
        );
        assert_eq!(mime_type(Path::new("m.gguf")), "application/octet-stream");
        assert_eq!(mime_type(Path::new("i.svg")), "image/svg+xml");
    }

    #[test]
    fn traversal_is_rejected() {
        let base = Path::new("/srv/www");
        assert_eq!(resolve(base, "/a/b.js"), Some(base.join("a/b.js")));
        assert_eq!(resolve(base, "/a%20b.js"), Some(base.join("a b.js")));
        assert_eq!(resolve(base, "//./a"), Some(base.join("a")));
        for bad in [
            "/../etc/passwd",
            "/a/../../x",
            "/%2e%2e/x",
            "/a%2f..%2f..%2fx",
            "/.git/config",
            "/a\\..\\x",
            "/%00",
            "/%zz",
        ] {
            assert_eq!(resolve(base, bad), None, "{bad}");
        }
    }

    // --- end-to-end against a real listener -------------------------------------------------

    struct Fixture {
        addr: SocketAddr,
        dir: PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    fn fixture() -> Fixture {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "quantweb-xtask-serve-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("www/pkg")).unwrap();
        fs::create_dir_all(dir.join("models")).unwrap();
        fs::write(dir.join("www/index.html"), "<!doctype html><p>hi</p>").unwrap();
        fs::write(dir.join("www/pkg/quantweb_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
        fs::write(dir.join("secret.txt"), "secret").unwrap();
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        fs::write(dir.join("models/m.gguf"), &data).unwrap();
        let cfg = Config {
            www: dir.join("www"),
            models: dir.join("models"),
            log_all: false,
        };
        let addr = start("127.0.0.1", 0, cfg).unwrap();
        Fixture { addr, dir }
    }

    /// (status, lowercased headers, body)
    type Reply = (u16, Vec<(String, String)>, Vec<u8>);

    /// Sends raw requests on one connection; returns one reply per request.
    fn exchange(addr: SocketAddr, reqs: &[String]) -> Vec<Reply> {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut out = Vec::new();
        for req in reqs {
            w.write_all(req.as_bytes()).unwrap();
            let mut status_line = String::new();
            r.read_line(&mut status_line).unwrap();
            let status: u16 = status_line
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            let mut headers = Vec::new();
            loop {
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                let l = l.trim_end();
                if l.is_empty() {
                    break;
                }
                let (k, v) = l.split_once(':').unwrap();
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            let mut body = vec![0; if req.starts_with("HEAD") { 0 } else { len }];
            r.read_exact(&mut body).unwrap();
            out.push((status, headers, body));
        }
        out
    }

    fn get(addr: SocketAddr, path: &str, extra: &str) -> Reply {
        exchange(
            addr,
            &[format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n")],
        )
        .remove(0)
    }

    fn h<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn serves_files_with_headers() {
        let f = fixture();
        let (s, hd, body) = get(f.addr, "/", "");
        assert_eq!(s, 200);
        assert_eq!(body, b"<!doctype html><p>hi</p>");
        assert_eq!(h(&hd, "content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(h(&hd, "cross-origin-opener-policy"), Some("same-origin"));
        assert_eq!(h(&hd, "cross-origin-embedder-policy"), Some("require-corp"));
        assert_eq!(h(&hd, "cross-origin-resource-policy"), Some("cross-origin"));
        assert_eq!(h(&hd, "cache-control"), Some("no-cache"));
        assert_eq!(h(&hd, "accept-ranges"), Some("bytes"));
        assert_eq!(h(&hd, "access-control-allow-origin"), None);
        let etag = h(&hd, "etag").unwrap().to_string();
        let (s, _, body) = get(f.addr, "/index.html", &format!("If-None-Match: {etag}\r\n"));
        assert_eq!((s, body.len()), (304, 0));

        let (s, hd, _) = get(f.addr, "/pkg/quantweb_bg.wasm", "");
        assert_eq!((s, h(&hd, "content-type")), (200, Some("application/wasm")));
        let (s, hd, _) = get(f.addr, "/pkg", "");
        assert_eq!((s, h(&hd, "location")), (301, Some("/pkg/")));

        for bad in [
            "/nope",
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/models/../secret.txt",
            "/models/",
            "/nocors/x",
        ] {
            let (s, hd, body) = get(f.addr, bad, "");
            assert_eq!(s, 404, "{bad}");
            assert_eq!(body, b"404 not found\n");
            assert_eq!(h(&hd, "cross-origin-embedder-policy"), Some("require-corp"));
        }
    }

    #[test]
    fn ranges_cors_head_options() {
        let f = fixture();
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let (s, hd, body) = get(f.addr, "/models/m.gguf", "Range: bytes=10-19\r\n");
        assert_eq!(s, 206);
        assert_eq!(body, &data[10..20]);
        assert_eq!(h(&hd, "content-range"), Some("bytes 10-19/1000"));
        assert_eq!(h(&hd, "content-length"), Some("10"));
        assert_eq!(h(&hd, "content-type"), Some("application/octet-stream"));
        assert_eq!(h(&hd, "access-control-allow-origin"), Some("*"));
        assert!(h(&hd, "access-control-expose-headers")
            .unwrap()
            .contains("Content-Range"));

        let (s, hd, body) = get(f.addr, "/models/m.gguf", "Range: bytes=-5\r\n");
        assert_eq!(
            (s, h(&hd, "content-range"), &body[..]),
            (206, Some("bytes 995-999/1000"), &data[995..])
        );
        let (s, _, body) = get(f.addr, "/models/m.gguf", "Range: bytes=990-\r\n");
        assert_eq!((s, &body[..]), (206, &data[990..]));
        let (s, hd, _) = get(f.addr, "/models/m.gguf", "Range: bytes=1000-\r\n");
        assert_eq!((s, h(&hd, "content-range")), (416, Some("bytes */1000")));
        assert_eq!(h(&hd, "access-control-allow-origin"), Some("*"));
        // A stale If-Range gets the whole file.
        let (s, _, body) = get(
            f.addr,
            "/models/m.gguf",
            "Range: bytes=0-1\r\nIf-Range: \"old\"\r\n",
        );
        assert_eq!((s, body.len()), (200, 1000));

        // Same file without CORS.
        let (s, hd, body) = get(f.addr, "/nocors/m.gguf", "");
        assert_eq!((s, body.len()), (200, 1000));
        assert_eq!(h(&hd, "access-control-allow-origin"), None);

        // HEAD, then GET on the same keep-alive connection.
        let rs = exchange(
            f.addr,
            &[
                "HEAD /models/m.gguf HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
                "OPTIONS /models/m.gguf HTTP/1.1\r\nHost: x\r\nOrigin: http://other\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: range\r\n\r\n".to_string(),
                "GET /models/m.gguf HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\n\r\n".to_string(),
                "DELETE /models/m.gguf HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string(),
            ],
        );
        assert_eq!(rs[0].0, 200);
        assert_eq!(h(&rs[0].1, "content-length"), Some("1000"));
        assert!(rs[0].2.is_empty());
        assert_eq!(rs[1].0, 204);
        assert_eq!(h(&rs[1].1, "access-control-allow-headers"), Some("range"));
        assert_eq!(h(&rs[1].1, "access-control-allow-origin"), Some("*"));
        assert!(h(&rs[1].1, "access-control-allow-methods")
            .unwrap()
            .contains("GET"));
        assert_eq!((rs[2].0, &rs[2].2[..]), (206, &data[..1]));
        assert_eq!(rs[3].0, 405);
    }

    #[test]
    fn concurrent_requests() {
        let f = fixture();
        let addr = f.addr;
        let handles: Vec<_> = (0..16)
            .map(|i| {
                thread::spawn(move || {
                    get(
                        addr,
                        "/models/m.gguf",
                        &format!("Range: bytes={i}-{}\r\n", i + 99),
                    )
                    .0
                })
            })
            .collect();
        for t in handles {
            assert_eq!(t.join().unwrap(), 206);
        }
    }
}
