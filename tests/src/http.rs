//! Reading an HTTP/1.1 response off a stream, for test and benchmark
//! clients that talk to outpostd or chromedriver over a plain TCP stream.

use std::io::BufRead;

/// A response: status, headers in order, body (de-chunked).
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Every value of header `name` (any case).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The status line only (the first byte of the response has arrived).
pub fn read_status(r: &mut impl BufRead) -> u16 {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Headers and body after [`read_status`]: by `Content-Length`, chunked,
/// or to the end of the stream.
pub fn read_rest(r: &mut impl BufRead, status: u16) -> Response {
    let mut line = String::new();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let chunked = resp
        .header("transfer-encoding")
        .iter()
        .any(|v| v.contains("chunked"));
    let length = resp
        .header("content-length")
        .first()
        .and_then(|v| v.parse::<usize>().ok());
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            let at = resp.body.len();
            resp.body.resize(at + n, 0);
            r.read_exact(&mut resp.body[at..]).unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
        }
    } else if let Some(n) = length {
        resp.body.resize(n, 0);
        r.read_exact(&mut resp.body).unwrap();
    } else {
        r.read_to_end(&mut resp.body).unwrap();
    }
    resp
}

/// A whole response.
pub fn read_response(r: &mut impl BufRead) -> Response {
    let status = read_status(r);
    read_rest(r, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_length_chunked_and_to_the_end() {
        let r =
            read_response(&mut &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: a\r\n\r\nabcdef"[..]);
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("x")),
            (200, &b"abc"[..], vec!["a"])
        );
        let r = read_response(
            &mut &b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"[..],
        );
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        let r = read_response(&mut &b"HTTP/1.1 303 See Other\r\n\r\nrest"[..]);
        assert_eq!((r.status, r.body.as_slice()), (303, &b"rest"[..]));
    }
}
