//! Reading the admin listener's `/metrics` as Prometheus would.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

/// One HTTP request to the admin listener: (status line, body).
pub fn http(addr: SocketAddr, request: &str) -> Result<(String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").context("no header end")?;
    Ok((
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    ))
}

pub fn get(addr: SocketAddr, path: &str) -> Result<(String, String)> {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: strata\r\n\r\n"),
    )
}

/// Parsed exposition: series name -> [(labels, value)].
pub type Scrape = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;

pub fn scrape(addr: SocketAddr) -> Result<Scrape> {
    let (status, body) = get(addr, "/metrics")?;
    ensure!(status.contains("200"), "/metrics: {status}");
    let mut out = Scrape::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').context("no value")?;
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.split_once('=')?;
                Some((k.to_string(), v.trim_matches('"').to_string()))
            })
            .collect();
        out.entry(name.to_string())
            .or_default()
            .push((labels, value.parse().unwrap_or(f64::NAN)));
    }
    Ok(out)
}

/// The value of `name` with (at least) these labels; 0 when absent.
pub fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.get(name)
        .into_iter()
        .flatten()
        .filter(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}
