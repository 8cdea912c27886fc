//! A tiny blocking HTTP/1.0 client for the node API: one connection per request, so the server
//! answers without chunking and closes, and reading to the end is the whole response.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// One request to `addr`: (status, body). `timeout` bounds the connect and each read or write.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(1)))
        .with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("read {method} {addr}{path}"))?;
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("no end of headers in {} bytes", raw.len());
    };
    let status = std::str::from_utf8(&raw[..split])
        .ok()
        .and_then(|h| h.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("bad status line")?;
    Ok((status, raw.split_off(split + 4)))
}

/// The value of an unlabelled series (or the sum over its labels) in a Prometheus text page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue; // a longer name with this prefix
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_reads_plain_and_labelled_series_and_not_longer_names() {
        let page = "# HELP butter_tasks x\nbutter_tasks 12\nbutter_tasks_total 99\n\
                    butter_groups{state=\"cold\"} 1\nbutter_groups{state=\"hot\"} 2\n";
        assert_eq!(metric(page, "butter_tasks"), Some(12.0));
        assert_eq!(metric(page, "butter_groups"), Some(3.0));
        assert_eq!(metric(page, "butter_missing"), None);
    }
}
