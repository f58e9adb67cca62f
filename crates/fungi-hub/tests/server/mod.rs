//! A small HTTP/1.1 file server on 127.0.0.1 for the fetch tests: byte ranges, extra headers,
//! a connection cut after N body bytes, and a log of the requests it saw.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One file the server serves.
#[derive(Clone, Default)]
pub struct Route {
    /// The file.
    pub body: Vec<u8>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Answer `Range` requests (else always 200 with the whole file).
    pub ranges: bool,
    /// Close the connection after this many body bytes, once (the first longer response).
    pub cut: Option<usize>,
    /// Send no Content-Length (the body ends when the connection closes).
    pub no_length: bool,
    /// Bytes sent after the body (beyond what the headers announce).
    pub extra: usize,
    /// Answer range requests from this many bytes after the offset asked for.
    pub shift: usize,
    /// Answer open-ended ranges (`bytes=N-`) with the whole file (200), closed ones as asked.
    pub ignore_open_ranges: bool,
    /// Answer every request with this status line and no body (e.g. "302 Found").
    pub status: Option<String>,
}

/// A request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Request path.
    pub path: String,
    /// Its `Range` header.
    pub range: Option<String>,
}

type Routes = Arc<Mutex<HashMap<String, Route>>>;

/// The running server; it lives until the test process ends.
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    routes: Routes,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Serves `routes` (path → file) on a free port.
    pub fn start(routes: Vec<(&str, Route)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Routes = Arc::new(Mutex::new(
            routes
                .into_iter()
                .map(|(p, r)| (p.to_string(), r))
                .collect(),
        ));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (r, l) = (routes.clone(), log.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = handle(stream, &r, &l);
            }
        });
        Self { base, routes, log }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// Replaces (or adds) the file at `path`.
    pub fn set(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.to_string(), route);
    }
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn handle(mut stream: TcpStream, routes: &Routes, log: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    log.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
    });
    let route = routes.lock().unwrap().get(&path).cloned();
    let Some(route) = route else {
        return write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    };
    if let Some(status) = &route.status {
        let mut head = String::new();
        for (k, v) in &route.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        return write!(
            stream,
            "HTTP/1.1 {status}\r\n{head}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
    let len = route.body.len();
    let mut head = String::new();
    let open = range.as_deref().is_some_and(|r| r.ends_with('-'));
    let honour = route.ranges || (route.ignore_open_ranges && !open);
    let (status, body): (&str, &[u8]) = match range.as_deref().filter(|_| honour) {
        Some(r) => {
            let spec = r.strip_prefix("bytes=").unwrap_or(r);
            let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
            let a: usize = a.parse::<usize>().unwrap_or(0) + route.shift;
            let b: usize = b
                .parse()
                .map_or(len.saturating_sub(1), |b: usize| b.min(len - 1));
            if a >= len {
                head.push_str(&format!("Content-Range: bytes */{len}\r\n"));
                ("416 Range Not Satisfiable", &[])
            } else {
                head.push_str(&format!("Content-Range: bytes {a}-{b}/{len}\r\n"));
                ("206 Partial Content", &route.body[a..=b])
            }
        }
        None => ("200 OK", &route.body[..]),
    };
    for (k, v) in &route.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !route.no_length {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    write!(
        stream,
        "HTTP/1.1 {status}\r\n{head}Connection: close\r\n\r\n"
    )?;
    match route.cut.filter(|&c| body.len() > c) {
        Some(c) => {
            stream.write_all(&body[..c])?;
            let mut routes = routes.lock().unwrap();
            if let Some(r) = routes.get_mut(&path) {
                r.cut = None;
            }
        }
        None => {
            stream.write_all(body)?;
            stream.write_all(&vec![0x5A; route.extra])?;
        }
    }
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}
